"""chainer-cifar: the classic CIFAR-10 experiments, reproduced with Chainer.

Importing this package applies :mod:`chainer_cifar.compat` first, so
``import chainer`` works afterwards on Python 3.11-3.13, NumPy 1.26 or 2.x.
"""
import os
import sys

# The checkout this package runs from (src/chainer_cifar/ -> the repository root).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def missing_dependency(error, fix='run `bash scripts/install.sh` once, then use .venv/bin/python (or `source '
                                   '.venv/bin/activate`)'):
    """A front end (``src/*.py``, ``tools/*.py``) run by a Python without a dependency: one line, exit 2.

    A library import (``__main__`` outside the checkout) returns, and the caller re-raises.
    """
    main = os.path.abspath(getattr(sys.modules.get('__main__'), '__file__', None) or os.devnull)
    if main.startswith(_CHECKOUT + os.sep):
        print('error: {} is not installed for {} ({}); {}'.format(
            error.name or 'a dependency', sys.executable, error, fix), file=sys.stderr)
        sys.exit(2)


try:
    from chainer_cifar import compat  # noqa: F401  (must run before chainer is imported)
except ModuleNotFoundError as e:  # NumPy or Chainer missing; a library import still gets the error
    missing_dependency(e)
    raise

__version__ = '0.1.0'
