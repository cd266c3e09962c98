"""Train the shapes world's tiny CLIP from scratch and write prior_nbdev/assets/shapes_clip.safetensors (fp16).

Deterministic for a given torch build and thread count: `python tools/train_shapes_clip.py` (about 6 minutes on 2 CPU cores).
open_clip's own CLIP class and contrastive ClipLoss; AdamW with warmup and cosine decay. Prints held-out text->image recall.
"""
import argparse, json, math, time
from pathlib import Path
import numpy as np
import torch
import torch.nn.functional as F
import open_clip
from open_clip.loss import ClipLoss
from safetensors.torch import save_file
from prior_nbdev.demo import make_shapes_dataset, register_shapes_clip, shapes_clip, ShapesTokenizer, SHAPES_CLIP_WEIGHTS, SHAPES_CLIP_CONFIG
from prior_nbdev.metrics import recall_at_k


def to_input(images:np.ndarray, mean, std)->torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean)[None, :, None, None]) / torch.tensor(std)[None, :, None, None]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--pairs', type=int, default=40_000)
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--batch_size', type=int, default=128)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=str(SHAPES_CLIP_WEIGHTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, captions = make_shapes_dataset(args.pairs, seed=0)
    test_images, test_captions = make_shapes_dataset(1000, seed=12345)
    tokenizer = ShapesTokenizer(SHAPES_CLIP_CONFIG['text_cfg']['context_length'])
    tokens = tokenizer(captions)
    reference = shapes_clip(weights=None)                 # for the normalisation constants the adapter will use
    model = open_clip.create_model(register_shapes_clip())
    model.train()
    loss_fn = ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and 'embedding' not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and 'embedding' not in n)]
    opt = torch.optim.AdamW([dict(params=decay, weight_decay=0.1), dict(params=rest, weight_decay=0.)], lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(0)
    start = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, args.pairs, (args.batch_size,), generator=gen)
        image_features = model.encode_image(to_input(images[idx.numpy()], reference.image_mean, reference.image_std), normalize=True)
        text_features = model.encode_text(tokens[idx], normalize=True)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == args.steps - 1:
            print(f'step {step:5d}  loss {loss.item():.3f}  {time.time() - start:.0f}s', flush=True)
    model.eval()
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, args.out, metadata=dict(config=json.dumps(SHAPES_CLIP_CONFIG), steps=str(args.steps), pairs=str(args.pairs)))
    clip = shapes_clip(weights=args.out)                   # evaluate what was saved, through the adapter
    image_embed, _ = clip.embed_image(torch.from_numpy(test_images).permute(0, 3, 1, 2).float() / 255)
    text_embed, _ = clip.embed_text(tokenizer(test_captions))
    recall = recall_at_k(text_embed, image_embed, (1, 5))
    print(json.dumps(dict(held_out_text_to_image_recall_at_1=recall[1], recall_at_5=recall[5],
                          cos_text_own_image=F.cosine_similarity(text_embed, image_embed).mean().item(),
                          cos_text_other_image=F.cosine_similarity(text_embed, image_embed.roll(1, 0)).mean().item(),
                          seconds=round(time.time() - start), bytes=Path(args.out).stat().st_size), indent=1))


if __name__ == '__main__': main()
