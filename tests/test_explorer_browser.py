"The explorer as people meet it: Voila serving the app notebook with a real kernel, driven in headless Chromium by Playwright."
import os, shutil, signal, socket, subprocess, time, urllib.error, urllib.request
from pathlib import Path
import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
VOILA = shutil.which('voila')
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def voila_page(tmp_path):
    "Voila serving prior_nbdev's explorer app on 127.0.0.1 (stopped afterwards, kernel included); yields its URL."
    if VOILA is None: pytest.skip('voila is not installed: pip install prior_nbdev[explore]')
    from prior_nbdev.lab.explorer import APP_NOTEBOOK
    port = free_port()
    proc = subprocess.Popen([VOILA, str(APP_NOTEBOOK), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1',
                             '--ServerApp.port_retries=0', f'--Voila.root_dir={APP_NOTEBOOK.parent}'],
                            stdout=open(tmp_path / 'voila.log', 'w'), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': ''})
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None: raise RuntimeError((tmp_path / 'voila.log').read_text()[-3000:])
            try: urllib.request.urlopen(url, timeout=2); break
            except urllib.error.HTTPError: break            # it answers
            except OSError: time.sleep(0.3)
        else: raise TimeoutError(f'voila did not answer at {url}: ' + (tmp_path / 'voila.log').read_text()[-2000:])
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # the server and the kernel it started
        try: proc.wait(15)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()


def test_explorer_in_a_browser(voila_page, tmp_path):
    if CHROMIUM is None: pytest.skip("no Chromium: install Debian's chromium package (apt-get install chromium)")
    playwright = pytest.importorskip('playwright.sync_api')
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1150, 'height': 900})
            start = time.time()
            page.goto(voila_page, timeout=120_000)
            page.get_by_role('button', name='sample').wait_for(timeout=120_000)   # the kernel ran the app and the widgets rendered
            ready = time.time() - start
            page.screenshot(path=str(tmp_path / 'before.png'), full_page=True)
            prompt = page.locator('.widget-text input').first
            prompt.fill('a large red circle')
            handle = page.locator('.widget-hslider').nth(1).locator('.noUi-handle')   # candidates: 2 -> 4
            handle.focus(); handle.press('ArrowRight'); handle.press('ArrowRight')
            page.locator('.widget-hslider').nth(1).locator('.widget-readout').filter(has_text='4').wait_for(timeout=10_000)
            click = time.time()
            page.get_by_role('button', name='sample').click()
            answer = page.get_by_text("'a large red circle': the sampled embedding's similarity to the prompt is")
            answer.wait_for(timeout=60_000)
            first_response = time.time() - click
            output = page.locator('.widget-output').first
            output.locator('img').first.wait_for(timeout=30_000)            # the similarity figure with the nearest images
            text = answer.inner_text()
            similarity = float(text.split('is ')[1].split(',')[0])
            assert 0.2 < similarity <= 1, text
            page.screenshot(path=str(tmp_path / 'after.png'), full_page=True)
            # a word the world does not know: a message in the page, and the page keeps working
            prompt.fill('a pink elephant')
            page.get_by_role('button', name='sample').click()
            page.get_by_text("unknown word(s) ['pink', 'elephant']").wait_for(timeout=60_000)
            prompt.fill('a small blue square')
            page.get_by_role('button', name='sample').click()
            page.get_by_text("'a small blue square': the sampled embedding's similarity").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / 'after_unknown.png'), full_page=True)
            print(f'page ready in {ready:.1f} s; first sample answered {first_response:.1f} s after the click')
        finally:
            browser.close()
    for name in ('before.png', 'after.png', 'after_unknown.png'): assert (tmp_path / name).stat().st_size > 10_000
    if os.environ.get('PRIOR_NBDEV_SCREENSHOTS'):
        for name in ('before.png', 'after.png'): shutil.copy(tmp_path / name, Path(os.environ['PRIOR_NBDEV_SCREENSHOTS']) / name)
