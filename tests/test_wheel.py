"""The package as a user installs it: a wheel built from a copy of the sources (so nothing stale from an earlier build
can slip in), installed without its dependencies into a fresh virtual environment that sees this environment's
packages (torch, open_clip, ...) but not the source tree, then used from another folder: import, the commands' help,
the packaged CLIP, prior and decoder drawing a prompt, the named configs and the explorer's app notebook."""
import configparser, importlib.util, json, os, shutil, site, subprocess, sys, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ['setup.py', 'settings.ini', 'MANIFEST.in', 'README.md', 'LICENSE', 'prior_nbdev']   # what setup.py reads and packs
SETTINGS = configparser.ConfigParser(delimiters=['=']); SETTINGS.read(ROOT / 'settings.ini', encoding='utf-8')
CFG = SETTINGS['DEFAULT']
ASSETS = {'explorer_app.ipynb', 'shapes_clip.safetensors', 'shapes_prior.safetensors', 'shapes_decoder.safetensors'}

# run by the new environment's interpreter, from a folder outside the repository
CHECK = r'''
import json, sys, importlib.metadata as md
from pathlib import Path
import torch
import prior_nbdev
site_packages = Path(sys.argv[1]).resolve()
assert Path(prior_nbdev.__file__).resolve().is_relative_to(site_packages), f'prior_nbdev imported from {prior_nbdev.__file__}'
from prior_nbdev.lab.shapes import shapes_clip, shapes_prior, COLORS
from prior_nbdev.lab.decoder import shapes_decoder
from prior_nbdev.train import named_configs, load_config
from prior_nbdev.lab.explorer import APP_NOTEBOOK
clip, prior, decoder = shapes_clip(), shapes_prior(), shapes_decoder()
text_embed, _ = clip.embed_text(clip.tokenize(['a large red circle']))
samples = prior.sample(text_embed=text_embed, timesteps=16, num_images_per_prompt=8, generator=torch.Generator().manual_seed(0))
classes = decoder(samples).argmax(1).flatten(1)                       # pixel classes: 0 background, then COLORS in order
counts = torch.stack([torch.bincount(c, minlength=len(COLORS) + 1)[1:] for c in classes])
red = sum(int(row.argmax()) == list(COLORS).index('red') for row in counts)
configs = {name: type(load_config(name)).__name__ for name in named_configs()}
print(json.dumps(dict(version=prior_nbdev.__version__, dist_version=md.version('prior_nbdev'), file=prior_nbdev.__file__,
    red_samples=red, configs=configs, config_files=sorted(str(p) for p in named_configs().values()),
    app_notebook=str(APP_NOTEBOOK), app_cells=len(json.loads(Path(APP_NOTEBOOK).read_text())['cells']),
    clips=sorted(e.name for e in md.entry_points(group='prior_nbdev.clips')),
    scripts=sorted(e.name for e in md.entry_points(group='console_scripts') if e.value.startswith('prior_nbdev')))))
'''


def copy_sources(dest:Path)->Path:
    "What the build reads, without caches: `pip wheel` on the repository itself would reuse its build/ folder."
    dest.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir(): shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else: shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    "The wheel pip builds from a copy of the sources (with this environment's setuptools when it has one)."
    tmp = tmp_path_factory.mktemp('wheel')
    src = copy_sources(tmp / 'src')
    no_isolation = ['--no-build-isolation'] if importlib.util.find_spec('setuptools') else []
    done = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', *no_isolation, '-w', str(tmp / 'dist'), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list((tmp / 'dist').glob('*.whl'))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope='module')
