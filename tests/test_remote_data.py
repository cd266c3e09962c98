"Embeddings on object storage: a real S3 API (moto's server process) and an HTTP server on loopback, a training run reading from S3."
import json, os, shutil, socket, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
from prior_nbdev.data import validate_embeddings, write_embedding_shards

CLI = shutil.which('train_diffusion_prior') or 'train_diffusion_prior'
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1', 'CUDA_VISIBLE_DEVICES': ''}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_for(port, proc, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None: raise RuntimeError(f'server exited: {proc.stdout.read()[-2000:]}')
        with socket.socket() as s:
            if s.connect_ex(('127.0.0.1', port)) == 0: return
        time.sleep(0.1)
    raise TimeoutError(f'nothing listens on 127.0.0.1:{port}')


@pytest.fixture(scope='module')
def shapes_shards(tmp_path_factory):
    "3,000 pairs of the shapes world, embedded by the shipped CLIP, in clip-retrieval's layout (3 shards)."
    from prior_nbdev.lab.shapes import make_shapes_dataset, shapes_clip
    from prior_nbdev.clip import write_clip_embeddings
    images, captions = make_shapes_dataset(3000, seed=11)
    return write_clip_embeddings(shapes_clip(), images, captions, tmp_path_factory.mktemp('shapes') / 'emb', shard_size=1000, progress=False)


@pytest.fixture(scope='module')
def s3(shapes_shards):
    "A moto S3 server process on 127.0.0.1 with the shards in bucket 'shapes' under emb/; yields the storage options."
    pytest.importorskip('s3fs'); pytest.importorskip('boto3')
    server = shutil.which('moto_server')
    if server is None: pytest.skip("moto's server is not installed: pip install 'moto[server]'")
    port = free_port()
    proc = subprocess.Popen([server, '-H', '127.0.0.1', '-p', str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'AWS_ACCESS_KEY_ID': 'testing', 'AWS_SECRET_ACCESS_KEY': 'testing'})
    try:
        wait_for(port, proc)
        import boto3
        endpoint = f'http://127.0.0.1:{port}'
        client = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id='testing', aws_secret_access_key='testing', region_name='us-east-1')
        client.create_bucket(Bucket='shapes')
        for path in sorted(shapes_shards.rglob('*')):
            if path.is_file(): client.upload_file(str(path), 'shapes', f'emb/{path.relative_to(shapes_shards).as_posix()}')
        yield dict(endpoint_url=endpoint, key='testing', secret='testing', client_kwargs=dict(region_name='us-east-1'))
    finally:
        proc.terminate()
        try: proc.wait(10)
        except subprocess.TimeoutExpired: proc.kill()


def test_s3_folders_are_checked_and_read(s3, shapes_shards):
    ds = validate_embeddings('s3://shapes/emb/img_emb', 's3://shapes/emb/text_emb', 's3://shapes/emb/metadata', dim=64, storage_options=s3)
    assert ds.count == 3000 and [s.count for s in ds.shards] == [1000, 1000, 1000]
    assert ds.shards[2].image_file == 's3://shapes/emb/img_emb/img_emb_2.npy'
    local = validate_embeddings(shapes_shards / 'img_emb', shapes_shards / 'text_emb', shapes_shards / 'metadata', dim=64)
    remote_rows, local_rows = ds.read(990, 1010), local.read(990, 1010)
    assert remote_rows['captions'] == local_rows['captions']
    assert np.array_equal(remote_rows['image_embed'].numpy(), local_rows['image_embed'].numpy())


def test_missing_bucket_and_wrong_endpoint_fail_fast_naming_the_url(s3):
    start = time.time()
    with pytest.raises(FileNotFoundError, match='image embedding folder s3://no-such-bucket/img_emb does not exist'):
        validate_embeddings('s3://no-such-bucket/img_emb', storage_options=s3)
    with pytest.raises(FileNotFoundError, match='s3://shapes/emb/nothing-here does not exist'):
        validate_embeddings('s3://shapes/emb/nothing-here', storage_options=s3)
    assert time.time() - start < 10
    start = time.time()
    wrong = {**s3, 'endpoint_url': f'http://127.0.0.1:{free_port()}'}
    with pytest.raises(ConnectionError, match='image embedding folder s3://shapes/emb/img_emb cannot be read'):
        validate_embeddings('s3://shapes/emb/img_emb', storage_options=wrong)
    assert time.time() - start < 30, time.time() - start


def test_training_run_reads_from_s3(s3, tmp_path):
    run = tmp_path / 'run'
    config = dict(
        prior=dict(net=dict(dim=64, depth=2, dim_head=16, heads=4, max_text_len=1), image_embed_dim=64, timesteps=100,
                   cond_drop_prob=0.1, condition_on_text_encodings=False),
        data=dict(image_url='s3://shapes/emb/img_emb', text_url='s3://shapes/emb/text_emb', meta_url='s3://shapes/emb/metadata',
                  batch_size=64, splits=dict(train=0.8, val=0.1, test=0.1), eval_every_steps=20, block_size=512, storage_options=s3),
        train=dict(epochs=1, lr=1e-3, eval_timesteps=[16], save_every_steps=20, log_every_steps=10, device='cpu', num_threads=1),
        tracker=dict(data_path=str(run)))
    (tmp_path / 'config.json').write_text(json.dumps(config))
    r = subprocess.run([CLI, '--config_path', str(tmp_path / 'config.json'), '--no_progress'], capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    metrics = json.loads((run / 'metrics.json').read_text())
    assert metrics['similarity_with_original_image'] > metrics['similarity_with_unrelated_caption']
    assert json.loads((run / 'history.json').read_text())['step'][-1] == 2400 // 64


def test_http_folders_are_read(shapes_shards):
    pytest.importorskip('aiohttp')
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / 'range_http_server.py'), str(port), str(shapes_shards)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(port, proc)
        url = f'http://127.0.0.1:{port}'
        ds = validate_embeddings(f'{url}/img_emb', f'{url}/text_emb', f'{url}/metadata', dim=64)
        assert ds.count == 3000
        rows = ds.read(1995, 2005)
        local = validate_embeddings(shapes_shards / 'img_emb', shapes_shards / 'text_emb', shapes_shards / 'metadata').read(1995, 2005)
        assert rows['captions'] == local['captions'] and np.array_equal(rows['text_embed'].numpy(), local['text_embed'].numpy())
    finally:
        proc.terminate(); proc.wait(10)
