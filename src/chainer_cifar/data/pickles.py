"""The original chainer-cifar pickle layout, read and written safely.

``dataset/label.pkl`` is ``{'train': int32 (N,), 'test': int32 (M,)}`` and each
``dataset/image*.pkl`` is ``{'train': float32 (N, 3072), 'test': float32 (M, 3072)}``
(rows are the R, G and B planes of a 32x32 image, as in the official batches).

Files written by the original Python 2 tool load too: their ``str`` keys and
NumPy arrays decode with ``encoding='latin1'``. Files are written to a
temporary name in the same folder and renamed, so a crash never leaves a
half-written pickle behind.

A pickle can name any Python function and have it called while it loads, so
data files go through :class:`SafeUnpickler`: it builds dicts, lists, numbers,
strings and plain NumPy arrays and refuses every other name. Loaded images
must be finite numbers and labels whole numbers 0-9, so a run never trains on
wrong data.
"""
import hashlib
import os
import pickle
import re
import socket
import tempfile
import time

import numpy

from chainer_cifar.errors import UserError, cannot_write

IMAGE_SHAPE = (3, 32, 32)
IMAGE_SIZE = 3 * 32 * 32
N_CLASSES = 10
# Protocol 2 is what Python 2's cPickle (the original reader) understands, but
# it stores array bytes as latin-1 text: ~1.5x larger and slow on the full set.
DEFAULT_PROTOCOL = pickle.HIGHEST_PROTOCOL
PY2_PROTOCOL = 2

_UMASK = os.umask(0)
os.umask(_UMASK)

FIX_HINT = 'run `python src/download.py` and then `python src/dataset.py`'


# ---------------------------------------------------------------- atomic writes

# Temporary names carry the writer's PID and host, ``.<name>.<pid>-<host>.<random><suffix>``,
# so the next write of the same target can tell a leftover of a killed writer
# (kill -9 runs no cleanup) from a file another live process is still writing.
_HOST = hashlib.sha1(socket.gethostname().encode('utf-8', 'replace')).hexdigest()[:8]
# Temporary files written before names carried a PID: removed once a day old.
_UNOWNED_AGE = 24 * 3600


def temp_prefix(name):
    """The start of this process's temporary names for target ``name``."""
    return '.{}.{}-{}.'.format(name, os.getpid(), _HOST)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # a PID no process can have
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def stale_temps(folder, name, suffix):
    """Paths in ``folder`` of temporary ``name`` files (or folders) whose writer is dead."""
    mine = re.compile(re.escape('.' + name + '.') + r'(\d+)-([0-9a-f]{8})\.[a-z0-9_]+' + re.escape(suffix) + '$')
    unowned = re.compile(re.escape('.' + name + '.') + r'[a-z0-9_]{8}' + re.escape(suffix) + '$')
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    stale = []
    for entry in entries:
        path = os.path.join(folder, entry)
        m = mine.match(entry)
        if m:
            if m.group(2) == _HOST and not _alive(int(m.group(1))):
                stale.append(path)
        elif suffix and unowned.match(entry):
            try:
                if os.lstat(path).st_mtime < time.time() - _UNOWNED_AGE:
                    stale.append(path)
            except OSError:
                pass
    return stale


def atomic_write(path, write, mode='wb'):
    """Call ``write(fileobj)`` on a temporary file, then rename it to ``path``.

    Leftovers of earlier writers of ``path`` that were killed are removed first.
    A full disk, a read-only file system or a folder without write permission is a
    :class:`UserError` naming ``path``; the temporary file is removed in every case.
    """
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        for old in stale_temps(folder, name, '.tmp'):
            try:
                os.remove(old)
            except OSError:
                pass  # another writer removed it first
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=temp_prefix(name), suffix='.tmp')
        with os.fdopen(fd, mode) as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file normal permissions
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        error = cannot_write(path, e)
        if error is None:
            raise
        raise error from e
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass


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
            a = obj.array  # tobytes() is in C order whatever the layout (ascontiguousarray made 0-d 1-d)
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


# ---------------------------------------------------------------- safe loading

class Refused(Exception):
    """A pickle asks for something no data file holds (a function to call, an object array)."""


class _Dtype(object):
    """Stands for ``numpy.dtype(typestr)`` while a pickle loads.

    The pickle's own state (flags, fields, sizes) is never applied to a real
    dtype: NumPy would take forged flags and treat plain bytes as object
    pointers. Only the type string and the byte order are kept.
    """

    def __init__(self, typestr, align=False, copy=False):
        self.typestr, self.byteorder = typestr, '|'

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) < 8 or any(v is not None for v in state[2:5]):
            raise Refused('a structured or subarray NumPy dtype')
        self.byteorder = state[1]

    def build(self):
        return _dtype(self)


