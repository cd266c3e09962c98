"""Parity with dalle2-pytorch 1.15.6 without it installed: its stored outputs for every parity configuration.

`tools/make_reference_outputs.py` made the files with the reference, on weights that both implementations can set from a
seed (`conftest.seeded_`) and on the inputs made here; the fixtures hold the outputs and a fingerprint of the inputs.
Samples cover DDPM and the reference's DDIM with and without guidance; losses cover the self-conditioning coin both ways.
"""
import random, re
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
from conftest import seeded_
from test_prior_parity import CASES, conditions, assert_close_scaled
from test_network_parity import CONFIGS, inputs

RELEASE = '1.15.6'
FIXTURES = Path(__file__).parent / 'fixtures'
SAMPLE_SETTINGS = [(None, 1.), (None, 2.), (8, 1.), (8, 3.), (20, 1.), (2, 1.)]   # (timesteps, cond_scale), as test_prior_parity
LOSS_SEEDS = [5, 9, 11]       # the self-conditioning coin (random.random() < 0.5) comes up for 9 and 11, not for 5
GUIDANCE = [1., 2.5]
NUM_TOKENS = [3, 7, 12]       # shorter than, near, and longer than max_text_len


def fixture_path(kind:str, name:str)->Path:
    return FIXTURES / f"reference_{RELEASE}_{kind}_{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.pt"


def loss_inputs():
    "(scaled image embeddings, times, noise) for `p_losses` and raw image embeddings for `forward`, batch 8, dim 16."
    g = torch.Generator().manual_seed(2)
    image_embed = F.normalize(torch.randn(8, 16, generator=g), dim=-1) * 4
    times, noise = torch.randint(0, 20, (8,), generator=g), torch.randn(8, 16, generator=g)
    return image_embed, times, noise, F.normalize(torch.randn(8, 16, generator=g), dim=-1)


def network_inputs(config:dict, num_tokens:int):
    "(x, t, keyword arguments) for a network of `config`, with self-conditioning when it has it."
    x, t, text_embed, enc = inputs(config, num_tokens=num_tokens)
    kw = dict(text_embed=text_embed, text_encodings=enc)
    if config.get('self_cond'): kw['self_cond'] = torch.randn(x.shape, generator=torch.Generator().manual_seed(num_tokens))
    return x, t, kw


def fingerprint(*tensors)->torch.Tensor:
    "Sum and sum of squares of each input: enough to tell whether the inputs are the ones the fixture was made on."
    return torch.tensor([[x.double().sum().item(), x.double().square().sum().item()] for x in tensors], dtype=torch.float64)


def load(kind:str, name:str)->dict:
    path = fixture_path(kind, name)
    assert path.exists(), f'{path.name} is missing: run python tools/make_reference_outputs.py (it needs dalle2-pytorch=={RELEASE})'
    return torch.load(path, weights_only=True)


def check_inputs(stored:torch.Tensor, made:torch.Tensor, what:str):
    assert stored.shape == made.shape and torch.allclose(stored, made, rtol=1e-9, atol=1e-9), \
        f'{what}: the inputs differ from those the fixture was made on: rerun python tools/make_reference_outputs.py'


def our_prior(name:str)->DiffusionPrior:
    case = CASES[name]
    return seeded_(DiffusionPrior(DiffusionPriorNetwork(**case['net']), image_embed_dim=case['net']['dim'], **case['prior'])).eval()


@pytest.mark.parametrize('name', CASES)
def test_fixture_matches_the_parity_configuration(name):
    fixture = load('prior', name)
    assert fixture['case'] == CASES[name], f'CASES[{name!r}] changed since its fixture was made: rerun python tools/make_reference_outputs.py'
    cond, loss_cond = conditions(CASES[name]), conditions(CASES[name], batch=8)
    check_inputs(fixture['inputs'], fingerprint(*cond.values(), *loss_cond.values(), *loss_inputs()), name)


@pytest.mark.parametrize('name', CASES)
@pytest.mark.parametrize('setting', range(len(SAMPLE_SETTINGS)), ids=[f'timesteps={t},cond_scale={s:g}' for t, s in SAMPLE_SETTINGS])
def test_samples_equal_the_reference_s(name, setting):
    "DDPM (timesteps None or T) and the reference's DDIM (fewer steps): same weights, same seed, the reference's samples."
    fixture, ours = load('prior', name), our_prior(name)
    timesteps, cond_scale = SAMPLE_SETTINGS[setting]
    torch.manual_seed(3)
    got = ours.p_sample_loop((4, 16), conditions(CASES[name]), cond_scale=cond_scale, timesteps=timesteps)
    assert_close_scaled(got, fixture['samples'][setting])


@pytest.mark.parametrize('name', CASES)
def test_losses_equal_the_reference_s(name):
    "`p_losses` (training mode) and `forward` for three seeds: with and without the self-conditioning estimate."
    fixture, ours = load('prior', name), our_prior(name)
    loss_cond, (image_embed, times, noise, raw_image) = conditions(CASES[name], batch=8), loss_inputs()
    ours.train()
    for i, seed in enumerate(LOSS_SEEDS):
        torch.manual_seed(seed); random.seed(seed)
        assert_close_scaled(ours.p_losses(image_embed.clone(), times, loss_cond, noise=noise).detach(), fixture['p_losses'][i])
    ours.eval()
    for i, seed in enumerate(LOSS_SEEDS):
        torch.manual_seed(seed); random.seed(seed)
        assert_close_scaled(ours(image_embed=raw_image.clone(), **loss_cond).detach(), fixture['forward'][i])


@pytest.mark.parametrize('name', CONFIGS)
def test_network_outputs_equal_the_reference_s(name):
    fixture = load('network', name)
    assert fixture['config'] == CONFIGS[name], f'CONFIGS[{name!r}] changed since its fixture was made: rerun python tools/make_reference_outputs.py'
    net = seeded_(DiffusionPriorNetwork(**CONFIGS[name])).eval()
    with torch.no_grad():
        for i, num_tokens in enumerate(NUM_TOKENS):
            x, t, kw = network_inputs(CONFIGS[name], num_tokens)
            check_inputs(fixture['inputs'][i], fingerprint(x, t, *kw.values()), f'{name}, {num_tokens} tokens')
            for j, scale in enumerate(GUIDANCE):
                assert_close_scaled(net.forward_with_cond_scale(x, t, cond_scale=scale, **kw), fixture['guided'][i, j])
            assert_close_scaled(net(x, t, **{k: v for k, v in kw.items() if k != 'text_encodings'}), fixture['no_encodings'][i])
            torch.manual_seed(7)
            assert_close_scaled(net(x, t, text_cond_drop_prob=0.4, image_cond_drop_prob=0.3, **kw), fixture['dropped'][i])


def test_fixtures_are_what_the_reference_computes(ref):
    "With the reference installed, the stored outputs are its outputs now (a stale fixture would pass wrong code)."
    import sys
    sys.path.insert(0, str(Path(__file__).parent.parent / 'tools'))
    from make_reference_outputs import prior_outputs, network_outputs
    for kind, name, make in (('prior', 'v, self-cond, discrete time', prior_outputs), ('network', 'self_cond+multi_tokens', network_outputs)):
        stored, fresh = load(kind, name), make(ref, name)
        for key, value in stored.items():
            if key == 'inputs': torch.testing.assert_close(fresh[key], value, msg=f'{kind} {name}: the inputs')
            elif isinstance(value, torch.Tensor): assert_close_scaled(fresh[key], value)
            else: assert fresh[key] == value, f'{kind} {name}: {key}'
