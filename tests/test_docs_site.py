"""The documentation site as a reader meets it: `python tools/build_docs.py` builds it (no warnings allowed), a local
HTTP server serves it, and headless Chromium (Playwright with Debian's chromium, as in test_explorer_browser.py) opens
every chapter with its figures, searches it, and reads the sampling module's API page."""
import functools, http.server, importlib.util, inspect, json, re, shutil, subprocess, sys, threading, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']
ALLOWED_OUTSIDE = ('https://cdn.jsdelivr.net/npm/mathjax@',)   # MathJax typesets formulas where a network is at hand


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address): pass   # a browser closing its connections early is no failure


def build_docs_module():
    spec = importlib.util.spec_from_file_location('build_docs', ROOT / 'tools' / 'build_docs.py')
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site built by the README's command into a temporary folder, served on 127.0.0.1; yields (folder, URL)."
    for package in ('sphinx', 'myst_nb', 'furo'): pytest.importorskip(package, reason='pip install -e ".[docs]"')
    out = tmp_path_factory.mktemp('site') / 'html'
    start = time.time()
    done = subprocess.run([sys.executable, 'tools/build_docs.py', '--out', str(out), '--strict'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f'the docs build failed or warned:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}'
    print(f'{done.stdout.strip()} (test saw {time.time() - start:.0f} s)')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    handler.log_message = lambda *args: None
    server = QuietServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try: yield out, f'http://127.0.0.1:{server.server_port}/'
    finally: server.shutdown(); server.server_close()


@pytest.fixture(scope='module')
def page(site):
    "A Chromium page that reaches only the local server (anything else is refused and recorded in page.outside)."
    if CHROMIUM is None: pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium)")
    playwright = pytest.importorskip('playwright.sync_api')
    base = site[1]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1300, 'height': 1000})
            page.outside = []
            page.route('**/*', lambda route: route.continue_() if route.request.url.startswith(base)
                       else (page.outside.append(route.request.url), route.abort()))
            yield page
        finally: browser.close()


def stored_images(path:Path)->int:
    "Figures a chapter page should show: the PNG outputs of the cells a reader sees (not `#| hide`), and the images its text shows."
    cells = json.loads(path.read_text(encoding='utf-8'))['cells']
    hidden = lambda c: any(re.match(r'#\|\s*(hide|default_exp)\b', l) for l in ''.join(c['source']).splitlines())
    outputs = sum('image/png' in o.get('data', {}) for c in cells if c['cell_type'] == 'code' and not hidden(c) for o in c.get('outputs', []))
    return outputs + sum(len(re.findall(r'!\[[^\]]*\]\(', ''.join(c['source']))) for c in cells if c['cell_type'] == 'markdown')


def test_every_chapter_page_shows_its_figures(site, page):
    out, base = site
    build_docs = build_docs_module()
    chapters = build_docs.chapters()
    assert len(chapters) == len(list((ROOT / 'nbs').glob('*.ipynb')))
    for path, module, title in chapters:
        name = 'index.html' if path.stem == 'index' else f'{path.stem}.html'
        assert (out / name).exists(), f'{path.name} has no page {name}'
        response = page.goto(base + name, wait_until='load')
        assert response.ok, f'{name}: HTTP {response.status}'
        shown = page.locator('h1').first.inner_text().strip().rstrip('#¶').strip().replace('\u2019', "'")   # Sphinx's typographic apostrophe
        assert shown == title.replace('`', ''), name
        images = page.evaluate('[...document.querySelectorAll("article img")].map(i => [i.getAttribute("src"), i.complete, i.naturalWidth])')
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert not broken, f'{name}: images that did not load: {broken}'
        expected = stored_images(path)
        assert len(images) == expected, f'{name} shows {len(images)} images, its notebook stores {expected}'
        if module: assert page.locator(f'a[href="api/{module}.html"]').count() > 0, f'{name}: the sidebar lacks the API page of {module}'
    assert sum(stored_images(p) for p, *_ in chapters) >= len(chapters)   # every chapter has a figure
    assert all(url.startswith(ALLOWED_OUTSIDE) for url in page.outside), f'the pages fetch from outside: {sorted(set(page.outside))}'


def test_search_finds_the_prior(site, page):
    page.goto(site[1] + 'search.html?q=DiffusionPrior', wait_until='load')
    page.locator('#search-results .search-summary').filter(has_text='found').wait_for(timeout=30_000)   # the search has finished
    links = page.locator('#search-results li a').evaluate_all('links => links.map(a => a.getAttribute("href"))')
    assert any(link.endswith('api/prior.html#prior_nbdev.prior.DiffusionPrior') for link in links), links
    assert any(link.startswith('04_prior.html') for link in links), f'the chapter on the prior is not among the results: {links}'


def test_sampling_api_page_lists_sample_arguments(site, page):
    from prior_nbdev import DiffusionPrior
    from fastcore.docments import docments
    page.goto(site[1] + 'api/sampling.html', wait_until='load')
    entry = page.locator('dl.py.method').filter(has=page.locator('[id="prior_nbdev.prior.DiffusionPrior.sample"]'))
    signature = entry.locator('dt').first.inner_text()
    arguments = [name for name in inspect.signature(DiffusionPrior.sample).parameters if name != 'self']
    missing = [name for name in arguments if name not in signature]
    assert not missing, f'the signature shown lacks {missing}: {signature}'
    described = entry.locator('dd').first.inner_text()
    comments = {name: d for name, d in docments(DiffusionPrior.sample).items() if d and name not in ('self', 'return')}
    assert comments, 'sample documents its arguments with comments'
    for name, comment in comments.items():
        assert f'{name} – {comment.replace("`", "")}' in described.replace('\n', ' ').replace('’', "'"), f'{name!r} is not described as {comment!r}'
    assert page.locator('[id="prior_nbdev.sampling.most_text_similar"]').count() == 1
