"""Benchmark prior_nbdev against dalle2-pytorch 1.15.6 with the same weights, side by side in one process.

    python bench/bench_prior.py --device cpu --config small
    python bench/bench_prior.py --device cuda --config seed --compile --cuda_graph --json out.json --profile prof.txt

Training: samples/s of each project's own trainer (AdamW, EMA, clipping; bf16 autocast on CUDA, fp32 on CPU) and peak
memory (CUDA); with --compile also ours with the prior compiled by torch.compile (inductor; compile time reported apart).
Sampling: embeddings/s at 64 DDIM steps (the reference's DDIM; 63 network calls) with cond_scale 1 and 2, and 1000-step
DDPM; with --cuda_graph also ours replaying the per-step call from a CUDA graph, at --ours_sample_batches too;
--eager_sample_batches: ours without a graph at further batches; --compile_sample_batches: ours with the per-step network
call (`predict_cached`) compiled by torch.compile (replayed from a CUDA graph with --cuda_graph), its first loop (which
compiles) reported apart.
MFU: model FLOPs (counted by torch's FlopCounterMode) per second over a bf16/fp32 matmul peak measured in the same run.
Agreement (CUDA): the fast paths against the plain fp32 path on the same weights, noise and batch.
Needs the dev install (the reference is installed with --no-deps); --stub_reference_extras stands in for the modules
the reference imports but its prior never uses (kornia, x_clip, coca_pytorch, resize_right, vector_quantize_pytorch).
"""
import argparse, contextlib, copy, functools, json, math, os, sys, time, traceback
os.environ.setdefault('TQDM_DISABLE', '1')   # the reference draws a progress bar in every sampling loop
import torch
import torch.nn.functional as F

CONFIGS = {
    'seed': dict(net=dict(dim=768, depth=24, heads=32, dim_head=64, normformer=True, max_text_len=77, num_timesteps=1000),
                 train_batches=[256, 512, 1024], sample_batch=256, ours_sample_batches=[1024, 4096]),
    'small': dict(net=dict(dim=256, depth=4, heads=8, dim_head=32, normformer=True, max_text_len=77, num_timesteps=1000),
                  train_batches=[32], sample_batch=32, ours_sample_batches=[]),
    # a smoke test of the whole script in seconds on a CPU (bench/gpu_run.sh --tiny)
    'tiny': dict(net=dict(dim=64, depth=2, heads=4, dim_head=16, normformer=True, max_text_len=8, num_timesteps=1000),
                 train_batches=[8], sample_batch=8, ours_sample_batches=[]),
}
REFERENCE_EXTRAS = ('kornia', 'x_clip', 'coca_pytorch', 'resize_right', 'vector_quantize_pytorch')


def stub_modules(names):
    "Stand-ins for modules imported at the reference's module load but unused by its prior (machines without them)."
    import importlib.abc, importlib.machinery, types
    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith('__'): raise AttributeError(name)
            return type(name, (), {'__init__': lambda self, *a, **k: None})
    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname.split('.')[0] in names: return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        def create_module(self, spec): return Stub(spec.name)
        def exec_module(self, module): module.__path__ = []
    sys.meta_path.insert(0, Finder())


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(fn, device, min_time=2., max_repeats=10):
    "Seconds per call after one warm-up call, repeated until `min_time` has passed (at most `max_repeats` calls); and the warm-up's seconds."
    start = time.perf_counter(); fn(); sync(device); first = time.perf_counter() - start
    start = time.perf_counter(); fn(); sync(device); once = time.perf_counter() - start
    extra = max(0, min(max_repeats - 1, math.ceil(min_time / max(once, 1e-9)) - 1))
    start = time.perf_counter()
    for _ in range(extra): fn()
    sync(device)
    return (once + time.perf_counter() - start) / (1 + extra), first


def matmul_peak(device, dtype):
    "The best matmul throughput of several runs (a peak, so the best run, not the mean)."
    n = 8192 if device.type == 'cuda' else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / min(timed(lambda: a @ b, device, 0.5, 5)[0] for _ in range(5))


@functools.lru_cache(maxsize=4)
def cpu_inputs(batch, dim, text_len, seed=0):
    "Drawn once per size and seed: at batch 4096 the encodings alone are 1 GB of random numbers, seconds on the CPU."
    g = torch.Generator().manual_seed(seed)
    text_embed = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    enc = torch.randn(batch, text_len, dim, generator=g)
    lengths = torch.randint(4, text_len + 1, (batch,), generator=g)
    enc[torch.arange(text_len)[None] >= lengths[:, None]] = 0     # CLIP-style zero padding
    image = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    return text_embed, enc, image


