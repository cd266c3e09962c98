"""Stopping anywhere in an epoch and resuming, on the same number of processes or another: the data loader alone (ranks
simulated in one process through its rank/world_size arguments), `resume_or_init` as the training command calls it, and
the command itself.

What must hold: the same rows as an uninterrupted run (with the same number of processes: the same batches in the same
order), no row twice in an epoch, only full batches, and the same number of batches on every process (under DDP a
process with more batches waits forever for the others).
"""
import math, shutil, subprocess, sys
import numpy as np
import pytest
import torch
from prior_nbdev.data import write_embedding_shards, validate_embeddings, PriorLoader
from prior_nbdev.train import (config_from_dict, TrainDiffusionPriorConfig, prepare_data, build_prior, resume_or_init, train)
from prior_nbdev.trainer import DiffusionPriorTrainer
from prior_nbdev.checkpoint import read_checkpoint
from test_train_cli import toy_data, toy_config, write_config, free_port, CLI, ENV
from audit_train import AUDIT, recorder

SPLIT, BATCH, BLOCK, SEED = (3, 222), 8, 32, 5   # 219 rows: six blocks of 32 and one of 27
WORLD_CHANGES = [(1, 1), (2, 2), (1, 2), (2, 1), (2, 3), (3, 2)]


class InMemory:
    "A checked embedding folder read once and served from memory (a `PriorLoader` needs only `count` and `read`)."
    def __init__(self, dataset): self.count, self.rows = dataset.count, dataset.read(0, dataset.count)
    def read(self, start:int, end:int)->dict: return {k: v[start:end] for k, v in self.rows.items()}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    n, rng = 230, np.random.default_rng(0)
    image = rng.standard_normal((n, 4)).astype(np.float32)
    root = write_embedding_shards(tmp_path_factory.mktemp('rows'), image, image, [f'caption {i}' for i in range(n)], shard_size=100)
    return InMemory(validate_embeddings(root / 'img_emb', root / 'text_emb', root / 'metadata'))


def rows(batch:dict)->list[int]: return [int(c.split()[1]) for c in batch['captions']]


def loaders(dataset, world:int, drop_last:bool=True)->list[PriorLoader]:
    return [PriorLoader(dataset, *SPLIT, BATCH, block_size=BLOCK, seed=SEED, rank=r, world_size=world, drop_last=drop_last)
            for r in range(world)]


def take(loader:PriorLoader, n:int)->list[list[int]]:
    "The first `n` batches of the epoch (the loader stays where a training loop that stopped there would leave it)."
    it = iter(loader)
    return [rows(next(it)) for _ in range(n)]


def rest_of_epoch(loaders_:list[PriorLoader])->list[list[list[int]]]:
    return [[rows(b) for b in l] for l in loaders_]


def check_resumed(first:list, second:list, uninterrupted_second:list|None, where:str, planned:list[int], batch:int=BATCH, split=SPLIT):
    "The batches after a resume against the rules above; `uninterrupted_second`: what an uninterrupted run serves instead (same world size)."
    counts = [len(r) for r in second]
    assert len(set(counts)) == 1, f'{where}: the processes get {counts} batches after resuming (under DDP unequal counts hang)'
    assert counts == planned, f'{where}: the loaders planned {planned} batches (len) but served {counts}'
    sizes = sorted({len(b) for r in second for b in r})
    assert sizes in ([], [batch]), f'{where}: batches of {sizes} rows after resuming; every batch must hold {batch}'
    served = [i for r in first + second for b in r for i in b]
    twice = sorted(i for i in set(served) if served.count(i) > 1)
    assert not twice, f'{where}: {len(twice)} rows served twice in one epoch: {twice[:10]}...'
    assert set(served) <= set(range(*split)), f'{where}: rows outside the split {split}'
    if uninterrupted_second is not None:
        assert second == uninterrupted_second, f'{where}: the resumed batches differ from those of the uninterrupted run'