def _dtype(spec, byteorder='|'):
    """A plain numeric or string dtype from a type string such as ``'<f4'``, ``'u1'``, ``'U3'``."""
    if isinstance(spec, _Dtype):
        spec, byteorder = spec.typestr, spec.byteorder
    spec, byteorder = [v.decode('latin1') if isinstance(v, bytes) else v for v in (spec, byteorder)]
    if not isinstance(spec, str) or not re.match(r'[<>|=]?[A-Za-z]\d*$', spec) \
            or byteorder not in ('<', '>', '|', '='):
        raise ValueError('bad dtype {!r}'.format(spec))
    dt = numpy.dtype(spec)
    if dt.kind not in 'biufcUS':  # no objects, structures, pointers or dates
        raise Refused('a NumPy array of dtype {}'.format(dt))
    return dt if byteorder == '|' else dt.newbyteorder(byteorder)


def _from_bytes(data, dtype, shape, fortran=False):
    """A writable array of ``shape`` over exactly ``data``; a copy unless ``data`` is a bytearray."""
    if isinstance(data, str):  # Python 2's str, decoded as latin-1 on loading
        data = data.encode('latin1')
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError('array data is {}, not bytes'.format(type(data).__name__))
    shape = tuple(int(n) for n in shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    if any(n < 0 for n in shape) or len(data) != int(numpy.prod(shape, dtype=object)) * dtype.itemsize:
        raise ValueError('{} bytes do not make an array of shape {} and dtype {}'.format(len(data), shape, dtype))
    a = numpy.frombuffer(data, dtype).reshape(shape, order='F' if fortran else 'C')
    return a if a.flags.writeable else a.copy(order='K')


class _Array(object):
    """Stands for ``numpy.core.multiarray._reconstruct(ndarray, ...)`` until its state arrives."""

    array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError('bad array state')
        shape, dtype, fortran, data = state[-4:]
        if not isinstance(dtype, _Dtype):
            raise ValueError('bad array dtype')
        self.array = _from_bytes(data, dtype.build(), shape, bool(fortran))


def _ndarray(shape, dtype, buffer):
    """``numpy.ndarray(shape, dtype, buffer)``, as :class:`_Py2Pickler` writes arrays."""
    return _from_bytes(buffer, _dtype(dtype), shape)


def _reconstruct(cls, shape, typecode):
    if cls is not _SAFE_NAMES[('numpy', 'ndarray')]:
        raise Refused('an array of a class other than numpy.ndarray')
    return _Array()


def _array(a):
    """``numpy.array(a)``, the outer copy of :class:`_Py2Pickler`; ``a`` is already a writable array."""
    if not isinstance(a, numpy.ndarray):
        raise ValueError('numpy.array of {}'.format(type(a).__name__))
    return a


def _frombuffer(buf, dtype, shape, order):
    """``numpy.core.numeric._frombuffer``, how protocol 5 stores an array."""
    return _from_bytes(buf, _dtype(dtype), shape, order == 'F')


def _bytes(*args):
    """``bytes()``: how Python 3 writes an empty ``bytes`` in protocol 2."""
    if args:
        raise Refused('bytes{!r}'.format(args))
    return b''


def _encode(text, encoding='utf-8'):
    """``_codecs.encode(str, 'latin1')``: how Python 3 writes ``bytes`` in protocol 2."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise Refused('_codecs.encode with encoding {!r}'.format(encoding))
    return text.encode('latin1')


class _Global(object):
    """A function a pickle may call; a pickle cannot set its attributes (BUILD) to change it."""

    __slots__ = ('function',)

    def __init__(self, function):
        self.function = function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise Refused('a state for {}'.format(self.function.__name__))


# Every name the official batches, the original tool's pickles and this tool's
# pickles (protocols 2 and 5, NumPy 1 and 2) hold, and what each one becomes.
_SAFE_NAMES = {
    ('numpy', 'ndarray'): _Global(_ndarray),
    ('numpy', 'array'): _Global(_array),
    ('numpy', 'dtype'): _Global(_Dtype),
    ('numpy.core.multiarray', '_reconstruct'): _Global(_reconstruct),
    ('numpy.core.numeric', '_frombuffer'): _Global(_frombuffer),
    ('_codecs', 'encode'): _Global(_encode),
    ('__builtin__', 'bytes'): _Global(_bytes),
    ('builtins', 'bytes'): _Global(_bytes),
}
# NumPy 2 moved numpy.core to numpy._core.
_SAFE_NAMES.update({(m.replace('numpy.core', 'numpy._core'), n): f for (m, n), f in list(_SAFE_NAMES.items())
                    if m.startswith('numpy.core')})


class SafeUnpickler(pickle.Unpickler):
    """Loads dicts, lists, tuples, numbers, strings, bytes and plain NumPy arrays, and nothing else.

    Any other name in the pickle (``os.system``, a class) raises :class:`Refused`
    before it is looked up, so loading a crafted file runs nothing of it.
    """

    def find_class(self, module, name):
        try:
            return _SAFE_NAMES[(module, name)]
        except (KeyError, TypeError):
            raise Refused('{}.{}'.format(module, name))


def _finish(obj):
    """The loaded object with the stand-ins of arrays replaced by the arrays."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise ValueError('an array without its data')
        return obj.array
    if isinstance(obj, _Dtype):
        return obj.build()
    if isinstance(obj, dict):
        return {_finish(k): _finish(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_finish(v) for v in obj)
    return obj


def safe_load(f, encoding='latin1'):
    """Unpickle a data file from ``f`` with :class:`SafeUnpickler`; raises :class:`Refused`."""
    return _finish(SafeUnpickler(f, encoding=encoding).load())


def refused_message(path, e):
    return ('{} holds {}, which a data file never does; refusing to load it (a pickle can run code '
            'while it loads: use files made by src/download.py and src/dataset.py)'.format(path, e))


def load_pickle(path, what='file', hint=FIX_HINT):
    """Load a data pickle written by this tool, the original Python 2 one or the official archive."""
    if not os.path.exists(path):
        raise UserError('{} {} not found; {}'.format(what, path, hint))
    try:
        with open(path, 'rb') as f:
            return safe_load(f)
    except Refused as e:
        raise UserError(refused_message(path, e))
    except Exception as e:
        raise UserError('{} {} is corrupt or not a pickle ({}: {}); {}'.format(
            what, path, type(e).__name__, e, hint))


# ---------------------------------------------------------------- checked splits

def _split(obj, path, key, ndim, width=None):
    if isinstance(obj, dict):
        obj = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if not isinstance(obj, dict) or key not in obj:
        raise UserError("{} has no '{}' entry (expected a dict with 'train' and 'test'); {}".format(
            path, key, FIX_HINT))
    try:
        a = numpy.asarray(obj[key])
    except ValueError as e:  # ragged lists
        raise UserError('{}[{!r}] is not an array ({}); {}'.format(path, key, e, FIX_HINT))
    if a.ndim != ndim or (width is not None and a.shape[1] != width):
        raise UserError('{}[{!r}] has shape {}, expected {}; {}'.format(
            path, key, a.shape, '(N, {})'.format(width) if width else '(N,)', FIX_HINT))
    return a


def _count_nonfinite(a, chunk=1 << 22):
    # In chunks: a mask of the full set at once would be another 150 MB.
    flat = a.reshape(-1)
    return sum(len(flat[i:i + chunk]) - int(numpy.count_nonzero(numpy.isfinite(flat[i:i + chunk])))
               for i in range(0, len(flat), chunk))


def _images(obj, path, key):
    a = _split(obj, path, key, 2, IMAGE_SIZE)
    if a.dtype.kind not in 'iuf':  # strings would be parsed as numbers by astype
        raise UserError('{}[{!r}] holds {} values, not pixel numbers; {}'.format(path, key, a.dtype, FIX_HINT))
    with numpy.errstate(over='ignore'):  # overflow is counted below, not warned about
        a = a.astype(numpy.float32, copy=False)
    bad = _count_nonfinite(a)  # after the cast: float64 beyond float32's range is inf now
    if bad:
        raise UserError('{}[{!r}] has {} non-finite values (NaN or infinity) of {}; {}'.format(
            path, key, bad, a.size, FIX_HINT))
    return a.reshape((-1,) + IMAGE_SHAPE)


def _labels(obj, path, key):
    a = _split(obj, path, key, 1)
    if a.dtype.kind == 'f':
        whole = numpy.isfinite(a) & (a == numpy.round(a))
        if not whole.all():
            raise UserError('{}[{!r}] has {} labels that are not whole numbers (e.g. {}); labels are the '
                            'class numbers 0-{}; {}'.format(path, key, int((~whole).sum()), a[~whole][0],
                                                            N_CLASSES - 1, FIX_HINT))
    elif a.dtype.kind not in 'iu':
        raise UserError('{}[{!r}] holds {} values, not class numbers 0-{}; {}'.format(
            path, key, a.dtype, N_CLASSES - 1, FIX_HINT))
    outside = (a < 0) | (a >= N_CLASSES)
    if outside.any():
        raise UserError('{}[{!r}] has {} labels outside 0-{} (e.g. {} at index {}); CIFAR-10 has {} classes; '
                        '{}'.format(path, key, int(outside.sum()), N_CLASSES - 1, a[outside][0],
                                    int(numpy.argmax(outside)), N_CLASSES, FIX_HINT))
    return a.astype(numpy.int32, copy=False)


def load_images(path):
    """``(train, test)`` finite float32 arrays of shape (N, 3, 32, 32) from an image pickle."""
    obj = load_pickle(path, 'image file')
    return tuple(_images(obj, path, k) for k in ('train', 'test'))


def load_labels(path):
    """``(train, test)`` int32 label arrays, every label 0-9, from ``label.pkl``."""
    obj = load_pickle(path, 'label file')
    return tuple(_labels(obj, path, k) for k in ('train', 'test'))


def load_dataset(image_path, label_path):
    """``(train_x, train_y, test_x, test_y)``; shapes are checked against each other."""
    train_x, test_x = load_images(image_path)
    train_y, test_y = load_labels(label_path)
    for split, x, y in (('train', train_x, train_y), ('test', test_x, test_y)):
        if len(x) != len(y):
            raise UserError('{} has {} {} images but {} has {} labels; {}'.format(
                image_path, len(x), split, label_path, len(y), FIX_HINT))
    return train_x, train_y, test_x, test_y
