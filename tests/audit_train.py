"""The training command watched from outside, through `train`'s documented `on_step` callback.

    python tests/audit_train.py AUDIT_DIR --config_path CONFIG [the command's other arguments]
    accelerate launch ... tests/audit_train.py AUDIT_DIR --config_path CONFIG ...

trains exactly as `train_diffusion_prior` does, and writes for each process `AUDIT_DIR/rank{r}.tsv`, one line per step
(the step, the epoch, the captions of the rows it read), and at the end `AUDIT_DIR/rank{r}.weights`, a fingerprint of
the trained weights. The tests read them to check the data order and that the processes agree.
"""
import sys
from pathlib import Path

AUDIT = Path(__file__).resolve()


def recorder(folder:Path):
    "(on_step, last): a callback appending each step's rows to `folder/rank{r}.tsv`, and a dict holding the last run seen."
    files, last = {}, {}
    def on_step(run, batch):
        rank = run.accelerator.process_index
        if rank not in files: files[rank] = open(Path(folder) / f'rank{rank}.tsv', 'a', buffering=1)
        files[rank].write(f"{run.trainer.steps_done}\t{run.train_loader.epoch}\t{'|'.join(batch.get('captions', []))}\n")
        last['run'] = run
    return on_step, last


def fingerprint(prior)->str:
    return f'{sum(p.detach().double().abs().sum().item() for p in prior.net.parameters()):.10e}'


if __name__ == '__main__':
    from prior_nbdev.train import main
    folder = Path(sys.argv[1])
    on_step, last = recorder(folder)
    main(sys.argv[2:], on_step=on_step)
    if 'run' in last:
        run = last['run']
        (folder / f'rank{run.accelerator.process_index}.weights').write_text(fingerprint(run.trainer.unwrapped_prior))
