"Mistakes a user can make with the model get one clear message saying what was expected."
import pytest
import torch
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior


@pytest.fixture
def prior():
    return DiffusionPrior(DiffusionPriorNetwork(dim=16, depth=1, dim_head=8, heads=2, max_text_len=4), image_embed_dim=16, timesteps=20)


def test_wrong_embedding_dimension(prior):
    with pytest.raises(ValueError, match=r'image_embed must be \(batch, 16\), got \(3, 8\)'):
        prior(text_embed=torch.randn(3, 16), image_embed=torch.randn(3, 8), text_encodings=torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match=r'text_embed must be \(batch, 16\), got \(3, 32\)'):
        prior(text_embed=torch.randn(3, 32), image_embed=torch.randn(3, 16), text_encodings=torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match='the network has dim=16 but image_embed_dim=32'):
        DiffusionPrior(prior.net, image_embed_dim=32)


def test_text_encodings_of_the_wrong_width(prior):
    with pytest.raises(ValueError, match=r'text_encodings must be \(batch=3, tokens, 16\), got \(3, 4, 12\)'):
        prior(text_embed=torch.randn(3, 16), image_embed=torch.randn(3, 16), text_encodings=torch.randn(3, 4, 12))
    with pytest.raises(ValueError, match='text_encodings has width 12'):
        prior.net(torch.randn(3, 16), torch.zeros(3, dtype=torch.long), text_embed=torch.randn(3, 16), text_encodings=torch.randn(3, 4, 12))


def test_guidance_without_condition_dropout(prior):
    cond = dict(text_embed=torch.randn(2, 16), text_encodings=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match=r'cond_scale=2.0: guidance needs a prior trained with condition dropout'):
        prior.p_sample_loop((2, 16), cond, cond_scale=2.)


@pytest.mark.parametrize('kwargs,message', [
    (dict(beta_schedule='cosin'), "unknown beta_schedule 'cosin'; expected one of ['cosine', 'jsd', 'linear', 'quadratic', 'sigmoid']"),
    (dict(loss_type='mse'), "unknown loss_type 'mse'; expected one of ['huber', 'l1', 'l2']"),
    (dict(cond_drop_prob=1.5), r'cond_drop_prob must lie in \[0, 1\]'),
    (dict(predict_v=True, training_clamp_l2norm=True), 'predict_v=True makes the network predict v'),
])
def test_bad_configuration(prior, kwargs, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(']', r'\]') if 'unknown' in message else message):
        DiffusionPrior(prior.net, image_embed_dim=16, **kwargs)


def test_missing_or_superfluous_conditions(prior):
    with pytest.raises(ValueError, match='conditions on text encodings'):
        prior(text_embed=torch.randn(2, 16), image_embed=torch.randn(2, 16))
    no_enc = DiffusionPrior(prior.net, image_embed_dim=16, timesteps=20, condition_on_text_encodings=False)
    with pytest.raises(ValueError, match='condition_on_text_encodings=False and would ignore them'):
        no_enc(text_embed=torch.randn(2, 16), image_embed=torch.randn(2, 16), text_encodings=torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match='needs a CLIP adapter'):
        prior(text=torch.ones(2, 5, dtype=torch.long), image_embed=torch.randn(2, 16))
