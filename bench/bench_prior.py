"""Benchmark prior_nbdev against dalle2-pytorch 1.15.6 with the same weights, side by side in one process.

    python bench/bench_prior.py --device cpu --config small
    python bench/bench_prior.py --device cuda --config seed

Training: samples/s of each project's own trainer (AdamW, EMA, clipping; bf16 autocast on CUDA, fp32 on CPU) and peak
memory (CUDA). Sampling: embeddings/s at 64 DDIM steps (the reference's DDIM; 63 network calls) with cond_scale 1 and 2,
and 1000-step DDPM. MFU: model FLOPs (counted by torch's FlopCounterMode) per second over a matmul peak measured here.
Needs the dev install (the reference is installed with --no-deps).
"""
import argparse, contextlib, os, time
os.environ.setdefault('TQDM_DISABLE', '1')   # the reference draws a progress bar in every sampling loop
import torch
import torch.nn.functional as F

CONFIGS = {
    'seed': dict(net=dict(dim=768, depth=24, heads=32, dim_head=64, normformer=True, max_text_len=77, num_timesteps=1000),
                 train_batches=[256, 512, 1024], sample_batch=256),
    'small': dict(net=dict(dim=256, depth=4, heads=8, dim_head=32, normformer=True, max_text_len=77, num_timesteps=1000),
                  train_batches=[32], sample_batch=32),
}


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize()


def timed(fn, device, repeats):
    fn(); sync(device)                                   # warm-up (kernels, allocator, autotuning)
    start = time.perf_counter()
    for _ in range(repeats): fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_peak(device, dtype):
    "The best matmul throughput of several runs (a peak, so the best run, not the mean)."
    n = 8192 if device.type == 'cuda' else 2048
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / min(timed(lambda: a @ b, device, 3) for _ in range(5))


def inputs(batch, dim, text_len, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_embed = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    enc = torch.randn(batch, text_len, dim, generator=g)
    lengths = torch.randint(4, text_len + 1, (batch,), generator=g)
    enc[torch.arange(text_len)[None] >= lengths[:, None]] = 0     # CLIP-style zero padding
    image = F.normalize(torch.randn(batch, dim, generator=g), dim=-1)
    return text_embed.to(device), enc.to(device), image.to(device)


def build(ref, config, device):
    from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior
    dim = config['net']['dim']
    torch.manual_seed(0)
    theirs = ref.DiffusionPrior(ref.DiffusionPriorNetwork(**config['net']), image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1)
    ours = DiffusionPrior(DiffusionPriorNetwork(**config['net']), image_embed_dim=dim, timesteps=1000, cond_drop_prob=0.1)
    ours.load_state_dict(theirs.state_dict())
    return ours.to(device), theirs.to(device)


def train_rate(kind, prior, batch, dim, text_len, device, amp, repeats):
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=device.type == 'cpu', mixed_precision='bf16' if amp else 'no')
    if kind == 'ours':
        from prior_nbdev import DiffusionPriorTrainer
        trainer = DiffusionPriorTrainer(prior, accelerator=accelerator, lr=1e-4, wd=1e-2, max_grad_norm=0.5, use_ema=True)
    else:
        from dalle2_pytorch.trainer import DiffusionPriorTrainer
        trainer = DiffusionPriorTrainer(prior, accelerator=accelerator, lr=1e-4, wd=1e-2, max_grad_norm=0.5, use_ema=True)
    text_embed, enc, image = inputs(batch, dim, text_len, device)
    def step():
        # the reference scales the caller's image_embed in place: give it a fresh copy each step
        trainer(text_embed=text_embed, image_embed=image.clone(), text_encodings=enc); trainer.update()
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats()
    try:
        seconds = timed(step, device, repeats)
    except torch.OutOfMemoryError:
        del trainer; torch.cuda.empty_cache(); return None, None
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == 'cuda' else None
    del trainer
    if device.type == 'cuda': torch.cuda.empty_cache()
    return batch / seconds, peak


