"Label-free metrics (metrics chapter): known answers, one implementation against another, and the packaged shapes prior."
import math
import pytest
import torch
import torch.nn.functional as F
from prior_nbdev.metrics import (frechet_distance, cmmd, knn_radii, manifold_metrics, conditional_spread, label_free_metrics,
                                 LABEL_FREE_KEYS)

MODES = torch.tensor([[0., 3.], [3., 0.], [0., -3.], [-3., 0.]])


def world(n=800, seed=0):
    "Captions naming one of four modes (their text embeddings), real embeddings spread around the mode, and a sampler."
    g = torch.Generator().manual_seed(seed)
    caption = torch.randint(0, 4, (n,), generator=g)
    text = F.one_hot(caption, 4).float() + 0.05 * torch.randn(n, 4, generator=g)
    real = MODES[caption] + 0.6 * torch.randn(n, 2, generator=g)
    def draw(spread=0.6, K=5, modes=None):
        centre = MODES[caption if modes is None else modes]
        return centre[:, None] + spread * torch.randn(n, K, 2, generator=g)
    return caption, text, real, draw


def metrics(draws, text, real, **kw):
    return label_free_metrics(draws[:, 0], real, text_embeds=text, samples_per_text=draws, normalize=False, sigma=1., **kw)


def test_identical_sets():
    x = torch.randn(500, 6, generator=torch.Generator().manual_seed(1))
    m = label_free_metrics(x, x, normalize=False, k=5)
    assert abs(m['fd']) < 1e-4
    assert (m['precision'], m['recall'], m['coverage']) == (1., 1., 1.)
    assert m['density'] == pytest.approx(6 / 5)           # each point lies in its own ball and in its 5 neighbours'
    kxx = torch.exp(-torch.cdist(x.double(), x.double()) ** 2 / 200)
    off_diagonal = (kxx.sum() - 500) / (500 * 499)
    assert m['cmmd'] == pytest.approx(1000 * 2 * (off_diagonal - 1).item() / 500, rel=1e-4)   # the unbiased estimate of a set against itself: -O(1/n)


def test_disjoint_sets():
    x = torch.randn(400, 6, generator=torch.Generator().manual_seed(2))
    shift = torch.full((6,), 5.)
    m = label_free_metrics(x + shift, x, normalize=False)
    assert m['fd'] == pytest.approx(shift.pow(2).sum().item(), rel=1e-4)
    assert (m['precision'], m['recall'], m['density'], m['coverage']) == (0., 0., 0., 0.)
    assert m['cmmd'] > 100 * abs(label_free_metrics(x[:200], x[200:], normalize=False)['cmmd'])


def test_same_distribution_is_near_zero_and_unbiased():
    "Two samples of one distribution: CMMD scatters around 0 (unbiased), FD stays positive (biased) and shrinks with n."
    g = torch.Generator().manual_seed(3)
    unit = lambda n: F.normalize(torch.randn(n, 16, generator=g), dim=-1)
    values = [cmmd(unit(300), unit(300)) for _ in range(20)]
    assert abs(sum(values) / len(values)) < 3 * torch.tensor(values).std().item() / math.sqrt(len(values))
    assert min(values) < 0 < max(values)
    small, large = (sum(frechet_distance(unit(n), unit(n)) for _ in range(3)) for n in (200, 1600))
    assert 0 < large < small / 4


def test_collapse_and_over_dispersion():
    caption, text, real, draw = world()
    good = metrics(draw(), text, real)
    mean = metrics(draw(0.), text, real)                                     # every caption's centre, every time
    one_mode = metrics(draw(modes=torch.zeros_like(caption)), text, real)    # one mode whatever the caption
    wide = metrics(draw(1.2), text, real)
    assert good['precision'] > 0.95 and good['recall'] > 0.95 and good['coverage'] > 0.9
    assert good['conditional_spread'] == pytest.approx(1., abs=0.06)
    assert mean['precision'] == 1. and mean['recall'] < 0.05 and mean['coverage'] < 0.05 and mean['conditional_spread'] == 0.
    assert one_mode['precision'] > 0.95 and one_mode['recall'] < 0.35 and one_mode['coverage'] < 0.35 and one_mode['fd'] > 10 * good['fd'] + 1
    assert wide['precision'] < 0.9 and wide['density'] < 0.75 and wide['recall'] > 0.99
    assert wide['conditional_spread'] == pytest.approx(2., abs=0.12)
    assert min(m['cmmd'] for m in (mean, one_mode, wide)) > 10 * abs(good['cmmd'])


def test_chunks_do_not_change_the_answer():
    g = torch.Generator().manual_seed(4)
    real, samples = torch.randn(300, 5, generator=g), 1.3 * torch.randn(250, 5, generator=g)
    assert manifold_metrics(real, samples, chunk=7) == manifold_metrics(real, samples)
    assert torch.allclose(knn_radii(real, 3, chunk=11), knn_radii(real, 3), rtol=1e-5)   # blocks of another size round differently
    assert cmmd(real, samples, chunk=13) == pytest.approx(cmmd(real, samples), rel=1e-6)


