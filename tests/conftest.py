"Shared fixtures: the reference implementation (dalle2-pytorch 1.15.6) as a test oracle, and paired models."
import os
import pytest
import torch

torch.set_num_threads(int(os.environ.get('PRIOR_NBDEV_TEST_THREADS', '1')))


@pytest.fixture(scope='session')
def ref():
    "The reference module `dalle2_pytorch.dalle2_pytorch`, or a skip with the install command when it is missing."
    try:
        import dalle2_pytorch.dalle2_pytorch as reference
    except ImportError as e:  # pragma: no cover - the dev install always has it
        pytest.skip(f'reference not installed ({e}); run: pip install --no-deps dalle2-pytorch==1.15.6')
    return reference


def perturb_(module, seed=0, scale=0.2):
    "Move every parameter off its initial value, so that gains of one and zero biases cannot hide a mismatch."
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return module


def text_inputs(batch, dim, num_tokens, seed=1, lengths=None):
    "Text embeddings and encodings whose later positions are zero padding, as a CLIP adapter returns them."
    gen = torch.Generator().manual_seed(seed)
    text_embed = torch.randn(batch, dim, generator=gen)
    enc = torch.randn(batch, num_tokens, dim, generator=gen)
    lengths = lengths if lengths is not None else torch.randint(1, num_tokens + 1, (batch,), generator=gen).tolist()
    for i, n in enumerate(lengths): enc[i, n:] = 0
    return text_embed, enc
