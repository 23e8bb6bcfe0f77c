"""Which of the CuPy names that Chainer 7.8.1 uses does the installed CuPy still have? Runs without a GPU.

    python tools/cupy_audit.py

Chainer 7.8.1 was written against CuPy 7; the lent GPU machines have CuPy 14.
This finds every dotted name starting with ``cupy``, ``cupyx`` or
``cuda.cupy`` in Chainer's and ChainerMN's sources, resolves it against the
installed CuPy (attribute first, then as a submodule) and prints the ones that
do not resolve, with where Chainer uses them, so that a reader can judge each:
inside a ``try``, in a comment or URL, or a real break. It then imports
``chainer.backends.cuda`` the way ``train.py -g`` does and reports whether
Chainer sees CuPy and cuDNN. Importing CuPy and resolving names needs the CUDA
libraries (cuBLAS and friends), not a driver or a GPU.
"""
import argparse
import collections
import importlib
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src'))

import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before Chainer)

import chainer  # noqa: E402

from chainer_cifar.errors import Parser, run_main  # noqa: E402

NAME = re.compile(r'\b(?:cuda\.)?(cupyx?(?:\.[A-Za-z_][A-Za-z0-9_]*)+)')


def uses(package_dirs):
    """``{dotted name: [file:line, ...]}`` over the ``.py`` files under ``package_dirs``."""
    found = collections.defaultdict(list)
    for root_dir in package_dirs:
        base = os.path.dirname(root_dir)
        for root, _, files in os.walk(root_dir):
            for f in sorted(files):
                if not f.endswith('.py'):
                    continue
                path = os.path.join(root, f)
                with open(path, encoding='utf-8') as fh:
                    for i, line in enumerate(fh, 1):
                        for name in NAME.findall(line):
                            found[name].append('{}:{}'.format(os.path.relpath(path, base), i))
    return found


def resolve(name):
    """``None`` if ``name`` resolves, else the first part that does not, with the error."""
    parts = name.split('.')
    obj = importlib.import_module(parts[0])
    for i, attr in enumerate(parts[1:], 2):
        prefix = '.'.join(parts[:i])
        try:
            obj = getattr(obj, attr)
            continue
        except AttributeError:
            pass
        except Exception as e:  # a lazy submodule whose library failed to load
            return '{}: {}: {}'.format(prefix, type(e).__name__, ' '.join(str(e).split())[:120])
        try:
            obj = importlib.import_module(prefix)
        except Exception as e:
            return '{}: {}: {}'.format(prefix, type(e).__name__, ' '.join(str(e).split())[:120])
    return None


def main(argv=None):
    Parser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
           epilog=__doc__.split('\n', 1)[1]).parse_args(argv)
    try:
        import cupy
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        sys.exit('error: CuPy cannot be imported here ({}: {}); this audit needs CuPy and its CUDA libraries, '
                 'not a GPU'.format(type(e).__name__, ' '.join(str(e).split())[:200]))
    dirs = [os.path.dirname(chainer.__file__)]
    try:
        import chainermn
        dirs.append(os.path.dirname(chainermn.__file__))
    except ImportError:
        pass
    found = uses(dirs)
    print('# CuPy {} | Chainer {} | {} distinct cupy names in {}'.format(
        cupy.__version__, chainer.__version__, len(found), ', '.join(os.path.basename(d) for d in dirs)))
    missing = 0
    for name in sorted(found):
        why = resolve(name)
        if why is not None:
            missing += 1
            where = found[name]
            print('missing {}  ({}) used at {}{}'.format(
                name, why, ', '.join(where[:3]), ' and {} more'.format(len(where) - 3) if len(where) > 3 else ''))
    print('{} of {} names do not resolve'.format(missing, len(found)))
    cuda = chainer.backends.cuda
    print('chainer.backends.cuda: available={} cudnn_enabled={} ({})'.format(
        cuda.available, cuda.cudnn_enabled, getattr(cuda, '_resolution_error', None)))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
