"""`prior_nbdev_sample --cuda_graph --dtype bfloat16` on N captions' text embeddings against the bare sampling loop at the same batch.

    python bench/gpu_sample_cli.py --json sample_cli.json [--rows 12288 --batch 4096] [--tiny]

The prior: the seed's network (dim 768, depth 24, the vit-l-14 config's prior section) conditioned on the text embedding
only, so no CLIP is needed, with random weights, saved with save_pretrained. The captions: N random unit text embeddings
in clip-retrieval's text_emb/ layout. The command samples them all (64 steps of the reference's DDIM, one candidate per
caption) and reports its embeddings/s (from its first batch to its last shard written, process start and loading left
out; its wall time is kept too). The bare loop: `prior.sample` on the same batches in this process with the same dtype,
steps and CUDA graph; all batches timed as the command times them, and again without the first (warm-up) batch.
--tiny: the same in seconds on a CPU (dim 64, no CUDA graph).
"""
import argparse, json, re, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch


def build_prior(tiny:bool):
    "The vit-l-14 config's prior without its CLIP, conditioned on the text embedding only (tiny: dim 64, depth 2)."
    from prior_nbdev import DiffusionPrior, named_configs
    from prior_nbdev.prior import PriorConfig
    raw = json.loads(named_configs()['vit-l-14'].read_text())['prior']
    raw.update(clip=None, condition_on_text_encodings=False)
    if tiny: raw['net'].update(dim=64, depth=2, heads=4, dim_head=16); raw['image_embed_dim'] = 64
    torch.manual_seed(0)
    return DiffusionPrior.from_config(PriorConfig.from_dict(raw, 'prior'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', required=True)
    parser.add_argument('--tiny', action='store_true')
    parser.add_argument('--rows', type=int, default=None, help='captions (default 12288; tiny 64)')
    parser.add_argument('--batch', type=int, default=None, help='the command\'s --batch_size (default 4096; tiny 32)')
    parser.add_argument('--timesteps', type=int, default=64)
    parser.add_argument('--scratch', default=None)
    args = parser.parse_args()
    rows, batch = args.rows or (64 if args.tiny else 12288), args.batch or (32 if args.tiny else 4096)
    device = torch.device('cpu' if args.tiny or not torch.cuda.is_available() else 'cuda')
    graph = device.type == 'cuda'
    record = dict(device=torch.cuda.get_device_name() if graph else 'CPU', torch=torch.__version__, rows=rows, batch=batch,
                  timesteps=args.timesteps, dtype='bfloat16', cuda_graph=graph, num_samples_per_batch=1)
    def save(): Path(args.json).write_text(json.dumps(record, indent=1) + '\n')
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        tmp = Path(tmp)
        prior = build_prior(args.tiny)
        prior.save_pretrained(tmp / 'prior')
        dim = prior.image_embed_dim
        text = torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(0)), dim=-1).numpy()
        (tmp / 'captions' / 'text_emb').mkdir(parents=True)
        np.save(tmp / 'captions' / 'text_emb' / 'text_emb_0.npy', text.astype(np.float16))
        record['parameters'] = sum(p.numel() for p in prior.net.parameters())
        # the command
        argv = ['prior_nbdev_sample', '--checkpoint', str(tmp / 'prior'), '--captions', str(tmp / 'captions'), '--out', str(tmp / 'out'),
                '--batch_size', str(batch), '--timesteps', str(args.timesteps), '--num_samples_per_batch', '1', '--dtype', 'bfloat16',
                '--no_progress'] + (['--cuda_graph'] if graph else ['--device', 'cpu'])
        record['command'] = ' '.join(argv[:1] + [a if '/' not in a else Path(a).name for a in argv[1:]])
        start = time.time()
        result = subprocess.run(argv, capture_output=True, text=True)
        record['command_wall_s'] = round(time.time() - start, 1)
        sys.stdout.write(result.stderr[-2000:])
        got = re.search(r'embedded (\d+) captions in (\d+) batches.*?([\d.]+) embeddings/s', result.stderr)
        if result.returncode or not got:
            record['command_error'] = f'exit {result.returncode}: {result.stderr[-1500:]}'
        else:
            record['command_embeddings_per_s'] = float(got.group(3))
            written = np.load(next((tmp / 'out' / 'img_emb').glob('*.npy')))
            record['command_rows_written'] = int(len(written))
        save()
        # the bare loop, same batches
        prior = prior.to(device).eval()
        ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
        times = []
        for s in range(0, rows, batch):
            cond = torch.from_numpy(text[s:s + batch].astype(np.float32)).to(device)
            if graph: torch.cuda.synchronize()
            t0 = time.time()
            with ctx():
                out = prior.sample(text_embed=cond, num_samples_per_batch=1, timesteps=args.timesteps, cuda_graph=graph,
                                   generator=torch.Generator().manual_seed(s))
            out.float().cpu()
            times.append((len(cond), time.time() - t0))
        n, secs = map(sum, zip(*times))
        record['bare_embeddings_per_s'] = round(n / secs, 1)
        if len(times) > 1:
            n, secs = map(sum, zip(*times[1:]))
            record['bare_embeddings_per_s_after_first_batch'] = round(n / secs, 1)
        record['bare_seconds_per_batch'] = [round(t, 3) for _, t in times]
        if 'command_embeddings_per_s' in record: record['command_vs_bare'] = round(record['command_embeddings_per_s'] / record['bare_embeddings_per_s'], 3)
        save()
    print(json.dumps(record), flush=True)


if __name__ == '__main__': main()
