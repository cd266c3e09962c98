"Our DiffusionPrior against the reference's with the same weights and seeds (fp32, CPU): losses and samples."
import random
import pytest
import torch
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
from conftest import perturb_, text_inputs


def assert_close_scaled(ours, theirs, tol=1e-5):
    "Agreement within `tol`, measured relative to the output's scale (float32 rounding grows with magnitude)."
    scale = max(1., theirs.abs().max().item())
    diff = (ours - theirs).abs().max().item()
    assert diff <= tol * scale, f'max abs difference {diff:.3g} exceeds {tol:g} x scale {scale:.3g}'


NET = dict(dim=16, depth=2, dim_head=8, heads=2, max_text_len=6)
CASES = {
    'x0, text encodings, cosine': dict(net=NET, prior=dict(timesteps=20, cond_drop_prob=0.2)),
    'noise, no encodings, linear': dict(net={**NET, 'normformer': True}, prior=dict(timesteps=40, predict_x_start=False,
                                        condition_on_text_encodings=False, beta_schedule='linear', cond_drop_prob=0.3)),
    'v, self-cond, discrete time': dict(net={**NET, 'self_cond': True, 'num_timesteps': 20},
                                        prior=dict(timesteps=20, predict_v=True, cond_drop_prob=0.2, loss_type='l1')),
    'x0 clamps, huber, quadratic': dict(net={**NET, 'max_text_len': 3}, prior=dict(timesteps=30, sampling_clamp_l2norm=True,
                                  sampling_final_clamp_l2norm=True, training_clamp_l2norm=True, init_image_embed_l2norm=True,
                                  loss_type='huber', beta_schedule='quadratic', text_cond_drop_prob=0.1, image_cond_drop_prob=0.5)),
}


def pair(ref, case, seed=0):
    torch.manual_seed(seed)
    theirs = ref.DiffusionPrior(perturb_(ref.DiffusionPriorNetwork(**case['net'])), image_embed_dim=case['net']['dim'], **case['prior']).eval()
    ours = DiffusionPrior(DiffusionPriorNetwork(**case['net']), image_embed_dim=case['net']['dim'], **case['prior']).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def conditions(case, batch=4):
    text_embed, enc = text_inputs(batch, case['net']['dim'], 5, seed=11)
    cond = dict(text_embed=torch.nn.functional.normalize(text_embed, dim=-1))
    if case['prior'].get('condition_on_text_encodings', True): cond['text_encodings'] = enc
    return cond


def test_schedule_buffers_match(ref):
    for schedule in ('cosine', 'linear', 'quadratic', 'sigmoid', 'jsd'):
        ours = DiffusionPrior(DiffusionPriorNetwork(**NET), image_embed_dim=16, timesteps=50, beta_schedule=schedule)
        theirs = ref.DiffusionPrior(ref.DiffusionPriorNetwork(**NET), image_embed_dim=16, timesteps=50, beta_schedule=schedule)
        for name, buf in theirs.noise_scheduler.named_buffers():
            mine = getattr(ours.noise_scheduler, name)
            finite = torch.isfinite(buf)
            assert torch.equal(finite, torch.isfinite(mine)), (schedule, name)
            torch.testing.assert_close(mine[finite], buf[finite], rtol=1e-5, atol=1e-6, msg=f'{schedule} {name}')


@pytest.mark.parametrize('name', CASES)
def test_p_losses_match(ref, name):
    case = CASES[name]
    ours, theirs = pair(ref, case)
    ours.train(); theirs.train()
    cond = conditions(case, batch=8)
    gen = torch.Generator().manual_seed(2)
    image_embed = torch.nn.functional.normalize(torch.randn(8, 16, generator=gen), dim=-1) * 4
    times, noise = torch.randint(0, 20, (8,), generator=gen), torch.randn(8, 16, generator=gen)
    losses = []
    for model in (ours, theirs):
        torch.manual_seed(5); random.seed(5)  # condition dropout and the self-conditioning coin
        losses.append(model.p_losses(image_embed.clone(), times, cond, noise=noise))
    assert_close_scaled(*losses)