def inputs(batch, dim, text_len, device, seed=0):
    "(text_embed, text_encodings, image_embed): fresh copies on `device` (the reference changes its inputs in place)."
    return tuple(t.to(device, copy=True) for t in cpu_inputs(batch, dim, text_len, seed))


def build(ref, config, device):
    from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
    dim = config['net']['dim']
    torch.manual_seed(0)
    theirs = ref.DiffusionPrior(ref.DiffusionPriorNetwork(**config['net']), image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1)
    ours = DiffusionPrior(DiffusionPriorNetwork(**config['net']), image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1)
    ours.load_state_dict(theirs.state_dict())
    return ours.to(device), theirs.to(device)


def make_trainer(kind, prior, device, amp, compile=False, backend='inductor'):
    from accelerate import Accelerator
    # Accelerate's state is one per process, so its dynamo_backend would only act on the first Accelerator made here:
    # the prior is compiled in place instead (nn.Module.compile keeps its class and its state-dict keys)
    if compile: prior.compile(backend=backend)
    accelerator = Accelerator(cpu=device.type == 'cpu', mixed_precision='bf16' if amp else 'no')
    if kind == 'ours': from prior_nbdev import DiffusionPriorTrainer
    else: from dalle2_pytorch.trainer import DiffusionPriorTrainer
    return DiffusionPriorTrainer(prior, accelerator=accelerator, lr=1e-4, wd=1e-2, max_grad_norm=0.5, use_ema=True)


def train_rate(kind, prior, batch, dim, text_len, device, amp, min_time, compile=False, backend='inductor'):
    "(samples/s, peak GiB, warm-up seconds); (None, None, None) when out of memory."
    trainer = make_trainer(kind, prior, device, amp, compile, backend)
    text_embed, enc, image = inputs(batch, dim, text_len, device)
    def step():
        # the reference scales the caller's image_embed in place: give it a fresh copy each step
        trainer(text_embed=text_embed, image_embed=image.clone(), text_encodings=enc); trainer.update()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    try:
        seconds, first = timed(step, device, min_time)
    except torch.OutOfMemoryError:
        del trainer; torch.cuda.empty_cache(); return None, None, None
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == 'cuda' else None
    del trainer
    if device.type == 'cuda': torch.cuda.empty_cache()
    return batch / seconds, peak, first


def sample_rate(prior, batch, dim, text_len, device, amp, timesteps, cond_scale, min_time, max_repeats=10, **kw):
    "(embeddings/s, warm-up seconds)"
    text_embed, enc, _ = inputs(batch, dim, text_len, device, seed=1)
    cond = dict(text_embed=text_embed, text_encodings=enc)
    prior.eval()
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    def run():
        with ctx: prior.p_sample_loop((batch, dim), cond, cond_scale=cond_scale, timesteps=timesteps, **kw)
    seconds, first = timed(run, device, min_time, max_repeats)
    return batch / seconds, first


@contextlib.contextmanager
def compiled_step(prior, backend='inductor'):
    "Within the block, `prior`'s per-step network call during sampling (`net.predict_cached`) runs through torch.compile."
    prior.net.predict_cached = torch.compile(prior.net.predict_cached, backend=backend)   # an instance attribute shadows the method
    try: yield prior
    finally: del prior.net.predict_cached


def training_flops(prior, dim, text_len, device):
    from torch.utils.flop_counter import FlopCounterMode
    text_embed, enc, image = inputs(2, dim, text_len, device)
    with FlopCounterMode(display=False) as counter:
        prior(text_embed=text_embed, text_encodings=enc, image_embed=image).backward()
    prior.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def sampling_flops(prior, dim, text_len, device, timesteps=64):
    "FLOPs per embedding of one 64-step DDIM loop with the prefix cache (cond_scale 1)."
    from torch.utils.flop_counter import FlopCounterMode
    text_embed, enc, _ = inputs(2, dim, text_len, device, seed=1)
    with FlopCounterMode(display=False) as counter:
        prior.p_sample_loop((2, dim), dict(text_embed=text_embed, text_encodings=enc), timesteps=timesteps)
    return counter.get_total_flops() / 2


