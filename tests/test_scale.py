"Beyond one process: two 'nodes' on loopback, resuming on another number of processes, experiment trackers."
import json, os, random, re, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from prior_nbdev.checkpoint import read_checkpoint
from test_train_cli import CLI, ENV, toy_data, toy_config, write_config, free_port
from audit_train import AUDIT

ACCELERATE = shutil.which('accelerate')
needs_accelerate = pytest.mark.skipif(ACCELERATE is None, reason='accelerate CLI not installed')
ENV = {**ENV, 'CUDA_VISIBLE_DEVICES': ''}


def launch(config, *, processes, machines=1, machine_rank=0, port=None, env=None, popen=False, audit=None):
    "`accelerate launch` of the training command (watched by tests/audit_train.py, writing to `audit`, when given)."
    args = [ACCELERATE, 'launch', '--multi_gpu', '--num_processes', str(processes), '--num_machines', str(machines),
            '--machine_rank', str(machine_rank), '--main_process_ip', '127.0.0.1', '--main_process_port', str(port or free_port()),
            '--mixed_precision', 'no', '--dynamo_backend', 'no', *([str(AUDIT), str(audit)] if audit else [CLI]),
            '--config_path', str(config), '--no_progress']
    if popen: return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**ENV, **(env or {})})
    return subprocess.run(args, capture_output=True, text=True, env={**ENV, **(env or {})}, timeout=600)


def fingerprints(folder):
    "rank -> the fingerprint of its trained weights, as tests/audit_train.py wrote it."
    return {int(p.stem[4:]): p.read_text() for p in Path(folder).glob('rank*.weights')}


