"""Hostile checkpoints against every entry point that reads a file the user did not write.

Each attempt must be refused with a message naming the file and the reason, run no code (no marker file appears), leave
nothing half-loaded, and cost little time and memory. The files are made here: torch zips, torch's legacy (non-zip)
format, the tar format of torch < 0.4, TorchScript archives, and safetensors files with lying headers.
"""
import builtins, collections, contextlib, importlib, io, json, os, pickle, resource, runpy, struct, subprocess, sys, tarfile, time, zipfile
from pathlib import Path
import pytest
import torch
from prior_nbdev import DiffusionPrior, DiffusionPriorTrainer
from prior_nbdev.checkpoint import (read_checkpoint, load_prior, load_prior_weights, save_prior, UnsafeCheckpointError,
                                    SAFE_GLOBALS, checkpoint_format)
from prior_nbdev.sample import sample_main
from packaging.version import Version

FIXTURES = Path(__file__).parent / 'fixtures'
REFERENCE_PRIOR, REFERENCE_TRAINER = FIXTURES / 'dalle2_1.15.6_prior.pth', FIXTURES / 'dalle2_1.15.6_trainer.pt'
TORCH_MAGIC = 0x1950a86a20f9469cfc6c


# ---------------------------------------------------------------------------------------------------------------- crafting
class Call:
    "Pickles as `func(*args)`: the classic payload."
    def __init__(self, func, *args): self.func, self.args = func, args
    def __reduce__(self): return (self.func, self.args)


class Raw:
    "Pickles as the given opcodes (spliced in by `Splice`)."
    def __init__(self, data:bytes): self.data = data


class StoredAs:
    "Pickles as an instance of `cls` with the given state (built empty, then BUILD), whatever `cls` would accept."
    def __init__(self, cls, state): self.cls, self.state = cls, state
    def __reduce__(self): return (self.cls, (), self.state)


class Storage:
    "Pickled as a persistent id, in the zip layout ('storage', type, key, location, numel) or the legacy one (+ view)."
    def __init__(self, key, numel, kind='FloatStorage', legacy=False): self.key, self.numel, self.kind, self.legacy = key, numel, kind, legacy


class Rebuild:
    "A tensor rebuilt from a storage by torch._utils._rebuild_tensor_v2 (sizes, strides and hooks as given)."
    def __init__(self, storage, size, stride, offset=0, hooks=None, func=torch._utils._rebuild_tensor_v2):
        self.func, self.args = func, (storage, offset, size, stride, False, hooks if hooks is not None else collections.OrderedDict())
    def __reduce__(self): return (self.func, self.args)


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            base = ('storage', getattr(torch, obj.kind), obj.key, 'cpu', obj.numel)
            return base + (None,) if obj.legacy else base
        return None


def pickled(obj, protocol=2)->bytes:
    buffer = io.BytesIO(); Pickler(buffer, protocol=protocol).dump(obj); return buffer.getvalue()


def torch_zip(path, pkl:bytes, records:dict|None=None, compress=zipfile.ZIP_STORED, extra:dict|None=None, name='archive'):
    with zipfile.ZipFile(path, 'w', compression=compress) as z:
        z.writestr(f'{name}/data.pkl', pkl)
        z.writestr(f'{name}/byteorder', 'little')
        for key, data in (records or {}).items(): z.writestr(f'{name}/data/{key}', data)
        z.writestr(f'{name}/version', '3\n')
        for member, data in (extra or {}).items(): z.writestr(member, data)
    return path


def legacy_file(path, obj, storages:dict|None=None, head:list|None=None):
    "torch's legacy layout: magic, protocol, system info, the object, storage keys, then each storage as (count, bytes)."
    buffer = io.BytesIO()
    for part in head if head is not None else [TORCH_MAGIC, 1001, dict(protocol_version=1001, little_endian=True,
                                                                       type_sizes=dict(short=2, int=4, long=4))]:
        Pickler(buffer, protocol=2).dump(part)
    Pickler(buffer, protocol=2).dump(obj)
    pickle.dump(list(storages or {}), buffer, protocol=2)
    for numel, data in (storages or {}).values(): buffer.write(struct.pack('<q', numel)); buffer.write(data)
    Path(path).write_bytes(buffer.getvalue())
    return path


