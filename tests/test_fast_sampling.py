"""The prefix-cached sampler (the default) returns what the full-sequence computation returns.

Without self-conditioning, float32 chains agree within 1e-5. With self-conditioning, each step's estimate is fed back
into the next, so float32 rounding differences (1e-7 per step) are amplified along the chain, most under guidance; the
two computations are the same algebra, which float64 chains show (they agree to ~1e-12), and single steps agree within
1e-5 in float32.
"""
import pytest
import torch
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
from test_prior_parity import assert_close_scaled


def make_prior(self_cond, dtype=torch.float32):
    torch.manual_seed(0)
    net = DiffusionPriorNetwork(dim=32, depth=3, dim_head=16, heads=4, max_text_len=8, self_cond=self_cond, normformer=True,
                                num_timesteps=40 if dtype == torch.float64 else None)  # the continuous-time MLP runs in float32
    return DiffusionPrior(net, image_embed_dim=32, timesteps=40, cond_drop_prob=0.2).eval().to(dtype)


def both_paths(prior, dtype, sampler, timesteps, cond_scale):
    g = torch.Generator().manual_seed(1)
    text_embed, enc = torch.randn(6, 32, generator=g).to(dtype), torch.randn(6, 5, 32, generator=g).to(dtype)
    enc[:3, 3:] = 0
    outs = {}
    for fast in (True, False):
        torch.manual_seed(7)
        torch.set_default_dtype(dtype)   # the samplers draw their noise in the default dtype
        try:
            outs[fast] = prior.sample(text_embed=text_embed, text_encodings=enc, num_samples_per_batch=2, cond_scale=cond_scale,
                                      timesteps=timesteps, sampler=sampler, cache_text=fast)
        finally: torch.set_default_dtype(torch.float32)
    return outs[True], outs[False]


SAMPLERS = [('ddpm', None), ('ddim_dalle2', 10), ('ddim', 10)]


@pytest.mark.parametrize('sampler,timesteps', SAMPLERS)
@pytest.mark.parametrize('cond_scale', [1., 2.5])
def test_fast_equals_plain_float32(sampler, timesteps, cond_scale):
    fast, plain = both_paths(make_prior(False), torch.float32, sampler, timesteps, cond_scale)
    assert_close_scaled(fast, plain, tol=1e-5)


@pytest.mark.parametrize('self_cond', [False, True])
@pytest.mark.parametrize('sampler,timesteps', SAMPLERS)
@pytest.mark.parametrize('cond_scale', [1., 2.5])
def test_fast_equals_plain_exactly_in_float64(self_cond, sampler, timesteps, cond_scale):
    fast, plain = both_paths(make_prior(self_cond, torch.float64), torch.float64, sampler, timesteps, cond_scale)
    assert (fast - plain).abs().max().item() < 1e-9


@pytest.mark.parametrize('cond_scale', [1., 2.5])
def test_single_self_conditioned_step_float32(cond_scale):
    prior = make_prior(True)
    g = torch.Generator().manual_seed(2)
    te, enc, x, sc = torch.randn(4, 32, generator=g), torch.randn(4, 5, 32, generator=g), torch.randn(4, 32, generator=g), torch.randn(4, 32, generator=g)
    t = torch.full((4,), 13)
    cache = prior.net.cache_text(te, enc, with_null=True)
    with torch.no_grad():
        assert_close_scaled(prior.net.predict_cached(cache, x, t, sc, cond_scale),
                            prior.net.forward_with_cond_scale(x, t, text_embed=te, text_encodings=enc, self_cond=sc, cond_scale=cond_scale))


@pytest.mark.cuda
@pytest.mark.parametrize('sampler,timesteps', [('ddim_dalle2', 10), ('ddim', 10)])
@pytest.mark.parametrize('cond_scale', [1., 2.5])
def test_cuda_graph_equals_eager_float32(sampler, timesteps, cond_scale):
    "The per-step network call replayed from a CUDA graph gives the eager call's samples (float32, the same noise)."
    prior = make_prior(False).cuda()
    g = torch.Generator().manual_seed(1)
    text_embed, enc = torch.randn(6, 32, generator=g).cuda(), torch.randn(6, 5, 32, generator=g).cuda()
    enc[:3, 3:] = 0
    outs = {}
    for graph in (True, False):
        outs[graph] = prior.sample(text_embed=text_embed, text_encodings=enc, num_samples_per_batch=2, cond_scale=cond_scale, timesteps=timesteps,
                                   sampler=sampler, generator=torch.Generator('cuda').manual_seed(7), cuda_graph=graph)
    assert_close_scaled(outs[True], outs[False], tol=1e-5)