@pytest.mark.parametrize('old,new', WORLD_CHANGES, ids=[f'{o}to{n}' for o, n in WORLD_CHANGES])
def test_loader_resumes_at_every_stop(dataset, old, new):
    "Stop after every possible number of batches (mid-block included), save, resume on `new` processes."
    whole = rest_of_epoch(loaders(dataset, old))
    per_rank = len(whole[0])
    for stop in range(per_rank + 1):
        first = loaders(dataset, old)
        got = [take(l, stop) for l in first]
        assert got == [r[:stop] for r in whole]
        states = [l.state_dict() for l in first]
        assert all(s == states[0] for s in states), f'{old} processes stopped after {stop} batches save different loader states'
        second = loaders(dataset, new)
        for l in second: l.load_state_dict(states[0])
        planned = [len(l) - l.position // BATCH for l in second]
        where = f'{old} -> {new} processes, stopped after {stop} of {per_rank} batches'
        check_resumed(got, rest_of_epoch(second), [r[stop:] for r in whole] if old == new else None, where, planned)
        # the next epoch is a fresh one on the new number of processes
        assert rest_of_epoch(second) == rest_of_epoch([_at_epoch(l, 1) for l in loaders(dataset, new)]), f'{where}: the next epoch'


@pytest.mark.parametrize('old,new', WORLD_CHANGES, ids=[f'{o}to{n}' for o, n in WORLD_CHANGES])
def test_loader_resumed_without_drop_last_serves_every_row_once(dataset, old, new):
    "Without drop_last nothing is cut, so the epoch before and after the stop must hold every row of the split exactly once."
    whole = rest_of_epoch(loaders(dataset, old, drop_last=False))
    assert sorted(i for r in whole for b in r for i in b) == list(range(*SPLIT))
    full_batches = min(sum(len(b) == BATCH for b in r) for r in whole)
    for stop in range(full_batches + 1):        # every process still at the same row count
        first = loaders(dataset, old, drop_last=False)
        got = [take(l, stop) for l in first]
        second = loaders(dataset, new, drop_last=False)
        for l in second: l.load_state_dict(first[0].state_dict())
        after = rest_of_epoch(second)
        served = sorted(i for part in (got, after) for r in part for b in r for i in b)
        missing, twice = sorted(set(range(*SPLIT)) - set(served)), len(served) - len(set(served))
        assert not missing and not twice, (f'{old} -> {new} processes, stopped after {stop} batches: {len(missing)} rows never served '
                                           f'{missing[:10]}, {twice} served twice')
        if old == new: assert after == [r[stop:] for r in whole]


def _at_epoch(loader:PriorLoader, epoch:int)->PriorLoader:
    loader.epoch = epoch
    return loader


def test_loader_resumes_twice_across_world_sizes(dataset):
    "2 processes stop mid-block, 3 resume and stop mid-block again, 1 finishes: each row once, equal batches each time."
    first = loaders(dataset, 2)
    got1 = [take(l, 3) for l in first]                  # 24 rows of a 32-row block per process
    middle = loaders(dataset, 3)
    for l in middle: l.load_state_dict(first[0].state_dict())
    got2 = [take(l, 2) for l in middle]
    state = middle[0].state_dict()
    assert state['plan'] is not None and all(l.state_dict() == state for l in middle)
    last = loaders(dataset, 1)
    last[0].load_state_dict(state)
    planned = [len(last[0])]
    check_resumed(got1 + got2, rest_of_epoch(last), None, '2 -> 3 -> 1 processes', planned)


# --- the training command: resume_or_init, and the command end to end -------------------------------------------------

def small_config(tmp_path, run='run', **train):
    data = tmp_path / 'data'
    if not data.exists(): toy_data(data)
    cfg = toy_config(data, tmp_path / run, **{'epochs': 2, 'save_every_steps': 100, 'eval_timesteps': [2], **train})
    cfg['data'].update(eval_every_steps=1000, splits=dict(train=0.8, val=0.1, test=0.1))
    return cfg


def audit(folder)->dict[int, list[list[int]]]:
    "rank -> the rows of each step, from the audit trail `audit_train.recorder` writes."
    out = {}
    for path in sorted(folder.glob('rank*.tsv')):
        lines = [line.split('\t') for line in path.read_text().splitlines()]
        out[int(path.stem[4:])] = [[int(c.split()[1]) for c in line[2].split('|')] for line in lines]
    return out


def test_command_resumed_mid_block_equals_uninterrupted(tmp_path):
    "Stopped after 5 steps (200 rows: 8 rows into the fourth 64-row block) and resumed: the same rows and the same weights."
    for name, stops in (('full', [None]), ('part', [5, None])):
        (tmp_path / f'audit_{name}').mkdir()
        on_step, _ = recorder(tmp_path / f'audit_{name}')
        for max_steps in stops:
            train(config_from_dict(TrainDiffusionPriorConfig, small_config(tmp_path, name, max_steps=max_steps)), progress=False, on_step=on_step)
    full, part = audit(tmp_path / 'audit_full'), audit(tmp_path / 'audit_part')
    assert len(full[0]) == 24 and [len(r) for r in full[0]] == [40] * 24
    assert part[0][:5] == full[0][:5]
    assert part[0][5:] == full[0][5:], 'the resumed run read other rows than the uninterrupted one after the stop'
    a, b = read_checkpoint(tmp_path / 'full' / 'latest.pt'), read_checkpoint(tmp_path / 'part' / 'latest.pt')
    for key in a['model']: torch.testing.assert_close(a['model'][key], b['model'][key], atol=1e-5, rtol=1e-5, msg=key)


def _stopped_checkpoint(tmp_path, old:int, stop:int):
    "A checkpoint as `old` processes would write it after `stop` steps of the first epoch (ranks simulated); their rows so far."
    cfg = small_config(tmp_path)
    config = config_from_dict(TrainDiffusionPriorConfig, cfg)
    first = [prepare_data(config, rank, old)[0] for rank in range(old)]
    got = [take(l, stop) for l in first]
    trainer = DiffusionPriorTrainer(build_prior(config.prior), device='cpu', use_ema=True)
    trainer.steps_done = stop
    (tmp_path / 'run').mkdir(exist_ok=True)
    trainer.save(tmp_path / 'run' / 'latest.pt', loader=first[0].state_dict(), history=dict(step=[], loss=[], val_step=[],
                 online_val_loss=[], ema_val_loss=[]), best_val_loss=math.inf, train_config=cfg, rng=[])
    return config, got


@pytest.mark.parametrize('old,new', WORLD_CHANGES, ids=[f'{o}to{n}' for o, n in WORLD_CHANGES])
def test_resume_or_init_deals_the_unread_rows(tmp_path, old, new):
    "`resume_or_init` on each of `new` processes after `old` stopped mid-block: no row twice, equal and planned batch counts."
    stop = {1: 5, 2: 3, 3: 2}[old]                 # 200, 120 or 80 rows per process: inside a 64-row block
    config, got = _stopped_checkpoint(tmp_path, old, stop)
    second, planned = [], []
    for rank in range(new):
        loader = prepare_data(config, rank, new)[0]
        trainer = DiffusionPriorTrainer(build_prior(config.prior), device='cpu', use_ema=True)
        resume_or_init(trainer, loader, tmp_path / 'run' / 'latest.pt', config.train, rank, new)
        assert trainer.steps_done == stop
        planned.append(math.ceil((loader.rows_per_epoch() - loader.position) / loader.batch_size))   # as train() plans its steps
        second.append(loader)
    where = f'resume_or_init: {old} -> {new} processes after {stop} steps'
    uninterrupted = None
    if old == new: uninterrupted = [[rows(b) for b in l][stop:] for l in (prepare_data(config, r, new)[0] for r in range(new))]
    check_resumed(got, rest_of_epoch(second), uninterrupted, where, planned, batch=40, split=(0, 480))


def test_command_resumes_on_two_processes_after_one(tmp_path):
    "One process stops mid-block; `accelerate launch` on two resumes: the unread rows, each once, equal steps, no hang."
    accelerate = shutil.which('accelerate')
    if accelerate is None: pytest.skip('accelerate CLI not installed')
    cfg = small_config(tmp_path, epochs=1)
    cfg['data']['batch_size'] = 20
    (tmp_path / 'audit').mkdir()
    train(config_from_dict(TrainDiffusionPriorConfig, {**cfg, 'train': {**cfg['train'], 'max_steps': 5}}), progress=False,
          on_step=recorder(tmp_path / 'audit')[0])
    before = audit(tmp_path / 'audit')[0]
    assert len(before) == 5
    (tmp_path / 'audit' / 'rank0.tsv').unlink()
    env = {**ENV, 'CUDA_VISIBLE_DEVICES': ''}
    result = subprocess.run([accelerate, 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
                             '--dynamo_backend', 'no', '--main_process_port', str(free_port()), str(AUDIT), str(tmp_path / 'audit'), '--config_path',
                             str(write_config(tmp_path, cfg, 'resume.json')), '--no_progress'],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'the epoch in progress was begun by 1 processes and its unread rows are dealt to 2' in result.stdout
    after = audit(tmp_path / 'audit')
    assert sorted(after) == [0, 1] and len(after[0]) == len(after[1]) > 0, {r: len(s) for r, s in after.items()}
    served = [i for steps in [before, after[0], after[1]] for b in steps for i in b]
    assert len(served) == len(set(served)), f'{len(served) - len(set(served))} rows served twice'
    assert len(set(range(480)) - set(served)) < 2 * 20 + 64       # only a drop_last remainder is left out
    assert read_checkpoint(tmp_path / 'run' / 'latest.pt')['step'] == 5 + len(after[0])
