"`save_pretrained` / `from_pretrained`: a model folder that loads with nothing else; hub ids fail fast and clearly offline."
import os, socket, subprocess, sys, time
import torch
from prior_nbdev import DiffusionPrior, DiffusionPriorNetwork


def closed_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_folder_round_trip_gives_the_same_samples(tmp_path):
    torch.manual_seed(0)
    prior = DiffusionPrior(DiffusionPriorNetwork(dim=16, depth=2, dim_head=8, heads=2, max_text_len=3), image_embed_dim=16,
                           timesteps=40, cond_drop_prob=0.2, predict_v=True, beta_schedule='linear')
    prior.save_pretrained(tmp_path / 'model')
    back = DiffusionPrior.from_pretrained(str(tmp_path / 'model'))
    text, enc = torch.randn(2, 16), torch.randn(2, 3, 16)
    kw = dict(text_embed=text, text_encodings=enc, timesteps=8, cond_scale=2.)
    a = prior.sample(**kw, generator=torch.Generator().manual_seed(1))
    b = back.sample(**kw, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert back.predict_v and back.noise_scheduler.num_timesteps == 40


def run_hub(code, **env):
    start = time.time()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    return r, time.time() - start


CODE = ("from prior_nbdev import DiffusionPrior\n"
        "try: DiffusionPrior.from_pretrained('someone/shapes-prior')\n"
        "except Exception as e: print(type(e).__name__, e)\n")


def test_hub_id_without_network_fails_fast_and_clearly():
    r, seconds = run_hub(CODE, HF_ENDPOINT=f'http://127.0.0.1:{closed_port()}', HF_HUB_OFFLINE='0')
    assert "ConnectionError cannot download 'someone/shapes-prior' from the Hugging Face Hub" in r.stdout, r.stdout + r.stderr
    assert seconds < 30, seconds


def test_hub_id_offline_reads_the_cache_only(tmp_path):
    r, seconds = run_hub(CODE, HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path))
    assert "FileNotFoundError could not get 'someone/shapes-prior' from the Hugging Face Hub cache (offline)" in r.stdout, r.stdout + r.stderr
    assert seconds < 30, seconds
