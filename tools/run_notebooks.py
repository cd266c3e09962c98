"""Execute notebooks and store them with their outputs, as nbdev_test would run them (skipping `#| slow` and `#| eval: false` cells).

`python tools/run_notebooks.py [nbs/04_prior.ipynb ...]` (default: every notebook under nbs/), then `nbdev_clean`.
Outputs stay deterministic because every notebook seeds what it draws; figures are stored as PNG at 72 dpi.
"""
import os, sys, time
from pathlib import Path
from execnb.shell import CaptureShell
from execnb.nbio import read_nb, write_nb

ROOT = Path(__file__).resolve().parent.parent
SKIP = ('#| slow', '#|slow', '#| eval: false', '#|eval: false')


def skip(cell):
    return cell.cell_type == 'code' and any(line.strip() in SKIP for line in cell.source.splitlines())


def run(path:Path):
    os.environ['IN_TEST'] = '1'
    nb = read_nb(path)
    shell = CaptureShell(mpl_format='png')
    shell.set_path(path.parent.resolve())
    shell.run_cell('import matplotlib; matplotlib.rcParams["figure.dpi"] = 72')
    cwd = os.getcwd(); os.chdir(path.parent)
    try:
        for cell in nb.cells:
            if cell.cell_type != 'code':         # markdown cells have no outputs in nbformat
                cell.pop('outputs', None); cell.pop('execution_count', None); continue
            if skip(cell): cell.outputs = []; cell.execution_count = None; continue
            cell.outputs = []                    # execnb keeps a cell's old outputs when it prints nothing now
            shell.cell(cell)
            if shell.exc: raise RuntimeError(f'{path.name}: a cell failed:\n{cell.source[:500]}') from shell.exc
    finally: os.chdir(cwd)
    write_nb(nb, path)


if __name__ == '__main__':
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / 'nbs').glob('*.ipynb'))
    for p in paths:
        start = time.time(); run(p); print(f'{p.name}: {time.time() - start:.0f} s', flush=True)
