"""How many sampling steps a job needs: every sampler at 4 to 64 steps on the packaged shapes prior, scored by what its
samples depict, by the seed's similarities and by speed.

    python bench/sampler_steps.py [--steps 4 8 16 32 64] [--seeds 0 1 2] [--ddpm_seeds 0] [--captions 1000] [--threads 1]
                                  [--out bench/results/sampler_steps.json]

The packaged prior (`prior_nbdev/lab/assets/shapes_prior.safetensors`) was trained by `prior_nbdev_demo` on the first 22,000 of
the demo's 24,000 pairs (seed 2024); the last 1,000 pairs are its test split, never seen in training. As the training
command's ground-truth pass does, probes are fitted on the first 10,000 training pairs' image embeddings and
`ground_truth_report` (`15_truth`) draws K=4 embeddings per held-out caption and reports fidelity (the share of
captions whose claims the probes read from the embedding) and, per label a caption leaves open, the spread of what the K
draws show against the data's own. Beside it, per row: the seed's similarities of the same draws (with the text, with the
test pair's own image), and embeddings per second of the sampling calls on this CPU (`--threads`, batches of
`--captions` rows) per second of the process's CPU time, which other jobs sharing the machine do not inflate as they do
wall time (that is recorded too: `embeddings_per_wall_second`).

Rows: each sampler (`ddim_dalle2`, the reference's DDIM, makes steps - 1 network calls; `ddim`, the textbook one with
eta 0, makes steps calls) x each number of steps x each sampling seed (which seeds the draws and the data's K-subsets;
every sampler and step count of one seed starts from the same noise), with one candidate and, for `ddim_dalle2`, also
the best of 2 by text similarity (the two candidates of each draw are the first draw's pair; the one-candidate score of
those rows averages both candidates as separate draws: the same expectation, less noise). `ddpm` visits all 1,000
steps, so it gets one row per `--ddpm_seeds` seed. The sampling command's chapter (`nbs/14_sample.ipynb`) reads the JSON this writes.
"""
import argparse, json, os, tempfile, time
os.environ.setdefault('TQDM_DISABLE', '1')
from pathlib import Path
import numpy as np
import torch
from prior_nbdev.lab.shapes import shapes_prior
from prior_nbdev.lab.demo import demo_embeddings
from prior_nbdev.data import validate_embeddings
from prior_nbdev.metrics import similarity_metrics
from prior_nbdev.lab.truth import LinearProbes, ground_truth_report, Method, TEXT, RIDGE, CEILING
from prior_nbdev.sampling import most_text_similar
from prior_nbdev.lab.shapes import LABELS, SHAPES_RULES

PAIRS, PROBE_ROWS, K = 24_000, 10_000, 4


