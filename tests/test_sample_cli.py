"`prior_nbdev_sample` end to end on the shapes world: captions in three forms, resuming after SIGKILL, two processes, bad input."
import json, os, shutil, signal, socket, subprocess, sys, time
import numpy as np
import torch
import pandas as pd
import pytest
from prior_nbdev.arithmetic import SHAPES_PRIOR_WEIGHTS
from prior_nbdev.data import write_embedding_shards
from prior_nbdev.shapes import make_shapes_dataset

CLI = shutil.which('prior_nbdev_sample') or 'prior_nbdev_sample'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', 'CUDA_VISIBLE_DEVICES': ''}
CKPT = str(SHAPES_PRIOR_WEIGHTS)


def captions(n, seed=7):
    return make_shapes_dataset(n, seed=seed)[1]


def run(*args, timeout=300):
    return subprocess.run([CLI, '--checkpoint', CKPT, '--no_progress', '--threads', '1', *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def shards(out, folder='img_emb'):
    files = sorted((out / folder).glob(f'{folder}_*.npy'), key=lambda p: int(p.stem.rsplit('_', 1)[1]))
    return np.concatenate([np.load(p) for p in files])


def metadata(out):
    files = sorted((out / 'metadata').glob('metadata_*.parquet'), key=lambda p: int(p.stem.rsplit('_', 1)[1]))
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True)


def test_txt_captions_to_clip_retrieval_layout(tmp_path):
    caps = captions(300)
    (tmp_path / 'captions.txt').write_text('\n'.join(caps) + '\n')
    result = run('--captions', tmp_path / 'captions.txt', '--out', tmp_path / 'out', '--clip', 'prior-nbdev-shapes',
                 '--batch_size', 64, '--shard_size', 128, '--timesteps', 16)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'embeddings/s' in result.stderr
    out = tmp_path / 'out'
    img, meta = shards(out), metadata(out)
    assert img.shape == (300, 64) and img.dtype == np.float16 and len(list((out / 'img_emb').iterdir())) == 3
    assert meta['caption'].tolist() == caps and meta['row'].tolist() == list(range(300))
    assert np.allclose(np.linalg.norm(img.astype(np.float32), axis=1), 1, atol=1e-2)
    # the predicted embeddings feed straight back into the training data checks
    from prior_nbdev.data import validate_embeddings
    validate_embeddings(out / 'img_emb', out / 'text_emb', out / 'metadata')


def test_parquet_and_text_emb_inputs(tmp_path):
    caps = captions(200)
    pd.DataFrame({'text': caps}).to_parquet(tmp_path / 'c.parquet')
    bad = run('--captions', tmp_path / 'c.parquet', '--out', tmp_path / 'bad', '--clip', 'prior-nbdev-shapes')
    assert bad.returncode == 2 and "has no 'caption' column (columns: ['text'])" in bad.stderr
    ok = run('--captions', tmp_path / 'c.parquet', '--caption_column', 'text', '--out', tmp_path / 'pq', '--clip', 'prior-nbdev-shapes',
             '--timesteps', 16, '--batch_size', 100)
    assert ok.returncode == 0, ok.stderr[-3000:]
    # the text embeddings it wrote are clip-retrieval input again: no CLIP needed, and the same seed gives the same output
    again = run('--captions', tmp_path / 'pq', '--out', tmp_path / 'emb', '--timesteps', 16, '--batch_size', 100)
    assert again.returncode == 0, again.stderr[-3000:]
    # the same up to the float16 rounding of the stored text embeddings, which 16 sampling steps can amplify for a few rows
    a, b = shards(tmp_path / 'emb').astype(np.float32), shards(tmp_path / 'pq').astype(np.float32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.median(np.abs(a - b)) < 2e-3 and np.quantile(cos, 0.9) > 0.999 and cos.min() > 0.9, (np.median(np.abs(a - b)), np.sort(cos)[:10])
    assert metadata(tmp_path / 'emb')['caption'].tolist() == caps


def test_bad_input_gets_one_clear_message(tmp_path):
    (tmp_path / 'empty.txt').write_text('\n\n')
    r = run('--captions', tmp_path / 'empty.txt', '--out', tmp_path / 'o1', '--clip', 'prior-nbdev-shapes')
    assert r.returncode == 2 and 'holds no rows' in r.stderr and 'Traceback' not in r.stderr
    write_embedding_shards(tmp_path / 'wide', np.zeros((10, 32), np.float32), np.ones((10, 32), np.float32), ['x'] * 10)
    r = run('--captions', tmp_path / 'wide', '--out', tmp_path / 'o2')
    assert r.returncode == 2 and 'have width 32, but the prior expects 64' in r.stderr
    (tmp_path / 'c.txt').write_text('a red circle\n')
    r = run('--captions', tmp_path / 'c.txt', '--out', tmp_path / 'o3')
    assert r.returncode == 2 and 'captions need a CLIP' in r.stderr
    r = run('--captions', tmp_path / 'c.txt', '--out', tmp_path / 'o4', '--clip', 'prior-nbdev-shapes', '--checkpoint', tmp_path / 'nope.pt')
    assert r.returncode == 2 and 'nope.pt does not exist' in r.stderr
    if not torch.cuda.is_available():
        r = run('--captions', tmp_path / 'c.txt', '--out', tmp_path / 'o5', '--clip', 'prior-nbdev-shapes', '--cuda_graph')
        assert r.returncode == 2 and '--cuda_graph needs a CUDA device' in r.stderr and not (tmp_path / 'o5').exists()


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tmp_path):
    caps = captions(1200)
    (tmp_path / 'c.txt').write_text('\n'.join(caps))
    args = ['--captions', tmp_path / 'c.txt', '--clip', 'prior-nbdev-shapes', '--batch_size', 50, '--shard_size', 100, '--timesteps', 32]
    full = run(*args, '--out', tmp_path / 'full')
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / 'killed'
    proc = subprocess.Popen([CLI, '--checkpoint', CKPT, '--no_progress', '--threads', '1', *map(str, args), '--out', str(out)],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list((out / 'img_emb').glob('*.npy')) if (out / 'img_emb').exists() else []) < 2:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL); proc.wait()
    done_before = len(list((out / 'img_emb').glob('*.npy')))
    assert proc.returncode == -signal.SIGKILL and 2 <= done_before < 12, done_before
    resumed = run(*args, '--out', out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'({done_before} already done)' in resumed.stderr
    assert not [p for p in out.rglob('*') if p.name.startswith('.') or 'tmp' in p.name]   # no temporary files left
    assert metadata(out)['row'].tolist() == list(range(1200))                              # every row exactly once
    assert np.array_equal(shards(out), shards(tmp_path / 'full'))                          # as if never interrupted
    other = run(*args, '--out', out, '--seed', 1)
    assert other.returncode == 2 and 'written with other options (seed differ)' in other.stderr


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_share_the_shards(tmp_path):
    accelerate = shutil.which('accelerate')
    if accelerate is None: pytest.skip('accelerate CLI not installed')
    caps = captions(500)
    (tmp_path / 'c.txt').write_text('\n'.join(caps))
    args = ['--captions', str(tmp_path / 'c.txt'), '--clip', 'prior-nbdev-shapes', '--batch_size', '50', '--shard_size', '100', '--timesteps', '16',
            '--no_progress', '--threads', '1', '--checkpoint', CKPT]
    one = subprocess.run([CLI, *args, '--out', str(tmp_path / 'one')], capture_output=True, text=True, env=ENV, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([accelerate, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
                          '--dynamo_backend', 'no', '--main_process_port', str(free_port()), CLI, *args, '--out', str(tmp_path / 'two')],
                         capture_output=True, text=True, env=ENV, timeout=600)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert 'rank 0/2: 300 embeddings in 3 shards' in two.stderr and 'rank 1/2: 200 embeddings in 2 shards' in two.stderr
    assert metadata(tmp_path / 'two')['row'].tolist() == list(range(500))
    assert np.array_equal(shards(tmp_path / 'two'), shards(tmp_path / 'one'))   # independent of the number of processes
