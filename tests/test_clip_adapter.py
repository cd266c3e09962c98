"OpenAIClipAdapter asks open_clip for OpenAI's weights by open_clip's name (no download happens here)."
import open_clip
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