def tar_file(path, payload:bytes):
    "The tar layout of torch < 0.4 (storages, tensors, pickle members)."
    with tarfile.open(path, 'w', format=tarfile.PAX_FORMAT) as tar:
        for name, data in (('sys_info', pickle.dumps({})), ('storages', pickle.dumps(0)), ('tensors', pickle.dumps(0)), ('pickle', payload)):
            info = tarfile.TarInfo(name); info.size = len(data); tar.addfile(info, io.BytesIO(data))
    return path


def reference_state():
    return dict(torch.load(REFERENCE_PRIOR, weights_only=True))


def payloads(marker:Path)->dict:
    "name -> an object whose unpickling would create `marker` if code from the file ran."
    touch = ['touch', str(marker)]
    return {'os.system': Call(os.system, f'touch {marker}'),
            'subprocess.call': Call(subprocess.call, touch),
            'subprocess.Popen': Call(subprocess.Popen, touch),
            'builtins.eval': Call(builtins.eval, f'open({str(marker)!r}, "w")'),
            'builtins.exec': Call(builtins.exec, f'open({str(marker)!r}, "w")'),
            'builtins.getattr': Call(builtins.getattr, 'x', 'upper'),
            'importlib.import_module': Call(importlib.import_module, 'antigravity'),
            'runpy.run_path': Call(runpy.run_path, str(marker.with_suffix('.py'))),
            'torch.hub.load': Call(torch.hub.load, str(marker.parent), 'x')}


# ------------------------------------------------------------------------------------------------------------ entry points
def tiny_prior():
    return load_prior(REFERENCE_PRIOR)


def through_trainer(path):
    trainer = DiffusionPriorTrainer(tiny_prior(), device='cpu', warmup_steps=10)
    before = {k: v.clone() for k, v in trainer.state_dict().items()}
    groups = [{k: v for k, v in g.items() if k != 'params'} for g in trainer.optimizer.param_groups]
    try: trainer.load(path)
    finally:  # whatever happened, a refused file leaves the trainer as it was
        after = trainer.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), 'a refused file changed the trainer'
        assert [{k: v for k, v in g.items() if k != 'params'} for g in trainer.optimizer.param_groups] == groups


def through_sample_command(path):
    "`prior_nbdev_sample --checkpoint path`: its exit 2 as a ValueError holding what it printed; no embeddings written."
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            sample_main(['--checkpoint', str(path), '--captions', _captions(path), '--out', str(path) + '.out', '--no_progress'])
    except SystemExit as e:
        assert e.code == 2
        raise ValueError(err.getvalue()) from None
    finally: assert not any(Path(str(path) + '.out').rglob('*.npy')), 'a refused checkpoint produced embeddings'


ENTRY_POINTS = {'read_checkpoint': read_checkpoint, 'load_prior': load_prior, 'trainer.load': through_trainer,
                'train.init_from (load_prior_weights)': load_prior_weights, 'prior_nbdev_sample --checkpoint': through_sample_command}


def refused(entry, path, kind, reason):
    "Call `entry` on `path`: it must raise, naming the file, calling it unsafe or corrupt as expected, with `reason`."
    start = time.time()
    with pytest.raises((ValueError, FileNotFoundError)) as caught: entry(path)
    message = str(caught.value)
    assert path.name in message, message
    assert reason in message, f'expected {reason!r} in: {message}'
    if kind == 'unsafe': assert 'unsafe' in message and 'corrupt' not in message, message
    else: assert 'corrupt' in message and 'unsafe' not in message, message
    assert '\x1b' not in message
    assert time.time() - start < 30
    return message


def _captions(path):
    captions = Path(str(path) + '.txt'); captions.write_text('a caption\n'); return str(captions)


