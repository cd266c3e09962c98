"""Checks by value where a looser check once let a wrong number through: old eras' sampling, negative prompts, guidance on
batches of mixed timesteps, the best-of-n pick, ground-truth fidelity, the explorer's similarity, and the CI rule."""
import os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
from prior_nbdev.checkpoint import load_prior
from prior_nbdev.sampling import most_text_similar
from prior_nbdev.lab.truth import ground_truth_report, OWN_LABELS
from conftest import perturb_
from test_prior_parity import assert_close_scaled
from test_checkpoints import ERAS, FIXTURES

TESTS = Path(__file__).parent


# --- every era's sampling: the prefix cache against the whole sequence, and the first step against the release's numbers

def era(release):
    fixture = torch.load(FIXTURES / f'dalle2_{release}_expected.pt', weights_only=True)
    return fixture, load_prior(FIXTURES / f'dalle2_{release}_prior.pth', legacy=ERAS[release]).eval()


@pytest.mark.parametrize('release', ERAS)
def test_cached_sampling_equals_the_whole_sequence_for_every_era(release):
    fixture, prior = era(release)
    cond = dict(text_embed=fixture['text_embed'], text_encodings=fixture['text_encodings'])
    assert (cond['text_encodings'] == 0).all(-1).any(), 'the fixture needs padded encodings, or a key mask goes untested'
    scales = [1.] if prior.net.guidance_refusal is not None else [1., 3.]
    for sampler, timesteps in (('ddpm', None), ('ddim_dalle2', 6), ('ddim', 6)):
        for cond_scale in scales:
            out = {}
            for cached in (True, False):
                torch.manual_seed(0)
                out[cached] = prior.p_sample_loop((3, 16), cond, cond_scale=cond_scale, timesteps=timesteps, sampler=sampler, cache_text=cached)
            diff = (out[True] - out[False]).abs().max().item()
            assert diff < 1e-5, f'{release} ({prior.net.config.numerics} numerics), {sampler}, cond_scale {cond_scale}: cached and whole-sequence samples differ by {diff:.3g}'


@pytest.mark.parametrize('release', ERAS)
@pytest.mark.parametrize('cached', [True, False])
def test_first_sampling_step_is_the_release_s_prediction(release, cached):
    "The sampler's first x0 estimate (t = T-1, from the given latents) is what the release's network computed there."
    fixture, prior = era(release)
    cond = dict(text_embed=fixture['text_embed'], text_encodings=fixture['text_encodings'])
    last = int(fixture['t'][-1])
    assert last == prior.noise_scheduler.num_timesteps - 1
    scales = {1.: 'cond_scale_1'} if prior.net.guidance_refusal is not None else {1.: 'cond_scale_1', 3.: 'cond_scale_3'}
    for cond_scale, key in scales.items():
        _, steps = prior.p_sample_loop((3, 16), cond, cond_scale=cond_scale, latents=fixture['x'], return_intermediates=True, cache_text=cached)
        assert int(steps['t'][0]) == last
        assert_close_scaled(steps['x0'][0][-1] * prior.image_embed_scale, fixture['expected'][key][-1])


# --- guidance: the null prediction, a negative prompt, mixed timesteps ------------------------------------------------

def small_prior(self_cond=False):
    torch.manual_seed(0)
    net = perturb_(DiffusionPriorNetwork(dim=16, depth=2, dim_head=8, heads=2, max_text_len=4, self_cond=self_cond))
    return DiffusionPrior(net, image_embed_dim=16, timesteps=50, cond_drop_prob=0.2).eval()


def branches(net, x, t, conds:dict)->dict:
    "The network's predictions for each named text condition (None: the unconditional one), each computed on its own."
    out, ones = {}, torch.ones(len(x), dtype=torch.bool)
    for name, cond in conds.items():
        keep = ones if cond is not None else ~ones
        cond = cond or dict(text_embed=conds['cond']['text_embed'], text_encodings=conds['cond']['text_encodings'])
        out[name] = net.predict(x, t, **cond, text_keep=keep, image_keep=keep)
    return out