def agreement(prior, batch, dim, text_len, device, cond_scale):
    "How far the fast sampling paths land from the plain fp32 path: same weights, starting noise and per-step noise."
    text_embed, enc, _ = inputs(batch, dim, text_len, device, seed=2)
    cond = dict(text_embed=text_embed, text_encodings=enc)
    latents = torch.randn(batch, dim, generator=torch.Generator().manual_seed(3)).to(device)
    def run(amp, graph):
        ctx = torch.autocast('cuda', dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        g = torch.Generator(device).manual_seed(4)
        with ctx:
            return prior.p_sample_loop((batch, dim), cond, cond_scale=cond_scale, timesteps=64, latents=latents,
                                       generator=g, cuda_graph=graph).float()
    plain = run(False, False)
    out = {}
    for name, amp, graph in (('fp32 graph', False, True), ('bf16 eager', True, False), ('bf16 graph', True, True)):
        x = run(amp, graph)
        cos = F.cosine_similarity(x, plain, dim=-1)
        out[name] = dict(max_abs=(x - plain).abs().max().item(), median_cos=cos.median().item(), min_cos=cos.min().item())
    return out


def profile(fn, device, path, title, rows=15):
    from torch.profiler import profile as prof, ProfilerActivity
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    fn(); sync(device)
    with prof(activities=acts) as p:
        fn(); sync(device)
    key = 'cuda_time_total' if device.type == 'cuda' else 'cpu_time_total'
    table = p.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70)
    with open(path, 'a') as f: f.write(f'## {title}\n{table}\n\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--config', default='small', choices=list(CONFIGS))
    parser.add_argument('--train_batches', type=int, nargs='*', help='override the training batch sizes')
    parser.add_argument('--compile_batches', type=int, nargs='*', help='batch sizes for --compile (default: the first training batch)')
    parser.add_argument('--sample_batch', type=int, help='sampling batch for both projects')
    parser.add_argument('--ours_sample_batches', type=int, nargs='*', help='further sampling batches, ours only')
    parser.add_argument('--compile', action='store_true', help='also train ours with the prior compiled (torch.compile, inductor)')
    parser.add_argument('--cuda_graph', action='store_true', help='also sample ours with cuda_graph=True (CUDA only)')
    parser.add_argument('--eager_sample_batches', type=int, nargs='*', default=[], help='further sampling batches, ours without a CUDA graph')
    parser.add_argument('--compile_sample_batches', type=int, nargs='*', default=[],
                        help="sampling batches for ours with its per-step network call compiled (and graphed with --cuda_graph)")
    parser.add_argument('--compile_sample_scales', type=float, nargs='*', default=[1., 2.], help='cond_scales for --compile_sample_batches')
    parser.add_argument('--compile_backend', default='inductor', help="torch.compile backend ('aot_eager' checks the plumbing fast on a CPU)")
    parser.add_argument('--reference_scales', type=float, nargs='*', default=None, help='cond_scales at which the reference samples too (default: all)')
    parser.add_argument('--agreement_batch', type=int, default=256, help='batch of the agreement check (CUDA)')
    parser.add_argument('--profile_sample_batch', type=int, default=None, help='batch of the profiled sampling loop (default: the sampling batch)')
    parser.add_argument('--min_time', type=float, default=None, help='seconds to repeat each timed call for (after a warm-up)')
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--skip_ddpm', action='store_true', help='skip the 1000-step DDPM measurement')
    parser.add_argument('--reference_repeats', type=int, default=1, help='timed sampling loops of the (slow) reference after its warm-up')
    parser.add_argument('--rounds', type=int, default=1,
                        help='take turns this many times (ours, then the reference) for the training and plain sampling rows and '
                             'report medians: on a shared machine the load drifts, and turns spread it over both sides alike')
    parser.add_argument('--json', help='also write the rows as JSON here (after each row)')
    parser.add_argument('--profile', help='write the top kernels of one training step and one sampling loop here')
    parser.add_argument('--stub_reference_extras', action='store_true', help=f'stand-ins for {", ".join(REFERENCE_EXTRAS)}')
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    if args.stub_reference_extras: stub_modules(set(REFERENCE_EXTRAS))
    import dalle2_pytorch.dalle2_pytorch as ref
    device, config = torch.device(args.device), CONFIGS[args.config]
    amp = device.type == 'cuda'
    min_time = args.min_time or (2. if device.type == 'cuda' else 1.)
    dim, text_len = config['net']['dim'], config['net']['max_text_len']
    ours, theirs = build(ref, config, device)
    params = sum(p.numel() for p in ours.parameters())
    name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    peak = matmul_peak(device, torch.bfloat16 if amp else torch.float32)
    flops = training_flops(ours, dim, text_len, device)
    sflops = sampling_flops(ours, dim, text_len, device)
    header = (f'device: {name}; torch {torch.__version__}; config {args.config}: {params / 1e6:.1f}M parameters, '
              f'{flops / 1e9:.2f} GFLOP per training sample, {sflops / 1e9:.2f} GFLOP per sampled embedding (ours, 64 DDIM steps); '
              f"{'bf16 autocast' if amp else 'fp32'}; measured matmul peak {peak / 1e12:.1f} TFLOP/s")
    print(header + '\n', flush=True)
    rows, record = [], dict(header=header, rows=[], notes=[], rounds=args.rounds)
    def add(label, o, t, ratio, turns=None):
        rows.append((label, o, t, ratio))
        record['rows'].append(dict(work=label, ours=o, reference=t, ratio=ratio, **({'turns': turns} if turns else {})))
        print(f'{label} | {o} | {t} | {"n/a" if ratio is None else f"{ratio:.2f}x"}', flush=True)
        if args.json: json.dump(record, open(args.json, 'w'), indent=1)
    def guarded(what, fn):
        try: return fn()
        except Exception as e:
            msg = f'{what}: {type(e).__name__}: {e}'.splitlines()[0][:400]
            print(msg, flush=True); traceback.print_exc(); record['notes'].append(msg)
            if device.type == 'cuda': torch.cuda.empty_cache()
    mem = lambda m: '' if m is None else f', peak {m:.1f} GiB'
    fmt = lambda r, m: 'out of memory' if r is None else f'{r:,.0f} samples/s{mem(m)}'
    reference_train = {}   # batch -> (samples/s, row text) of the reference, for the compiled rows
    reference_sample = {}  # cond_scale -> embeddings/s of the reference (DDIM 64), for the compiled sampling rows
    def median_of_turns(ours_fn, theirs_fn):
        "(ours, theirs, turns): each side's median over `--rounds` turns taken one after the other, and every turn's pair."
        turns = [(ours_fn(), theirs_fn()) for _ in range(args.rounds)]
        pick = lambda side: sorted((t[side] for t in turns), key=lambda r: -1 if r[0] is None else r[0])[len(turns) // 2]
        return pick(0), pick(1), [[a[0], b[0]] for a, b in turns] if args.rounds > 1 else None
    for batch in args.train_batches or config['train_batches']:
        (o, om, _), (t, tm, _), turns = median_of_turns(lambda: train_rate('ours', ours, batch, dim, text_len, device, amp, min_time),
                                                        lambda: train_rate('theirs', theirs, batch, dim, text_len, device, amp, min_time))
        reference_train[batch] = t, fmt(t, tm)
        mfu = f' (MFU {o * flops / peak:.0%})' if o else ''
        add(f'training, batch {batch}', fmt(o, om) + mfu, fmt(t, tm), o / t if o and t else None, turns)
    sb = args.sample_batch or config['sample_batch']
    cases = [(64, 1.), (64, 2.)] + ([] if args.skip_ddpm else [(1000, 1.)])
    for timesteps, scale in cases:
        label = f'sampling, {"DDPM 1000" if timesteps == 1000 else "DDIM 64"} steps, batch {sb}, cond_scale {scale:g}'
        run_reference = args.reference_scales is None or scale in args.reference_scales
        (o, _), (t, _), turns = median_of_turns(
            lambda: sample_rate(ours, sb, dim, text_len, device, amp, timesteps, scale, min_time),
            lambda: sample_rate(theirs, sb, dim, text_len, device, amp, timesteps, scale, 0., 1 + args.reference_repeats) if run_reference else (None, None))
        reference_sample[scale] = t
        add(label, f'{o:,.1f} embeddings/s', 'not run' if t is None else f'{t:,.1f} embeddings/s', o / t if t else None, turns)
        if timesteps == 64:
            for b in args.eager_sample_batches:
                def run(b=b, scale=scale, t=t):
                    o, _ = sample_rate(ours, b, dim, text_len, device, amp, timesteps, scale, min_time)
                    add(f'sampling, DDIM 64 steps, batch {b}, cond_scale {scale:g}', f'{o:,.1f} embeddings/s',
                        'not run' if t is None else f'{t:,.1f} embeddings/s (batch {sb})', o / t if t else None)
                guarded(f'eager batch {b}', run)
        if args.cuda_graph and timesteps == 64:
            for b in [sb] + (args.ours_sample_batches if args.ours_sample_batches is not None else config['ours_sample_batches']):
                def run(b=b, scale=scale, t=t):
                    o, _ = sample_rate(ours, b, dim, text_len, device, amp, timesteps, scale, min_time, cuda_graph=True)
                    tf = f' ({o * sflops / 1e12:.0f} TFLOP/s)' if scale == 1 else ''
                    add(f'sampling, DDIM 64 steps, batch {b}, cond_scale {scale:g}, CUDA graph', f'{o:,.1f} embeddings/s{tf}',
                        'not run' if t is None else f'{t:,.1f} embeddings/s (batch {sb})', o / t if t else None)
                guarded(f'cuda graph batch {b}', run)
    if device.type == 'cuda':
        for scale in (1., 2.):
            a = guarded('agreement', lambda: agreement(ours, args.agreement_batch, dim, text_len, device, scale))
            if a:
                record[f'agreement_cond_scale_{scale:g}'] = a
                print(f'agreement with the fp32 path, cond_scale {scale:g}: ' +
                      '; '.join(f'{k}: max |d| {v["max_abs"]:.2e}, cosine median {v["median_cos"]:.5f}, min {v["min_cos"]:.5f}'
                                for k, v in a.items()), flush=True)
        if args.json: json.dump(record, open(args.json, 'w'), indent=1)
    if args.profile:
        b = (args.train_batches or config['train_batches'])[0]
        trainer = make_trainer('ours', ours, device, amp)
        te, enc, image = inputs(b, dim, text_len, device)
        guarded('profile training', lambda: profile(lambda: (trainer(text_embed=te, image_embed=image, text_encodings=enc), trainer.update()),
                                                   device, args.profile, f'ours: one training step, batch {b}'))
        del trainer
        pb = args.profile_sample_batch or sb
        te, enc, _ = inputs(pb, dim, text_len, device, seed=1)
        ctx = torch.autocast('cuda', dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        for graph in ((False, True) if args.cuda_graph else (False,)):
            def loop(graph=graph):
                with ctx: ours.p_sample_loop((pb, dim), dict(text_embed=te, text_encodings=enc), timesteps=64, cuda_graph=graph)
            guarded('profile sampling', lambda: profile(loop, device, args.profile,
                                                        f'ours: one 64-step DDIM loop (63 network calls), batch {pb}, cuda_graph={graph}'))
    for scale in args.compile_sample_scales if args.compile_sample_batches else ():
        for b in args.compile_sample_batches:
            def run(b=b, scale=scale):
                with compiled_step(ours, args.compile_backend):
                    o, first = sample_rate(ours, b, dim, text_len, device, amp, 64, scale, min_time, cuda_graph=args.cuda_graph)
                t = reference_sample.get(scale)
                how = 'torch.compile' + (' + CUDA graph' if args.cuda_graph else '')
                add(f'sampling, DDIM 64 steps, batch {b}, cond_scale {scale:g}, {how}', f'{o:,.1f} embeddings/s (first loop incl. compile {first:.0f} s)',
                    'not run' if t is None else f'{t:,.1f} embeddings/s (batch {sb})', o / t if t else None)
            guarded(f'compiled sampling batch {b}', run)
    if args.compile:
        for batch in args.compile_batches or (args.train_batches or config['train_batches'])[:1]:   # last: compiling takes the longest
            def run(batch=batch):
                o, om, first = train_rate('ours', copy.deepcopy(ours), batch, dim, text_len, device, amp, min_time, compile=True,
                                          backend=args.compile_backend)
                mfu = f' (MFU {o * flops / peak:.0%}; first step incl. compile {first:.0f} s)' if o else ''
                t, shown = reference_train.get(batch, (None, 'n/a'))
                add(f'training, batch {batch}, torch.compile', fmt(o, om) + mfu, shown, o / t if o and t else None)
            guarded(f'compile batch {batch}', run)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'work':{width}} | {'prior_nbdev':>34} | {'dalle2-pytorch 1.15.6':>28} | ratio")
    for label, o, t, ratio in rows:
        print(f"{label:{width}} | {o:>34} | {t:>28} | {'n/a' if ratio is None else f'{ratio:.2f}x'}")


if __name__ == '__main__': main()