# --------------------------------------------------------------------------------------------------------- code from files
def code_files(tmp:Path, marker:Path)->dict:
    "name -> (file, kind, reason): payloads in every format torch reads."
    files, state = {}, reference_state()
    for name, payload in payloads(marker).items():
        reason = f'it names {name.replace("os.", "posix.")}'
        files[f'{name} in a zip'] = (tmp / f'{name}.zip.pth', 'unsafe', reason)
        torch.save({'model': state, 'version': payload}, files[f'{name} in a zip'][0])
        files[f'{name} in legacy format'] = (tmp / f'{name}.legacy.pth', 'unsafe', reason)
        torch.save({'model': state, 'version': payload}, files[f'{name} in legacy format'][0], _use_new_zipfile_serialization=False)
    # the reproduction: a plain pickle, not a zip
    files['plain pickle, os.system'] = (tmp / 'evil.pth', 'unsafe', 'it names posix.system')
    files['plain pickle, os.system'][0].write_bytes(pickle.dumps(Call(os.system, f'touch {marker}'), protocol=2))
    # a working legacy checkpoint with the payload in one of the small pickles torch reads first
    files['payload in the legacy magic-number pickle'] = (tmp / 'magic.pth', 'unsafe', 'it names posix.system')
    legacy_file(files['payload in the legacy magic-number pickle'][0], {}, head=[Call(os.system, f'touch {marker}'), 1001, {}])
    files['payload in the legacy system-info pickle'] = (tmp / 'sysinfo.pth', 'unsafe', 'it names posix.system')
    legacy_file(files['payload in the legacy system-info pickle'][0], {}, head=[TORCH_MAGIC, 1001, Call(os.system, f'touch {marker}')])
    files['legacy tar format'] = (tmp / 'old.tar.pth', 'unsafe', 'tar format')
    tar_file(files['legacy tar format'][0], pickle.dumps(Call(os.system, f'touch {marker}'), protocol=2))
    files['TorchScript archive'] = (tmp / 'script.pth', 'unsafe', 'TorchScript')
    torch_zip(files['TorchScript archive'][0], pickled({}), extra={'archive/constants.pkl': pickled(()), 'archive/code/__torch__.py': 'x = 1'})
    return files


