"`prior_nbdev_sample` end to end on the shapes world: captions in three forms, resuming after SIGKILL, 2 and 4 processes, options, bad input."
import json, os, re, shutil, signal, socket, subprocess, sys, time
import numpy as np
import torch
import pandas as pd
import pytest
from prior_nbdev.lab.shapes import SHAPES_PRIOR_WEIGHTS
from prior_nbdev.data import write_embedding_shards
from prior_nbdev.lab.shapes import make_shapes_dataset

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


def files(out):
    "Every file under `out`, by relative path, as bytes."
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob('*')) if p.is_file()}


def launcher(kind, processes):
    "The command line that starts `processes` copies of the sampling command (gloo on the CPU)."
    exe = shutil.which(kind)
    if exe is None: pytest.skip(f'{kind} CLI not installed')
    if kind == 'accelerate':
        return [exe, 'launch', '--multi_gpu', '--num_processes', str(processes), '--num_machines', '1', '--mixed_precision', 'no',
                '--dynamo_backend', 'no', '--main_process_port', str(free_port()), CLI]
    return [exe, '--nproc_per_node', str(processes), '--master_port', str(free_port()), CLI]


def embedded(stderr, processes):
    "rank -> captions it reports having embedded."
    return {int(r): int(n) for r, n in re.findall(rf'rank (\d+)/{processes}: embedded (\d+) captions', stderr)}


