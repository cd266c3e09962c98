"Checkpoints of every supported dalle2-pytorch era load through load_prior and reproduce that release's outputs."
import os, subprocess
from pathlib import Path
import pytest
import torch
from packaging.version import Version
from prior_nbdev import DiffusionPriorNetwork, DiffusionPrior, DiffusionPriorTrainer
from prior_nbdev.checkpoint import load_prior, save_prior
from prior_nbdev.checkpoint import read_checkpoint, UnsafeCheckpointError
from test_prior_parity import assert_close_scaled

FIXTURES = Path(__file__).parent / 'fixtures'
# release -> the numerics profile to ask for (None: detected from the keys)
ERAS = {'1.15.6': None, '1.9.0': '1.9', '1.8.4': '1.4.3', '1.1.0': None, '0.23.1': '0.23', '0.15.4': None}


@pytest.mark.parametrize('release', ERAS)
def test_each_era_reproduces_its_release(release):
    fixture = torch.load(FIXTURES / f'dalle2_{release}_expected.pt', weights_only=True)
    prior = load_prior(FIXTURES / f'dalle2_{release}_prior.pth', legacy=ERAS[release]).eval()
    x, t = fixture['x'], fixture['t']
    kw = dict(text_embed=fixture['text_embed'], text_encodings=fixture['text_encodings'])
    with torch.no_grad():
        assert_close_scaled(prior.net(x, t, **kw), fixture['expected']['cond_scale_1'])
        assert_close_scaled(prior.net.forward_with_cond_scale(x, t, cond_scale=3., **kw), fixture['expected']['cond_scale_3'])


def test_era_detection_and_guidance():
    assert load_prior(FIXTURES / 'dalle2_0.15.4_prior.pth').net.config.numerics == '0.15'
    assert load_prior(FIXTURES / 'dalle2_1.15.6_prior.pth').net.config.numerics is None
    for release in ('1.1.0', '1.8.4', '0.23.1'):
        prior = load_prior(FIXTURES / f'dalle2_{release}_prior.pth', legacy=ERAS[release])
        cond = dict(text_embed=torch.randn(2, 16), text_encodings=torch.randn(2, 3, 16))
        with pytest.raises(ValueError, match='could not have learned guidance'):
            prior.p_sample_loop((2, 16), cond, cond_scale=2., timesteps=5)
        assert prior.p_sample_loop((2, 16), cond, timesteps=5).shape == (2, 16)
    # 0.15.x masked text out for guidance, which works: allowed
    prior = load_prior(FIXTURES / 'dalle2_0.15.4_prior.pth')
    assert prior.p_sample_loop((2, 16), dict(text_embed=torch.randn(2, 16), text_encodings=torch.randn(2, 3, 16)), cond_scale=2., timesteps=5).shape == (2, 16)


def test_every_file_form_loads(tmp_path):
    bare = torch.load(FIXTURES / 'dalle2_1.15.6_prior.pth', weights_only=True)
    trainer_file = FIXTURES / 'dalle2_1.15.6_trainer.pt'
    trainer_state = read_checkpoint(trainer_file)
    reference = load_prior(bare)
    # the reference trainer's checkpoint: EMA weights by default, online weights on request
    ema = load_prior(trainer_file)
    for k, v in trainer_state['ema_model'].items(): torch.testing.assert_close(ema.state_dict()[k], v)
    online = load_prior(trainer_file, use_ema=False)
    for k, v in trainer_state['model'].items(): torch.testing.assert_close(online.state_dict()[k], v)
    # its tracker's model file, a DDP-prefixed dict, a file with CLIP weights and one without the schedule's buffers
    forms = {'tracker.pth': {'version': Version('1.15.6'), 'model': bare},
             'ddp.pth': {f'module.{k}': v for k, v in bare.items()},
             'with_clip.pth': {**bare, 'clip.clip.token_embedding.weight': torch.zeros(10, 4)},
             'no_schedule.pth': {k: v for k, v in bare.items() if not k.startswith('noise_scheduler.')}}
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        loaded = load_prior(tmp_path / name, **({'timesteps': 20} if name == 'no_schedule.pth' else {}))
        for k, v in reference.state_dict().items(): torch.testing.assert_close(loaded.state_dict()[k], v, msg=f'{name}: {k}')
    # our own checkpoints need nothing
    save_prior(reference, tmp_path / 'ours.safetensors')
    assert load_prior(tmp_path / 'ours.safetensors').net.config == reference.net.config