def test_the_reported_reproduction_runs_nothing(tmp_path):
    "A plain pickle whose __reduce__ calls os.system, through load_prior: refused as unsafe, and no marker."
    marker = tmp_path / 'marker.txt'
    evil = tmp_path / 'evil.pth'
    evil.write_bytes(pickle.dumps(Call(os.system, f'touch {marker}'), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match='evil.pth was refused as unsafe'): load_prior(evil)
    assert not marker.exists()


@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_no_code_runs_from_any_format(tmp_path, entry):
    marker = tmp_path / 'marker.txt'
    marker.with_suffix('.py').write_text(f'open({str(marker)!r}, "w")')
    for what, (path, kind, reason) in code_files(tmp_path, marker).items():
        refused(ENTRY_POINTS[entry], path, kind, reason)
        assert not marker.exists(), f'{what} through {entry} ran code'


# ------------------------------------------------------------------------------------------- allowed globals, abused
def abuse_files(tmp:Path)->dict:
    files, real = {}, torch.zeros(2).numpy().tobytes()
    def zip_of(name, obj, kind, reason, records=None, **kw):
        files[name] = (torch_zip(tmp / f'{name.replace(" ", "_")}.pth', pickled(obj), {'0': real} if records is None else records, **kw), kind, reason)
    hook = collections.OrderedDict({0: collections.OrderedDict})
    zip_of('tensor with a backward hook', {'w': Rebuild(Storage('0', 2), (2,), (1,), hooks=hook)}, 'unsafe', 'hooks')
    zip_of('parameter with crafted state', {'w': Call(torch._utils._rebuild_parameter_with_state,
            Rebuild(Storage('0', 2), (2,), (1,)), False, collections.OrderedDict(), {'shadow': 1})}, 'unsafe', 'attributes')
    zip_of('rebuild_from_type_v2 with a foreign function', {'w': Call(torch._tensor._rebuild_from_type_v2, os.system,
            torch.Tensor, ('touch x',), {})}, 'unsafe', 'it names posix.system')
    od = collections.OrderedDict(); od.__dict__['__setstate__'] = 'x'
    zip_of('OrderedDict with attributes', {'w': od}, 'unsafe', 'attributes')
    zip_of('Version built from a non-string', {'model': {}, 'version': StoredAs(Version, (0, ('1; rm -rf ~',), None, None, None, None))},
           'unsafe', 'a stored version has fields')
    zip_of('Version with an old layout of non-numbers', {'model': {}, 'version': StoredAs(Version, {'_version': 'os.system'})},
           'unsafe', 'a stored version has fields')
    # opcodes torch's restricted unpickler does not run
    for op, code in {'INST': b'(ios\nsystem\nS"touch x"\n.', 'OBJ': b'(cos\nsystem\nS"touch x"\no.',
                     'BUILD on a foreign object': b'cos\nsystem\n}b.', 'NEWOBJ_EX': b'\x80\x04cos\nsystem\n)}\x92.'}.items():
        files[op] = (torch_zip(tmp / f'{op.replace(" ", "_")}.pth', code), 'unsafe', '')
    zip_of('persistent id naming a missing record', {'w': Rebuild(Storage('7', 2), (2,), (1,))}, 'corrupt', 'data/7')
    zip_of('storage larger than its record', {'w': Rebuild(Storage('0', 10**10), (2,), (1,))}, 'corrupt', 'record size')
    zip_of('stride-0 tensor of 20 M timesteps', {'noise_scheduler.betas': Rebuild(Storage('0', 2), (20_000_000,), (0,))}, 'unsafe', 'repeats a storage')
    zip_of('member path escaping the archive', {}, 'unsafe', 'points outside the archive', extra={'archive/../../evil.py': 'x'})
    zip_of('deflated data.pkl (zip bomb)', {}, 'unsafe', 'compressed', compress=zipfile.ZIP_DEFLATED)
    files['legacy storage declaring 10 GB'] = (legacy_file(tmp / 'legacy_big.pth', {'w': Rebuild(Storage('0', 2_500_000_000, legacy=True), (2,), (1,))},
                                               {'0': (2, real)}), 'corrupt', 'size')
    files['pickle memo index 2^26'] = (torch_zip(tmp / 'memo.pth', b'\x80\x02}r\x00\x00\x00\x04.'), 'unsafe', '')
    files['integer for a hash-collision dict'] = (torch_zip(tmp / 'collide.pth', b'\x80\x02}(\x8a\x09' + (2**64).to_bytes(9, 'little') + b'K\x01u.'),
                                                  'unsafe', 'bits')
    files['truncated'] = (tmp / 'cut.pth', 'corrupt', '')
    files['truncated'][0].write_bytes(REFERENCE_PRIOR.read_bytes()[:30_000])
    files['random bytes'] = (tmp / 'noise.pth', 'corrupt', 'not a torch checkpoint')
    files['random bytes'][0].write_bytes(os.urandom(4096))
    return files


@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_allowed_globals_cannot_be_abused_and_sizes_are_checked(tmp_path, entry):
    for what, (path, kind, reason) in abuse_files(tmp_path).items():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        message = refused(ENTRY_POINTS[entry], path, kind, reason)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 300, f'{what} cost {grown_mb:.0f} MB through {entry}: {message}'


def test_pinned_allow_list():
    "Widening what a checkpoint may name is a deliberate change of this list."
    names = sorted(g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}' for g in SAFE_GLOBALS)
    assert names == ['builtins.dict', 'collections.defaultdict', 'packaging._structures.InfinityType',
                     'packaging._structures.NegativeInfinityType', 'packaging.version.Version', 'packaging.version._Version',
                     'pytorch_warmup.base.ExponentialWarmup', 'pytorch_warmup.base.LinearWarmup', 'pytorch_warmup.radam.RAdamWarmup',
                     'pytorch_warmup.untuned.UntunedExponentialWarmup', 'pytorch_warmup.untuned.UntunedLinearWarmup',
                     'torch.optim.adam.Adam', 'torch.optim.adamw.AdamW']


# ------------------------------------------------------------------------------------------- configs and safetensors
def test_stored_configs_are_checked_before_a_model_is_built(tmp_path):
    prior = tiny_prior()
    save_prior(prior, tmp_path / 'ok.pt')
    ckpt = read_checkpoint(tmp_path / 'ok.pt')
    for field, value, reason in (('dim', 4096, 'does not fit'), ('depth', 64, 'does not fit'), ('heads', 'many', 'heads')):
        bad = dict(ckpt, config=dict(ckpt['config'], net=dict(ckpt['config']['net'], **{field: value})))
        if field == 'dim': bad['config']['image_embed_dim'] = value   # a consistent config for a 2.9 GB model
        torch.save(bad, tmp_path / f'{field}.pt')
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(ValueError, match=reason) as caught: load_prior(tmp_path / f'{field}.pt')
        assert f'{field}.pt' in str(caught.value)
        assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024 < 300
    torch.save(dict(ckpt, config=dict(ckpt['config'], timesteps=30_000_000)), tmp_path / 'steps.pt')
    with pytest.raises(ValueError, match='timesteps'): load_prior(tmp_path / 'steps.pt')
    torch.save(dict(ckpt, config=dict(ckpt['config'], surprise=1)), tmp_path / 'keys.pt')
    with pytest.raises(ValueError, match='surprise'): load_prior(tmp_path / 'keys.pt')


def safetensors_file(path, header:dict|bytes, body:bytes=b'')->Path:
    header = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack('<Q', len(header)) + header + body)
    return path


