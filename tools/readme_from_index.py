"""Write README.md from nbs/index.ipynb (nbdev_readme needs quarto, which cannot be installed here).

`python tools/readme_from_index.py` writes it; `--check` exits 1 when README.md differs from what the notebook says or
when a measured number it quotes differs from the file that measured it (tools/readme_numbers.py binds each to its source).
Markdown cells are copied, visible code cells become ```python blocks, hidden (`#| hide`) cells are left out.
"""
import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_numbers import check as check_numbers

ROOT = Path(__file__).resolve().parent.parent


def render(nb_path=ROOT / 'nbs' / 'index.ipynb') -> str:
    cells = json.loads(Path(nb_path).read_text(encoding='utf-8'))['cells']
    parts = []
    for cell in cells:
        source = ''.join(cell['source']).strip('\n')
        if cell['cell_type'] == 'markdown': parts.append(source)
        elif cell['cell_type'] == 'code' and source and not any(l.strip() in ('#| hide', '#|hide') for l in source.splitlines()):
            code = '\n'.join(l for l in source.splitlines() if not l.startswith('#|'))
            parts.append(f'```python\n{code}\n```')
    return '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    readme = ROOT / 'README.md'
    text = render()
    problems = check_numbers(text)
    if '--check' in sys.argv[1:]:
        if readme.read_text(encoding='utf-8') != text:
            problems.append('README.md is out of date with nbs/index.ipynb: run python tools/readme_from_index.py')
        if problems: sys.exit('\n'.join(problems))
        print('README.md matches nbs/index.ipynb, and every measured number it quotes matches its source')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
        if problems: sys.exit('\n'.join(['numbers that differ from their sources:'] + problems))
