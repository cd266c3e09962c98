"The offline demo end to end (reduced: the full one is `prior_nbdev_demo --out DIR`), and the packaged CLIP."
import json, os, shutil, subprocess
import torch
import torch.nn.functional as F
from prior_nbdev.lab.shapes import SHAPES_CLIP_WEIGHTS, make_shapes_dataset, shapes_clip
from prior_nbdev.metrics import METRIC_KEYS, recall_at_k


def test_packaged_clip_is_small_and_has_learned_the_world():
    assert SHAPES_CLIP_WEIGHTS.stat().st_size < 4 * 2 ** 20          # 3.4 MiB in fp16
    clip = shapes_clip()
    images, captions = make_shapes_dataset(500, seed=777)
    image_embed = clip.embed_image(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[0]
    text_embed = clip.embed_text(clip.tokenize(captions))[0]
    own = F.cosine_similarity(text_embed, image_embed).mean().item()
    other = F.cosine_similarity(text_embed, image_embed.roll(1, 0)).mean().item()
    assert own > other + 0.3, (own, other)
    assert recall_at_k(text_embed, image_embed, (5,))[5] > 5 * 5 / 500   # far above chance


def test_packaged_clip_sees_both_objects_and_the_decoder_draws_them():
    "The CLIP binds attributes to positions (measured 0.95-0.98 for every attribute of both objects); the decoder draws what it holds."
    from prior_nbdev.lab.shapes import SHAPES_DECODER_WEIGHTS, shapes_probes
    from prior_nbdev.lab.decoder import shapes_decoder, decoder_report
    clip = shapes_clip()
    probes, accuracy = shapes_probes(clip, n=3000, n_test=1000)
    assert min(accuracy[k] for k in ('count', 'color', 'shape', 'size', 'arrangement')) > 0.95, accuracy
    assert min(accuracy[f'{o}_{k}'] for o in 'ab' for k in ('color', 'shape', 'size')) > 0.9, accuracy
    assert SHAPES_DECODER_WEIGHTS.stat().st_size < 2 ** 20
    report = decoder_report(shapes_decoder(), clip, probes, n=500)
    assert report['shape_pixel_accuracy'] > 0.5, report
    for k in ('count', 'color', 'size'): assert report['probes_on_drawn'][k] > 0.9, report    # measured 0.995, 1.00, 1.00
    assert report['probes_on_drawn']['shape'] > 0.5, report                                  # measured 0.69: edges are soft


def test_demo_command_end_to_end(tmp_path):
    out = tmp_path / 'demo'
    result = subprocess.run([shutil.which('prior_nbdev_demo') or 'prior_nbdev_demo', '--out', str(out), '--pairs', '6000',
                             '--steps', '1000', '--no_progress', '--threads', '1', '--probe_rows', '3000'],
                            capture_output=True, text=True, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert set(METRIC_KEYS) <= set(metrics)
    for name in ('metrics.png', 'nearest.png', 'unclip.png', 'ground_truth.png', 'config.json', 'latest.pt', 'summary.json'):
        assert (out / name).stat().st_size > 0, name
    for folder in ('img_emb', 'text_emb', 'metadata'): assert any((out / 'embeddings' / folder).iterdir())
    # a third of the full demo's training already beats the raw text embedding by the demo's margin (measured +0.139)
    assert metrics['similarity_with_original_image'] > metrics['baseline_similarity'] + 0.05, metrics
    assert metrics['similarity_with_unrelated_caption'] < metrics['similarity_with_original_image'] - 0.3, metrics
    assert 'similarity with the original image' in result.stderr
    # what the embeddings depict: probes read lone shapes; the mean predictor has no spread, the prior has
    truth = metrics['ground_truth']
    assert min(truth['probe_accuracy'][k] for k in ('count', 'color', 'size')) > 0.9, truth['probe_accuracy']
    methods = truth['methods']
    assert set(methods['ridge (mean predictor)']['diversity'].values()) == {0.0}, methods['ridge (mean predictor)']
    prior = methods['prior, 1 candidate, cond_scale 1']
    assert prior['diversity']['color'] > 0.5, prior
    assert prior['fidelity_one_object'] > methods['text embedding']['fidelity_one_object'], methods
    assert 'of the ceiling' in result.stdout + result.stderr
