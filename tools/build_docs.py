"""Build the documentation site: one page per chapter (the notebooks of nbs/ with their stored outputs and figures;
nothing is executed), one API page per module of prior_nbdev/ (docstrings, signatures and the argument comments),
and full-text search. Sphinx with myst-nb and the furo theme, configured in docs/conf.py; `pip install -e ".[docs]"`.

`python tools/build_docs.py` writes the site to _site/ (open _site/index.html); `--out DIR` elsewhere.
The notebooks are copied to a temporary folder first, as nbdev shows them: `#| hide` and `#| default_exp` cells
left out, the `#|` directive lines removed from the code shown.
"""
import argparse, dataclasses, importlib, inspect, io, json, re, shutil, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NBS, CONF = ROOT / 'nbs', ROOT / 'docs'
LIB = 'prior_nbdev'
DROPPED = {'hide', 'default_exp'}                  # nbdev directives whose cells a reader never sees


def directives(source:str):
    "Split a code cell's source into its `#|` directives ({name: value}) and the code a reader sees."
    names, lines = {}, source.splitlines(keepends=True)
    while lines and re.match(r'\s*#\s*\|', lines[0]):
        name, _, value = re.sub(r'^\s*#\s*\|\s*', '', lines.pop(0)).strip().partition(' ')
        names[name.rstrip(':')] = value.strip()
    return names, ''.join(lines)


def reader_cells(cells:list)->list:
    "The cells of a notebook as its chapter page shows them."
    shown = []
    for cell in cells:
        cell = dict(cell, source=''.join(cell['source']))
        if cell['cell_type'] != 'code':
            cell.pop('outputs', None); cell.pop('execution_count', None)
            shown.append(cell); continue
        names, code = directives(cell['source'])
        if DROPPED & set(names) or names.get('include') == 'false' or not code.strip(): continue
        tags = cell.setdefault('metadata', {}).setdefault('tags', [])
        if names.get('echo') == 'false': tags.append('remove-input')
        if names.get('output') == 'false': tags.append('remove-output')
        shown.append(dict(cell, source=code))
    return shown


