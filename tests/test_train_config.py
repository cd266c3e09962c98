"""The training command as a new user meets it: named configs, overrides, --print_config, --dry_run, precision, and the
check that the configured CLIP made the data."""
import json, os, subprocess
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from prior_nbdev.data import write_embedding_shards
from test_train_cli import CLI, ENV, toy_data, toy_config, write_config, run_cli


def cli(*args, env=None, timeout=300):
    return subprocess.run([CLI, *args], capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=timeout)


def test_named_configs_resolve_and_unknown_names_are_listed(tmp_path):
    result = cli('--config_path', 'vit-l-14', '--print_config', '--train.lr', '3e-4', '--data.image_url=/data/img_emb',
                 '--train.eval_timesteps', '[8, 64]')
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config['train']['lr'] == 3e-4 and config['train']['eval_timesteps'] == [8, 64]
    assert config['data']['image_url'] == '/data/img_emb' and config['data']['text_url'] == 'text_emb'
    assert config['prior']['clip'] == {'make': 'openai', 'model': 'ViT-L-14'}
    assert (config['prior']['net']['dim'], config['prior']['net']['depth'], config['prior']['net']['heads']) == (768, 24, 32)
    assert config['train']['compile'] is True and config['train']['ema_warmup'] is True and config['train']['amp'] is None
    result = cli('--config_path', 'vit-b-32', '--print_config')
    assert result.returncode == 1 and "no config that ships with the package is called 'vit-b-32' (named configs: shapes, vit-l-14)" in result.stderr
    result = cli('--config_path', 'shapes', '--print_config', '--train.lrr', '1')
    assert result.returncode == 1 and 'lrr' in result.stderr
    result = cli('--config_path', 'shapes', '--print_config', '--lr', '1')
    assert result.returncode == 1 and 'set a config field as --section.key VALUE' in result.stderr


def test_shapes_config_is_the_demos():
    "The named `shapes` config trains what `prior_nbdev_demo` trains (only where files go differs)."
    from pathlib import Path
    from prior_nbdev.lab.demo import demo_config
    from prior_nbdev.train import named_configs
    shipped = json.loads(named_configs()['shapes'].read_text())
    demo = demo_config(Path('.'), num_pairs=24_000)
    assert shipped['prior'] == demo['prior']
    assert {k: v for k, v in shipped['train'].items() if k not in ('resume', 'ema_warmup')} == \
           {k: v for k, v in demo['train'].items() if k not in ('resume', 'num_threads', 'ema_warmup')}
    assert shipped['train']['ema_warmup'] == demo['train'].get('ema_warmup', False) is False


def test_dry_run_reports_everything_and_trains_nothing(tmp_path):
    data = toy_data(tmp_path / 'data')
    config = write_config(tmp_path, toy_config(data, tmp_path / 'run'))
    result = cli('--config_path', str(config), '--dry_run')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'dry run: checked, nothing trained'
    assert any(l.split()[0] == 'steps' and '12 per epoch at batch 40 x 1 process(es)' in l for l in lines[1:]), result.stdout
    assert any('600 rows of 16-d' in l and 'train 480, val 60, test 60' in l for l in lines), result.stdout
    assert not (tmp_path / 'run' / 'latest.pt').exists()
    # every problem at once: a missing data folder, an unknown tracker and a contradicting precision
    result = cli('--config_path', str(config), '--dry_run', '--data.image_url', str(tmp_path / 'nowhere'),
                 '--tracker.log_with', '["tensorbored"]', '--train.amp', 'fp16', env={'ACCELERATE_MIXED_PRECISION': 'bf16'})
    assert result.returncode == 1
    assert '3 problem(s):' in result.stderr and 'nowhere' in result.stderr and 'tensorbored' in result.stderr
    assert "train.amp='fp16' asks for fp16, but the launcher asks for bf16" in result.stderr


def test_dry_run_of_the_seed_config_names_a_clip_it_cannot_get(tmp_path):
    g = torch.Generator().manual_seed(0)
    write_embedding_shards(tmp_path, F.normalize(torch.randn(600, 768, generator=g), dim=-1).numpy(),
                           F.normalize(torch.randn(600, 768, generator=g), dim=-1).numpy(), [f'a photo {i}' for i in range(600)])
    result = subprocess.run([CLI, '--config_path', 'vit-l-14', '--dry_run'], capture_output=True, text=True, cwd=tmp_path,
                            env={**ENV, 'HF_HUB_OFFLINE': '1'}, timeout=300)
    assert result.returncode == 1
    assert "prior.clip {'make': 'openai', 'model': 'ViT-L-14'}" in result.stderr, result.stderr[-2000:]
    assert '249,' in result.stderr and 'parameters' in result.stderr and 'train 540, val 30, test 30' in result.stderr


def shapes_data(root, n=400):
    from prior_nbdev.lab.shapes import make_shapes_scenes, shapes_clip
    from prior_nbdev.clip import write_clip_embeddings
    images, captions, _ = make_shapes_scenes(n, seed=5)
    return write_clip_embeddings(shapes_clip(), images, captions, root, progress=False)


def test_a_clip_that_did_not_make_the_data_is_refused(tmp_path):
    "Embeddings made by the shapes CLIP; training configured with the same architecture and other weights stops."
    from prior_nbdev.lab.shapes import shapes_clip
    data = shapes_data(tmp_path / 'data')
    other = tmp_path / 'other_clip.pt'
    torch.manual_seed(1); torch.save(shapes_clip(weights=None).clip.state_dict(), other)
    def config(pretrained):
        c = toy_config(data, tmp_path / 'run', epochs=1)
        c['prior'] = dict(net=dict(dim=64, depth=1, dim_head=16, heads=2, max_text_len=24), image_embed_dim=64, timesteps=50,
                          cond_drop_prob=0.1, condition_on_text_encodings=True, clip=dict(make='prior_nbdev_shapes', pretrained=pretrained))
        return write_config(tmp_path, c, f'config_{pretrained is None}.json')
    result = cli('--config_path', str(config(None)), '--dry_run')
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'CLIP check its embeddings of the captions match text_emb/ (median cosine 1.000)' in result.stdout
    for args in (['--dry_run'], []):
        result = cli('--config_path', str(config(str(other))), *args)
        assert result.returncode == 1, result.stdout[-2000:]
        assert f"the configured CLIP {{'make': 'prior_nbdev_shapes', 'pretrained': '{other}'}} did not make {data / 'text_emb'}" in result.stderr
        assert 'median cosine' in result.stderr
    assert not (tmp_path / 'run' / 'latest.pt').exists()


def test_precision_follows_the_launcher_and_is_recorded(tmp_path):
    data = toy_data(tmp_path / 'data', n=200)
    config = write_config(tmp_path, toy_config(data, tmp_path / 'run', epochs=1, eval_timesteps=[4]))
    result = cli('--config_path', str(config), '--no_progress', env={'ACCELERATE_MIXED_PRECISION': 'bf16'})
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads((tmp_path / 'run' / 'metrics.json').read_text())['run']
    assert (run['precision'], run['compiled'], run['processes']) == ('bf16', False, 1) and run['train_samples_per_s'] > 0
    assert 'precision bf16, eager, 1 process(es)' in result.stdout + result.stderr