@pytest.mark.parametrize('cached', [True, False])
def test_guidance_is_the_hand_computed_combination(cached):
    "x0 at the first step = null + s (cond - null), or with a negative prompt neg + s (cond - neg), at several strengths s."
    prior = small_prior()
    g = torch.Generator().manual_seed(1)
    cond = dict(text_embed=F.normalize(torch.randn(3, 16, generator=g), dim=-1), text_encodings=torch.randn(3, 4, 16, generator=g))
    negative = dict(text_embed=F.normalize(torch.randn(3, 16, generator=g), dim=-1), text_encodings=torch.randn(3, 4, 16, generator=g))
    latents = torch.randn(3, 16, generator=g)
    t = torch.full((3,), 49)
    with torch.no_grad(): p = branches(prior.net, latents, t, dict(cond=cond, null=None, negative=negative))
    assert (p['cond'] - p['null']).abs().max() > 0.1 and (p['cond'] - p['negative']).abs().max() > 0.1
    for s in (0.5, 1., 2., 3.5):
        def first_x0(**kw):
            _, steps = prior.p_sample_loop((3, 16), cond, cond_scale=s, timesteps=5, sampler='ddim', latents=latents,
                                           return_intermediates=True, cache_text=cached, **kw)
            assert int(steps['t'][0]) == 49
            return steps['x0'][0] * prior.image_embed_scale
        assert_close_scaled(first_x0(), p['null'] + s * (p['cond'] - p['null']))
        assert_close_scaled(first_x0(negative_cond=negative), p['negative'] + s * (p['cond'] - p['negative']))


def test_one_negative_prompt_serves_every_prompt():
    "`sample(negative_text_embed=...)` with one negative prompt for three prompts: each row guided away from it."
    prior = small_prior()
    g = torch.Generator().manual_seed(2)
    te, enc = F.normalize(torch.randn(3, 16, generator=g), dim=-1), torch.randn(3, 4, 16, generator=g)
    nte, nenc = F.normalize(torch.randn(1, 16, generator=g), dim=-1), torch.randn(1, 4, 16, generator=g)
    latents = torch.randn(3, 16, generator=g)
    t = torch.full((3,), 49)
    negative = dict(text_embed=nte.expand(3, -1), text_encodings=nenc.expand(3, -1, -1))
    with torch.no_grad(): p = branches(prior.net, latents, t, dict(cond=dict(text_embed=te, text_encodings=enc), negative=negative))
    _, steps = prior.sample(text_embed=te, text_encodings=enc, negative_text_embed=nte, negative_text_encodings=nenc, cond_scale=2.5,
                            num_samples_per_batch=1, timesteps=5, sampler='ddim', latents=latents, return_intermediates=True)
    assert_close_scaled(steps['x0'][0] * prior.image_embed_scale, p['negative'] + 2.5 * (p['cond'] - p['negative']))


@pytest.mark.parametrize('self_cond', [False, True])
def test_prefix_cache_guides_a_batch_of_mixed_timesteps(self_cond):
    "`predict_cached` on samples at different timesteps equals `forward_with_cond_scale`, and each row is its own timestep's."
    net = small_prior(self_cond).net
    g = torch.Generator().manual_seed(3)
    te, enc, x = torch.randn(4, 16, generator=g), torch.randn(4, 4, 16, generator=g), torch.randn(4, 16, generator=g)
    sc = torch.randn(4, 16, generator=g) if self_cond else None
    mixed = torch.tensor([0, 17, 500, 999])
    with torch.no_grad():
        cache = net.cache_text(te, enc, with_null=True)
        for scale in (2., 3.):
            full = net.forward_with_cond_scale(x, mixed, text_embed=te, text_encodings=enc, self_cond=sc, cond_scale=scale)
            assert_close_scaled(net.predict_cached(cache, x, mixed, sc, cond_scale=scale), full)
            for i in range(4):
                one = net.forward_with_cond_scale(x[i:i + 1], mixed[i:i + 1], text_embed=te[i:i + 1], text_encodings=enc[i:i + 1],
                                                  self_cond=None if sc is None else sc[i:i + 1], cond_scale=scale)
                assert_close_scaled(full[i:i + 1], one)


def test_prefix_cache_guides_mixed_timesteps_for_a_current_era_checkpoint():
    fixture, prior = era('1.15.6')
    kw = dict(text_embed=fixture['text_embed'], text_encodings=fixture['text_encodings'])
    with torch.no_grad():
        cache = prior.net.cache_text(**kw, with_null=True)
        assert_close_scaled(prior.net.predict_cached(cache, fixture['x'], fixture['t'], cond_scale=3.), fixture['expected']['cond_scale_3'])


# --- keeping the best of n candidates ----------------------------------------------------------------------------------

E = torch.eye(8)
# per (prompt, image): three candidates; the answer is the one with the highest cosine to the prompt's text
CANDIDATES = torch.stack([
    10 * E[0] + 30 * E[1], E[0] + 0.1 * E[1], -E[0],     # prompt 0 (text e0), image 0: 1 (the longest, 0, has the largest dot product)
    E[0], E[0] + E[1], -E[1],                            # prompt 0, image 1: 0
    E[2] - E[1], -E[2], 2 * E[2] + 0.1 * E[3],           # prompt 1 (text e2), image 0: 2
    E[1], E[2], -E[2]])                                  # prompt 1, image 1: 1
