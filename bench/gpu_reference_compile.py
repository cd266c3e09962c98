"""How long torch.compile takes on dalle2-pytorch 1.15.6's training step, and what it then trains at, within a time limit.

    python bench/gpu_reference_compile.py --config seed --batch 256 --limit 150 --json reference_compile.json

The reference's prior is compiled in place (as bench_prior.py compiles ours) and trained by its own trainer with bf16
autocast; the first step (compilation) and the second (a recompilation) are timed apart from the rate. A watchdog writes the JSON and ends the process when `--limit` seconds pass first (compiling the reference
did not finish in 150 s on an H200 before), so the result says either the rate and the first step's seconds or how
long it was given.
"""
import argparse, json, os, sys, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_prior as bp


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default='seed', choices=list(bp.CONFIGS))
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--device', default=None, choices=['cpu', 'cuda'])
    parser.add_argument('--limit', type=float, default=150., help='seconds from the start, after which the attempt is given up')
    parser.add_argument('--min_time', type=float, default=1.)
    parser.add_argument('--backend', default='inductor', help="torch.compile backend ('aot_eager' checks the plumbing fast on a CPU)")
    parser.add_argument('--json', required=True)
    args = parser.parse_args()
    start = time.time()
    record = dict(work=f'reference training, batch {args.batch}, torch.compile ({args.backend})', limit_s=args.limit, finished=False)
    def write(**kw):
        record.update(kw, elapsed_s=round(time.time() - start, 1))
        Path(args.json).write_text(json.dumps(record, indent=1) + '\n')
    def give_up():
        write(note=f'compiling and timing did not finish within {args.limit:.0f} s; stopped')
        print(f'reference compile: did not finish within {args.limit:.0f} s', flush=True)
        os._exit(3)
    watchdog = threading.Timer(args.limit, give_up); watchdog.daemon = True; watchdog.start()
    import torch
    bp.stub_modules(set(bp.REFERENCE_EXTRAS))
    import dalle2_pytorch.dalle2_pytorch as ref
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    config = bp.CONFIGS[args.config]
    dim, text_len = config['net']['dim'], config['net']['max_text_len']
    torch.manual_seed(0)
    theirs = ref.DiffusionPrior(ref.DiffusionPriorNetwork(**config['net']), image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1).to(device)
    write(device=torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU', torch=torch.__version__, note='compiling')
    trainer = bp.make_trainer('theirs', theirs, device, device.type == 'cuda', compile=True, backend=args.backend)
    text_embed, enc, image = bp.inputs(args.batch, dim, text_len, device)
    def step():   # the reference scales the caller's image_embed in place: a fresh copy each step
        trainer(text_embed=text_embed, image_embed=image.clone(), text_encodings=enc); trainer.update()
    def seconds(fn):
        start = time.perf_counter(); fn(); bp.sync(device); return round(time.perf_counter() - start, 1)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    try:
        # two steps before timing: the second recompiles (a guard on einops' backend registry fails once)
        first = seconds(step); write(first_step_incl_compile_s=first, note='first step done')
        second = seconds(step); write(second_step_s=second, note='second step done')
        rate = args.batch / bp.timed(step, device, args.min_time)[0]
    except torch.OutOfMemoryError:
        watchdog.cancel(); write(note='out of memory'); print('reference compile: out of memory', flush=True); return
    watchdog.cancel()
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == 'cuda' else None
    write(finished=True, samples_per_s=round(rate, 1), peak_gib=None if peak is None else round(peak, 1), note='')
    print(f"reference compile: {record}", flush=True)


if __name__ == '__main__': main()