def chapters()->list:
    "The notebooks in reading order, index first: (path, module it exports or None, title)."
    found = []
    for path in sorted(NBS.glob('*.ipynb'), key=lambda p: (p.stem != 'index', p.stem)):
        cells = json.loads(path.read_text(encoding='utf-8'))['cells']
        code = [directives(''.join(c['source']))[0] for c in cells if c['cell_type'] == 'code']
        module = next((names['default_exp'] for names in code if 'default_exp' in names), None)
        text = next(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
        title = re.search(r'^#\s+(.+)$', text, re.M).group(1).strip()
        found.append((path, module, title))
    return found


def copy_notebook(path:Path, dest:Path, extra_cells=()):
    "Write the chapter's notebook as a reader sees it, and copy the local images its markdown points at."
    nb = json.loads(path.read_text(encoding='utf-8'))
    nb['cells'] = reader_cells(nb['cells']) + list(extra_cells)
    (dest / path.name).write_text(json.dumps(nb), encoding='utf-8')
    for cell in nb['cells']:
        if cell['cell_type'] != 'markdown': continue
        for ref in re.findall(r'!\[[^\]]*\]\(([^)\s]+)', cell['source']) + re.findall(r'<img[^>]*src="([^"]+)"', cell['source']):
            if re.match(r'[a-z]+:', ref): continue            # a URL, not a file
            src = next((base / ref for base in (NBS, ROOT) if (base / ref).is_file()), None)
            if src is None: raise FileNotFoundError(f'{path.name} shows the image {ref!r}, which is neither under nbs/ nor the repository root')
            (dest / ref).parent.mkdir(parents=True, exist_ok=True); shutil.copy(src, dest / ref)


def added_elsewhere(cls)->list:
    "Public methods and properties other modules add to `cls` with fastcore's `@patch` (their modules' pages show them)."
    found = []
    for name, attr in vars(cls).items():
        fn = getattr(attr, 'fget', getattr(attr, '__func__', attr))
        if not name.startswith('_') and getattr(fn, '__module__', cls.__module__) != cls.__module__: found.append(name)
    return found


def patched_methods(module)->list:
    "Methods a module adds to classes defined elsewhere, in source order: (class, name, is_property)."
    found = []
    for other in sorted({m for n, m in sys.modules.items() if n.startswith(LIB + '.') and m is not module}, key=lambda m: m.__name__):
        for cls in vars(other).values():
            if not inspect.isclass(cls) or cls.__module__ != other.__name__: continue
            for name in added_elsewhere(cls):
                attr = vars(cls)[name]; fn = getattr(attr, 'fget', attr)
                if fn.__module__ == module.__name__: found.append((inspect.getsourcelines(fn)[1], cls, name, isinstance(attr, property)))
    return [(cls, name, is_prop) for _, cls, name, is_prop in sorted(found, key=lambda f: f[0])]


def autodoc_lines(module, name:str)->list:
    "The autodoc directive for one public name: a class without its dataclass fields (its parameters say them) and without the methods other modules add."
    obj, full = getattr(module, name), f'{module.__name__}.{name}'
    if inspect.isclass(obj):
        excluded = added_elsewhere(obj) + ([f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else [])
        return [f'.. autoclass:: {full}'] + ([f'   :exclude-members: {", ".join(excluded)}'] if excluded else []) + ['']
    if inspect.isroutine(obj): return [f'.. autofunction:: {full}', '']
    return [f'.. autodata:: {full}'] + (['   :no-value:'] if len(repr(obj)) > 120 else []) + ['']


def api_page(module_name:str, title:str, notebook:str)->str:
    "The MyST source of a module's API page: its public names in source order, then the methods it adds to other classes."
    module = importlib.import_module(f'{LIB}.{module_name}')
    rst = [f'.. automodule:: {module.__name__}', '   :no-members:', '']
    for name in module.__all__: rst += autodoc_lines(module, name)
    patched = patched_methods(module)
    if patched: rst += ['.. rubric:: Methods this module adds to classes of other modules', '']
    for cls, name, is_prop in patched:
        rst += [f'.. auto{"property" if is_prop else "method"}:: {cls.__module__}.{cls.__qualname__}.{name}', '']
    rst_block = '\n'.join(rst)
    return (f'# `{module.__name__}`\n\nExplained in the chapter [{title}](../{notebook}).\n\n'
            f'```{{eval-rst}}\n{rst_block}\n```\n')


def toctree_cell(found:list)->dict:
    "A markdown cell for the home page: the chapters and the API pages, as the sidebar lists them."
    chapters = '\n'.join(path.stem for path, *_ in found if path.stem != 'index')
    modules = '\n'.join(f'api/{module}' for _, module, *_ in found if module)
    source = (f'```{{toctree}}\n:caption: Chapters\n:hidden:\n\n{chapters}\n```\n\n'
              f'```{{toctree}}\n:caption: API\n:hidden:\n:titlesonly:\n\n{modules}\n```\n')
    return {'cell_type': 'markdown', 'id': 'site-contents', 'metadata': {}, 'source': source}


def stage(dest:Path)->list:
    "Write the site's sources to `dest`: the reader's notebooks and the API pages. Returns the chapters."
    found = chapters()
    (dest / 'api').mkdir(parents=True, exist_ok=True)
    for path, module, title in found:
        copy_notebook(path, dest, [toctree_cell(found)] if path.stem == 'index' else ())
        if module: (dest / 'api' / f'{module}.md').write_text(api_page(module, title, path.name), encoding='utf-8')
    return found


def markdown_code(line:str)->str:
    "nbdev docstrings and argument comments write code as `name`; reStructuredText wants ``name``."
    return re.sub(r'(?<!`)`([^`]+)`(?!`)', r'``\1``', line)


def document_arguments(app, what, name, obj, options, lines):
    "autodoc hook: nbdev's argument comments (`arg:int=1, # what it is`) become the parameter list."
    words = lambda text: ''.join((text or '').split())
    if (what in ('data', 'attribute') and not inspect.isclass(obj) and words('\n'.join(lines))
        and any(words('\n'.join(lines)) in words(doc) for doc in (type(obj).__doc__, getattr(obj, '__doc__', None)))):
        lines[:] = []                                  # a constant has no docstring of its own: not its type's
    lines[:] = [markdown_code(l) for l in lines]
    if what not in ('function', 'method', 'class'): return
    from fastcore.docments import docments
    try: docs = docments(obj, full=True)
    except Exception: return                           # no source to read (a builtin or a generated method)
    fields = [f':param {arg}: {markdown_code(d["docment"])}' for arg, d in docs.items()
              if arg not in ('self', 'return') and d['docment']]
    if docs.get('return', {}).get('docment'): fields.append(f':returns: {markdown_code(docs["return"]["docment"])}')
    if fields: lines.extend([''] + fields)


def build(out:Path=ROOT / '_site', quiet:bool=True, parallel:int=1)->dict:
    "Build the site into `out` (replaced if it holds an earlier build). Returns seconds, pages, warnings."
    try:
        import furo, myst_nb
        from sphinx.application import Sphinx
        from sphinx.util.console import nocolor
        from sphinx.util.docutils import docutils_namespace, patch_docutils
    except ImportError as e: raise SystemExit(f'the docs build needs Sphinx, myst-nb and furo ({e}): pip install -e ".[docs]"') from None
    nocolor()
    out, start = Path(out), time.time()
    if out.exists() and any(out.iterdir()):
        if not (out / '.buildinfo').exists(): raise FileExistsError(f'{out} is not empty and holds no earlier site build: choose another --out')
        shutil.rmtree(out)
    warnings = io.StringIO()
    with tempfile.TemporaryDirectory(prefix='prior_nbdev_docs_') as tmp:
        tmp = Path(tmp)
        stage(tmp / 'src')
        with patch_docutils(CONF), docutils_namespace():   # built in tmp: myst-nb also writes a folder beside the output
            app = Sphinx(str(tmp / 'src'), str(CONF), str(tmp / 'html'), str(tmp / 'doctrees'), 'html',
                         status=None if quiet else sys.stdout, warning=warnings, freshenv=True, parallel=parallel)
            app.connect('autodoc-process-docstring', document_arguments)
            app.build(force_all=True)
        shutil.copytree(tmp / 'html', out, dirs_exist_ok=True)
    return dict(seconds=time.time() - start, pages=len(list(out.rglob('*.html'))), warnings=warnings.getvalue().splitlines())


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, default=ROOT / '_site', help='where the site goes (default: _site/)')
    parser.add_argument('--jobs', type=int, default=1, help='processes reading the sources')
    parser.add_argument('--strict', action='store_true', help='exit 1 when Sphinx warns')
    parser.add_argument('--verbose', action='store_true', help="print Sphinx's progress")
    args = parser.parse_args()
    result = build(args.out, quiet=not args.verbose, parallel=args.jobs)
    for line in result['warnings']: print(line, file=sys.stderr)
    print(f"{result['pages']} pages in {args.out} ({result['seconds']:.0f} s, {len(result['warnings'])} warnings): open {args.out / 'index.html'}")
    if args.strict and result['warnings']: sys.exit(1)