def test_lying_safetensors_files_are_refused(tmp_path):
    prior = tiny_prior()
    save_prior(prior, tmp_path / 'ok.safetensors')
    folder = tmp_path / 'folder'; prior.save_pretrained(folder)
    cases = {'huge offsets': safetensors_file(tmp_path / 'huge.safetensors', {'w': dict(dtype='F32', shape=[10**9], data_offsets=[0, 4 * 10**9])}, b'\0' * 8),
             'overlapping offsets': safetensors_file(tmp_path / 'overlap.safetensors', {'a': dict(dtype='F32', shape=[2], data_offsets=[0, 8]),
                                                                                       'b': dict(dtype='F32', shape=[2], data_offsets=[4, 12])}, b'\0' * 12),
             '100 MB header': safetensors_file(tmp_path / 'header.safetensors', b'{' + b' ' * 100_000_001 + b'}')}
    for what, path in cases.items():
        with pytest.raises(ValueError, match=f'{path.name} is corrupt') as caught: load_prior(path)
    from safetensors.torch import load_file, save_file
    tensors = load_file(tmp_path / 'ok.safetensors')
    config = json.loads(read_config(tmp_path / 'ok.safetensors'))
    for what, meta, reason in (('unknown key', dict(config, surprise=1), 'surprise'),
                               ('wrong type', dict(config, timesteps='many'), 'timesteps'),
                               ('config not JSON', '{"net": ', 'JSON')):
        path = tmp_path / f'{what.replace(" ", "_")}.safetensors'
        save_file(tensors, path, metadata=dict(config=meta if isinstance(meta, str) else json.dumps(meta), format='prior_nbdev'))
        with pytest.raises(ValueError, match=reason) as caught: load_prior(path)
        assert path.name in str(caught.value)
    (folder / 'model.safetensors').write_bytes((tmp_path / 'overlap.safetensors').read_bytes())
    with pytest.raises(ValueError, match='model.safetensors is corrupt'): DiffusionPrior.from_pretrained(folder)


def read_config(path):
    from safetensors import safe_open
    with safe_open(path, 'pt') as f: return f.metadata()['config']