def test_cmmd_is_the_unbiased_estimate():
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(40, 3, generator=g), torch.randn(30, 3, generator=g) + 0.5
    k = lambda a, b: torch.exp(-torch.cdist(a.double(), b.double()) ** 2 / (2 * 0.7 ** 2))
    kxx, kyy = k(x, x), k(y, y)
    expected = ((kxx.sum() - kxx.trace()) / (40 * 39) + (kyy.sum() - kyy.trace()) / (30 * 29) - 2 * k(x, y).mean()) * 1000
    assert cmmd(x, y, sigma=0.7) == pytest.approx(expected.item(), rel=1e-4)


def test_frechet_distance_against_eigenvalues_of_the_product():
    "Tr (S1 S2)^(1/2) is the sum of the square roots of the (real, non-negative) eigenvalues of S1 S2."
    g = torch.Generator().manual_seed(6)
    x = torch.randn(600, 5, generator=g) @ torch.randn(5, 5, generator=g)
    y = torch.randn(500, 5, generator=g) @ torch.randn(5, 5, generator=g) + 1.
    cx, cy = torch.cov(x.T.double()), torch.cov(y.T.double())
    cross = torch.linalg.eigvals(cx @ cy).real.clamp(min=0).sqrt().sum()
    expected = (x.double().mean(0) - y.double().mean(0)).pow(2).sum() + cx.trace() + cy.trace() - 2 * cross
    assert frechet_distance(x, y) == pytest.approx(expected.item(), rel=1e-4)


def test_conditional_spread_uses_the_nearest_captions():
    caption, text, real, draw = world(seed=7)
    assert conditional_spread(draw(), text, real) == pytest.approx(1., abs=0.06)
    shuffled = text[torch.randperm(len(text), generator=torch.Generator().manual_seed(0))]    # neighbours from any mode
    assert conditional_spread(draw(), shuffled, real) < 0.3


def test_equal_counts_and_row_limits():
    g = torch.Generator().manual_seed(8)
    samples, real = torch.randn(700, 8, generator=g), torch.randn(300, 8, generator=g)
    m = label_free_metrics(samples, real, max_rows=120)
    assert (m['rows'], m['pairwise_rows']) == (300, 120)
    assert m == label_free_metrics(samples, real, max_rows=120)              # the same rows for the same seed
    assert m != label_free_metrics(samples, real, max_rows=120, seed=1)
    assert set(LABEL_FREE_KEYS) - set(m) == {'conditional_spread'}


@pytest.mark.parametrize('kwargs, message', [
    (dict(samples=torch.zeros(5, 3), real=torch.zeros(5, 4)), 'samples (5, 3) and real (5, 4) must be (rows, dim) of one dim'),
    (dict(samples=torch.zeros(5, 4), real=torch.zeros(5, 4), samples_per_text=torch.zeros(5, 2, 4)), 'needs both text_embeds and samples_per_text'),
    (dict(samples=torch.zeros(5, 4), real=torch.zeros(5, 4), text_embeds=torch.zeros(4, 4), samples_per_text=torch.zeros(5, 2, 4)), 'need one row per row of real (5, 4)'),
])
def test_errors_name_the_inputs(kwargs, message):
    with pytest.raises(ValueError, match=None) as e: label_free_metrics(**kwargs)
    assert message in str(e.value)


def test_packaged_shapes_prior():
    "Fresh shapes-world pairs: the prior's samples sit among the real image embeddings and vary per caption; the raw text (the modality gap) does neither."
    pytest.importorskip('open_clip')
    from prior_nbdev.lab.shapes import make_shapes_scenes, shapes_clip, ASSETS
    from prior_nbdev.clip import embed_pairs
    from prior_nbdev.checkpoint import load_prior
    images, captions, _ = make_shapes_scenes(300, seed=99)
    real, text = embed_pairs(shapes_clip(), images, captions)
    prior = load_prior(ASSETS / 'shapes_prior.safetensors').eval()
    torch.manual_seed(0)
    draws = prior.sample(text_embed=text.repeat_interleave(3, 0), num_samples_per_batch=1, timesteps=16).view(300, 3, -1)
    sampled = label_free_metrics(draws[:, 0], real, text_embeds=text, samples_per_text=draws)
    raw_text = label_free_metrics(text, real, text_embeds=text, samples_per_text=text[:, None].expand(-1, 3, -1))
    assert sampled['precision'] > 0.6 and sampled['coverage'] > 0.6 and 0.5 < sampled['conditional_spread'] < 1.5
    assert raw_text['precision'] < sampled['precision'] / 2 and raw_text['density'] < 0.2 and raw_text['fd'] > 3 * sampled['fd']
    assert raw_text['conditional_spread'] < 1e-3
