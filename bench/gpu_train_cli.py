"""The training command against the bare training step on a GPU, with the seed config: dim 768, depth 24, CLIP ViT-L/14's text tower in the loop.

    python bench/gpu_train_cli.py --json train_cli.json [--steps 48] [--tiny]

The GPU counterpart of bench_train_cli.py (which measures the shapes world on a CPU). Nothing can be downloaded on the
GPU machine, so the CLIP is open_clip's ViT-L-14 with random weights (the compute of OpenAI's, not its embeddings),
saved to a local file the command loads. The data: shapes-world captions, their text embeddings by that CLIP, random
unit image embeddings, in clip-retrieval's layout. The command is `train_diffusion_prior --config_path vit-l-14` (the
seed's config that ships with the package) with overrides: the data, the CLIP's weights file, bf16, no compile
(bench_prior.py times compilation), `--steps` steps, no best checkpoint; its metrics.json gives the training loop's
samples/s, validation and saving left out. The bare step: the same prior and trainer settings in this process on one
batch already on the GPU, with the text encodings computed once, and with the CLIP's text tower run on the batch's
captions every step (what the command does). --tiny: the same in seconds on a CPU (dim 64, the shapes CLIP).
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

TINY_NET = {'prior.net.dim': 64, 'prior.net.depth': 2, 'prior.net.heads': 4, 'prior.net.dim_head': 16, 'prior.net.max_text_len': 24,
            'prior.image_embed_dim': 64, 'prior.clip': {'make': 'prior_nbdev_shapes'}, 'train.device': 'cpu', 'train.amp': False}


def random_clip(model:str, folder:Path, device):
    "open_clip `model` with seeded random weights, saved (float16) where the command can load it; the adapter and its spec."
    from prior_nbdev.clip import OpenClipAdapter
    torch.manual_seed(0)
    adapter = OpenClipAdapter(model)
    state = {k: v.half() if v.is_floating_point() else v for k, v in adapter.clip.state_dict().items()}
    adapter.clip.load_state_dict(state)          # the weights the command will load, rounded alike
    path = folder / f'{model}_random.pt'
    torch.save(state, path)
    return adapter.to(device), dict(make='open_clip', model=model, pretrained=str(path))


def write_data(clip, rows:int, folder:Path, dim:int)->Path:
    "Shapes captions, `clip`'s text embeddings of them and random unit image embeddings in clip-retrieval's layout."
    from prior_nbdev.lab.shapes import make_shapes_scenes
    from prior_nbdev.clip import embed_pairs
    from prior_nbdev.data import write_embedding_shards
    _, captions, _ = make_shapes_scenes(rows, seed=7)
    text = embed_pairs(clip, captions=captions, batch_size=1024)[1].numpy()
    image = torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(1)), dim=-1).numpy()
    return write_embedding_shards(folder, image, text, captions)


def overrides(data:Path, run:Path, spec:dict, steps:int, batch:int, tiny:bool)->dict:
    return {'data.image_url': str(data / 'img_emb'), 'data.text_url': str(data / 'text_emb'), 'data.meta_url': str(data / 'metadata'),
            'data.batch_size': batch, 'data.splits': {'train': 0.9, 'val': 0.05, 'test': 0.05}, 'data.eval_every_steps': 10**9,
            'prior.clip': spec, 'train.amp': 'bf16', 'train.compile': False, 'train.epochs': 1000, 'train.max_steps': steps,
            'train.log_every_steps': max(1, steps // 4), 'train.save_every_steps': 10**9, 'train.eval_timesteps': [4],
            'train.resume': False, 'tracker.data_path': str(run), 'tracker.save_best': False, **(TINY_NET if tiny else {})}


def command_rate(over:dict, log)->dict:
    "Run `train_diffusion_prior --config_path vit-l-14` with `over`; its training-loop samples/s and wall seconds."
    argv = ['train_diffusion_prior', '--config_path', 'vit-l-14', '--no_progress']
    for k, v in over.items(): argv += [f'--{k}', v if isinstance(v, str) else json.dumps(v)]
    start = time.time()
    result = subprocess.run(argv, capture_output=True, text=True)
    wall = time.time() - start
    log.write(result.stdout[-4000:] + result.stderr[-4000:]); log.flush()
    if result.returncode: raise RuntimeError(f'train_diffusion_prior exited with {result.returncode}: {result.stderr[-1500:]}')
    run = json.loads((Path(over['tracker.data_path']) / 'metrics.json').read_text())['run']
    return dict(command_samples_per_s=run['train_samples_per_s'], command_precision=run['precision'], command_wall_s=round(wall, 1))


def bare_rates(over:dict, clip, steps:int)->dict:
    "The trainer's step on one batch in memory: with the text encodings computed once, and with the CLIP run on the captions each step."
    from accelerate import Accelerator
    from prior_nbdev.train import build_prior, load_config, run_precision, trainer_from_config
    from prior_nbdev.lab.shapes import make_shapes_scenes
    cfg = load_config('vit-l-14', over)
    tc, batch = cfg.train, cfg.data.batch_size
    device = torch.device(tc.device) if tc.device else torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    torch.manual_seed(0)
    prior = build_prior(cfg.prior, clip=clip)
    accelerator = Accelerator(cpu=device.type == 'cpu', mixed_precision=run_precision(tc.amp, device))
    trainer = trainer_from_config(prior, tc, accelerator=accelerator)   # the trainer as the command makes it
    captions = make_shapes_scenes(batch, seed=8)[1]
    image = torch.nn.functional.normalize(torch.randn(batch, cfg.prior.image_embed_dim), dim=-1).to(device)
    text_embed, encodings = clip.embed_text(clip.tokenize(captions))
    def sync():
        if device.type == 'cuda': torch.cuda.synchronize()
    def rate(step):
        for _ in range(3): step()   # the process's first steps: kernel choices and allocations settle
        sync(); start = time.time()
        for _ in range(steps): step()
        sync(); return steps * batch / (time.time() - start)
    def cached(): trainer(text_embed=text_embed, text_encodings=encodings, image_embed=image); trainer.update()
    def with_clip(): trainer(text=clip.tokenize(captions), image_embed=image); trainer.update()
    sync(); start = time.time(); cached(); sync()
    first = time.time() - start   # the command's samples/s counts its first step; this says what that step costs
    out = dict(bare_first_step_s=round(first, 2), bare_step_samples_per_s=round(rate(cached), 1), bare_step_with_clip_samples_per_s=round(rate(with_clip), 1),
               precision=accelerator.mixed_precision, parameters=sum(p.numel() for p in prior.net.parameters()))
    del trainer, prior
    if device.type == 'cuda': torch.cuda.empty_cache()
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--json', required=True)
    parser.add_argument('--tiny', action='store_true', help='dim 64, the shapes CLIP, a CPU: seconds')
    parser.add_argument('--steps', type=int, default=None, help='training steps of the command (default 48; tiny 8)')
    parser.add_argument('--bare_steps', type=int, default=None, help='timed steps of each bare measurement (default 20; tiny 4)')
    parser.add_argument('--batch', type=int, default=None, help='default: the seed config\'s 256 (tiny 16)')
    parser.add_argument('--rows', type=int, default=None, help='rows of data (default 8192; tiny 512)')
    parser.add_argument('--clip_model', default='ViT-L-14', help='open_clip model of the random CLIP (not with --tiny)')
    parser.add_argument('--scratch', default=None, help='folder for the data, the CLIP weights and the run (default: a temporary one)')
    args = parser.parse_args()
    tiny = args.tiny
    steps, bare_steps = args.steps or (8 if tiny else 48), args.bare_steps or (4 if tiny else 20)
    batch, rows = args.batch or (16 if tiny else 256), args.rows or (512 if tiny else 8192)
    device = torch.device('cpu' if tiny or not torch.cuda.is_available() else 'cuda')
    record = dict(config='vit-l-14 (seed) with ' + ('tiny overrides: dim 64, depth 2, the shapes CLIP, CPU' if tiny else
                                                    f'a random-weight {args.clip_model} CLIP, bf16, no compile'),
                  device=torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU', torch=torch.__version__,
                  batch=batch, command_steps=steps, bare_timed_steps=bare_steps, rows=rows)
    def save(): Path(args.json).write_text(json.dumps(record, indent=1) + '\n')
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        tmp, t0 = Path(tmp), time.time()
        if tiny:
            from prior_nbdev.lab.shapes import shapes_clip
            clip, spec = shapes_clip(), dict(make='prior_nbdev_shapes')
        else: clip, spec = random_clip(args.clip_model, tmp, device)
        dim = clip.dim_latent
        write_data(clip, rows, tmp / 'data', dim)
        record['prepare_s'] = round(time.time() - t0, 1); save()
        print(f'data: {rows} rows of {dim}-d, CLIP {spec}, {record["prepare_s"]} s', flush=True)
        over = overrides(tmp / 'data', tmp / 'run', spec, steps, batch, tiny)
        record.update(bare_rates(over, clip, bare_steps)); save()
        print(f"bare step: {record['bare_step_samples_per_s']} samples/s; with the CLIP's text tower: {record['bare_step_with_clip_samples_per_s']}", flush=True)
        del clip
        if device.type == 'cuda': torch.cuda.empty_cache()
        with open(tmp / 'command.log', 'w') as log:
            try: record.update(command_rate(over, log))
            except RuntimeError as e: record['command_error'] = str(e)[:2000]
        sys.stdout.write((tmp / 'command.log').read_text()[-3000:])
        if 'command_samples_per_s' in record:
            record['command_vs_bare_with_clip'] = round(record['command_samples_per_s'] / record['bare_step_with_clip_samples_per_s'], 3)
            record['clip_share_of_bare_step'] = round(1 - record['bare_step_with_clip_samples_per_s'] / record['bare_step_samples_per_s'], 3)
        save()
    print(json.dumps(record), flush=True)


if __name__ == '__main__': main()
