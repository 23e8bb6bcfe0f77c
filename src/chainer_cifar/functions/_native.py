"""The compiled kernels (``direct_conv.c``, ``batch_norm.c``, ``elementwise.c``, ``pooling.c``): built on first use, loaded with ctypes.

The C files are compiled once per machine, into one library, with the system's C compiler
(``$CC``, else ``cc``) into a cache folder, ``$CHAINER_CIFAR_NATIVE_CACHE``,
else ``$XDG_CACHE_HOME/chainer_cifar`` (``~/.cache/chainer_cifar``), else a
per-user temporary folder (``/tmp/chainer_cifar-<uid>``). New folders are made
0700, and a folder or library that another user owns or may write to is never
used. The library's name carries a hash of the sources and the compiler, and
it is written under a temporary name and renamed, so processes that start
together (MPI ranks, test workers) never load a half-written file.

Everything degrades to the NumPy paths (im2col + GEMM, NumPy BatchNorm and
residual merge and max pooling), which stay the reference: no compiler, a failed build, a CPU without AVX2 + FMA, a non-x86
machine, or ``CHAINER_CIFAR_NATIVE=0`` (read at import) /
``chainer.config.use_native_kernels = False`` (at run time). :func:`status`
says which, and ``tools/bench.py`` records it with every measurement.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import threading

import chainer

_SOURCES = [os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
            for name in ('direct_conv.c', 'batch_norm.c', 'elementwise.c', 'pooling.c')]
_FLAGS = ['-O3', '-shared', '-fPIC', '-fno-math-errno']
_ENV = os.environ.get('CHAINER_CIFAR_NATIVE', '1').strip().lower()
if not hasattr(chainer.global_config, 'use_native_kernels'):
    chainer.global_config.use_native_kernels = _ENV not in ('0', 'false', 'no', 'off')

_lock = threading.Lock()
_lib = None  # the loaded library, or False once it is known to be unavailable
_why = 'not built yet'


def _cache_dirs():
    env = os.environ.get('CHAINER_CIFAR_NATIVE_CACHE')
    if env:
        return [env]
    xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    # The fallback is per user: a shared, predictable /tmp folder would let another
    # user plant a library there that this process then loads.
    return [os.path.join(xdg, 'chainer_cifar'),
            os.path.join(tempfile.gettempdir(), 'chainer_cifar-{}'.format(os.getuid()))]


def _private(path):
    """Why ``path`` (a cache folder or library) is unsafe to load code from, or None if it is safe.

    Safe: owned by this user and writable by nobody else, so no one else can
    have put a library there or swap it before it is loaded.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return str(e)
    if st.st_uid not in (os.getuid(), 0):  # root could replace anything anyway
        return '{} belongs to another user (uid {})'.format(path, st.st_uid)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return '{} is writable by others (mode {:o})'.format(path, stat.S_IMODE(st.st_mode))
    return None


def _library_name(compiler, source_bytes):
    key = hashlib.sha256(source_bytes + compiler.encode() + ' '.join(_FLAGS).encode()
                         + platform.machine().encode()).hexdigest()[:16]
    return 'native-{}.so'.format(key)


