"""The README's quickstart, run verbatim: the block between its quickstart markers, in an empty folder."""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def quickstart_block()->str:
    text = (ROOT / 'README.md').read_text()
    block = re.search(r'<!-- quickstart -->\s*```sh\n(.*?)```\s*<!-- /quickstart -->', text, re.S)
    assert block, 'README.md has no quickstart block between <!-- quickstart --> and <!-- /quickstart -->'
    return block.group(1)


def test_the_readme_quickstart_runs_as_written(tmp_path):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PATH': f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}'}
    start = time.time()
    result = subprocess.run(['bash', '-euo', 'pipefail', '-c', quickstart_block()], cwd=tmp_path, capture_output=True, text=True,
                            env=env, timeout=900)
    seconds = time.time() - start
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f'quickstart: {seconds:.0f} s')
    assert 'dry run: checked, nothing trained' in result.stdout
    metrics = json.loads((tmp_path / 'shapes_run' / 'metrics.json').read_text())
    assert metrics['similarity_with_original_image'] > metrics['baseline_similarity'], metrics
    assert json.loads(result.stdout[result.stdout.rindex('{\n  "online_val_loss"'):]) == metrics   # `cat` printed the file
    predicted = np.concatenate([np.load(p) for p in sorted((tmp_path / 'predicted' / 'img_emb').glob('*.npy'))])
    assert predicted.shape == (2, 64) and np.isfinite(predicted).all()