TEXTS, ANSWER = torch.stack([E[0], E[2]]), [1, 0, 2, 1]


def test_most_text_similar_on_a_hand_built_case():
    kept, index = most_text_similar(CANDIDATES.view(4, 3, 8), TEXTS.repeat_interleave(2, 0))
    assert index.tolist() == ANSWER, f'kept candidates {index.tolist()}; the most text-similar are {ANSWER}'
    assert torch.equal(kept, CANDIDATES.view(4, 3, 8)[torch.arange(4), torch.tensor(ANSWER)])


def test_sample_keeps_the_most_text_similar_candidate():
    "`sample` with `num_samples_per_batch=3` and two images per prompt, its candidates replaced by the hand-built ones."
    torch.manual_seed(0)
    prior = DiffusionPrior(DiffusionPriorNetwork(dim=8, depth=1, dim_head=8, heads=1, max_text_len=1), image_embed_dim=8, timesteps=10,
                           condition_on_text_encodings=False).eval()
    seen = []
    def candidates(shape, text_cond, **kw):
        seen.append((shape, text_cond['text_embed']))
        return CANDIDATES.clone()
    prior.p_sample_loop = candidates
    kept = prior.sample(text_embed=TEXTS, num_samples_per_batch=3, num_images_per_prompt=2)
    assert seen[0][0] == (12, 8) and torch.equal(seen[0][1], TEXTS.repeat_interleave(6, 0))   # prompt-major, then images, then candidates
    which = [[torch.equal(k, c) for c in group].index(True) for k, group in zip(kept, CANDIDATES.view(4, 3, 8))]
    assert which == ANSWER, f'sample kept candidates {which} of each (prompt, image); the most text-similar are {ANSWER}'


# --- ground-truth fidelity on a hand-built world ------------------------------------------------------------------------

class Probes:
    "Reads three labels from the signs of coordinates 0, 1 and 3 (coordinate 2 carries the similarity to the text)."
    def read(self, embeds): return {'color': (embeds[:, 0] > 0).long(), 'shape': (embeds[:, 1] > 0).long(), 'size': (embeds[:, 3] > 0).long()}


class Candidates:
    "A stand-in prior whose `sample` returns two fixed candidates per caption, whatever the seed or guidance."
    device = torch.device('cpu')
    def __init__(self, candidates): self.candidates = candidates
    def sample(self, text_embed, num_samples_per_batch, text_encodings, cond_scale, timesteps):
        assert num_samples_per_batch == 1 and text_embed.shape == (self.candidates.shape[0] * 2, 4)
        return self.candidates.reshape(-1, 4)


T = [0., 0., 1., 0.]
FIDELITY_WORLD = dict(
    # own labels (color, shape, size; -1: does not apply), own image, and two candidates (the second more text-similar in rows 0-2)
    labels=dict(color=[1, 0, 1, 1], shape=[1, 1, 0, 1], size=[1, -1, -1, -1]),
    images=[[1, 1, 0, 1], [-1, 1, 0, -1], [1, -1, 0, -1], [-1, 1, 0, -1]],                 # row 3's image reads color 0: an imperfect ceiling
    candidates=[[[1, 1, 1, 1], [-1, 1, 2, 1]],          # first right, second (kept from 2) wrong in color
                [[1, -1, 1, -1], [-1, 1, 2, -1]],       # first wrong in both, second (kept) right
                [[-1, -1, 1, -1], [1, -1, 3, -1]],      # first wrong in color, second (kept) right
                [[1, 1, 1, -1], [-1, -1, 0.5, -1]]])    # first (kept: more similar) right, second wrong in both
# by hand: share of the 4 captions whose every claimed label the probes read (claims: each caption's labels that apply)
EXPECTED_FIDELITY = {'text embedding': 0.,                # reads (0, 0, 0): every caption claims a 1 somewhere
                     'own image (ceiling)': 0.75,         # row 3 fails
                     'prior, 1 candidate, cond_scale 1': 0.5,    # first candidates: rows 0, 3; second ones: rows 1, 2; averaged
                     'prior, 2 candidates, cond_scale 1': 0.75}  # the kept ones: rows 1, 2, 3