@pytest.mark.parametrize('processes,kind,shard_size,expected', [
    (2, 'accelerate', 200, {0: 250, 1: 250}),                    # three shards, written by ranks 0, 1, 0
    (4, 'torchrun', 100_000, {0: 150, 1: 150, 2: 100, 3: 100}),  # fewer captions than one shard: every process still samples
])
def test_processes_share_the_batches(tmp_path, processes, kind, shard_size, expected):
    (tmp_path / 'c.txt').write_text('\n'.join(captions(500)))
    args = ['--captions', str(tmp_path / 'c.txt'), '--clip', 'prior-nbdev-shapes', '--batch_size', '50', '--shard_size', str(shard_size),
            '--timesteps', '4', '--no_progress', '--threads', '1', '--checkpoint', CKPT]
    one = subprocess.run([CLI, *args, '--out', str(tmp_path / 'one')], capture_output=True, text=True, env=ENV, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert embedded(one.stderr, 1) == {0: 500}
    many = subprocess.run([*launcher(kind, processes), *args, '--out', str(tmp_path / 'many')], capture_output=True, text=True, env=ENV, timeout=600)
    assert many.returncode == 0, many.stdout[-3000:] + many.stderr[-3000:]
    assert embedded(many.stderr, processes) == expected, many.stderr[-3000:]
    assert metadata(tmp_path / 'many')['row'].tolist() == list(range(500))
    assert files(tmp_path / 'many') == files(tmp_path / 'one')   # byte for byte, whatever the number of processes


def test_killed_multi_process_job_resumes(tmp_path):
    caps = captions(1200)
    (tmp_path / 'c.txt').write_text('\n'.join(caps))
    args = ['--captions', str(tmp_path / 'c.txt'), '--clip', 'prior-nbdev-shapes', '--batch_size', '50', '--shard_size', '100',
            '--timesteps', '32', '--no_progress', '--threads', '1', '--checkpoint', CKPT]
    full = subprocess.run([CLI, *args, '--out', str(tmp_path / 'full')], capture_output=True, text=True, env=ENV, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    out = tmp_path / 'killed'
    job = subprocess.Popen([*launcher('torchrun', 2), *args, '--out', str(out)], env=ENV, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and job.poll() is None and len(list(out.glob('img_emb/*.npy'))) < 2:
        time.sleep(0.02)
    # the launcher and both workers at once (torchrun starts each worker in a session of its own, so not by process group)
    import psutil
    tree = [psutil.Process(job.pid), *psutil.Process(job.pid).children(recursive=True)]
    for proc in tree: proc.kill()
    job.wait(); psutil.wait_procs(tree[1:], timeout=30)
    done_before = len(list(out.glob('img_emb/*.npy')))
    assert 2 <= done_before < 12, done_before
    resumed = subprocess.run([*launcher('torchrun', 2), *args, '--out', str(out)], capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'({done_before} already done)' in resumed.stderr and min(embedded(resumed.stderr, 2).values()) > 0
    assert not [p for p in out.rglob('*') if p.name.startswith('.') or 'tmp' in p.name]
    assert files(out) == files(tmp_path / 'full')


def test_help_shows_every_default():
    result = subprocess.run([CLI, '--help'], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0
    options = re.split(r'\n  (?=--)', result.stdout.split('options:')[1])[1:]     # one block per option, after -h
    lines = {b.split()[0]: ' '.join(b.split()) for b in options}
    from prior_nbdev.sample import SAMPLE_STEPS
    assert f'(default: {SAMPLE_STEPS})' in lines['--timesteps'] and '(default: auto)' in lines['--device']
    assert '{ddpm,ddim_dalle2,ddim}' in lines['--sampler'] and '(default: None)' in lines['--negative_prompt']
    assert "best of 2" in lines['--num_samples_per_batch'] and '(default: 2)' in lines['--num_samples_per_batch']
    assert [o for o, line in lines.items() if '(default: ' not in line] == ['--checkpoint', '--captions', '--out', '--cuda_graph', '--no_ema', '--no_progress']


def test_sampler_negative_prompt_and_the_reference_settings(tmp_path):
    caps = captions(40)
    (tmp_path / 'c.txt').write_text('\n'.join(caps))
    base = ['--captions', tmp_path / 'c.txt', '--clip', 'prior-nbdev-shapes', '--batch_size', 20]
    # the reference's settings, passed explicitly, give the reference's samples: `sample` with 64 steps and 2 candidates
    ref = run(*base, '--timesteps', 64, '--out', tmp_path / 'ref')
    assert ref.returncode == 0, ref.stderr[-3000:]
    from prior_nbdev.lab.shapes import shapes_prior
    from prior_nbdev.sample import batch_generator
    from prior_nbdev.lab.shapes import shapes_clip
    prior, clip = shapes_prior(), shapes_clip()
    with torch.no_grad():
        direct = torch.cat([prior.sample(text_embed=clip.embed_text(clip.tokenize(caps[s:s + 20]))[0], num_samples_per_batch=2,
                                         cond_scale=1., timesteps=64, generator=batch_generator(0, s)) for s in (0, 20)])
    direct = torch.nn.functional.normalize(direct, dim=-1).numpy().astype(np.float16)
    assert np.abs(shards(tmp_path / 'ref').astype(np.float32) - direct.astype(np.float32)).max() < 2e-3
    ddim = run(*base, '--timesteps', 64, '--sampler', 'ddim', '--out', tmp_path / 'ddim')
    assert ddim.returncode == 0, ddim.stderr[-3000:]
    assert not np.array_equal(shards(tmp_path / 'ddim'), shards(tmp_path / 'ref'))
    assert json.loads((tmp_path / 'ddim' / 'sample_config.json').read_text())['sampler'] == 'ddim'
    ddpm = run(*base, '--sampler', 'ddpm', '--out', tmp_path / 'ddpm')
    assert ddpm.returncode == 2 and 'the ddpm sampler visits all 1000 steps' in ddpm.stderr
    # a negative prompt: refused without guidance, and where there is no CLIP to embed it
    r = run(*base, '--negative_prompt', 'a red circle', '--out', tmp_path / 'neg1')
    assert r.returncode == 2 and 'pass --cond_scale above 1' in r.stderr
    r = run('--captions', tmp_path / 'ref', '--negative_prompt', 'a red circle', '--cond_scale', 2, '--out', tmp_path / 'neg2')
    assert r.returncode == 2 and 'the negative prompt: captions need a CLIP' in r.stderr
    r = run(*base, '--negative_prompt', 'a red circle', '--cond_scale', 2, '--timesteps', 8, '--out', tmp_path / 'neg3')
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(*base, '--device', 'cuda:7', '--out', tmp_path / 'dev')
    assert r.returncode == 2 and ('--device cuda:7' in r.stderr)
