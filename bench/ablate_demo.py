"""The demo's recipe, measured: train `prior_nbdev_demo`'s prior once per setting, score each on the seed's seven metrics
(held-out test split) and by what its samples depict (fidelity against the ceiling, diversity against the data's).

    python bench/ablate_demo.py [--only NAME ...] [--train_seed N] [--out bench/ablation_demo.json]

Each setting is one `run_demo` (the same 24,000 pairs of seed 2024, the same packaged CLIP, seed-fixed training), changed
only where the setting says; wall times are from this machine (2 CPU cores here) and vary with what else runs on it.
The studies chapter (`nbs/21_studies.ipynb`) prints the table from the JSON this writes.
"""
import argparse, hashlib, json, tempfile, time
from pathlib import Path
from prior_nbdev.lab.demo import run_demo, merge, DEMO_STEPS
from prior_nbdev.lab.shapes import SHAPES_CLIP_WEIGHTS
from prior_nbdev.lab.truth import Method

EARLIER = dict(steps=4000, prior=dict(time_sampling='uniform', net=dict(ff_mult=4)))   # the defaults before logit-normal times
def earlier(**change): return merge(EARLIER, change)

SETTINGS = {   # the demo's defaults, then one change each; rows named '..., on the earlier defaults' change those
    'demo defaults': {},
    '4,000 steps': dict(steps=4000),
    '3,000 steps': dict(steps=3000),
    'feed-forward x4, 4,000 steps': dict(steps=4000, prior=dict(net=dict(ff_mult=4))),
    'logit-normal times centred (mu 0)': dict(prior=dict(time_sampling_loc=0.)),
    'logit-normal times, mu -0.75': dict(prior=dict(time_sampling_loc=-0.75)),
    'logit-normal spread 1.3': dict(prior=dict(time_sampling_scale=1.3)),
    'logit-normal spread 0.8': dict(prior=dict(time_sampling_scale=0.8)),
    'lr 2e-3': dict(train=dict(lr=2e-3)),
    'earlier defaults (uniform times, feed-forward x4, 4,000 steps)': EARLIER,
    '3,000 steps, on the earlier defaults': earlier(steps=3000),
    '8 heads, on the earlier defaults': earlier(prior=dict(net=dict(heads=8))),
    # measured against older defaults still (uniform times, feed-forward x4, lr 3e-4, 3,000 steps) and with the earlier
    # CLIP: bench/ablation_demo_clip_patch8.json
    'lr 3e-4 (earlier defaults)': earlier(steps=3000, train=dict(lr=3e-4)),
    'text encodings too': earlier(steps=3000, prior=dict(condition_on_text_encodings=True, net=dict(max_text_len=12)), train=dict(lr=3e-4)),
    'v prediction': earlier(steps=3000, prior=dict(predict_v=True, predict_x_start=False), train=dict(lr=3e-4)),
    'self-conditioning': earlier(steps=3000, prior=dict(net=dict(self_cond=True)), train=dict(lr=3e-4)),
    'EMA warm-up': earlier(steps=3000, train=dict(ema_warmup=True, lr=3e-4)),
    'depth 6': earlier(steps=3000, prior=dict(net=dict(depth=6)), train=dict(lr=3e-4)),
    'depth 2': earlier(steps=3000, prior=dict(net=dict(depth=2)), train=dict(lr=3e-4)),
    '1,500 steps': earlier(steps=1500, train=dict(lr=3e-4)),
    '8 heads, lr 3e-4': earlier(steps=3000, prior=dict(net=dict(heads=8)), train=dict(lr=3e-4)),
}



def clip_id()->str:
    "The packaged CLIP's weights file, by the first 12 hex digits of its SHA-256 (rows measured with another CLIP are told apart)."
    return hashlib.sha256(SHAPES_CLIP_WEIGHTS.read_bytes()).hexdigest()[:12]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='*', choices=list(SETTINGS), help='settings to run (default: the first three)')
    parser.add_argument('--steps', type=int, default=DEMO_STEPS)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--train_seed', type=int, help="train.random_seed (weights' start, batch order, sampling noise); rows are named '... (seed N)'")
    parser.add_argument('--out', default=str(Path(__file__).with_name('ablation_demo.json')))
    args = parser.parse_args()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.only or list(SETTINGS)[:3]:
        overrides = dict(SETTINGS[name])
        steps = overrides.pop('steps', args.steps)
        row = name
        if args.train_seed is not None:
            overrides['train'] = dict(overrides.get('train', {}), random_seed=args.train_seed)
            row = f'{name} (seed {args.train_seed})'
        with tempfile.TemporaryDirectory() as tmp:
            start = time.time()
            metrics = run_demo(tmp, steps=steps, threads=args.threads, progress=False, pictures=False, overrides=overrides)
            seconds = time.time() - start
        truth = metrics.pop('ground_truth')
        results[row] = dict(overrides=overrides, clip=clip_id(), steps=steps, seconds=round(seconds), metrics=metrics,
                             methods=truth['methods'], probe_accuracy=truth['probe_accuracy'],
                             data_entropy=truth['data_entropy'], diversity_rows=truth['diversity_rows'])
        out.write_text(json.dumps(results, indent=1))
        best = truth['methods'][Method.prior(1, 1.)]
        print(f"{row:22s} {seconds:5.0f}s  sim. original image {metrics['similarity_with_original_image']:.3f}  "
              f"fidelity/ceiling {best['fidelity_vs_ceiling']:.3f}  lowest diversity {min(best['diversity'].values()):.2f}", flush=True)


if __name__ == '__main__': main()
