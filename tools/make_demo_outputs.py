"""Run `prior_nbdev_demo` with its defaults and keep what `18_demo` shows, in nbs/demo_run/.

`python tools/make_demo_outputs.py [--out nbs/demo_run] [--threads N]`

The demo writes embeddings, checkpoints and logs (tens of MB) into a scratch folder; this keeps only `metrics.json`,
`summary.json` (with the wall time), `config.json` and the four figures, re-encoded as palette PNGs so that the folder
stays small enough to commit.
"""
import argparse, json, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
KEEP = ('metrics.json', 'summary.json', 'config.json')
FIGURES = ('metrics.png', 'ground_truth.png', 'nearest.png', 'unclip.png')


def shrink(src:Path, dst:Path, max_width:int=1100):
    "A copy of the PNG `src` at most `max_width` pixels wide, with a 256-colour palette."
    image = Image.open(src).convert('RGB')
    if image.width > max_width: image = image.resize((max_width, round(image.height * max_width / image.width)), Image.LANCZOS)
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(dst, optimize=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(ROOT / 'nbs' / 'demo_run'), help='folder for the kept outputs')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s)')
    args = parser.parse_args(argv)
    out = Path(args.out); out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / 'demo'
        command = ['prior_nbdev_demo', '--out', str(run), '--no_progress'] + (['--threads', str(args.threads)] if args.threads else [])
        start = time.time()
        subprocess.run(command, check=True)
        print(f'prior_nbdev_demo took {time.time() - start:.0f} s', file=sys.stderr)
        missing = [n for n in KEEP + FIGURES if not (run / n).exists()]
        if missing: raise SystemExit(f'prior_nbdev_demo wrote no {", ".join(missing)} in {run}')
        for name in KEEP: shutil.copy(run / name, out / name)
        for name in FIGURES: shrink(run / name, out / name)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f'{out}: {size / 1e6:.2f} MB', file=sys.stderr)


if __name__ == '__main__': main()
