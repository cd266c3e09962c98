"`prior_nbdev_explorer` as people start it: its own `--help`, a clear refusal, and the page served from a virtual environment that is not activated."
import os, shutil, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent                     # the environment's scripts: this Python, its voila, the entry point
ENTRY = BIN / 'prior_nbdev_explorer'
# PATH as in a shell where the environment was never activated: without its bin folder
BARE = {**{k: v for k, v in os.environ.items() if k != 'VIRTUAL_ENV'}, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '',
        'PATH': os.pathsep.join(p for p in os.environ.get('PATH', '').split(os.pathsep) if p and Path(p).resolve() != BIN.resolve())}


@pytest.fixture(autouse=True)
def entry_point():
    if not ENTRY.exists(): pytest.skip(f'{ENTRY} is not installed (pip install -e .)')


def explorer(*args, timeout=120):
    return subprocess.run([str(ENTRY), *args], capture_output=True, text=True, env=BARE, timeout=timeout)


def test_help_is_its_own():
    result = explorer('--help')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('usage: prior_nbdev_explorer [-h] [--demo_dir DIR] [Voila options ...]')
    # its option, then the environment setting, then where Voila's options go, in that order
    positions = [out.index(s) for s in ('--demo_dir DIR', 'PRIOR_NBDEV_DEMO_DIR  a prior_nbdev_demo run', "Voila's options:", '--port=8866')]
    assert positions == sorted(positions), out
    assert 'usage: voila' not in out and '--Voila.template' not in out   # not Voila's own help


def test_a_folder_without_a_run_is_refused_before_voila_starts(tmp_path):
    result = explorer('--demo_dir', str(tmp_path), '--no-browser')
    assert result.returncode == 1 and f'{tmp_path} holds no demo run (no latest.pt)' in result.stderr, result.stderr
    result = subprocess.run([str(ENTRY)], capture_output=True, text=True, env={**BARE, 'PRIOR_NBDEV_DEMO_DIR': str(tmp_path)}, timeout=120)
    assert result.returncode == 1 and 'holds no demo run' in result.stderr


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_serves_the_page_from_an_environment_that_is_not_activated(tmp_path):
    pytest.importorskip('voila')
    if shutil.which('voila', path=BARE['PATH']): pytest.skip('a voila outside the environment is on PATH: this test would not tell')
    port, log = free_port(), tmp_path / 'explorer.log'
    proc = subprocess.Popen([str(ENTRY), '--no-browser', f'--port={port}', '--Voila.ip=127.0.0.1', '--ServerApp.port_retries=0'],
                            stdout=open(log, 'w'), stderr=subprocess.STDOUT, env=BARE, start_new_session=True)
    url = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None: raise AssertionError(f'prior_nbdev_explorer exited with {proc.returncode}: ' + log.read_text()[-3000:])
            if time.time() > deadline: raise TimeoutError(f'nothing answered at {url}: ' + log.read_text()[-3000:])
            try: urllib.request.urlopen(url, timeout=2).close(); break
            except urllib.error.HTTPError: break           # it answers
            except OSError: time.sleep(0.3)
        # the page: Voila runs the app notebook in a kernel of the same environment and sends the widgets it made
        page = urllib.request.urlopen(url, timeout=300).read().decode()
        assert 'application/vnd.jupyter.widget-view+json' in page, page[-3000:] + log.read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)               # the command, Voila and the kernel
        try: proc.wait(15)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    assert 'needs Voila' not in log.read_text()
