"""The one open label the demo's prior under-spreads, the count, measured directly for a few training settings.

    python bench/count_share.py [--only NAME ...] [--steps 4000] [--switch 1000 700 ...] [--embeddings DIR] [--out ...]

A caption naming one shape without saying where ("a green circle") leaves the count open: in the shapes world one such
picture in six shows a second, unnamed shape. For each setting this trains the demo's prior (the demo's pairs of seed
2024 and config, one change each, `train()` as `prior_nbdev_demo` runs it, no ground-truth pass) and reports
- the share of two-object readings among 8 samples for each count-open held-out caption, by the probes fitted on the
  first 10,000 training pairs (the demo's probes), against the same share among the data's own training pictures;
- the same share for the training picture nearest to each sample (so the probe is not the only judge);
- fidelity as a share of the ceiling, 1 candidate, 4 draws per held-out caption (64 DDIM steps).
- where the share is lost: the share again when the data's own denoiser (the exact posterior mean over the training
  pictures with the caption, what a perfect network would predict for them) takes every step at or above `s` and the
  network the rest, for a few `s` (`--switch`); s = 1000 is the network alone, s = 0 the data's denoiser alone.
The shapes chapter shows the share for the packaged prior and plots the last measurement; this is how settings compare.
`--embeddings DIR` reuses the demo's embeddings (`DIR/img_emb` ...) written by an earlier run instead of making them.
"""
import argparse, json, os, tempfile, time
os.environ.setdefault('TQDM_DISABLE', '1')
from pathlib import Path
import torch
import torch.nn.functional as F
from prior_nbdev.lab.demo import demo_config, demo_embeddings, DEMO_STEPS
from prior_nbdev.train import LATEST
from prior_nbdev.train import train, config_from_dict, TrainDiffusionPriorConfig
from prior_nbdev.checkpoint import load_prior
from prior_nbdev.data import validate_embeddings
from prior_nbdev.lab.truth import LinearProbes, fidelity
from prior_nbdev.lab.shapes import LABELS, parse_caption, satisfied
from ablate_demo import EARLIER   # bench/ is the script's folder, first on sys.path

SETTINGS = {   # one change each from the demo's defaults (logit-normal times centred at mu = -0.5, feed-forward x8)
    'demo defaults': {},
    'earlier defaults (uniform times, feed-forward x4, 4,000 steps)': EARLIER,
    'uniform times': dict(prior=dict(time_sampling='uniform')),
    'feed-forward x4': dict(prior=dict(net=dict(ff_mult=4))),
    'logit-normal times, mu 0': dict(prior=dict(time_sampling_loc=0.)),
    'logit-normal times, mu -0.75': dict(prior=dict(time_sampling_loc=-0.75)),
    'logit-normal times, mu -1': dict(prior=dict(time_sampling_loc=-1.)),
    'no condition dropout': dict(prior=dict(cond_drop_prob=0.)),
    'batch 256': dict(data=dict(batch_size=256)),
    'depth 6': dict(prior=dict(net=dict(depth=6))),
    'v prediction': dict(prior=dict(predict_v=True, predict_x_start=False)),
    'linear beta schedule': dict(prior=dict(beta_schedule='linear')),
    'self conditioning': dict(prior=dict(net=dict(self_cond=True))),
}
PAIRS, TEST = 24_000, slice(23_000, 24_000)


def count_open(caption:str)->bool:
    claim = parse_caption(caption)
    return len(claim.objects) == 1 and not (claim.two or claim.side)


def data_denoiser(pool:torch.Tensor, pool_caption:torch.Tensor, row_caption:torch.Tensor, alphas_cumprod:torch.Tensor):
    "The exact E[x0 | x_t, caption] when x0 is one of the caption's training pictures (`pool`, already scaled), as (x, t) -> x0."
    same = row_caption[:, None] == pool_caption[None]
    def predict(x, t):
        a = alphas_cumprod[t[0]]
        logits = -torch.cdist(x, a.sqrt() * pool) ** 2 / (2 * (1 - a))
        return torch.softmax(logits.masked_fill(~same, float('-inf')), -1) @ pool
    return predict