@needs_accelerate
def test_two_nodes_on_loopback(tmp_path):
    "2 machines x 1 process (accelerate launch --num_machines 2 --machine_rank 0|1): the 2-process invariants hold."
    data = toy_data(tmp_path / 'data', n=640)
    cfg = toy_config(data, tmp_path / 'run', epochs=2)
    cfg['data']['batch_size'] = 20
    config = write_config(tmp_path, cfg)
    port = free_port()
    (tmp_path / 'audit').mkdir()
    nodes = [launch(config, processes=2, machines=2, machine_rank=r, port=port, popen=True, audit=tmp_path / 'audit') for r in (0, 1)]
    outs = [n.communicate(timeout=600)[0] for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    blocks = {}
    for out in outs:
        for line in out.splitlines():
            if m := re.match(r'rank (\d/2) reads train blocks (.*)', line): blocks[m.group(1)] = eval(m.group(2))
    rows = [set().union(*(set(range(s, e)) for s, e in blocks[r])) for r in ('0/2', '1/2')]
    assert not rows[0] & rows[1] and rows[0] | rows[1] == set(range(512))       # disjoint, the whole train split
    files = sorted(p.name for p in (tmp_path / 'run').iterdir())
    assert files == ['best.pt', 'history.json', 'label_free.png', 'latest.pt', 'latest.pth', 'metrics.json', 'metrics.png'], files
    prints = fingerprints(tmp_path / 'audit')
    assert set(prints) == {0, 1} and len(set(prints.values())) == 1, prints   # the same weights on both nodes
    assert read_checkpoint(tmp_path / 'run' / 'latest.pt')['step'] == 2 * 12


def audit(folder):
    "{(epoch, step): rows} from the audit trail of every rank."
    steps = {}
    for path in Path(folder).glob('rank*.tsv'):
        for line in path.read_text().splitlines():
            step, epoch, captions = line.split('\t')
            steps.setdefault((int(epoch), int(step)), []).extend(int(c.split()[1]) for c in captions.split('|'))
    return steps


@needs_accelerate
def test_killed_two_process_run_resumes_on_one(tmp_path):
    "SIGKILL after a checkpoint of a 2-process run; the same config resumed on 1 process finishes every epoch, no row twice."
    data = toy_data(tmp_path / 'data', n=640)
    cfg = toy_config(data, tmp_path / 'run', epochs=3, save_every_steps=2)
    cfg['data']['batch_size'], cfg['data']['block_size'] = 16, 48
    config = write_config(tmp_path, cfg)
    first, second = tmp_path / 'audit1', tmp_path / 'audit2'
    first.mkdir(); second.mkdir()
    latest = tmp_path / 'run' / 'latest.pt'
    proc = launch(config, processes=2, popen=True, audit=first)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (latest.exists() and read_checkpoint(latest)['step'] >= 10):
        time.sleep(0.05)
    time.sleep(random.uniform(0, 0.3))
    proc.send_signal(signal.SIGKILL); proc.wait()
    subprocess.run(['pkill', '-9', '-f', str(config)], check=False)   # the launcher's children too
    saved = read_checkpoint(latest)
    assert saved['loader']['world_size'] == 2 and 0 < saved['step'] < 3 * 16, saved['step']
    result = subprocess.run([sys.executable, str(AUDIT), str(second), '--config_path', str(config), '--no_progress'],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'begun by 2 processes and its unread rows are dealt to 1' in result.stdout, result.stdout[-2000:]
    before = {k: v for k, v in audit(first).items() if k[1] <= saved['step']}     # what the checkpoint had consumed
    after = audit(second)
    assert min(s for _, s in after) == saved['step'] + 1                            # it continued from the saved step
    for epoch in range(3):
        rows = [r for (e, _), v in {**before, **after}.items() if e == epoch for r in v]
        assert len(rows) == len(set(rows)), f'epoch {epoch}: a row came twice'
        assert len(rows) >= 512 - 2 * 16 - 48, (epoch, len(rows))                    # only the drop_last remainder is left out
    final = read_checkpoint(latest)
    assert final['loader']['world_size'] == 1 and final['step'] == max(s for _, s in after)
    assert final['scheduler']['last_epoch'] == final['step']                          # the LR schedule went on counting


def test_trackers_tensorboard_and_wandb_offline(tmp_path):
    pytest.importorskip('tensorboard'); pytest.importorskip('wandb')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    data = toy_data(tmp_path / 'data')
    cfg = toy_config(data, tmp_path / 'run', epochs=2, max_grad_norm=1.0)
    cfg['tracker'].update(log_with=['tensorboard', 'wandb'], project_name='shapes', init_kwargs={'wandb': {'name': 'offline-test'}})
    result = subprocess.run([CLI, '--config_path', str(write_config(tmp_path, cfg)), '--no_progress'], capture_output=True, text=True,
                            env={**ENV, 'WANDB_MODE': 'offline', 'WANDB_DIR': str(tmp_path), 'WANDB_SILENT': 'true'}, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    events = list((tmp_path / 'run' / 'shapes').glob('events.out.tfevents.*'))
    assert events, sorted(str(p) for p in (tmp_path / 'run').rglob('*'))
    acc = EventAccumulator(str(events[0].parent)); acc.Reload()
    tags = set(acc.Tags()['scalars'])
    assert {'train/loss', 'train/lr', 'train/grad_norm', 'train/samples_per_s', 'val/ema_loss', 'val/online_loss',
            'test/similarity_with_original_image'} <= tags, tags
    assert [e.step for e in acc.Scalars('train/loss')] == list(range(3, 25, 3))
    history = json.loads((tmp_path / 'run' / 'history.json').read_text())
    assert [round(e.value, 5) for e in acc.Scalars('train/loss')] == [round(v, 5) for v in history['loss']]   # history.json kept
    runs = list((tmp_path / 'wandb').glob('offline-run-*'))
    assert len(runs) == 1 and list(runs[0].glob('run-*.wandb')), sorted(str(p) for p in (tmp_path / 'wandb').rglob('*'))[:20]
    assert (tmp_path / 'run' / 'latest.pth').resolve() == (tmp_path / 'run' / 'latest.pt').resolve()   # the seed's name


def test_unknown_or_missing_tracker_is_refused(tmp_path):
    data = toy_data(tmp_path / 'data')
    cfg = toy_config(data, tmp_path / 'run')
    cfg['tracker']['log_with'] = 'tensorbored'
    result = subprocess.run([CLI, '--config_path', str(write_config(tmp_path, cfg)), '--no_progress'], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 1 and "unknown tracker 'tensorbored'" in result.stderr