# ------------------------------------------------------------------------------------------------- optimizer settings
def test_a_file_cannot_change_optimizer_settings(tmp_path):
    trainer = DiffusionPriorTrainer(tiny_prior(), device='cpu', lr=1e-3)
    trainer.save(tmp_path / 'ckpt.pt')
    ckpt = read_checkpoint(tmp_path / 'ckpt.pt')
    for group in ckpt['optimizer']['param_groups']: group.update(maximize=True, weight_decay=5., eps=1., betas=(0., 0.), amsgrad=True)
    ckpt['scheduler']['lr_lambdas'] = [{'warmup_steps': 10**9}] * len(ckpt['scheduler']['lr_lambdas'])
    torch.save(ckpt, tmp_path / 'flags.pt')
    other = DiffusionPriorTrainer(tiny_prior(), device='cpu', lr=1e-3)
    settings = [{k: v for k, v in g.items() if k not in ('params', 'lr', 'initial_lr')} for g in other.optimizer.param_groups]
    other.load(tmp_path / 'flags.pt')
    assert [{k: v for k, v in g.items() if k not in ('params', 'lr', 'initial_lr')} for g in other.optimizer.param_groups] == settings
    assert not any(g['maximize'] for g in other.optimizer.param_groups)
    assert other.scheduler.lr_lambdas[0].warmup_steps != 10**9


def test_environment_cannot_switch_the_loader(tmp_path, monkeypatch):
    "torch's switches for its own default do not change what read_checkpoint accepts."
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    assert len(read_checkpoint(REFERENCE_TRAINER)['model']) == 48
    monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD')
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    marker = tmp_path / 'marker.txt'
    torch.save({'x': Call(os.system, f'touch {marker}')}, tmp_path / 'evil.pt')
    with pytest.raises(UnsafeCheckpointError): read_checkpoint(tmp_path / 'evil.pt')
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ legitimate files still load
def test_legitimate_legacy_files_load(tmp_path):
    "Weights saved in torch's legacy (non-zip) format, by the reference and by us, load and match."
    state = reference_state()
    torch.save(state, tmp_path / 'legacy.pth', _use_new_zipfile_serialization=False)
    assert checkpoint_format(tmp_path / 'legacy.pth') == 'legacy'
    a, b = load_prior(REFERENCE_PRIOR), load_prior(tmp_path / 'legacy.pth')
    for k, v in a.state_dict().items(): torch.testing.assert_close(b.state_dict()[k], v)
    trainer = read_checkpoint(REFERENCE_TRAINER)
    original = torch.load(REFERENCE_TRAINER, weights_only=False)   # our own fixture: trusted, with the reference's pickled objects
    assert type(original['warmup_scheduler']).__name__ == 'LinearWarmup' and type(original['version']).__name__ == 'Version'
    torch.save(original, tmp_path / 'trainer_legacy.pt', _use_new_zipfile_serialization=False)
    again = read_checkpoint(tmp_path / 'trainer_legacy.pt')
    assert again['version'] == '1.15.6' and again['step'] == trainer['step']
    t = DiffusionPriorTrainer(tiny_prior(), device='cpu')
    t.load(tmp_path / 'trainer_legacy.pt')
    assert t.steps_done == int(trainer['step'])


# ------------------------------------------------------------------------------------------ the commands that read files
def test_training_command_refuses_hostile_resume_and_init_files(tmp_path):
    "A hostile latest.pt in the run folder, or a hostile init_from, stops the command with the file named; nothing runs."
    from test_train_cli import toy_data, toy_config, write_config, run_cli
    data, marker = toy_data(tmp_path / 'data', n=200), tmp_path / 'marker.txt'
    run = tmp_path / 'run'; run.mkdir()
    torch.save({'model': {}, 'step': Call(os.system, f'touch {marker}')}, run / 'latest.pt', _use_new_zipfile_serialization=False)
    result = run_cli(write_config(tmp_path, toy_config(data, run, epochs=1)))
    assert result.returncode != 0 and 'latest.pt was refused as unsafe: it names posix.system' in result.stderr, result.stderr[-2000:]
    torch.save({'model': {}, 'step': Call(os.system, f'touch {marker}')}, tmp_path / 'init.pt')
    result = run_cli(write_config(tmp_path, toy_config(data, tmp_path / 'run2', epochs=1, init_from=str(tmp_path / 'init.pt'))))
    assert result.returncode != 0 and 'init.pt was refused as unsafe: it names posix.system' in result.stderr, result.stderr[-2000:]
    assert not marker.exists()
    assert (run / 'latest.pt').exists()   # the refused file is left where it was, for the user to inspect