def _build(compiler, source_bytes):
    """Path of the compiled library, building it if needed; raises OSError with the reason."""
    errors = []
    for folder in _cache_dirs():
        path = os.path.join(folder, _library_name(compiler, source_bytes))
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)  # a new folder is private
        except OSError as e:
            errors.append('{}: {}'.format(folder, e))
            continue
        unsafe = _private(folder) or (os.path.exists(path) and _private(path))
        if unsafe:
            errors.append('not using {}: {}'.format(folder, unsafe))
            continue
        if os.path.exists(path):
            return path
        try:
            fd, tmp = tempfile.mkstemp(suffix='.so', dir=folder)
            os.close(fd)
        except OSError as e:
            errors.append('{}: {}'.format(folder, e))
            continue
        try:
            proc = subprocess.run([compiler] + _FLAGS + ['-o', tmp] + _SOURCES,
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise OSError('{} failed: {}'.format(compiler, (proc.stderr or proc.stdout).strip()[-300:]))
            os.replace(tmp, path)
            return path
        except subprocess.TimeoutExpired:
            raise OSError('{} took more than 120 s'.format(compiler))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError('no safe writable cache folder ({})'.format('; '.join(errors)))


def _load():
    global _lib, _why
    compiler = os.environ.get('CC') or 'cc'
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        raise OSError('the kernel is written for x86-64 (AVX2), this is {}'.format(platform.machine()))
    if shutil.which(compiler) is None:
        raise OSError('no C compiler ({!r} not found; set CC)'.format(compiler))
    source = b''
    for name in _SOURCES:
        with open(name, 'rb') as f:
            source += f.read()
    path = _build(compiler, source)
    lib = ctypes.CDLL(path)  # CDLL: calls release the GIL, so the pool's threads run them in parallel
    if not lib.cc_conv_supported():
        raise OSError('this CPU has no AVX2 + FMA')
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.cc_conv2d_f32.argtypes = [p, i64, i64, i64, i64, p, i64, p, i64, p, p, p, i64, i64, ctypes.c_int]
    lib.cc_conv2d_f32.restype = ctypes.c_int
    lib.cc_conv2d_grad_w_f32.argtypes = [p, i64, i64, i64, i64, p, i64, p, i64, p, i64, i64]
    lib.cc_conv2d_grad_w_f32.restype = ctypes.c_int
    lib.cc_conv2d_grad_w_cl_f32.argtypes = [p, i64, i64, i64, p, i64, p, i64, p, i64, i64]
    lib.cc_conv2d_grad_w_cl_f32.restype = ctypes.c_int
    lib.cc_pad_f32.argtypes = [p] + [i64] * 9 + [p]
    lib.cc_pad_f32.restype = ctypes.c_int
    lib.cc_bn_stats_f32.argtypes = [p, i64, i64, i64, i64, p, p, p]
    lib.cc_bn_forward_f32.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p, ctypes.c_int]
    lib.cc_bn_grad_sums_f32.argtypes = [p, p, p, p, i64, i64, i64, i64, p, p]
    lib.cc_bn_grad_x_f32.argtypes = [p, p, p, p, i64, i64, i64, i64, p, p, p, p]
    lib.cc_add_relu_f32.argtypes = [p, p, p, i64]
    lib.cc_masked_grad_f32.argtypes = [p, p, p, i64]
    lib.cc_maxpool_f32.argtypes = [p] + [i64] * 11 + [p, p, ctypes.c_int]
    lib.cc_maxpool_grad_f32.argtypes = [p, p] + [i64] * 10 + [p]
    lib.cc_maxpool_gather_f32.argtypes = [p, p] + [i64] * 10 + [p]
    for f in (lib.cc_bn_stats_f32, lib.cc_bn_forward_f32, lib.cc_bn_grad_sums_f32, lib.cc_bn_grad_x_f32,
              lib.cc_add_relu_f32, lib.cc_masked_grad_f32, lib.cc_maxpool_f32,
              lib.cc_maxpool_grad_f32, lib.cc_maxpool_gather_f32):
        f.restype = ctypes.c_int
    names = [os.path.basename(s) for s in _SOURCES]
    _lib, _why = lib, 'built from {} and {}: {}'.format(', '.join(names[:-1]), names[-1], path)
    return lib


def library():
    """The loaded library, or ``None`` (unavailable, or switched off by ``use_native_kernels``)."""
    if not getattr(chainer.config, 'use_native_kernels', True):
        return None
    if _lib is None:
        with _lock:
            if _lib is None:
                try:
                    _load()
                except OSError as e:
                    globals().update(_lib=False, _why=str(e))
    return _lib or None


def status():
    """One line: whether the direct convolution runs here, and why not if it does not."""
    if not getattr(chainer.config, 'use_native_kernels', True):
        return 'off (use_native_kernels is False)'
    lib = library()
    return ('on ({})'.format(_why)) if lib else 'unavailable: {}'.format(_why)
