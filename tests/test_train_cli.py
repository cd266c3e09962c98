"The training command end to end: outputs, resuming after SIGKILL, non-finite losses, bad input, two processes."
import json, os, random, shutil, signal, socket, subprocess, time
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prior_nbdev.data import write_embedding_shards
from prior_nbdev.metrics import METRIC_KEYS
from prior_nbdev.train import load_config, train, config_from_dict, TrainDiffusionPriorConfig
from prior_nbdev.checkpoint import read_checkpoint
from prior_nbdev.lab.truth import Method, TEXT, RIDGE, CEILING

CLI = shutil.which('train_diffusion_prior') or 'train_diffusion_prior'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
RECALL_KEYS = {'prior_recall@1', 'prior_recall@5', 'text_recall@1', 'text_recall@5'}


def toy_data(root, n=600, dim=16, seed=0, shard_size=256):
    g = torch.Generator().manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0]
    text = F.normalize(torch.randn(n, dim, generator=g), dim=-1)
    image = F.normalize(text @ rotation + 0.1 * torch.randn(n, dim, generator=g), dim=-1)
    return write_embedding_shards(root, image.numpy(), text.numpy(), [f'caption {i}' for i in range(n)], shard_size=shard_size)


def toy_config(data, run_dir, **train_overrides):
    return dict(
        prior=dict(net=dict(dim=16, depth=2, dim_head=16, heads=2, max_text_len=1), image_embed_dim=16, timesteps=50,
                   cond_drop_prob=0.1, condition_on_text_encodings=False),
        data=dict(image_url=str(data / 'img_emb'), text_url=str(data / 'text_emb'), meta_url=str(data / 'metadata'),
                  batch_size=40, splits=dict(train=0.8, val=0.1, test=0.1), eval_every_steps=24, block_size=64),
        train=dict(dict(epochs=4, lr=3e-3, wd=0.01, ema_beta=0.9, ema_update_after_step=10, ema_update_every=1,
                        eval_timesteps=[8], save_every_steps=6, log_every_steps=3, device='cpu', num_threads=1), **train_overrides),
        tracker=dict(data_path=str(run_dir)))


