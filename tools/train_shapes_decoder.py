"""Train the shapes world's tiny decoder and write prior_nbdev/lab/assets/shapes_decoder.safetensors (fp16).

`python tools/train_shapes_decoder.py` trains `ShapesDecoder` (the decoder chapter) on the packaged CLIP's image embeddings
of 40,000 scenes of seed 0 with `train_decoder`'s defaults, then prints `decoder_report` on 1,000 fresh scenes (pixel
accuracy; the probes' readings of the drawn pictures against the true ones). Deterministic for a given torch build and
thread count. Retrain it whenever the packaged CLIP changes: the decoder reads that CLIP's embedding space.
"""
import argparse, json, time
from pathlib import Path
import torch
from prior_nbdev.lab.shapes import SHAPES_DECODER_WEIGHTS, shapes_clip, shapes_probes
from prior_nbdev.lab.decoder import train_decoder, save_decoder, shapes_decoder, decoder_report


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--pairs', type=int, default=40_000)
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--clip', default=None, help='CLIP weights (default: the packaged ones)')
    parser.add_argument('--out', default=str(SHAPES_DECODER_WEIGHTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clip = shapes_clip(args.clip) if args.clip else shapes_clip()
    start = time.time()
    decoder, losses = train_decoder(clip, n=args.pairs, steps=args.steps, batch_size=args.batch_size, log_every=250)
    save_decoder(decoder, args.out, steps=args.steps, pairs=args.pairs, batch_size=args.batch_size)
    probes, _ = shapes_probes(clip, n=4000, n_test=1000)
    report = decoder_report(shapes_decoder(args.out), clip, probes)       # what was saved
    print(json.dumps(dict(report, seconds=round(time.time() - start), bytes=Path(args.out).stat().st_size),
                     indent=1, default=lambda v: round(v, 3)))


if __name__ == '__main__': main()
