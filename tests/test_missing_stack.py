"""A front end run by a Python without its stack (Chainer, NumPy; PyTorch for the control) says so in one line."""
import glob
import os
import subprocess
import sys

import pytest

from helpers import TORCH_FRONT_ENDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The scripts a user runs (a module of tools/ that other tools import, such as torch_models.py, is not one).
FRONT_ENDS = sorted(p for p in glob.glob(os.path.join(ROOT, 'src', '*.py')) + glob.glob(os.path.join(ROOT, 'tools', '*.py'))
                    if "if __name__ == '__main__':" in open(p).read())


@pytest.fixture(scope='module')
def without(tmp_path_factory):
    """``without(name)``: an environment in which ``import name`` fails as if it were not installed."""
    def env(name):
        folder = tmp_path_factory.mktemp('no_' + name)
        os.makedirs(str(folder / name))
        (folder / name / '__init__.py').write_text(
            'raise ModuleNotFoundError("No module named {0!r}", name={0!r})\n'.format(name))
        return dict(os.environ, PYTHONPATH=str(folder))
    return env


@pytest.mark.parametrize('script', FRONT_ENDS, ids=lambda p: os.path.relpath(p, ROOT))
def test_a_missing_chainer_is_one_line_naming_the_install_script(script, without):
    result = subprocess.run([sys.executable, script, '--help'], env=without('chainer'), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ''
    (line,) = result.stderr.splitlines()
    assert line.startswith('error: chainer is not installed for ') and 'bash scripts/install.sh' in line


@pytest.mark.parametrize('script', TORCH_FRONT_ENDS)
def test_a_missing_pytorch_is_one_line_naming_the_dev_requirements(script, without):
    result = subprocess.run([sys.executable, os.path.join(ROOT, script), '--help'], env=without('torch'), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ''
    (line,) = result.stderr.splitlines()
    assert line.startswith('error: torch is not installed for ') and 'requirements-dev.txt' in line


def test_a_missing_numpy_is_one_line_too(without):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'src', 'train.py')], env=without('numpy'),
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith('error: numpy is not installed for ')


def test_a_library_import_still_raises_the_import_error(without):
    code = 'import sys; sys.path.insert(0, "src"); import chainer_cifar'
    result = subprocess.run([sys.executable, '-c', code], env=without('chainer'), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and 'ModuleNotFoundError' in result.stderr