class Recorded:
    "The prior as `ground_truth_report` calls it, sampling with `sampler` and keeping every draw and its wall time."
    def __init__(self, prior, sampler:str):
        self.prior, self.sampler, self.draws, self.seconds, self.cpu_seconds, self.rows = prior, sampler, [], 0., 0., 0
    @property
    def device(self): return self.prior.device
    def sample(self, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        out = self.prior.sample(sampler=self.sampler, **kwargs)
        self.seconds += time.perf_counter() - start
        self.cpu_seconds += time.process_time() - cpu
        self.rows += len(out)
        self.draws.append(out.float().cpu())
        return out


def seed_similarities(draws:list, candidates:int, text_embed, image_embed)->dict:
    "The seed's similarity with the text and with the original image, over every draw, keeping the best of `candidates`."
    got = {}
    for d in draws:
        d = d.view(len(text_embed), -1, d.shape[-1])
        kept = [most_text_similar(d[:, g * candidates:(g + 1) * candidates], text_embed)[0] for g in range(d.shape[1] // candidates)]
        for k in kept:
            for name, v in similarity_metrics(text_embed, image_embed, k).items():
                if name in ('similarity_with_text', 'similarity_with_original_image'): got.setdefault(name, []).append(v.mean().item())
    return {name: float(np.mean(v)) for name, v in got.items()}


def row(report:dict, name:str, **extra)->dict:
    m = report['methods'][name]
    return dict(extra, fidelity=m['fidelity'], fidelity_vs_ceiling=m['fidelity_vs_ceiling'],
                fidelity_one_object=m['fidelity_one_object'], fidelity_two_objects=m['fidelity_two_objects'], diversity=m['diversity'])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', nargs='*', type=int, default=[4, 8, 16, 32, 64])
    parser.add_argument('--samplers', nargs='*', default=['ddim_dalle2', 'ddim'])
    parser.add_argument('--seeds', nargs='*', type=int, default=[0, 1, 2])
    parser.add_argument('--ddpm_seeds', nargs='*', type=int, default=[0], help='seeds of the 1,000-step ddpm rows (none: skip)')
    parser.add_argument('--captions', type=int, default=1000, help='held-out captions scored (the last of the 1,000 test pairs)')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'sampler_steps.json'))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    begin, cpu_begin = time.time(), time.process_time()
    out = Path(args.out); out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo_embeddings(Path(tmp), PAIRS, progress=False)          # the world the packaged prior was trained on
        emb = Path(tmp) / 'embeddings'
        world = validate_embeddings(emb / 'img_emb', emb / 'text_emb', emb / 'metadata', label_columns=list(LABELS))
        train, test = world.read(0, PROBE_ROWS), world.read(PAIRS - args.captions, PAIRS)
        train_labels, test_labels = world.read_labels(0, PROBE_ROWS), world.read_labels(PAIRS - args.captions, PAIRS)
    probes = LinearProbes.fit(train['image_embed'], train_labels)
    prior = shapes_prior()
    runs = [(s, n, seed) for seed in args.seeds for s in args.samplers for n in args.steps] + [('ddpm', 1000, seed) for seed in args.ddpm_seeds]
    rows = []
    for sampler, steps, seed in runs:
        both = sampler == 'ddim_dalle2'
        settings = ((1, 1.), (2, 1.)) if both else ((1, 1.),)
        recorded = Recorded(prior, sampler)
        report = ground_truth_report(recorded, probes, SHAPES_RULES, test['captions'], test['text_embed'], test['image_embed'],
                                     train['captions'], train['text_embed'], train['image_embed'], labels=test_labels, k=K,
                                     settings=settings, timesteps=steps, seed=seed)
        calls = {'ddim_dalle2': steps - 1, 'ddim': steps, 'ddpm': 1000}[sampler]
        common = dict(sampler=sampler, steps=steps, network_calls=calls, seed=seed, captions=args.captions,
                      threads=args.threads, batch_rows=recorded.rows // len(recorded.draws))
        for candidates in sorted({c for c, _ in settings}):
            name = Method.prior(candidates, 1.)
            rows.append(row(report, name, **common, candidates=candidates,
                            embeddings_per_second=recorded.rows / candidates / recorded.cpu_seconds,
                            embeddings_per_wall_second=recorded.rows / candidates / recorded.seconds,
                            **seed_similarities(recorded.draws, candidates, test['text_embed'], test['image_embed'])))
            r = rows[-1]
            print(f"{sampler:11s} {steps:4d} steps seed {seed} best of {candidates}: fidelity {r['fidelity']:.3f} "
                  f"({r['fidelity_vs_ceiling']:.3f} of the ceiling), count {r['diversity'].get('count', float('nan')):.2f}, "
                  f"lowest {min(r['diversity'].values()):.2f}, sim. image {r['similarity_with_original_image']:.3f}, "
                  f"{r['embeddings_per_second']:.0f} emb/s of CPU time", flush=True)
        if len(rows) <= 2:       # the methods that do not sample, scored with the first seed's yardstick
            reference = {k: report[k] for k in ('data_entropy', 'diversity_rows', 'k', 'captions', 'diversity_captions', 'groups')}
            reference['methods'] = {n: row(report, n) for n in (CEILING, TEXT, RIDGE)}
            reference['probe_accuracy'] = probes.accuracy(test['image_embed'], test_labels)
        result = dict(prior='prior_nbdev/lab/assets/shapes_prior.safetensors', test_pairs=f'rows {PAIRS - args.captions}-{PAIRS - 1} of the demo world (seed 2024)',
                      probe_rows=PROBE_ROWS, torch_threads=args.threads, seconds=round(time.time() - begin),
                      cpu_seconds=round(time.process_time() - cpu_begin), reference=reference, rows=rows)
        out.write_text(json.dumps(result, indent=1))   # after every run: a stopped job keeps what it measured
    print(f'wrote {out}: {result["seconds"]} s, {result["cpu_seconds"]} s of CPU')


if __name__ == '__main__': main()
