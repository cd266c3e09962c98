"One description of a prior: every field of PriorConfig and NetConfig survives config -> model -> file -> model."
import dataclasses
import pytest
import torch
from prior_nbdev.network import NetConfig
from prior_nbdev.prior import PriorConfig
from prior_nbdev.legacy import prior_from_config
from prior_nbdev.checkpoint import save_prior, load_prior
from prior_nbdev.prior import DiffusionPrior

BASE_NET = dict(dim=16, depth=1, dim_head=8, heads=2, max_text_len=4)
# a value other than the default for every field (a new field without an entry here fails test_every_field_is_covered)
NET_VALUES = dict(dim=24, depth=2, num_timesteps=30, num_time_embeds=2, num_image_embeds=2, num_text_embeds=2, max_text_len=5,
                  self_cond=True, dim_head=4, heads=3, ff_mult=2, norm_in=True, norm_out=False, attn_dropout=0.1, ff_dropout=0.1,
                  final_proj=False, normformer=True, rotary_emb=False, numerics='1.10.8')
PRIOR_VALUES = dict(net=None, image_embed_dim=None, clip=dict(make='open_clip', model='RN50', pretrained='openai'),
                    image_size=64, image_channels=1, timesteps=30, sample_timesteps=7, cond_drop_prob=0.3, text_cond_drop_prob=0.2,
                    image_cond_drop_prob=0.1, loss_type='huber', predict_x_start=False, predict_v=True, beta_schedule='linear',
                    condition_on_text_encodings=False, sampling_clamp_l2norm=True, sampling_final_clamp_l2norm=True,
                    training_clamp_l2norm=True, init_image_embed_l2norm=True, image_embed_scale=2.5, guidance=True,
                    time_sampling='logit_normal', time_sampling_loc=-0.5, time_sampling_scale=0.8)


def configs():
    "(name, config) with one field changed from its default, for every field, and one with many changed at once."
    out = []
    for name, value in NET_VALUES.items():
        net = {**BASE_NET, name: value}
        if name == 'dim': net['dim'] = value
        out.append((f'net.{name}', PriorConfig(net=NetConfig(**net), timesteps=30 if name == 'num_timesteps' else 1000)))
    for name, value in PRIOR_VALUES.items():
        if value is None: continue   # net and image_embed_dim are changed through the net fields above
        extra = dict(predict_v=False) if name == 'training_clamp_l2norm' else {}
        out.append((name, PriorConfig(net=NetConfig(**BASE_NET), **{name: value}, **extra)))
    many = {k: v for k, v in PRIOR_VALUES.items() if v is not None and k != 'training_clamp_l2norm'}
    out.append(('many', PriorConfig(net=NetConfig(**{**BASE_NET, 'self_cond': True, 'num_timesteps': 30, 'normformer': True}), **many)))
    return out


def test_every_field_is_covered():
    assert set(NET_VALUES) == {f.name for f in dataclasses.fields(NetConfig)}
    assert set(PRIOR_VALUES) == {f.name for f in dataclasses.fields(PriorConfig)}
    for cls, values in ((NetConfig, NET_VALUES), (PriorConfig, PRIOR_VALUES)):
        for f in dataclasses.fields(cls):
            if values[f.name] is not None and f.default is not dataclasses.MISSING:
                assert values[f.name] != f.default, f'{cls.__name__}.{f.name}: the test value is the default'


def outputs(prior):
    "The network's prediction and a few samples, from fixed inputs and seeds."
    g = torch.Generator().manual_seed(0)
    d = prior.image_embed_dim
    te, enc = torch.randn(3, d, generator=g), torch.randn(3, 2, d, generator=g)
    cond = dict(text_embed=te, text_encodings=enc) if prior.condition_on_text_encodings else dict(text_embed=te)
    x, t = torch.randn(3, d, generator=g), torch.tensor([0, 5, 9])
    pred = prior.net(x, t, self_cond=torch.randn(3, d, generator=g) if prior.net.self_cond else None, **cond)
    samples = prior.sample(**cond, timesteps=4, generator=torch.Generator().manual_seed(1), num_samples_per_batch=2)
    return pred, samples


@pytest.mark.parametrize('name,config', configs(), ids=[n for n, _ in configs()])
def test_round_trip(name, config, tmp_path):
    torch.manual_seed(0)
    prior = prior_from_config(config).eval()
    assert prior.config == config
    if name.startswith('net.'):
        field = name.split('.', 1)[1]
        assert getattr(prior.net.config, field) == NET_VALUES[field]
    before = outputs(prior)
    for path in (tmp_path / 'p.safetensors', tmp_path / 'p.pt'):
        save_prior(prior, path)
        loaded = load_prior(path).eval()
        assert loaded.config == config, path.name
        for a, b in zip(before, outputs(loaded)): torch.testing.assert_close(a, b, rtol=0, atol=0)
    prior.save_pretrained(tmp_path / 'folder')
    back = DiffusionPrior.from_pretrained(tmp_path / 'folder').eval()
    assert back.config == config
    for a, b in zip(before, outputs(back)): torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the config alone, through JSON-like data, is the same config
    assert PriorConfig.from_dict(config.to_dict()) == config