def sample_rate(prior, batch, dim, text_len, device, amp, timesteps, cond_scale, repeats):
    text_embed, enc, _ = inputs(batch, dim, text_len, device, seed=1)
    cond = dict(text_embed=text_embed, text_encodings=enc)
    prior.eval()
    ctx = torch.autocast('cuda', dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    def run():
        with ctx: prior.p_sample_loop((batch, dim), cond, cond_scale=cond_scale, timesteps=timesteps)
    return batch / timed(run, device, repeats)


def training_flops(prior, dim, text_len, device):
    from torch.utils.flop_counter import FlopCounterMode
    text_embed, enc, image = inputs(2, dim, text_len, device)
    with FlopCounterMode(display=False) as counter:
        prior(text_embed=text_embed, text_encodings=enc, image_embed=image).backward()
    prior.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--config', default='small', choices=list(CONFIGS))
    parser.add_argument('--train_batches', type=int, nargs='*', help='override the training batch sizes')
    parser.add_argument('--sample_batch', type=int)
    parser.add_argument('--repeats', type=int, default=None)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--skip_ddpm', action='store_true', help='skip the 1000-step DDPM measurement')
    args = parser.parse_args()
    if args.threads: torch.set_num_threads(args.threads)
    import dalle2_pytorch.dalle2_pytorch as ref
    device, config = torch.device(args.device), CONFIGS[args.config]
    amp = device.type == 'cuda'
    repeats = args.repeats or (10 if device.type == 'cuda' else 3)
    dim, text_len = config['net']['dim'], config['net']['max_text_len']
    ours, theirs = build(ref, config, device)
    params = sum(p.numel() for p in ours.parameters())
    name = torch.cuda.get_device_name() if device.type == 'cuda' else f'CPU ({torch.get_num_threads()} threads)'
    peak = matmul_peak(device, torch.bfloat16 if amp else torch.float32)
    flops = training_flops(ours, dim, text_len, device)
    print(f'device: {name}; config {args.config}: {params / 1e6:.1f}M parameters, {flops / 1e9:.2f} GFLOP per training sample; '
          f"{'bf16 autocast' if amp else 'fp32'}; measured matmul peak {peak / 1e12:.1f} TFLOP/s\n")
    rows = []
    for batch in args.train_batches or config['train_batches']:
        o, om = train_rate('ours', ours, batch, dim, text_len, device, amp, repeats)
        t, tm = train_rate('theirs', theirs, batch, dim, text_len, device, amp, repeats)
        mem = lambda m: '' if m is None else f', peak {m:.1f} GiB'
        fmt = lambda r, m: 'out of memory' if r is None else f'{r:,.0f} samples/s{mem(m)}'
        mfu = f' (MFU {o * flops / peak:.0%})' if o else ''
        rows.append((f'training, batch {batch}', fmt(o, om) + mfu, fmt(t, tm), o / t if o and t else None))
    sb = args.sample_batch or config['sample_batch']
    cases = [(64, 1.), (64, 2.)] + ([] if args.skip_ddpm else [(1000, 1.)])
    for timesteps, scale in cases:
        r = 1 if timesteps == 1000 else repeats
        o = sample_rate(ours, sb, dim, text_len, device, amp, timesteps, scale, r)
        t = sample_rate(theirs, sb, dim, text_len, device, amp, timesteps, scale, r)
        label = f'sampling, {"DDPM 1000" if timesteps == 1000 else "DDIM 64"} steps, batch {sb}, cond_scale {scale:g}'
        rows.append((label, f'{o:,.1f} embeddings/s', f'{t:,.1f} embeddings/s', o / t))
    width = max(len(r[0]) for r in rows)
    print(f"{'work':{width}} | {'prior_nbdev':>34} | {'dalle2-pytorch 1.15.6':>28} | ratio")
    for label, o, t, ratio in rows:
        print(f"{label:{width}} | {o:>34} | {t:>28} | {'n/a' if ratio is None else f'{ratio:.2f}x'}")


if __name__ == '__main__': main()
