"""Train the shapes world's demo prior and write prior_nbdev/lab/assets/shapes_prior.safetensors (its EMA weights, fp32).

`python tools/train_shapes_prior.py` runs `prior_nbdev_demo` with its defaults (24,000 pairs, `DEMO_STEPS` = 3,500 steps, seed 2024;
about 4 minutes on two CPU threads) in a temporary folder and keeps the prior, so that the generation chapter, the sampling
command's examples and the explorer start without training. Deterministic for a given torch build and thread count.
"""
import argparse, json, tempfile
from pathlib import Path
from prior_nbdev.lab.demo import run_demo, DEMO_STEPS
from prior_nbdev.train import LATEST
from prior_nbdev.lab.shapes import SHAPES_PRIOR_WEIGHTS
from prior_nbdev.checkpoint import load_prior, save_prior


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--pairs', type=int, default=24_000)
    parser.add_argument('--steps', type=int, default=DEMO_STEPS)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(SHAPES_PRIOR_WEIGHTS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = run_demo(tmp, num_pairs=args.pairs, steps=args.steps, threads=args.threads, progress=False, ground_truth=False, pictures=False)
        save_prior(load_prior(Path(tmp) / LATEST), args.out)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items()}, indent=1))
    print(f'wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)')


if __name__ == '__main__':
    main()
