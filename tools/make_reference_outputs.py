"""Store dalle2-pytorch 1.15.6's outputs for the parity configurations, so that parity is checked without it installed.

For every configuration of `tests/test_prior_parity.py` (CASES) and `tests/test_network_parity.py` (CONFIGS), the
reference's model gets weights set from a seed in parameter-name order (`conftest.seeded_`, which our model reproduces
without the reference), and its outputs on the inputs `tests/test_reference_fixtures.py` makes are saved, with a
fingerprint of those inputs, in `tests/fixtures/reference_1.15.6_{prior,network}_<configuration>.pt` (a few KB each):
samples for every sampler setting of the parity tests, training losses with and without the self-conditioning coin,
network outputs plain, guided, without encodings and with condition dropout. Run from the repository root in the dev
environment (the reference installed), after changing a parity configuration or those inputs:

    python tools/make_reference_outputs.py
"""
import json, random, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tests'))
from conftest import seeded_                                                        # noqa: E402
from test_prior_parity import CASES, conditions                                     # noqa: E402
from test_network_parity import CONFIGS                                             # noqa: E402
from test_reference_fixtures import (RELEASE, SAMPLE_SETTINGS, LOSS_SEEDS, GUIDANCE, NUM_TOKENS, fixture_path,  # noqa: E402
                                     loss_inputs, network_inputs, fingerprint)


def compact(x):
    "Tensors cloned to their own storage (a view would save its whole base), in nested dicts and lists."
    if isinstance(x, torch.Tensor): return x.detach().clone()
    if isinstance(x, dict): return {k: compact(v) for k, v in x.items()}
    if isinstance(x, list): return [compact(v) for v in x]
    return x


def reference_prior(ref, case:dict):
    "The reference's DiffusionPrior for `case` with the seeded weights (set on our prior of the same configuration, then loaded strictly)."
    from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
    ours = seeded_(DiffusionPrior(DiffusionPriorNetwork(**case['net']), image_embed_dim=case['net']['dim'], **case['prior']))
    theirs = ref.DiffusionPrior(ref.DiffusionPriorNetwork(**case['net']), image_embed_dim=case['net']['dim'], **case['prior'])
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs.eval()


def prior_outputs(ref, name:str)->dict:
    "The reference's samples, `p_losses` and forward losses for CASES[name]."
    case = CASES[name]
    theirs = reference_prior(ref, case)
    cond, loss_cond, (image_embed, times, noise, raw_image) = conditions(case), conditions(case, batch=8), loss_inputs()
    samples = []
    with torch.no_grad():
        for timesteps, cond_scale in SAMPLE_SETTINGS:
            torch.manual_seed(3)
            samples.append(theirs.p_sample_loop((4, 16), cond, cond_scale=cond_scale, timesteps=timesteps))
    p_losses, forward = [], []
    theirs.train()
    for seed in LOSS_SEEDS:
        torch.manual_seed(seed); random.seed(seed)
        p_losses.append(theirs.p_losses(image_embed.clone(), times, loss_cond, noise=noise))
    theirs.eval()
    for seed in LOSS_SEEDS:
        torch.manual_seed(seed); random.seed(seed)
        forward.append(theirs(image_embed=raw_image.clone(), **loss_cond))
    inputs = fingerprint(*cond.values(), *loss_cond.values(), image_embed, times, noise, raw_image)
    return compact(dict(release=RELEASE, kind='prior', name=name, case=case, inputs=inputs, samples=torch.stack(samples),
                        p_losses=torch.stack(p_losses), forward=torch.stack(forward)))


def network_outputs(ref, name:str)->dict:
    "The reference network's outputs for CONFIGS[name]: guided at each GUIDANCE strength, without encodings, with condition dropout."
    from prior_nbdev import DiffusionPriorNetwork
    config = CONFIGS[name]
    theirs = ref.DiffusionPriorNetwork(**config)
    theirs.load_state_dict(seeded_(DiffusionPriorNetwork(**config)).state_dict(), strict=True)
    theirs.eval()
    guided, no_encodings, dropped, prints = [], [], [], []
    with torch.no_grad():
        for num_tokens in NUM_TOKENS:
            x, t, kw = network_inputs(config, num_tokens)
            guided.append(torch.stack([theirs.forward_with_cond_scale(x, t, cond_scale=s, **kw) for s in GUIDANCE]))
            no_encodings.append(theirs(x, t, **{k: v for k, v in kw.items() if k != 'text_encodings'}))
            torch.manual_seed(7)
            dropped.append(theirs(x, t, text_cond_drop_prob=0.4, image_cond_drop_prob=0.3, **kw))
            prints.append(fingerprint(x, t, *kw.values()))
    return compact(dict(release=RELEASE, kind='network', name=name, config=config, inputs=torch.stack(prints),
                        guided=torch.stack(guided), no_encodings=torch.stack(no_encodings), dropped=torch.stack(dropped)))


def main():
    import dalle2_pytorch.dalle2_pytorch as ref
    from importlib.metadata import version
    if version('dalle2-pytorch') != RELEASE: raise SystemExit(f"dalle2-pytorch {version('dalle2-pytorch')} is installed; these fixtures are {RELEASE}'s")
    sizes = {}
    for kind, names, make in (('prior', CASES, prior_outputs), ('network', CONFIGS, network_outputs)):
        for name in names:
            path = fixture_path(kind, name)
            torch.save(make(ref, name), path)
            sizes[path.name] = path.stat().st_size
    print(json.dumps(sizes, indent=1))

if __name__ == '__main__': main()