@pytest.mark.parametrize('name', CASES)
def test_forward_loss_matches_and_leaves_input_alone(ref, name):
    case = CASES[name]
    ours, theirs = pair(ref, case)
    cond = conditions(case, batch=8)
    image_embed = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    mine = image_embed.clone()
    torch.manual_seed(9); random.seed(9); a = ours(image_embed=mine, **cond)
    torch.manual_seed(9); random.seed(9); b = theirs(image_embed=image_embed.clone(), **cond)
    assert_close_scaled(a, b)
    assert torch.equal(mine, image_embed), 'forward modified the caller\'s image_embed'


@pytest.mark.parametrize('name', CASES)
@pytest.mark.parametrize('timesteps,cond_scale', [(None, 1.), (None, 2.), (8, 1.), (8, 3.), (20, 1.), (2, 1.)])
def test_samples_match(ref, name, timesteps, cond_scale):
    "DDPM (timesteps == T) and the reference's DDIM (fewer): same seed, same samples."
    case = CASES[name]
    ours, theirs = pair(ref, case)
    cond = conditions(case)
    torch.manual_seed(3); a = ours.p_sample_loop((4, 16), cond, cond_scale=cond_scale, timesteps=timesteps)
    torch.manual_seed(3); b = theirs.p_sample_loop((4, 16), cond, cond_scale=cond_scale, timesteps=timesteps)
    assert_close_scaled(a, b)


def test_sample_best_of_n_matches_reference_with_a_clip(ref):
    "`sample(tokens, num_samples_per_batch=2)` through a CLIP adapter picks the same candidates as the reference."
    class TinyClip(torch.nn.Module):  # deterministic stand-in: embeds token ids with a fixed table
        dim_latent, image_channels, image_size, max_text_len = 16, 3, 8, 5
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(50, 16)
        def embed_text(self, tokens):
            enc = self.table(tokens) * (tokens != 0)[..., None]
            return torch.nn.functional.normalize(enc.sum(1), dim=-1), enc
        def embed_image(self, images): raise NotImplementedError

    class RefTinyClip(ref.BaseClipAdapter):
        dim_latent, image_channels, image_size, max_text_len = 16, 3, 8, 5
        def embed_text(self, tokens): return ref.EmbeddedText(*self.clip.embed_text(tokens))

    case = CASES['x0, text encodings, cosine']
    torch.manual_seed(0)
    clip = TinyClip()
    theirs = ref.DiffusionPrior(perturb_(ref.DiffusionPriorNetwork(**case['net'])), clip=RefTinyClip(clip), **case['prior'])
    ours = DiffusionPrior(DiffusionPriorNetwork(**case['net']), clip=clip, **case['prior'])
    # the reference's adapter nests the model one level deeper (clip.clip.*); the network and schedule load strictly
    missing, unexpected = ours.load_state_dict({k: v for k, v in theirs.state_dict().items() if not k.startswith('clip.')}, strict=False)
    assert missing == ['clip.table.weight'] and unexpected == []
    tokens = torch.tensor([[3, 4, 5, 0, 0], [7, 8, 0, 0, 0], [9, 1, 2, 3, 4]])
    for timesteps, cond_scale in ((None, 1.), (6, 2.)):
        torch.manual_seed(4); a = ours.sample(tokens, num_samples_per_batch=3, cond_scale=cond_scale, timesteps=timesteps)
        torch.manual_seed(4); b = theirs.sample(tokens, num_samples_per_batch=3, cond_scale=cond_scale, timesteps=timesteps)
        assert_close_scaled(a, b)
    torch.manual_seed(4); c = ours.sample(tokens, n_samples_per_batch=3, cond_scale=2., timesteps=6)
    assert_close_scaled(c, b)