def share_by_switch(prior, probes, text_embed, image_embed, captions, train_open, test_open, switches, draws=8)->dict:
    "Two-object share of `draws` samples per count-open test caption when the data's denoiser takes every step >= s."
    names = {c: k for k, c in enumerate(sorted({captions[i] for i in train_open.tolist() + test_open.tolist()}))}
    pool = F.normalize(image_embed[train_open], dim=-1) * prior.image_embed_scale
    predict = data_denoiser(pool, torch.tensor([names[captions[i]] for i in train_open.tolist()]),
                            torch.tensor([names[captions[i]] for i in test_open.tolist()]).repeat(draws),
                            prior.noise_scheduler.alphas_cumprod)
    network = prior.estimate_x_start
    shares = {}
    try:
        for s in switches:
            prior.estimate_x_start = lambda x, t, text_cond, **kw: predict(x, t) if int(t[0]) >= s else network(x, t, text_cond, **kw)
            torch.manual_seed(0)
            drawn = prior.sample(text_embed=text_embed[test_open].repeat(draws, 1), num_samples_per_batch=1, timesteps=64)
            shares[str(s)] = probes.read(drawn)['count'].float().mean().item()
    finally: del prior.estimate_x_start
    return shares


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', nargs='*', choices=list(SETTINGS), help='settings to run (default: the first three)')
    parser.add_argument('--steps', type=int, help="training steps (default: the demo's)")
    parser.add_argument('--switch', nargs='*', type=int, default=[1000, 800, 700, 600, 500, 400, 300, 0],
                        help="steps from which the data's denoiser takes over (none: skip this measurement)")
    parser.add_argument('--embeddings', help="the demo's embeddings from an earlier run (default: made here)")
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(Path(__file__).with_name('count_share.json')))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.embeddings: emb = Path(args.embeddings)
        else:
            demo_embeddings(tmp, PAIRS, progress=False)        # the demo's world, embedded once; read back below
            emb = tmp / 'embeddings'
        world = validate_embeddings(emb / 'img_emb', emb / 'text_emb', emb / 'metadata', label_columns=list(LABELS))
        pairs = world.read(0, PAIRS)
        image_embed, text_embed, captions, labels = pairs['image_embed'], pairs['text_embed'], pairs['captions'], world.read_labels(0, PAIRS)
        probes = LinearProbes.fit(image_embed[:10_000], {k: v[:10_000] for k, v in labels.items()})
        claims = [parse_caption(c) for c in captions]
        train_open = torch.tensor([i for i in range(10_000) if count_open(captions[i])])
        pool_open = torch.tensor([i for i in range(PAIRS - 2000) if count_open(captions[i])])   # every training row
        test_open = torch.tensor([i for i in range(PAIRS)[TEST] if count_open(captions[i])])
        data_share = probes.read(image_embed[train_open])['count'].float().mean().item()
        ceiling = fidelity(probes.read(image_embed[TEST]), claims[TEST], satisfied).float().mean().item()
        gallery = F.normalize(image_embed[:PAIRS - 2000], dim=-1)
        for name in args.only or list(SETTINGS)[:3]:
            overrides = dict(SETTINGS[name])
            steps = overrides.pop('steps', args.steps or DEMO_STEPS)
            run = tmp / name.replace(' ', '_').replace(',', '')
            config = demo_config(run, num_pairs=PAIRS, steps=steps, threads=args.threads, overrides=overrides, ground_truth=False)
            config['data'].update(image_url=str(emb / 'img_emb'), text_url=str(emb / 'text_emb'), meta_url=str(emb / 'metadata'))
            start = time.time()
            train(config_from_dict(TrainDiffusionPriorConfig, config), progress=False)
            seconds = time.time() - start
            prior = load_prior(run / LATEST).eval()
            torch.manual_seed(0)
            drawn = prior.sample(text_embed=text_embed[test_open].repeat(8, 1), num_samples_per_batch=1, timesteps=64)
            share = probes.read(drawn)['count'].float().mean().item()
            nearest = (F.normalize(drawn, dim=-1) @ gallery.T).argmax(-1)
            nearest_share = labels['count'][nearest].float().mean().item()
            hits = []
            for draw in range(4):
                torch.manual_seed(100 + draw)
                sample = prior.sample(text_embed=text_embed[TEST], num_samples_per_batch=1, timesteps=64)
                hits.append(fidelity(probes.read(sample), claims[TEST], satisfied).float().mean().item())
            switch = share_by_switch(prior, probes, text_embed, image_embed, captions, pool_open, test_open, args.switch) if args.switch else {}
            results[name] = dict(overrides=overrides, steps=config['train']['max_steps'], seconds=round(seconds), two_object_share=share,
                                 nearest_picture_share=nearest_share, data_share=data_share,
                                 fidelity_vs_ceiling=sum(hits) / len(hits) / ceiling, count_open_test_captions=len(test_open),
                                 share_with_data_denoiser_from_step=switch)
            out.write_text(json.dumps(results, indent=1))
            print(f'{name:24s} {seconds:5.0f}s  two-object share {share:.3f} (nearest pictures {nearest_share:.3f}; data {data_share:.3f})'
                  f'  fidelity/ceiling {results[name]["fidelity_vs_ceiling"]:.3f}  data\'s denoiser from step s: '
                  + ', '.join(f'{k}: {v:.3f}' for k, v in switch.items()), flush=True)


if __name__ == '__main__': main()