def write_config(tmp_path, config, name='config.json'):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def run_cli(config_path, *extra, timeout=300):
    return subprocess.run([CLI, '--config_path', str(config_path), '--no_progress', *extra], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def test_cli_trains_and_writes_metrics(tmp_path):
    data = toy_data(tmp_path / 'data')
    config = write_config(tmp_path, toy_config(data, tmp_path / 'run'))
    result = run_cli(config)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
    assert set(metrics) == set(METRIC_KEYS) | RECALL_KEYS | {'run', 'label_free'}
    assert all(np.isfinite(v) for k, v in metrics.items() if k not in ('run', 'label_free'))
    from prior_nbdev.metrics import LABEL_FREE_KEYS
    free = metrics['label_free']
    assert set(LABEL_FREE_KEYS) <= set(free) and free['rows'] == 60 and all(np.isfinite(free[k]) for k in LABEL_FREE_KEYS), free
    assert 0 <= free['coverage'] <= 1 and free['fd'] >= 0 and (tmp_path / 'run' / 'label_free.png').stat().st_size > 5_000
    assert {k: v for k, v in metrics['run'].items() if k != 'train_samples_per_s'} == dict(precision='no', compiled=False, processes=1)
    assert metrics['similarity_with_original_image'] > metrics['baseline_similarity']
    assert (tmp_path / 'run' / 'metrics.png').stat().st_size > 10_000
    ckpt = read_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert ckpt['step'] == 4 * 12 and ckpt['train_config']['data']['batch_size'] == 40
    assert ckpt['config']['net']['depth'] == 2  # enough to rebuild the model without the JSON
    assert (tmp_path / 'run' / 'best.pt').exists()


def test_labels_in_the_metadata_add_what_the_samples_depict(tmp_path):
    data = toy_data(tmp_path / 'data')
    image = np.concatenate([np.load(data / 'img_emb' / f'img_emb_{k}.npy') for k in range(3)]).astype(np.float32)
    labels = dict(quadrant=2 * (image[:, 0] > 0) + (image[:, 1] > 0), third=np.where(image[:, 3] > 0.2, -1, image[:, 2] > 0))
    text = np.concatenate([np.load(data / 'text_emb' / f'text_emb_{k}.npy') for k in range(3)])
    write_embedding_shards(data, image, text, [f'caption {i}' for i in range(len(image))], labels=labels, shard_size=256)
    cfg = toy_config(data, tmp_path / 'run', evaluators=[dict(use='prior_nbdev.lab.truth:GROUND_TRUTH', settings=[[1, 1.]])], epochs=8)
    cfg['data']['label_columns'] = ['quadrant', 'third']
    result = run_cli(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    truth = json.loads((tmp_path / 'run' / 'metrics.json').read_text())['ground_truth']
    assert (tmp_path / 'run' / 'ground_truth.png').stat().st_size > 10_000
    assert set(truth['methods']) == {TEXT, RIDGE, CEILING, Method.prior(1, 1.)}
    assert truth['probe_accuracy']['quadrant'] > 0.9, truth['probe_accuracy']
    methods = truth['methods']
    assert methods[CEILING]['fidelity_vs_ceiling'] == 1
    assert methods[Method.prior(1, 1.)]['fidelity'] > methods[TEXT]['fidelity'] + 0.2, methods
    assert 'of the ceiling' in result.stdout + result.stderr


def test_killed_run_resumes_where_it_stopped(tmp_path):
    "SIGKILL at a random moment after the first checkpoint; the same command resumes and finishes."
    data = toy_data(tmp_path / 'data')
    config = write_config(tmp_path, toy_config(data, tmp_path / 'run', epochs=60, save_every_steps=4))
    latest = tmp_path / 'run' / 'latest.pt'
    proc = subprocess.Popen([CLI, '--config_path', str(config), '--no_progress'], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None: time.sleep(0.05)
    assert latest.exists(), 'no checkpoint appeared'
    time.sleep(random.uniform(0.0, 1.5))   # kill anywhere: mid-step, mid-validation or mid-save
    proc.send_signal(signal.SIGKILL); proc.wait()
    killed_at = read_checkpoint(latest)            # never a torn file: the rename is atomic
    assert proc.returncode == -signal.SIGKILL and 0 < killed_at['step'] < 60 * 12, killed_at['step']
    result = run_cli(config)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"resumed from {latest} at step {killed_at['step']}" in result.stdout
    final = read_checkpoint(latest)
    assert final['step'] == 60 * 12                 # exactly the planned number of steps, none repeated
    rows_per_epoch = 12 * 40
    assert final['loader']['epoch'] * rows_per_epoch + final['loader']['position'] == 60 * rows_per_epoch  # every row of 60 epochs, once
    assert len(final['history']['step']) == len(set(final['history']['step']))
    assert json.loads((tmp_path / 'run' / 'metrics.json').read_text()).keys() >= set(METRIC_KEYS)


def test_resumed_training_equals_uninterrupted(tmp_path):
    "Stopping after a checkpoint and resuming gives the same weights as one uninterrupted run."
    data = toy_data(tmp_path / 'data')
    full = toy_config(data, tmp_path / 'full', epochs=2, save_every_steps=6)
    train(config_from_dict(TrainDiffusionPriorConfig, full), progress=False)
    part = toy_config(data, tmp_path / 'part', epochs=2, save_every_steps=6, max_steps=12)
    train(config_from_dict(TrainDiffusionPriorConfig, part), progress=False)
    part['train']['max_steps'] = None
    train(config_from_dict(TrainDiffusionPriorConfig, part), progress=False)
    a, b = read_checkpoint(tmp_path / 'full' / 'latest.pt'), read_checkpoint(tmp_path / 'part' / 'latest.pt')
    assert a['step'] == b['step'] == 24
    for key in a['model']:
        torch.testing.assert_close(a['model'][key], b['model'][key], atol=1e-5, rtol=1e-5, msg=key)
        torch.testing.assert_close(a['ema_model'][key], b['ema_model'][key], atol=1e-5, rtol=1e-5, msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    data = toy_data(tmp_path / 'data')
    broken = np.load(data / 'img_emb' / 'img_emb_1.npy'); broken[100] = np.nan   # row 356: in a late training batch
    np.save(data / 'img_emb' / 'img_emb_1.npy', broken)
    cfg = toy_config(data, tmp_path / 'run', epochs=1, save_every_steps=3)
    cfg['data'].update(check_finite=False, shuffle=False)
    result = run_cli(write_config(tmp_path, cfg))
    assert result.returncode == 1
    assert 'the training loss became nan by step 9' in result.stderr, result.stderr[-2000:]
    assert 'the last good checkpoint' in result.stderr and '(step 6) was kept' in result.stderr
    kept = read_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert kept['step'] == 6 and all(torch.isfinite(v).all() for v in kept['model'].values() if v.is_floating_point())


@pytest.mark.parametrize('break_it,message', [
    (lambda cfg, data: cfg['prior']['net'].update(depht=2), "unknown key(s) ['depht'] in config.prior.net; valid keys:"),
    (lambda cfg, data: cfg['data'].pop('batch_size'), "missing required key(s) ['batch_size'] in config.data"),
    (lambda cfg, data: cfg['prior'].update(image_embed_dim=32) or cfg['prior']['net'].update(dim=32),
     'holds 16-dimensional embeddings but the prior expects image_embed_dim=32'),
    (lambda cfg, data: cfg['data'].update(image_url=str(data / 'nope')), 'image embedding folder'),
    (lambda cfg, data: (data / 'text_emb' / 'text_emb_1.npy').unlink(), 'text embedding shard(s) [1] missing'),
    (lambda cfg, data: np.save(data / 'text_emb' / 'text_emb_2.npy', np.zeros((5, 16), np.float16)), 'text_emb_2.npy has shape (5, 16) but'),
    (lambda cfg, data: np.save(data / 'img_emb' / 'img_emb_0.npy', np.where(np.arange(256)[:, None] == 17, np.inf, np.load(data / 'img_emb' / 'img_emb_0.npy'))),
     'img_emb_0.npy: row 17 contains NaN or Inf'),
    (lambda cfg, data: cfg['data'].update(splits=dict(train=0.8, val=0.1)), 'splits must sum to 1'),
    (lambda cfg, data: cfg['prior'].update(beta_schedule='cosin'), "unknown beta_schedule 'cosin'"),
    (lambda cfg, data: cfg['data'].update(label_columns=['quadrant']), "metadata_0.parquet has no 'quadrant' column"),
    (lambda cfg, data: cfg['data'].update(label_columns=['quadrant']) or cfg['train'].update(evaluators=['no_such_module:RULES']),
     "train.evaluators: 'no_such_module:RULES' cannot be loaded"),
    (lambda cfg, data: cfg['train'].update(evaluators=['prior_nbdev.lab.truth:GROUND_TRUTH']),
     'ground_truth needs data.label_columns'),
    (lambda cfg, data: cfg['train'].update(evaluators=[dict(use='prior_nbdev.lab.truth:GROUND_TRUTH', test_row=5)]),
     "unknown option(s) ['test_row']"),
])
def test_bad_input_is_refused_with_a_clear_message(tmp_path, break_it, message):
    data = toy_data(tmp_path / 'data')
    cfg = toy_config(data, tmp_path / 'run')
    break_it(cfg, data)
    result = run_cli(write_config(tmp_path, cfg))
    assert result.returncode == 1, result.stdout[-1000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / 'run' / 'latest.pt').exists()


def test_reference_example_config_loads(tmp_path):
    example = {  # the keys and values of dalle2-pytorch's configs/train_prior_config.example.json
        "prior": {"clip": {"make": "x-clip", "model": "ViT-L/14", "base_model_kwargs": {"dim_text": 768, "dim_image": 768, "dim_latent": 768}},
                  "net": {"dim": 768, "depth": 12, "num_timesteps": 1000, "num_time_embeds": 1, "num_image_embeds": 1, "num_text_embeds": 1,
                          "dim_head": 64, "heads": 12, "ff_mult": 4, "norm_out": True, "attn_dropout": 0.0, "ff_dropout": 0.0,
                          "final_proj": True, "normformer": True, "rotary_emb": True},
                  "image_embed_dim": 768, "image_size": 224, "image_channels": 3, "timesteps": 1000, "cond_drop_prob": 0.1,
                  "loss_type": "l2", "predict_x_start": True, "beta_schedule": "cosine", "condition_on_text_encodings": True},
        "data": {"image_url": "https://example.invalid/img_emb/", "text_url": "https://example.invalid/text_emb/",
                 "meta_url": "https://example.invalid/metadata/", "batch_size": 256, "splits": {"train": 0.9, "val": 1e-7, "test": 0.0999999}},
        "train": {"epochs": 1, "lr": 1.1e-4, "wd": 6.02e-2, "max_grad_norm": 0.5, "use_ema": True, "amp": False, "save_every": 10000},
        "load": {"source": None, "resume": False},
        "tracker": {"tracker_type": "wandb", "data_path": "./prior_checkpoints", "wandb_entity": "laion", "wandb_project": "diffusion-prior", "verbose": True}}
    with pytest.warns(UserWarning, match=r"tracker log type 'wandb' -> tracker.log_with=\['wandb'\]"):
        config = load_config(write_config(tmp_path, example))
    assert config.prior.net.heads == 12 and config.train.save_every_steps == 10000 and config.train.resume is False
    # the reference's wandb settings reach Accelerate's wandb tracker instead of being dropped
    assert config.tracker.log_with == ['wandb'] and config.tracker.project_name == 'diffusion-prior'
    assert config.tracker.init_kwargs == {'wandb': {'entity': 'laion'}}
    # 1.15.6's own schema (tracker.log / tracker.save / tracker.load) loads too
    v1156 = {**example, 'tracker': {'data_path': 'x', 'overwrite_data_path': True, 'log': {'log_type': 'console'},
                                    'load': {'load_from': 'local', 'file_path': 'prior.pth'},
                                    'save': [{'save_to': 'local', 'save_latest': True, 'save_best': False}]}}
    v1156.pop('load')
    with pytest.warns(UserWarning):
        config = load_config(write_config(tmp_path, v1156, 'v1156.json'))
    assert config.train.init_from == 'prior.pth' and config.tracker.save_best is False and config.tracker.log_with is None


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_with_accelerate_launch(tmp_path):
    "Two real processes (torchrun + gloo on CPU): disjoint data, one writer, same result on both."
    accelerate = shutil.which('accelerate')
    if accelerate is None: pytest.skip('accelerate CLI not installed')
    data = toy_data(tmp_path / 'data', n=640)
    cfg = toy_config(data, tmp_path / 'run', epochs=2)
    cfg['data']['batch_size'] = 20
    config = write_config(tmp_path, cfg)
    result = subprocess.run([accelerate, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
                             '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(free_port()),
                             CLI, '--config_path', str(config), '--no_progress'],
                            capture_output=True, text=True, env={**ENV, 'CUDA_VISIBLE_DEVICES': ''}, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    blocks = {}
    for line in result.stdout.splitlines():
        if line.startswith('rank ') and 'reads train blocks' in line:
            rank = line.split()[1]
            blocks[rank] = eval(line.split('reads train blocks ', 1)[1])
    assert set(blocks) == {'0/2', '1/2'}, result.stdout[-2000:]
    rows = [set(range(s, e)) for s, e in blocks['0/2']], [set(range(s, e)) for s, e in blocks['1/2']]
    assert not set().union(*rows[0]) & set().union(*rows[1])                      # disjoint
    assert set().union(*rows[0], *rows[1]) == set(range(0, 512))                  # together, the whole train split
    files = sorted(p.name for p in (tmp_path / 'run').iterdir())
    assert files == ['best.pt', 'history.json', 'label_free.png', 'latest.pt', 'latest.pth', 'metrics.json', 'metrics.png'], files  # one writer, no duplicates
    ckpt = read_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert ckpt['step'] == 2 * 12 and ckpt['loader']['world_size'] == 2
    assert result.stdout.count('"similarity_with_original_image"') == 1          # metrics printed by the main process only


def test_caption_mode_runs_clip_on_the_fly(tmp_path):
    "A prior conditioned on text encodings: captions are tokenised and embedded by the configured CLIP during training."
    from prior_nbdev.lab.shapes import make_shapes_dataset, shapes_clip
    from prior_nbdev.clip import write_clip_embeddings
    images, captions = make_shapes_dataset(400, seed=5)
    data = write_clip_embeddings(shapes_clip(), images, captions, tmp_path / 'data', progress=False, shard_size=256)
    cfg = toy_config(data, tmp_path / 'run', epochs=2)
    cfg['prior'] = dict(net=dict(dim=64, depth=1, dim_head=16, heads=2, max_text_len=12), image_embed_dim=64, timesteps=50,
                        cond_drop_prob=0.1, condition_on_text_encodings=True, clip=dict(make='prior_nbdev_shapes'))
    cfg['data'].pop('text_url')   # nothing precomputed on the text side: CLIP runs on the captions
    result = run_cli(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = read_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert ckpt['step'] == 2 * 8
    assert not any(k.startswith('clip.') for k in ckpt['model']) and not any(k.startswith('clip.') for k in ckpt['ema_model'])
    assert set(json.loads((tmp_path / 'run' / 'metrics.json').read_text())) >= set(METRIC_KEYS)


def test_init_from_starts_from_given_weights(tmp_path):
    data = toy_data(tmp_path / 'data')
    first = toy_config(data, tmp_path / 'first', epochs=4)
    train(config_from_dict(TrainDiffusionPriorConfig, first), progress=False)
    second = toy_config(data, tmp_path / 'second', epochs=1, init_from=str(tmp_path / 'first' / 'latest.pt'))
    train(config_from_dict(TrainDiffusionPriorConfig, second), progress=False)
    a, b = (json.loads((tmp_path / run / 'history.json').read_text())['loss'] for run in ('first', 'second'))
    assert b[0] < 0.8 * a[0], (a[0], b[0])    # the second run's first losses are those of trained weights


def test_ema_weights_move_and_trail_the_online_weights(tmp_path):
    "The command's EMA (beta 0.9, copying until step 10, then averaging every step) leaves the initial weights and lags the online ones."
    data = toy_data(tmp_path / 'data')
    cfg = toy_config(data, tmp_path / 'run', epochs=2, save_every_steps=100, eval_timesteps=[2])
    cfg['data']['eval_every_steps'] = 1000
    result = run_cli(write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    trained = read_checkpoint(tmp_path / 'run' / 'latest.pt')
    assert trained['step'] == 24
    # the initial weights: the same run stopped after one step, its EMA never updated (first update at step 10**6)
    start = toy_config(data, tmp_path / 'start', epochs=2, max_steps=1, ema_update_after_step=0, ema_update_every=10 ** 6, eval_timesteps=[2])
    train(config_from_dict(TrainDiffusionPriorConfig, start), progress=False)
    initial = read_checkpoint(tmp_path / 'start' / 'latest.pt')['ema_model']
    def distance(a, b): return sum((a[k].double() - b[k].double()).abs().sum().item() for k in a if k.startswith('net.'))
    ema, online = trained['ema_model'], trained['model']
    moved, lag, trained_by = distance(ema, initial), distance(ema, online), distance(online, initial)
    assert moved > 0.5 * trained_by, f'the EMA weights moved {moved:.3g} from the initial ones, the online weights {trained_by:.3g}: the EMA was not updated'
    assert lag > 0.05 * trained_by, f'the EMA weights are {lag:.3g} from the online ones (trained {trained_by:.3g}): with beta 0.9 they should trail them'
