"OpenAIClipAdapter asks open_clip for OpenAI's weights by open_clip's name (no download happens here)."
import open_clip
import pytest
from prior_nbdev.clip import OpenAIClipAdapter


def test_openai_adapter_requests_openai_weights(monkeypatch):
    calls = []
    tiny = open_clip.CLIP(embed_dim=32, vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16, head_width=32),
                          text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=1))
    def fake_create_model(name, pretrained=None, **kwargs):
        calls.append((name, pretrained)); return tiny
    monkeypatch.setattr(open_clip, 'create_model', fake_create_model)
    adapter = OpenAIClipAdapter('ViT-L/14')
    assert calls == [('ViT-L-14', 'openai')]
    embed, enc = adapter.embed_text(adapter.tokenize(['a photo of a cat']))
    assert embed.shape == (1, 32) and enc.shape == (1, 77, 32)
    # CLIP's BPE end-of-text token (49407) is the highest id: encodings stop there
    tokens = adapter.tokenize(['a cat'])
    end = int((tokens[0] == 49407).nonzero()[0])
    assert (enc.new_tensor(adapter.embed_text(tokens)[1][0, end + 1:]) == 0).all()


def test_weights_that_cannot_be_downloaded_fail_at_once(monkeypatch):
    "A pretrained tag with the Hub out of reach names the CLIP at once instead of retrying for a minute."
    import time
    import prior_nbdev.clip as clip_module
    from prior_nbdev.clip import make_clip
    monkeypatch.setattr(clip_module, 'hub_reachable', lambda: 'https://huggingface.co cannot be reached (test)')
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    start = time.time()
    with pytest.raises(ConnectionError, match=r"cannot download the weights of CLIP ViT-L-14 \(pretrained='openai'\)"):
        make_clip('openai', 'ViT-L-14')
    assert time.time() - start < 5


def test_a_registered_builder_gets_its_spec_at_construction(monkeypatch):
    "A builder that takes `spec=` is handed it; one that does not is wrapped (its adapter is never changed from outside)."
    import torch
    from torch import nn
    import prior_nbdev.clip as clip_module

    class Plain(nn.Module):       # a third-party adapter that records no spec
        dim_latent = 4
        def __init__(self): super().__init__(); self.proj = nn.Linear(4, 4)
        def embed_text(self, tokens): return self.proj(tokens.float()), None

    class Named(Plain):
        def __init__(self, spec): super().__init__(); self.spec = spec

    built = {}
    def plain(model=None, pretrained=None): built['plain'] = Plain(); return built['plain']
    def named(model=None, pretrained=None, spec=None): return Named(spec)
    monkeypatch.setattr(clip_module, 'clip_builders', lambda: dict(plain=plain, named=named))

    wrapped = clip_module.make_clip('plain', 'tiny', 'local.bin')
    assert wrapped.spec == dict(make='plain', model='tiny', pretrained='local.bin')
    assert not hasattr(built['plain'], 'spec')                      # the builder's own object is left as it was
    assert wrapped.dim_latent == 4 and wrapped.adapter is built['plain']
    tokens = torch.ones(2, 4)
    assert torch.equal(wrapped.embed_text(tokens)[0], built['plain'].embed_text(tokens)[0])
    own = clip_module.make_clip('named', 'tiny')
    assert type(own) is Named and own.spec == dict(make='named', model='tiny', pretrained=None)