def test_ground_truth_fidelity_on_a_hand_built_world():
    w = {k: torch.tensor(v) for k, v in FIDELITY_WORLD.items() if k != 'labels'}
    labels = {k: torch.tensor(v) for k, v in FIDELITY_WORLD['labels'].items()}
    g = torch.Generator().manual_seed(0)
    train_text, train_image = torch.randn(20, 4, generator=g), torch.randn(20, 4, generator=g)
    report = ground_truth_report(Candidates(w['candidates'].float()), Probes(), OWN_LABELS, [f'caption {i}' for i in range(4)],
                                 torch.tensor([T] * 4), w['images'].float(), [f'train {i}' for i in range(20)], train_text, train_image,
                                 labels=labels, settings=((1, 1.), (2, 1.)), timesteps=2)
    methods = report['methods']
    assert set(methods) == set(EXPECTED_FIDELITY) | {'ridge (mean predictor)'}
    got = {name: methods[name]['fidelity'] for name in EXPECTED_FIDELITY}
    assert got == pytest.approx(EXPECTED_FIDELITY), got
    assert methods['prior, 2 candidates, cond_scale 1']['fidelity_vs_ceiling'] == pytest.approx(1.)
    assert methods['prior, 1 candidate, cond_scale 1']['fidelity_vs_ceiling'] == pytest.approx(0.5 / 0.75)


# --- the explorer's similarity ------------------------------------------------------------------------------------------

class TableClip:
    "A stand-in CLIP: image i (its pixels all i) embeds as IMAGES[i]; caption 'c<i>' as TEXTS[i]; 'prompt' as PROMPT."
    IMAGES = torch.tensor([[1., 0, 0], [0, 1, 0], [0.6, 0.8, 0], [-1, 0, 0], [0, 0, 1], [1, 1, 0]])
    TEXTS = torch.tensor([[1., 0, 0], [0, 1, 0], [0.6, 0.8, 0], [1, 0, 0], [0, 1, 1], [1, 0, 0]])
    PROMPT = torch.tensor([[2., 0, 0]])
    def embed_image(self, x): return self.IMAGES[(x[:, 0, 0, 0] * 255).round().long()], None
    def tokenize(self, captions): return torch.tensor([-1 if c == 'prompt' else int(c[1:]) for c in captions])
    def embed_text(self, tokens): return torch.cat([self.PROMPT if i < 0 else self.TEXTS[i:i + 1] for i in tokens.tolist()]), None


class FixedSample:
    "A stand-in prior: every sample is (3, 4, 0), at cosine 0.6 to the prompt."
    def eval(self): return self
    def sample(self, text_embed, num_samples_per_batch, cond_scale, timesteps): return torch.tensor([[3., 4., 0.]]).expand(len(text_embed), -1)


def test_explorer_reports_the_sample_s_similarity_by_value():
    from prior_nbdev.lab.explorer import PromptExplorer
    images = np.repeat(np.arange(6, dtype=np.uint8), 2 * 2 * 3).reshape(6, 2, 2, 3)
    explorer = PromptExplorer(FixedSample(), TableClip(), images, [f'c{i}' for i in range(6)])
    r = explorer.run('prompt', num_candidates=2, timesteps=4)
    assert r['similarity'] == pytest.approx(0.6)
    # captions vs their own images: 1, 1, 1, -1, 0.707, 0.707; one of six below 0.6
    assert r['percentile'] == pytest.approx(100 / 6)
    # the sample (0.6, 0.8, 0) against the images: 0.6, 0.8, 1, -0.6, 0, 0.99
    assert r['nearest'] == [2, 5, 1, 0, 4, 3]
    assert r['nearest_similarity'] == pytest.approx([1., 0.98995, 0.8, 0.6, 0., -0.6], abs=1e-5)


# --- the CI rule: in CI a skip fails, except a cuda test without a GPU ---------------------------------------------------

SKIPPING = '''
import pytest
def test_without_its_oracle(): pytest.skip('reference not installed')
@pytest.mark.cuda
def test_on_a_gpu(): pass
def test_plain(): pass
'''


def test_a_skip_fails_in_ci_except_for_a_cuda_test_without_a_gpu(tmp_path):
    shutil.copy(TESTS / 'conftest.py', tmp_path / 'conftest.py')
    (tmp_path / 'test_skipping.py').write_text(SKIPPING)
    def run(**env):
        environ = {k: v for k, v in os.environ.items() if k != 'CI'} | env
        return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-ra', '-p', 'no:cacheprovider', str(tmp_path)],
                              capture_output=True, text=True, env=environ, cwd=tmp_path, timeout=120)
    outside = run()
    assert outside.returncode == 0 and 'SKIPPED' in outside.stdout and 'reference not installed' in outside.stdout, outside.stdout[-2000:]
    inside = run(CI='true')
    assert inside.returncode == 1, inside.stdout[-2000:]
    assert 'FAILED' in inside.stdout and "skipped in CI (CI='true')" in inside.stdout and 'reference not installed' in inside.stdout
    assert '1 failed' in inside.stdout, inside.stdout[-2000:]          # the cuda test is skipped (no GPU) or passes
    assert run(CI='false').returncode == 0
