"""Run the fast kernels' independent pieces of work on several cores.

NumPy's copies, ufuncs and BLAS calls release the GIL, so a small thread
pool can run independent pieces of a layer at the same time: the
convolution's cache-sized batch chunks (im2col, GEMM and the write back to
NCHW, each chunk on one core), and the memory-bound passes of pooling and
BatchNormalization split along the batch.

With more than one thread this package owns the cores: OpenBLAS is set to one
thread (for NumPy's whole process), because its own worker threads would
fight ours for the same cores, and keep spinning between GEMMs after they
finish; the convolution's chunks, one GEMM each, take their place.
``set_num_threads(1)`` gives OpenBLAS its original count back.

The number of threads is ``CHAINER_CIFAR_THREADS`` if set, else the number of
cores this process may use (``os.sched_getaffinity``), or 1 when NumPy's BLAS
cannot be set to one thread (not OpenBLAS). ``set_num_threads(n)`` changes it
at run time. Results never depend on it: the work is cut into the same pieces
and summed in the same order whatever the number of threads. (One caveat:
with one thread OpenBLAS gets its own threads back, and its threaded GEMM
may round the last bit of some outputs differently from a single-threaded
one; with OpenBLAS held at one thread, results are bitwise equal.)
"""
import ctypes
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

_MIN_ELEMENTS = 1 << 16  # below this, thread hand-off costs more than it saves
_lock = threading.Lock()
_local = threading.local()  # .inside: this thread is already running a share of parallel work
_pool = None
_num_threads = None
_blas = None  # (setter, getter) of NumPy's OpenBLAS, or () when there is none
_blas_saved = None  # OpenBLAS's thread count before this module set it to 1


def _find_openblas():
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS NumPy loaded, else ``()``."""
    global _blas
    if _blas is not None:
        return _blas
    _blas = ()
    try:
        with open('/proc/self/maps') as f:
            paths = sorted({line.split()[-1] for line in f
                            if 'openblas' in line.lower() and '/' in line})
    except OSError:
        return _blas
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ('scipy_openblas', 'openblas'):
            for suffix in ('64_', ''):
                setter = getattr(lib, prefix + '_set_num_threads' + suffix, None)
                getter = getattr(lib, prefix + '_get_num_threads' + suffix, None)
                if setter is not None and getter is not None:
                    setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                    _blas = (setter, getter)
                    return _blas
    return _blas


def blas_threads():
    """OpenBLAS's current thread count, or ``None`` when NumPy does not use OpenBLAS."""
    blas = _find_openblas()
    return int(blas[1]()) if blas else None


def set_blas_threads(n):
    """Set OpenBLAS's thread count (no-op without OpenBLAS); returns the count in effect."""
    blas = _find_openblas()
    if not blas:
        return None
    blas[0](max(1, int(n)))
    return int(blas[1]())


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _default_threads():
    env = os.environ.get('CHAINER_CIFAR_THREADS')
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    if not _find_openblas():
        return 1  # a BLAS we cannot make single-threaded would compete with our threads
    return _available_cores()


def num_threads():
    """Threads the fast kernels use (1: everything runs in the calling thread)."""
    if _num_threads is None:
        set_num_threads(_default_threads())
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads for the fast kernels (1 = no threading; OpenBLAS gets its count back)."""
    global _num_threads, _pool, _blas_saved
    with _lock:
        _num_threads = max(1, int(n))
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
        if _num_threads > 1:
            if _blas_saved is None:
                _blas_saved = blas_threads()
            set_blas_threads(1)
        elif _blas_saved is not None:
            set_blas_threads(_blas_saved)
            _blas_saved = None


def _get_pool():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _num_threads - 1),
                                       thread_name_prefix='chainer_cifar')
        return _pool


def split(n, parts):
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``."""
    parts = max(1, min(parts, n))
    q, r = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + q + (1 if i < r else 0)
        out.append((start, stop))
        start = stop
    return out


def _inside():
    return getattr(_local, 'inside', False)


def _as_share(fn):
    """``fn`` marked as a share of parallel work: nested parallel calls in it run inline."""
    def share(*args):
        was = _inside()
        _local.inside = True
        try:
            return fn(*args)
        finally:
            _local.inside = was
    return share


def _threads_for(n, size_hint):
    t = 1 if _inside() else num_threads()
    if t <= 1 or n <= 1 or size_hint < _MIN_ELEMENTS:
        return 1
    return min(t, n)


def run_chunks(fn, n, size_hint):
    """Call ``fn(start, stop)`` over ``range(n)`` split across the threads.

    ``size_hint`` is the number of elements touched; small jobs, and jobs
    started from inside another parallel job, run inline.
    """
    t = _threads_for(n, size_hint)
    if t <= 1:
        fn(0, n)
        return
    _run_shares(fn, split(n, t))


def _run_shares(fn, args):
    """``fn(*a)`` for every ``a`` in ``args``: the first in this thread, the others on the pool."""
    share = _as_share(fn)
    pool = _get_pool()
    futures = [pool.submit(share, *a) for a in args[1:]]
    share(*args[0])
    for f in futures:
        f.result()


def map_tasks(fn, items, size_hint=None):
    """``[fn(item) for item in items]``, each thread taking the next item when it is free.

    Items are handed out in order as threads finish their previous one, so a
    thread slowed by the other's memory traffic or the machine does less of
    the work instead of keeping the other waiting. Each item runs whole on
    one thread, so per-item results (and any sums the caller makes of them,
    in item order) are the same for every number of threads.
    """
    items = list(items)
    n = len(items)
    size = (1 << 62) if size_hint is None else size_hint
    t = _threads_for(n, size)
    if t <= 1:
        return [fn(item) for item in items]
    out = [None] * n
    order = itertools.count()  # next() on it is atomic under the GIL

    def work():
        for i in order:
            if i >= n:
                return
            out[i] = fn(items[i])
    _run_shares(work, [()] * t)  # every thread runs the same loop
    return out


def sum_in_order(arrays, dtype=None):
    """The sum of ``arrays`` added one after the other (into the first, or a new ``dtype`` array).

    Per-piece results of :func:`map_tasks` summed this way do not depend on
    the number of threads.
    """
    total = None
    for a in arrays:
        if total is None:
            total = a.copy() if dtype is None else a.astype(dtype)
        else:
            total += a
    return total


def copyto(dst, src):
    """``numpy.copyto(dst, src)`` split along axis 0 across the threads."""
    if dst.ndim == 0:
        numpy.copyto(dst, src)
        return

    def work(a, b):
        numpy.copyto(dst[a:b], src[a:b])
    run_chunks(work, dst.shape[0], dst.size)
