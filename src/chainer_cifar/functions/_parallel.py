"""Run NumPy copies and element-wise loops on several cores.

NumPy's copies and ufuncs are single-threaded but release the GIL, so slicing
a large array along one axis and handing the slices to a small thread pool
uses every core for the memory-bound parts of a step (im2col, col2im,
BatchNormalization), the way OpenBLAS already does for the GEMMs.

The number of threads is ``CHAINER_CIFAR_THREADS`` (at most what is given),
else 1: since the convolution works in cache-sized chunks, its copies are
small and interleaved with OpenBLAS calls whose worker threads keep spinning
between GEMMs, so a second copy thread competed with them for the cores
(ResNet-20 training on 2 cores: 140–150 img/s with one copy thread, 89–132
with two). ``set_num_threads(n)`` changes it at run time.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy

_MIN_ELEMENTS = 1 << 16  # below this, thread hand-off costs more than it saves
_lock = threading.Lock()
_pool = None
_num_threads = None


def _default_threads():
    env = os.environ.get('CHAINER_CIFAR_THREADS')
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return 1  # see the module docstring: OpenBLAS's threads already use the cores


def num_threads():
    global _num_threads
    if _num_threads is None:
        _num_threads = _default_threads()
    return _num_threads


def set_num_threads(n):
    """Use ``n`` threads for the memory-bound loops (1 = no threading)."""
    global _num_threads, _pool
    with _lock:
        _num_threads = max(1, int(n))
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None


def _get_pool():
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=num_threads(),
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


def run_chunks(fn, n, size_hint):
    """Call ``fn(start, stop)`` over ``range(n)`` split across the threads.

    ``size_hint`` is the number of elements touched; small jobs run inline.
    """
    t = num_threads()
    if t <= 1 or n <= 1 or size_hint < _MIN_ELEMENTS:
        fn(0, n)
        return
    ranges = split(n, t)
    pool = _get_pool()
    futures = [pool.submit(fn, a, b) for a, b in ranges[1:]]
    fn(*ranges[0])
    for f in futures:
        f.result()


def copyto(dst, src):
    """``numpy.copyto(dst, src)`` split along axis 0 across the threads."""
    if dst.ndim == 0:
        numpy.copyto(dst, src)
        return

    def work(a, b):
        numpy.copyto(dst[a:b], src[a:b])
    run_chunks(work, dst.shape[0], dst.size)
