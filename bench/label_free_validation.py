"""Label-free metrics against the ground truth: on the shapes world's held-out captions, each method's samples scored by
`label_free_metrics` (no labels) and by the probes' fidelity and diversity (labels), on the very same embeddings.

    python bench/label_free_validation.py [--threads 2] [--out bench/results/label_free_validation.json]

The data and models are the shapes chapter's: 24,000 pairs of seed 2024, the packaged CLIP and prior; 10,000 of the
training pairs fit the ridge predictor and give the data's own pictures and spread; the test rows are those of the last
1,000 pairs whose caption has training pictures (about two in three), so that the data's own pictures can answer every
one of them. For every test caption each method makes K = 4 embeddings: the raw text embedding, the ridge mean
predictor, the packaged prior (64 DDIM steps) with one candidate, the best of 2 by text similarity, and at cond_scale
3; and the data's own pictures (K training pictures with the same caption: the best prior there can be).

Each method's K embeddings are scored by the truth chapter's `ground_truth_report` (replayed to it as a prior's draws)
and by `label_free_metrics` once per draw (samples = that draw, one per caption; real = the test split's image
embeddings; conditional spread from all K), averaged over the K draws. Timings depend on what else runs.
"""
import argparse, json, os, time
os.environ.setdefault('TQDM_DISABLE', '1')
from pathlib import Path
import numpy as np
import torch
from prior_nbdev.lab.shapes import make_shapes_scenes, shapes_clip, shapes_probes, SHAPES_RULES, ASSETS
from prior_nbdev.clip import embed_pairs
from prior_nbdev.checkpoint import load_prior
from prior_nbdev.metrics import label_free_metrics, cmmd, LABEL_FREE_KEYS
from prior_nbdev.lab.truth import ground_truth_report, fit_ridge, Method, TEXT, RIDGE, CEILING
from prior_nbdev.lab.demo import DEMO_SEED
from prior_nbdev.sampling import most_text_similar

K, TIMESTEPS = 4, 64
SIGMAS = (1., 0.5, 0.25)                            # CMMD's bandwidth, narrower than its 10, for comparison
PRIOR_ROW = Method.prior(1, 1.)      # the row ground_truth_report gives a replayed method


class Replay:
    "Hands `ground_truth_report` stored draws, one per call, as a prior would sample them: both judges see the same embeddings."
    device = torch.device('cpu')
    def __init__(self, draws:list): self.draws, self.calls = draws, 0
    def sample(self, text_embed, **kwargs):
        draw = self.draws[self.calls % len(self.draws)]; self.calls += 1
        assert len(draw) == len(text_embed), (len(draw), len(text_embed))
        return draw


def data_pictures(captions, pools:dict, train_image, seed=0)->list:
    "K draws of training pictures with each caption (without replacement where its pool allows): the best prior there can be."
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for c in captions:
        order = torch.randperm(len(pools[c]), generator=gen).tolist()
        rows.append([pools[c][order[j % len(order)]] for j in range(K)])
    rows = torch.tensor(rows)
    return [train_image[rows[:, j]] for j in range(K)]


@torch.no_grad()
def prior_draws(prior, text, seed=0)->dict:
    "K draws per caption: one candidate and best of 2 at cond_scale 1 (from the same pairs of candidates), one at cond_scale 3."
    gen, out = torch.Generator().manual_seed(seed), {}
    pairs, high = [], []
    for _ in range(K):
        torch.manual_seed(int(torch.randint(0, 2 ** 31, (), generator=gen)))
        pairs.append(prior.sample(text_embed=text.repeat_interleave(2, 0), num_samples_per_batch=1, timesteps=TIMESTEPS).view(len(text), 2, -1))
        torch.manual_seed(int(torch.randint(0, 2 ** 31, (), generator=gen)))
        high.append(prior.sample(text_embed=text, num_samples_per_batch=1, cond_scale=3., timesteps=TIMESTEPS))
    return {'1 candidate': [p[:, 0] for p in pairs], 'best of 2': [most_text_similar(p, text)[0] for p in pairs], 'cond_scale 3': high}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'label_free_validation.json'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    clip = shapes_clip()
    probes, _ = shapes_probes(clip, n=4000, n_test=1000)
    images, captions, _ = make_shapes_scenes(24_000, seed=DEMO_SEED)
    rows = np.r_[0:10_000, 23_000:24_000]
    image, text = embed_pairs(clip, images[rows], [captions[i] for i in rows], batch_size=4000)
    captions = [captions[i] for i in rows]
    train = slice(0, 10_000)
    pools = {}
    for i, c in enumerate(captions[train]): pools.setdefault(c, []).append(i)
    test = [10_000 + i for i, c in enumerate(captions[10_000:]) if c in pools]      # held-out captions the data has pictures of
    held = dict(captions=[captions[i] for i in test], text=text[test], image=image[test])
    ridge = fit_ridge(text[train], image[train])
    draws = {TEXT: [held['text']] * K, RIDGE: [ridge(held['text'])] * K}
    prior = load_prior(ASSETS / 'shapes_prior.safetensors').eval()
    for name, d in prior_draws(prior, held['text']).items(): draws[f'prior, {name}'] = d
    draws["data's own pictures"] = data_pictures(held['captions'], pools, image[train])
    print(f'{time.time() - start:.0f} s: data, probes and draws ready', flush=True)
    results = {}
    for name, d in draws.items():
        truth = ground_truth_report(Replay(d), probes, SHAPES_RULES, held['captions'], held['text'], held['image'],
                                    captions[train], text[train], image[train], k=K, settings=((1, 1.),), timesteps=TIMESTEPS)
        gt = truth['methods'][PRIOR_ROW]
        per_draw = [label_free_metrics(d[j], held['image'], text_embeds=held['text'], samples_per_text=torch.stack(d, 1)) for j in range(K)]
        unit = [torch.nn.functional.normalize(z.float(), dim=-1) for z in (*d, held['image'])]
        results[name] = dict(**{key: float(np.mean([m[key] for m in per_draw])) for key in LABEL_FREE_KEYS},
                             per_draw={key: [m[key] for m in per_draw] for key in LABEL_FREE_KEYS},
                             cmmd_by_sigma={str(s): float(np.mean([cmmd(unit[j], unit[-1], sigma=s) for j in range(K)])) for s in SIGMAS},
                             fidelity=gt['fidelity'], fidelity_vs_ceiling=gt['fidelity_vs_ceiling'], diversity=gt['diversity'],
                             diversity_mean=float(np.mean(list(gt['diversity'].values()))), diversity_min=min(gt['diversity'].values()))
        print(f"{time.time() - start:5.0f} s  {name:36s} fidelity {gt['fidelity']:.3f} diversity {results[name]['diversity_mean']:.2f} | "
              + ' '.join(f'{key} {results[name][key]:.3f}' for key in LABEL_FREE_KEYS), flush=True)
    out = dict(methods=results, k_draws=K, timesteps=TIMESTEPS, test_rows=len(held['captions']), of_test_rows=1000, train_rows=10_000,
               ceiling_fidelity=truth['methods'][CEILING]['fidelity'],
               label_free=dict(k=5, sigma=10., scale=1000., normalize=True, rows=len(held['captions'])),
               seconds=round(time.time() - start), threads=args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == '__main__': main()
