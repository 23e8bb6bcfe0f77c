"""Keep freed NumPy buffers in the process instead of giving them back to the kernel.

A training step allocates and frees the same large arrays every iteration
(layer outputs, im2col chunks, BatchNormalization's centred input: 1-35 MB
each). glibc serves buffers above its mmap threshold with fresh ``mmap``
pages and unmaps them on free, and trims the heap's free top back to the
kernel: every step then page-faults its whole working set in again, which
costs most on a virtual machine (``tools/bench.py`` with
``CHAINER_CIFAR_KEEP_MEMORY=0`` shows the difference).

:func:`keep_freed_memory` raises both thresholds with ``mallopt``, so freed
buffers are reused by the next step as PyTorch's caching allocator reuses
its blocks. The process then keeps its peak footprint until it exits, which
is a decision for the program, not for a library it imports: the front ends
that train or measure call :func:`keep_memory` (exported as
``chainer_cifar.functions.keep_memory``), which does it on glibc only, unless
``CHAINER_CIFAR_KEEP_MEMORY=0``. Importing the package changes nothing.
"""
import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_LIMIT = 1 << 30  # buffers up to 1 GiB come from the reusable heap
_applied = None  # None: not asked yet; then whether the thresholds took effect


def keep_freed_memory():
    """Set glibc's trim and mmap thresholds to 1 GiB; True if it took effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        # musl and other libcs have no mallopt, or one that ignores these.
        if not hasattr(libc, 'gnu_get_libc_version'):
            return False
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_TRIM_THRESHOLD, _LIMIT)) and bool(mallopt(_M_MMAP_THRESHOLD, _LIMIT))
    return _applied


def enabled_by_environment():
    return os.environ.get('CHAINER_CIFAR_KEEP_MEMORY', '1').strip().lower() not in (
        '0', 'false', 'no', 'off')


def keep_memory():
    """:func:`keep_freed_memory` unless ``CHAINER_CIFAR_KEEP_MEMORY=0``; True if the thresholds are in effect."""
    return enabled_by_environment() and keep_freed_memory()