def venv(wheel, tmp_path_factory):
    "A fresh environment holding only the wheel, which also sees this environment's packages (not its editable prior_nbdev)."
    env = tmp_path_factory.mktemp('venv') / 'env'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(env)], check=True, timeout=120)
    python = env / 'bin' / 'python'
    env_site = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                                   capture_output=True, text=True, check=True).stdout.strip())
    # plain paths: this environment's site-packages come after the wheel's, and their .pth hooks (the editable install) stay off
    (env_site / 'outer_environment.pth').write_text('\n'.join(site.getsitepackages()) + '\n')
    done = subprocess.run([sys.executable, '-m', 'pip', '--python', str(python), 'install', '--no-deps', '--no-index', str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return env, env_site


def run_outside(env:Path, *args, cwd:Path):
    "Run a command of the new environment from `cwd`, with no path pointing into the repository."
    environ = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV', 'PYTHONHOME')}
    environ.update(PATH=f"{env / 'bin'}{os.pathsep}{environ.get('PATH', '')}", OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    return subprocess.run([str(a) for a in args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"prior_nbdev-{CFG['version']}.dist-info/"
    assert wheel.name == f"prior_nbdev-{CFG['version']}-py3-none-any.whl"
    assert all(n.startswith(('prior_nbdev/', dist_info)) for n in names), [n for n in names if not n.startswith(('prior_nbdev/', dist_info))]
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
    modules = {f'prior_nbdev/{p.name}' for p in (ROOT / 'prior_nbdev').glob('*.py')}
    assert modules <= set(names), f'modules missing from the wheel: {sorted(modules - set(names))}'
    assert {f'prior_nbdev/lab/assets/{a}' for a in ASSETS} <= set(names), sorted(n for n in names if 'assets' in n)
    configs = {f'prior_nbdev/configs/{p.name}' for p in (ROOT / 'prior_nbdev' / 'configs').glob('*.json')}
    assert configs and configs <= set(names), f'named configs missing from the wheel: {sorted(configs - set(names))}'
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(dist_info + 'METADATA').decode()
        entry_points = z.read(dist_info + 'entry_points.txt').decode()
        for a in ASSETS: assert z.read(f'prior_nbdev/lab/assets/{a}') == (ROOT / 'prior_nbdev' / 'lab' / 'assets' / a).read_bytes(), a
    assert f"Version: {CFG['version']}" in metadata and 'License: Apache Software License 2.0' in metadata
    for script in CFG['console_scripts'].split(): assert script.replace('=', ' = ') in entry_points, script
    size = wheel.stat().st_size
    assert size < 20e6, f'the wheel is {size / 1e6:.1f} MB'
    print(f'{wheel.name}: {size / 1e6:.2f} MB, {len(names)} files')


def test_installed_wheel_works_outside_the_repository(venv, tmp_path):
    env, env_site = venv
    done = run_outside(env, env / 'bin' / 'python', '-c', CHECK, env_site, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found['version'] == found['dist_version'] == CFG['version'], found
    assert Path(found['file']).resolve().is_relative_to(env_site.resolve()), found['file']
    assert found['red_samples'] >= 6, f"the packaged CLIP, prior and decoder drew 'a large red circle' red {found['red_samples']} times in 8"
    assert set(found['configs']) == {p.stem for p in (ROOT / 'prior_nbdev' / 'configs').glob('*.json')}, found['configs']
    assert all(Path(f).resolve().is_relative_to(env_site.resolve()) for f in found['config_files']), found['config_files']
    assert Path(found['app_notebook']).resolve().is_relative_to(env_site.resolve()) and found['app_cells'] > 0, found
    assert 'prior_nbdev_shapes' in found['clips'], found['clips']
    assert set(found['scripts']) == {s.split('=')[0] for s in CFG['console_scripts'].split()}, found['scripts']


@pytest.mark.parametrize('command', [s.split('=')[0] for s in CFG['console_scripts'].split()])
def test_installed_commands_answer_help(venv, tmp_path, command):
    env, _ = venv
    done = run_outside(env, env / 'bin' / command, '--help', cwd=tmp_path)
    assert done.returncode == 0 and 'usage' in done.stdout.lower(), done.stdout[-2000:] + done.stderr[-2000:]