def test_reference_trainer_checkpoint_resumes_in_our_trainer():
    fixture = torch.load(FIXTURES / 'dalle2_1.15.6_expected.pt', weights_only=True)
    prior = DiffusionPrior(DiffusionPriorNetwork(**fixture['net_kwargs']), **fixture['prior_kwargs'])
    trainer = DiffusionPriorTrainer(prior, lr=1e-3, wd=1e-2, device='cpu', warmup_steps=5)
    with _no_warning():   # every optimizer state restored: no 'optimizer state restored for k of n' warning
        trainer.load(FIXTURES / 'dalle2_1.15.6_trainer.pt')
    saved = read_checkpoint(FIXTURES / 'dalle2_1.15.6_trainer.pt')
    assert trainer.steps_done == 3
    assert len(trainer.optimizer.state) == sum(len(g['params']) for g in trainer.optimizer.param_groups)
    for name, p in trainer.unwrapped_prior.named_parameters():
        torch.testing.assert_close(p, saved['model'][name])
    for k, v in saved['ema_model'].items(): torch.testing.assert_close(trainer.ema_model.state_dict()[k], v)
    x = torch.nn.functional.normalize(fixture['x'], dim=-1)
    trainer(text_embed=fixture['text_embed'], image_embed=x, text_encodings=fixture['text_encodings']); trainer.update()
    assert trainer.steps_done == 4


class _no_warning:
    def __enter__(self):
        import warnings
        self.catch = warnings.catch_warnings(record=True); self.caught = self.catch.__enter__(); warnings.simplefilter('always')
    def __exit__(self, *exc):
        self.catch.__exit__(*exc)
        assert not [w for w in self.caught if 'optimizer state' in str(w.message)], [str(w.message) for w in self.caught]


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    class Exploit:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    evil = tmp_path / 'evil.pth'
    state = dict(torch.load(FIXTURES / 'dalle2_1.15.6_prior.pth', weights_only=True))
    torch.save({'model': state, 'version': Exploit()}, evil)
    with pytest.raises(UnsafeCheckpointError, match=r'evil.pth was refused as unsafe: it names posix.system'):
        load_prior(evil)
    # also through the trainer, and through a subprocess exec payload
    class Exec:
        def __reduce__(self): return (subprocess.call, (['touch', str(marker)],))
    torch.save({'model': state, 'step': Exec()}, evil)
    with pytest.raises(UnsafeCheckpointError, match='subprocess.call'):
        DiffusionPriorTrainer(load_prior(FIXTURES / 'dalle2_1.15.6_prior.pth'), device='cpu').load(evil)
    assert not marker.exists()


def test_damaged_and_foreign_files_name_the_problem(tmp_path):
    good = (FIXTURES / 'dalle2_1.15.6_prior.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match='cut.pth is corrupt'): load_prior(tmp_path / 'cut.pth')
    (tmp_path / 'noise.pth').write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match='noise.pth is corrupt'): load_prior(tmp_path / 'noise.pth')
    with pytest.raises(FileNotFoundError, match='no checkpoint at'): load_prior(tmp_path / 'missing.pth')
    state = torch.load(FIXTURES / 'dalle2_1.15.6_prior.pth', weights_only=True)
    state['net.causal_transformer.layers.0.1.5.weight'] = torch.zeros(16, 32)
    torch.save(state, tmp_path / 'odd.pth')
    with pytest.raises(ValueError, match=r'odd.pth does not fit a supported prior architecture: net.causal_transformer.layers.0.1.5.weight has shape \(16, 32\)'):
        load_prior(tmp_path / 'odd.pth')
    torch.save({'encoder.weight': torch.zeros(3)}, tmp_path / 'other.pth')
    with pytest.raises(ValueError, match='none of a diffusion prior'): load_prior(tmp_path / 'other.pth')
    sf = tmp_path / 'cut.safetensors'
    save_prior(load_prior(FIXTURES / 'dalle2_1.15.6_prior.pth'), sf)
    sf.write_bytes(sf.read_bytes()[:-100])
    with pytest.raises(ValueError, match='cut.safetensors is corrupt: not a readable safetensors file'): load_prior(sf)


def test_seed_document_trainer_usage_runs_as_written():
    "DiffusionPriorTrainer(diffusion_prior=..., lr=1.1e-4, ..., device=device, accelerator=None); trainer.load(path)"
    fixture = torch.load(FIXTURES / 'dalle2_1.15.6_expected.pt', weights_only=True)
    diffusion_prior = DiffusionPrior(DiffusionPriorNetwork(**fixture['net_kwargs']), **fixture['prior_kwargs'])
    device = torch.device('cpu')
    trainer = DiffusionPriorTrainer(diffusion_prior=diffusion_prior, lr=1.1e-4, wd=6.02e-2, max_grad_norm=0.5, amp=False,
                                    group_wd_params=True, use_ema=True, device=device, accelerator=None)
    trainer.load(str(FIXTURES / 'dalle2_1.15.6_trainer.pt'))
    out = trainer.p_sample_loop((2, 16), dict(text_embed=fixture['text_embed'][:2], text_encodings=fixture['text_encodings'][:2]), cond_scale=2.)
    assert out.shape == (2, 16) and trainer.step.item() == 3
