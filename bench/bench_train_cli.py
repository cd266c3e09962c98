"""The training command against the bare training step, same config, same machine.

    python bench/bench_train_cli.py [--steps 300] [--repeats 3] [--json bench/results/train_cli_cpu.json]

Two small shapes-world configs: conditioning on the text embedding only, and on CLIP's per-token encodings (the CLIP's
text tower then runs on every batch's captions inside the command). For each: `train_diffusion_prior` end to end (it
reads the shards, shuffles, runs the CLIP, steps, logs, validates and saves; its `metrics.json` reports the training
loop's samples/s with validation and saving left out), and the bare step in this process (the trainer on batches
already in memory, as `bench/bench_prior.py` times it). The CLIP's share is the bare step with the text tower run on
the captions against the bare step alone.

Both run in this one process, taking turns `--repeats` times, and the medians are compared (every turn is kept in the
JSON): on a shared 2-core machine two processes doing the same work differ by tens of percent, which would swamp the
difference measured here. The command runs through its entry point, `prior_nbdev.train.main` with the same arguments
as `train_diffusion_prior` (the samples/s it reports are measured by its own loop, so starting a new interpreter would
change nothing in them). `--subprocess` runs the command and the bare step as fresh processes instead.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent


def config(data:Path, run:Path, steps:int, encodings:bool, batch:int)->dict:
    return dict(
        prior=dict(net=dict(dim=64, depth=4, dim_head=16, heads=4, ff_mult=8, max_text_len=24 if encodings else 1, num_timesteps=1000,
                            normformer=True), image_embed_dim=64, timesteps=1000, cond_drop_prob=0.1, condition_on_text_encodings=encodings,
                   **(dict(clip=dict(make='prior_nbdev_shapes')) if encodings else {})),
        data=dict(image_url=str(data / 'img_emb'), text_url=str(data / 'text_emb'), meta_url=str(data / 'metadata'), batch_size=batch,
                  splits=dict(train=0.96, val=0.02, test=0.02), eval_every_steps=10**9, block_size=4096),
        train=dict(epochs=1000, max_steps=steps, lr=1e-3, save_every_steps=10**9, log_every_steps=25, eval_timesteps=[4],
                   device='cpu', num_threads=torch.get_num_threads(), resume=False),
        tracker=dict(data_path=str(run), save_best=False))


def command_rate(cfg:dict, folder:Path, subprocess_:bool=False)->tuple[float, float]:
    "(the command's training samples/s as its metrics.json reports them, its wall seconds)."
    path = folder / 'config.json'; path.write_text(json.dumps(cfg))
    start = time.time()
    if subprocess_:
        result = subprocess.run(['train_diffusion_prior', '--config_path', str(path), '--no_progress'], capture_output=True, text=True,
                                env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})
        if result.returncode: sys.exit(result.stderr[-3000:])
    else:
        import contextlib, io
        from prior_nbdev.train import main as train_main
        with contextlib.redirect_stdout(io.StringIO()): train_main(['--config_path', str(path), '--no_progress'])
    return json.loads((Path(cfg['tracker']['data_path']) / 'metrics.json').read_text())['run']['train_samples_per_s'], time.time() - start


def bare_step(cfg:dict, captions:list[str], steps:int, with_clip:bool)->float:
    from prior_nbdev.train import build_prior, config_from_dict, trainer_from_config, TrainDiffusionPriorConfig
    c = config_from_dict(TrainDiffusionPriorConfig, cfg)
    torch.manual_seed(0)
    prior = build_prior(c.prior)
    tc = c.train   # the trainer as the command makes it (clipping, EMA, schedule)
    trainer = trainer_from_config(prior, tc, device='cpu')
    batch = c.data.batch_size
    text, image = torch.nn.functional.normalize(torch.randn(2, batch, 64), dim=-1)
    caps = captions[:batch]
    encodings = prior.clip.embed_text(prior.clip.tokenize(caps))[1] if prior.clip is not None else None
    def step():
        enc = prior.clip.embed_text(prior.clip.tokenize(caps))[1] if with_clip else encodings
        trainer(text_embed=text, image_embed=image, **({'text_encodings': enc} if enc is not None else {})); trainer.update()
    for _ in range(10): step()
    start = time.time()
    for _ in range(steps): step()
    return steps * batch / (time.time() - start)


def bare_rate(cfg:dict, folder:Path, steps:int, with_clip:bool)->float:
    "`bare_step` in a fresh process with the command's environment (the captions are the data's)."
    path = folder / 'bare.json'; path.write_text(json.dumps(dict(config=cfg, steps=steps, with_clip=with_clip)))
    result = subprocess.run([sys.executable, __file__, '--bare', str(path)], capture_output=True, text=True,
                            env={**os.environ, 'OMP_NUM_THREADS': str(torch.get_num_threads())})
    if result.returncode: sys.exit(result.stderr[-3000:])
    return float(result.stdout.strip().splitlines()[-1])


def bare_main(path:str):
    job = json.loads(Path(path).read_text())
    cfg = job['config']
    torch.set_num_threads(cfg['train']['num_threads'])
    import pandas as pd
    captions = [c for f in sorted(Path(cfg['data']['meta_url']).glob('*.parquet')) for c in pd.read_parquet(f)['caption']]
    print(bare_step(cfg, captions, job['steps'], job['with_clip']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--pairs', type=int, default=8000)
    parser.add_argument('--repeats', type=int, default=3, help='turns of command and bare step; medians are compared')
    parser.add_argument('--conditioning', type=lambda v: v == 'encodings', nargs='+', default=[False, True], metavar='{embedding,encodings}')
    parser.add_argument('--json', default=str(ROOT / 'bench' / 'results' / 'train_cli_cpu.json'))
    parser.add_argument('--subprocess', action='store_true', help='the command and the bare step in fresh processes, not in this one')
    parser.add_argument('--bare', help=argparse.SUPPRESS)   # internal: one bare-step measurement from a job file
    args = parser.parse_args()
    if args.bare: return bare_main(args.bare)
    from prior_nbdev.lab.shapes import make_shapes_scenes, shapes_clip
    from prior_nbdev.clip import write_clip_embeddings
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, captions, _ = make_shapes_scenes(args.pairs, seed=7)
        write_clip_embeddings(shapes_clip(), images, captions, tmp / 'data', progress=False)
        for encodings in args.conditioning:
            cfg = config(tmp / 'data', tmp / f'run_{encodings}', args.steps, encodings, args.batch)
            runs = []
            for r in range(args.repeats):   # taking turns: drift in the machine's speed falls on both sides alike
                cfg['tracker']['data_path'] = str(tmp / f'run_{encodings}_{r}')
                command, wall = command_rate(cfg, tmp, args.subprocess)
                if args.subprocess: bare_of = lambda clip: bare_rate(cfg, tmp, min(args.steps, 100), with_clip=clip)
                else: bare_of = lambda clip: bare_step(cfg, captions, min(args.steps, 100), with_clip=clip)
                bare = bare_of(False)
                bare_clip = bare_of(True) if encodings else None
                runs.append(dict(command=round(command, 1), bare=round(bare, 1), wall=round(wall, 1),
                                 **({'bare_with_clip': round(bare_clip, 1)} if encodings else {})))
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            command, bare, bare_clip = med['command'], med['bare'], med.get('bare_with_clip')
            row = dict(conditioning='text encodings (CLIP text tower in the loop)' if encodings else 'text embedding',
                       batch=args.batch, command_samples_per_s=round(command, 1), bare_step_samples_per_s=round(bare, 1),
                       command_vs_bare=round(command / bare, 3), command_wall_s=round(med['wall'], 1))
            if bare_clip is not None:
                row.update(bare_step_with_clip_samples_per_s=round(bare_clip, 1), clip_share_of_step=round(1 - bare_clip / bare, 3),
                           command_vs_bare_with_clip=round(command / bare_clip, 3))
            row['runs'] = runs
            rows.append(row)
            print(json.dumps(row), flush=True)
    record = dict(machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}',
                  threads=torch.get_num_threads(), steps=args.steps, repeats=args.repeats,
                  how='in fresh processes' if args.subprocess else 'in one process, taking turns', rows=rows)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + '\n')


if __name__ == '__main__':
    main()
