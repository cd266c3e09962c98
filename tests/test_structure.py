"The shape of the package: imports point down the chapters, no module takes another's private names, no cycles."
import ast, json, re
from pathlib import Path
import prior_nbdev

PKG = Path(prior_nbdev.__file__).parent
ROOT = Path(__file__).resolve().parent.parent


def modules():
    "{dotted module name under the package: path}, the lab's subpackage included ('lab.shapes')."
    return {'.'.join(p.relative_to(PKG).with_suffix('').parts): p for p in PKG.rglob('*.py')
            if p.stem not in ('__init__', '_modidx')}


def chapters():
    "{module: chapter number} from each module's nbdev header."
    out = {}
    for name, path in modules().items():
        if m := re.search(r'File to edit: (?:\.\./)+nbs/(\d+)_\w+\.ipynb', path.read_text()): out[name] = int(m.group(1))
    return out


def resolve(module, node):
    "The dotted name (under the package) that an ImportFrom in `module` imports from; None for other packages."
    if node.level:
        base = module.split('.')[:-node.level]
        return '.'.join(base + ([node.module] if node.module else [])) or '__init__'
    if (node.module or '').startswith('prior_nbdev'): return node.module.split('.', 1)[1] if '.' in node.module else '__init__'


def imports(module, path):
    "(module imported, names) for every import of a prior_nbdev module in `path`, function-level ones included."
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if (target := resolve(module, node)) is not None: found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name.split('.', 1)[1], []) for a in node.names if a.name.startswith('prior_nbdev.')]
    return found


def graph():
    paths = modules()
    return {m: imports(m, paths[m]) for m in chapters()}


def test_every_module_comes_from_a_numbered_chapter():
    assert set(modules()) == set(chapters()), set(modules()) ^ set(chapters())


def test_imports_point_down_the_chapters():
    number, problems = chapters(), []
    for module, deps in graph().items():
        for target, names in deps:
            if target == '__init__':   # the version comes from the installed metadata (`checkpoint.file_stamp`)
                problems.append(f'{module} imports {names} from the package root')
            elif number[target] >= number[module]:
                problems.append(f'{module} (chapter {number[module]}) imports {target} (chapter {number[target]})')
    assert not problems, problems


def test_the_core_never_imports_the_lab():
    "The lab (shapes world, probes, decoder, demo, explorer) uses the core; no core module imports it, the package root included."
    core = {m: deps for m, deps in graph().items() if not m.startswith('lab.')}
    assert core and len(core) < len(graph())
    problems = [f'{m} imports {t}' for m, deps in core.items() for t, _ in deps if t == 'lab' or t.startswith('lab.')]
    root = [t for t, _ in imports('__init__', PKG / '__init__.py')]
    assert not problems and not [t for t in root if t.startswith('lab')], (problems, root)


def test_lab_chapters_follow_the_core():
    number = chapters()
    assert max(n for m, n in number.items() if not m.startswith('lab.')) < min(n for m, n in number.items() if m.startswith('lab.'))


def test_no_private_names_cross_modules():
    problems = [f'{m} imports {t}.{n}' for m, deps in graph().items() for t, names in deps for n in names
                if n.startswith('_')]
    assert not problems, problems


def test_no_import_cycles():
    edges = {m: {t for t, _ in deps if t != '__init__'} for m, deps in graph().items()}
    state = {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'active', f'import cycle: {" -> ".join(path + [m])}'
        state[m] = 'active'
        for t in edges.get(m, ()): visit(t, path + [m])
        state[m] = 'done'
    for m in edges: visit(m, [])


def test_stored_notebooks_are_valid_nbformat():
    "Markdown cells carry no outputs (nbformat forbids them), and no stored output holds a terminal escape."
    for path in sorted((ROOT / 'nbs').glob('*.ipynb')):
        for cell in json.loads(path.read_text())['cells']:
            assert cell['cell_type'] == 'code' or not ({'outputs', 'execution_count'} & set(cell)), f'{path.name}: a {cell["cell_type"]} cell with outputs'
            for out in cell.get('outputs', []):
                text = ''.join(out.get('text', [])) + ''.join(''.join(v) for k, v in out.get('data', {}).items() if k.startswith('text/'))
                assert '\x1b[' not in text, f'{path.name}: a stored output with terminal escapes: {text[:200]!r}'
