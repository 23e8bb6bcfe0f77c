"""The original chainer-cifar pickle layout, read and written safely.

``dataset/label.pkl`` is ``{'train': int32 (N,), 'test': int32 (M,)}`` and each
``dataset/image*.pkl`` is ``{'train': float32 (N, 3072), 'test': float32 (M, 3072)}``
(rows are the R, G and B planes of a 32x32 image, as in the official batches).

Files written by the original Python 2 tool load too: their ``str`` keys and
NumPy arrays decode with ``encoding='latin1'``. Files are written to a
temporary name in the same folder and renamed, so a crash never leaves a
half-written pickle behind.
"""
import os
import pickle
import tempfile

import numpy

from chainer_cifar.errors import UserError

IMAGE_SHAPE = (3, 32, 32)
IMAGE_SIZE = 3 * 32 * 32
# Protocol 2 is what Python 2's cPickle (the original reader) understands, but
# it stores array bytes as latin-1 text: ~1.5x larger and slow on the full set.
DEFAULT_PROTOCOL = pickle.HIGHEST_PROTOCOL
PY2_PROTOCOL = 2

_UMASK = os.umask(0)
os.umask(_UMASK)

FIX_HINT = 'run `python src/download.py` and then `python src/dataset.py`'


def atomic_write(path, write, mode='wb'):
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class _Py2Pickler(pickle.Pickler):
    """Pickles arrays through ``numpy.array(numpy.ndarray(shape, dtype, bytes))``.

    NumPy 2 pickles arrays via ``numpy._core.multiarray._reconstruct``, a module
    Python 2's NumPy does not have; ``numpy.array`` and ``numpy.ndarray`` exist
    in every NumPy. The outer ``numpy.array`` copies, so the loaded array is
    writable rather than a view of the pickle's read-only string.
    """

    def reducer_override(self, obj):
        if type(obj) is numpy.ndarray:
            return numpy.array, (_RawArray(obj),)
        if type(obj) is _RawArray:
            a = numpy.ascontiguousarray(obj.array)
            return numpy.ndarray, (a.shape, a.dtype.str, a.tobytes())
        return NotImplemented


class _RawArray(object):
    def __init__(self, array):
        self.array = array


def save_pickle(obj, path, protocol=DEFAULT_PROTOCOL):
    if protocol <= PY2_PROTOCOL:
        atomic_write(path, lambda f: _Py2Pickler(f, protocol).dump(obj))
    else:
        atomic_write(path, lambda f: pickle.dump(obj, f, protocol))


def load_pickle(path, what='file', hint=FIX_HINT):
    """Load a pickle written by this tool or by the original Python 2 one."""
    if not os.path.exists(path):
        raise UserError('{} {} not found; {}'.format(what, path, hint))
    try:
        with open(path, 'rb') as f:
            return pickle.load(f, encoding='latin1')
    except Exception as e:
        raise UserError('{} {} is corrupt or not a pickle ({}: {}); {}'.format(
            what, path, type(e).__name__, e, hint))


def _split(obj, path, key, dtype, ndim, width=None):
    if isinstance(obj, dict):
        obj = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if not isinstance(obj, dict) or key not in obj:
        raise UserError("{} has no '{}' entry (expected a dict with 'train' and 'test'); {}".format(
            path, key, FIX_HINT))
    a = numpy.asarray(obj[key])
    if a.ndim != ndim or (width is not None and a.shape[1] != width):
        raise UserError('{}[{!r}] has shape {}, expected {}; {}'.format(
            path, key, a.shape, '(N, {})'.format(width) if width else '(N,)', FIX_HINT))
    return a.astype(dtype, copy=False)


def load_images(path):
    """``(train, test)`` float32 arrays of shape (N, 3, 32, 32) from an image pickle."""
    obj = load_pickle(path, 'image file')
    return tuple(_split(obj, path, k, numpy.float32, 2, IMAGE_SIZE).reshape((-1,) + IMAGE_SHAPE)
                 for k in ('train', 'test'))


def load_labels(path):
    """``(train, test)`` int32 label arrays from ``label.pkl``."""
    obj = load_pickle(path, 'label file')
    return tuple(_split(obj, path, k, numpy.int32, 1) for k in ('train', 'test'))


def load_dataset(image_path, label_path):
    """``(train_x, train_y, test_x, test_y)``; shapes are checked against each other."""
    train_x, test_x = load_images(image_path)
    train_y, test_y = load_labels(label_path)
    for split, x, y in (('train', train_x, train_y), ('test', test_x, test_y)):
        if len(x) != len(y):
            raise UserError('{} has {} {} images but {} has {} labels; {}'.format(
                image_path, len(x), split, label_path, len(y), FIX_HINT))
    return train_x, train_y, test_x, test_y
