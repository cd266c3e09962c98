"""The short table that ends bench/gpu_run.sh, read from the JSON files it wrote; all of them merged into results.json.

    python bench/gpu_summary.py OUT_FOLDER [--seconds S]
"""
import argparse, json
from pathlib import Path

FILES = ('bench_prior', 'train_cli', 'sample_cli', 'reference_compile')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out')
    parser.add_argument('--seconds', type=int, default=None, help='the whole run\'s seconds, recorded')
    args = parser.parse_args()
    out = Path(args.out)
    merged = dict(total_seconds=args.seconds)
    for name in FILES:
        path = out / f'{name}.json'
        try: merged[name] = json.loads(path.read_text()) if path.exists() else None
        except json.JSONDecodeError as e: merged[name] = dict(error=f'{path.name} is not valid JSON: {e}')
    summary = out / 'summary.txt'
    merged['parts'] = [l for l in summary.read_text().splitlines() if l.startswith('part ')] if summary.exists() else []
    (out / 'results.json').write_text(json.dumps(merged, indent=1) + '\n')
    lines = [f'=== summary ({args.seconds} s in all)']
    bench = merged['bench_prior'] or {}
    if bench:
        lines.append(bench.get('header', ''))
        for r in bench.get('rows', []):
            ratio = 'n/a' if r['ratio'] is None else f"{r['ratio']:.2f}x"
            lines.append(f"  {r['work']} | ours {r['ours']} | reference {r['reference']} | {ratio}")
        for k, v in bench.items():
            if k.startswith('agreement_'):
                lines.append(f'  {k}: ' + '; '.join(f"{n}: max |d| {a['max_abs']:.2e}, min cos {a['min_cos']:.5f}" for n, a in v.items()))
        lines += [f'  note: {n}' for n in bench.get('notes', [])]
    else: lines.append('bench_prior: no results')
    for name in FILES[1:]:
        got = merged[name]
        lines.append(f'{name}: ' + ('no results' if not got else json.dumps(got)[:900]))
    print('\n'.join(lines))


if __name__ == '__main__': main()
