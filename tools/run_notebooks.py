"""Execute notebooks and store them with their outputs.

`python tools/run_notebooks.py [nbs/04_prior.ipynb ...]` (default: every notebook under nbs/), then `nbdev_clean`.
By default a notebook runs as nbdev_test runs it: `IN_TEST` set (heavy cells shrink), `#| slow` and `#| eval: false`
cells not run, and a slow cell keeps the outputs of its last full run. `--full` runs the slow cells too, without
`IN_TEST`: the run whose numbers the prose and the README may quote (the shapes and arithmetic chapters are stored so).
Outputs stay deterministic because every notebook seeds what it draws; figures are stored as PNG at 72 dpi.
"""
import os, sys, time
from pathlib import Path
from execnb.shell import CaptureShell
from execnb.nbio import read_nb, write_nb

ROOT = Path(__file__).resolve().parent.parent
SLOW, NEVER = ('#| slow', '#|slow'), ('#| eval: false', '#|eval: false')


def flagged(cell, flags)->bool:
    return cell.cell_type == 'code' and any(line.strip() in flags for line in cell.source.splitlines())


def run(path:Path, full:bool=False):
    if full: os.environ.pop('IN_TEST', None)
    else: os.environ['IN_TEST'] = '1'
    nb = read_nb(path)
    shell = CaptureShell(mpl_format='png')
    shell.set_path(path.parent.resolve())
    shell.run_cell('import matplotlib; matplotlib.rcParams["figure.dpi"] = 72')
    cwd = os.getcwd(); os.chdir(path.parent)
    try:
        for cell in nb.cells:
            if cell.cell_type != 'code':         # markdown cells have no outputs in nbformat
                cell.pop('outputs', None); cell.pop('execution_count', None); continue
            if flagged(cell, NEVER): cell.outputs = []; cell.execution_count = None; continue
            if flagged(cell, SLOW) and not full: continue      # keeps the outputs of its last full run
            cell.outputs = []                    # execnb keeps a cell's old outputs when it prints nothing now
            shell.cell(cell)
            if shell.exc: raise RuntimeError(f'{path.name}: a cell failed:\n{cell.source[:500]}') from shell.exc
    finally: os.chdir(cwd)
    write_nb(nb, path)


if __name__ == '__main__':
    args = sys.argv[1:]
    full = '--full' in args
    paths = [Path(p).resolve() for p in args if p != '--full'] or sorted((ROOT / 'nbs').glob('*.ipynb'))
    for p in paths:
        start = time.time(); run(p, full); print(f'{p.name}: {time.time() - start:.0f} s', flush=True)
