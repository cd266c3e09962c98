"""dalle2-pytorch 1.15.6 trained exactly as `prior_nbdev_demo` trains ours, scored by the same code, side by side.

    python bench/reference_demo.py [--steps 3500] [--earlier] [--threads 1] [--train_seed N] [--out bench/ablation_demo.json]

The demo's pairs (24,000 of seed 2024, the packaged CLIP, labels in the metadata) are written once; the reference's own
`DiffusionPrior`, `DiffusionPriorNetwork` and `DiffusionPriorTrainer` (AdamW, clipping, warm-up, cosine decay, its EMA
with the demo's beta 0.995 updated every step after step 100) train on the very batches our training command reads (our
`PriorLoader`, same seed), with the demo's model and optimiser settings (its training steps are drawn uniformly: it has no other way). Its checkpoint, saved by its own trainer, is
loaded with `load_prior` and scored by the training chapter's `test_metrics` path (`evaluate_prior`: the seed's seven
metrics, best of 2 at 64 steps) and the demo config's ground-truth evaluator (fidelity, diversity), so only the training differs.
The result is one more row, 'dalle2-pytorch 1.15.6 (demo defaults)', of the ablation JSON the studies chapter (`nbs/21_studies.ipynb`) prints;
`--earlier` trains it with the demo's earlier defaults instead (feed-forward x4, 4,000 steps): '... (earlier defaults)'.
"""
import argparse, json, os, sys, tempfile, time
os.environ.setdefault('TQDM_DISABLE', '1')
from pathlib import Path
from types import SimpleNamespace
import torch
from prior_nbdev.lab.demo import demo_config, demo_embeddings, merge, DEMO_STEPS
from prior_nbdev.train import config_from_dict, TrainDiffusionPriorConfig, prepare_data, test_metrics, load_evaluators, EvalData
from prior_nbdev.lab.truth import Method
from prior_nbdev.checkpoint import load_prior
sys.path.insert(0, str(Path(__file__).parent))
from ablate_demo import clip_id, EARLIER

NAME = 'dalle2-pytorch 1.15.6 (demo defaults)'


def train_reference(config:TrainDiffusionPriorConfig, train_loader, steps:int, path:Path):
    import dalle2_pytorch as ref
    from dalle2_pytorch.trainer import DiffusionPriorTrainer as RefTrainer
    p, n, tc = config.prior, config.prior.net, config.train
    torch.manual_seed(tc.random_seed)
    net = ref.DiffusionPriorNetwork(dim=n.dim, depth=n.depth, dim_head=n.dim_head, heads=n.heads, ff_mult=n.ff_mult, max_text_len=n.max_text_len,
                                    num_timesteps=n.num_timesteps, normformer=n.normformer)
    prior = ref.DiffusionPrior(net, image_embed_dim=p.image_embed_dim, timesteps=p.timesteps, cond_drop_prob=p.cond_drop_prob,
                               condition_on_text_encodings=False)
    trainer = RefTrainer(prior, lr=tc.lr, wd=tc.wd, eps=tc.eps, max_grad_norm=tc.max_grad_norm, warmup_steps=tc.warmup_steps,
                         cosine_decay_max_steps=tc.cosine_decay_max_steps, use_ema=True, ema_beta=tc.ema_beta,
                         ema_update_after_step=tc.ema_update_after_step, ema_update_every=tc.ema_update_every)
    done = 0
    while done < steps:
        for batch in train_loader:
            trainer(text_embed=batch['text_embed'], image_embed=batch['image_embed'])
            trainer.update(); done += 1
            if done == steps: break
    trainer.save(str(path))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, help="training steps (default: the demo's; 4,000 with --earlier)")
    parser.add_argument('--earlier', action='store_true', help="the demo's earlier defaults (uniform times, feed-forward x4, 4,000 steps)")
    parser.add_argument('--pairs', type=int, default=24_000)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--train_seed', type=int, help="train.random_seed (weights' start, batch order, sampling noise); the row is named '... (seed N)'")
    parser.add_argument('--out', default=str(Path(__file__).with_name('ablation_demo.json')))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.steps is None: args.steps = EARLIER['steps'] if args.earlier else DEMO_STEPS
    with tempfile.TemporaryDirectory() as tmp:
        tmp, start = Path(tmp), time.time()
        demo_embeddings(tmp, args.pairs, progress=False)
        seeded = None if args.train_seed is None else dict(train=dict(random_seed=args.train_seed))
        if args.earlier: seeded = merge({k: v for k, v in EARLIER.items() if k != 'steps'}, seeded)
        config = config_from_dict(TrainDiffusionPriorConfig, demo_config(tmp, num_pairs=args.pairs, steps=args.steps, threads=args.threads,
                                                                         overrides=seeded))
        train_loader, eval_loader = prepare_data(config)
        train_reference(config, train_loader, args.steps, tmp / 'reference.pt')
        seconds = time.time() - start
        # what the weights cannot tell (the reference's checkpoints carry no config)
        settle = dict(condition_on_text_encodings=False, cond_drop_prob=config.prior.cond_drop_prob, timesteps=config.prior.timesteps)
        online, ema = (load_prior(tmp / 'reference.pt', use_ema=use, **settle).eval() for use in (False, True))
        assert (online.net.config.depth, online.net.config.normformer, online.net.config.ff_mult) == (config.prior.net.depth, config.prior.net.normformer, config.prior.net.ff_mult)
        as_trainer = SimpleNamespace(unwrapped_prior=online, ema_model=ema, steps_done=args.steps)   # what test_metrics reads of a trainer
        metrics = test_metrics(as_trainer, eval_loader('test'), config.train)
        (judge,) = load_evaluators(config)   # the demo config's SHAPES_TRUTH
        with torch.no_grad(): truth = judge(ema, EvalData(train_loader, eval_loader('test'), config)).metrics
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    name = NAME.replace('demo defaults', 'earlier defaults') if args.earlier else NAME
    name = name if args.train_seed is None else f'{name} (seed {args.train_seed})'
    results[name] = dict(overrides=seeded or {}, clip=clip_id(), steps=args.steps, seconds=round(seconds), metrics=metrics, methods=truth['methods'],
                         probe_accuracy=truth['probe_accuracy'],
                         data_entropy=truth['data_entropy'], diversity_rows=truth['diversity_rows'])
    out.write_text(json.dumps(results, indent=1))
    best = truth['methods'][Method.prior(1, 1.)]
    print(f"{name}: {seconds:.0f}s (training)  sim. original image {metrics['similarity_with_original_image']:.3f}  "
          f"fidelity/ceiling {best['fidelity_vs_ceiling']:.3f}  lowest diversity {min(best['diversity'].values()):.2f}", flush=True)


if __name__ == '__main__': main()
