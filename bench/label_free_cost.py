"""What `label_free_metrics` costs: seconds and peak memory on random unit vectors of CLIP ViT-L/14's 768 dimensions.

    python bench/label_free_cost.py [--threads 2] [--repeats 3] [--out bench/results/label_free_cost.json]

Each case runs in a fresh process (so its peak resident memory is its own): n samples against n real embeddings, with
the captions' text embeddings and K = 4 samples per caption for the conditional spread, the defaults otherwise
(k = 5, at most 10,000 rows for the pairwise measures). The time is the smallest of `--repeats` calls (the CPU may be
shared); the inputs' own size is reported beside the peak. Cases with `max_rows` None compare every row; their cost grows
with the square of n, and the 100,000-row figure is extrapolated from the measured ones, not run.
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path

DIM, K = 768, 4
CASES = [(10_000, 10_000), (100_000, 10_000), (20_000, None)]   # (rows, max_rows)


def one(n:int, max_rows, repeats:int, threads:int)->dict:
    import torch, torch.nn.functional as F
    from prior_nbdev.metrics import label_free_metrics
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    unit = lambda *shape: F.normalize(torch.randn(*shape, DIM, generator=g), dim=-1)
    samples, real, text, per_text = unit(n), unit(n), unit(n), unit(n, K)
    inputs_mb = sum(t.numel() * t.element_size() for t in (samples, real, text, per_text)) / 2 ** 20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = label_free_metrics(samples, real, text_embeds=text, samples_per_text=per_text, max_rows=max_rows)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024      # Linux: KiB
    return dict(rows=n, max_rows=max_rows, seconds_min=round(min(times), 2), seconds_all=[round(t, 2) for t in times],
                peak_rss_mb=round(peak_mb), inputs_mb=round(inputs_mb), pairwise_rows=metrics['pairwise_rows'])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--one', nargs=2, help=argparse.SUPPRESS)      # rows max_rows: run one case in this process
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'label_free_cost.json'))
    args = parser.parse_args()
    if args.one:
        n, max_rows = int(args.one[0]), None if args.one[1] == 'None' else int(args.one[1])
        print(json.dumps(one(n, max_rows, args.repeats, args.threads))); return
    cases = []
    for n, max_rows in CASES:
        done = subprocess.run([sys.executable, __file__, '--one', str(n), str(max_rows), '--repeats', str(args.repeats), '--threads', str(args.threads)],
                              capture_output=True, text=True, check=True)
        cases.append(json.loads(done.stdout.strip().splitlines()[-1])); print(cases[-1], flush=True)
    every_row = next(c for c in cases if c['max_rows'] is None)
    estimate = round(every_row['seconds_min'] * (100_000 / every_row['rows']) ** 2)
    out = dict(cases=cases, dim=DIM, samples_per_text=K, threads=args.threads, cpus=os.cpu_count(), machine=platform.processor() or platform.machine(),
               every_row_100k_seconds_estimate=estimate,
               note='min over repeats; the CPU was shared with other work; every_row_100k_seconds_estimate scales the every-row case by rows squared')
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f'every row at 100,000: about {estimate} s (extrapolated)')


if __name__ == '__main__': main()
