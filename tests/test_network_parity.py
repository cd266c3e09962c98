"Our DiffusionPriorNetwork against the reference's, with the same weights (fp32, CPU)."
import pytest
import torch
from prior_nbdev import DiffusionPriorNetwork
from conftest import perturb_, text_inputs
from test_prior_parity import assert_close_scaled

TOL = 1e-5  # relative to the output scale: see assert_close_scaled
CONFIGS = {
    'default': dict(dim=32, depth=2, dim_head=8, heads=4, max_text_len=8),
    'normformer+discrete': dict(dim=32, depth=2, dim_head=8, heads=4, max_text_len=8, normformer=True, num_timesteps=50),
    'self_cond+multi_tokens': dict(dim=32, depth=2, dim_head=16, heads=2, max_text_len=6, self_cond=True,
                                    num_time_embeds=2, num_image_embeds=2, num_text_embeds=3),
    'norm_in, no final proj/norm, no rotary': dict(dim=24, depth=1, dim_head=8, heads=3, max_text_len=5, norm_in=True,
                                                   norm_out=False, final_proj=False, rotary_emb=False, ff_mult=2),
    'wide heads (rotary on 32 of 64)': dict(dim=32, depth=1, dim_head=64, heads=2, max_text_len=4),
}


def pair(ref, config, seed=0):
    torch.manual_seed(seed)
    theirs = perturb_(ref.DiffusionPriorNetwork(**config)).eval()
    ours = DiffusionPriorNetwork(**config).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def inputs(config, batch=5, num_tokens=7, seed=3):
    dim = config['dim']
    text_embed, enc = text_inputs(batch, dim, num_tokens, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, dim, generator=gen)
    if config.get('num_timesteps'): t = torch.randint(0, config['num_timesteps'], (batch,), generator=gen)
    else: t = torch.randint(0, 1000, (batch,), generator=gen)
    return x, t, text_embed, enc


@pytest.mark.parametrize('name', CONFIGS)
@pytest.mark.parametrize('num_tokens', [3, 7, 12])  # shorter than, near, and longer than max_text_len
def test_forward_matches(ref, name, num_tokens):
    config = CONFIGS[name]
    ours, theirs = pair(ref, config)
    x, t, text_embed, enc = inputs(config, num_tokens=num_tokens)
    kw = dict(text_embed=text_embed, text_encodings=enc)
    if config.get('self_cond'): kw['self_cond'] = torch.randn_like(x)
    with torch.no_grad():
        assert_close_scaled(ours(x, t, **kw), theirs(x, t, **kw))
        for scale in (1., 2.5):
            assert_close_scaled(ours.forward_with_cond_scale(x, t, cond_scale=scale, **kw),
                                       theirs.forward_with_cond_scale(x, t, cond_scale=scale, **kw))
        # without text encodings: every text position is a null token
        kw_no_enc = {k: v for k, v in kw.items() if k != 'text_encodings'}
        assert_close_scaled(ours(x, t, **kw_no_enc), theirs(x, t, **kw_no_enc))


@pytest.mark.parametrize('name', ['default', 'self_cond+multi_tokens'])
def test_condition_dropout_draws_like_reference(ref, name):
    "Same seed, same dropped samples: the keep masks are drawn in the reference's order."
    config = CONFIGS[name]
    ours, theirs = pair(ref, config)
    x, t, text_embed, enc = inputs(config, batch=16)
    kw = dict(text_embed=text_embed, text_encodings=enc, text_cond_drop_prob=0.4, image_cond_drop_prob=0.3)
    with torch.no_grad():
        torch.manual_seed(7); a = ours(x, t, **kw)
        torch.manual_seed(7); b = theirs(x, t, **kw)
    assert_close_scaled(a, b)


def test_gradients_match(ref):
    config = CONFIGS['normformer+discrete']
    ours, theirs = pair(ref, config)
    x, t, text_embed, enc = inputs(config)
    for model in (ours, theirs):
        model.zero_grad()
        model(x, t, text_embed=text_embed, text_encodings=enc).square().mean().backward()
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    # the reference keeps the fixed rotary frequencies as a frozen parameter; we keep them as a buffer
    assert {n for n, q in theirs.named_parameters() if q.requires_grad} == set(dict(ours.named_parameters()))


def test_reference_keys_equal_ours(ref):
    for config in CONFIGS.values():
        assert list(DiffusionPriorNetwork(**config).state_dict()) == list(ref.DiffusionPriorNetwork(**config).state_dict())
