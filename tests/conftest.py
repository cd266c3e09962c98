"""Shared fixtures: the reference implementation (dalle2-pytorch 1.15.6) as a test oracle, paired models, and the CI rule.

In CI (the environment variable `CI` set to anything but '', 0, false or no, as CI services do) a skipped test is a
failure: a missing oracle, command or package would otherwise turn checks off without anyone noticing. The one
exception is a test marked `cuda` on a machine without a GPU.
"""
import os
import pytest
import torch

torch.set_num_threads(int(os.environ.get('PRIOR_NBDEV_TEST_THREADS', '1')))

NO_GPU = 'needs a CUDA GPU (marked cuda); this machine has none'


def in_ci()->bool:
    return os.environ.get('CI', '').strip().lower() not in ('', '0', 'false', 'no')


def pytest_configure(config):
    config.addinivalue_line('markers', f'cuda: {NO_GPU}: skipped elsewhere, the only skip allowed in CI')


def pytest_runtest_setup(item):
    if item.get_closest_marker('cuda') is not None and not torch.cuda.is_available(): pytest.skip(NO_GPU)


def _skip_reason(report)->str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    "In CI, turn every skip into a failure that names its reason, except a `cuda` test's skip for want of a GPU."
    report = (yield).get_result()
    if not (report.skipped and in_ci()) or hasattr(report, 'wasxfail'): return
    reason = _skip_reason(report)
    if item.get_closest_marker('cuda') is not None and reason.endswith(NO_GPU): return
    report.outcome = 'failed'
    report.longrepr = (f"skipped in CI (CI={os.environ['CI']!r}), where no test may be skipped except a cuda test without a GPU: "
                       f'{reason}\nInstall what the skip names (see the README install command) and run again.')


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


def seeded_(module, seed=0):
    "Set every parameter from one generator in name order: the same weights whichever code built the module (ours or the reference's)."
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda item: item[0]):
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim >= 2: p.copy_(0.5 * noise / p.shape[-1] ** 0.5)   # small enough that sampling chains do not amplify rounding
            elif name.endswith('.g'): p.copy_(1 + 0.2 * noise)    # LayerNorm gains near one
            else: p.copy_(0.2 * noise)
    return module


def text_inputs(batch, dim, num_tokens, seed=1, lengths=None):
    "Text embeddings and encodings whose later positions are zero padding, as a CLIP adapter returns them."
    gen = torch.Generator().manual_seed(seed)
    text_embed = torch.randn(batch, dim, generator=gen)
    enc = torch.randn(batch, num_tokens, dim, generator=gen)
    lengths = lengths if lengths is not None else torch.randint(1, num_tokens + 1, (batch,), generator=gen).tolist()
    for i, n in enumerate(lengths): enc[i, n:] = 0
    return text_embed, enc
