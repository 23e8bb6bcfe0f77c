"""Make Chainer 7.8.1 (the last release) importable and correct on today's stacks.

Chainer stopped at a time of NumPy 1.18, setuptools with ``pkg_resources`` and
CuPy 7. This module is imported by ``chainer_cifar/__init__.py`` *before*
anything imports ``chainer``, and patches only what is missing:

============================  ==================================================
what rotted                   where Chainer trips over it
============================  ==================================================
``numpy.distutils`` gone      ``chainer/_environment_check.py`` imports
(Python 3.12, or              ``numpy.distutils.system_info`` at ``import
setuptools >= 74)             chainer`` (only used for a macOS BLAS warning).
``pkg_resources`` gone        same file, for its optional-dependency check.
(setuptools >= 81 or absent)
``np.sctypes`` gone           ``chainer/functions/array/as_strided.py`` at
(NumPy 2)                     import time.
``np.float`` gone             ``F.resize_images`` (NumPy >= 1.24).
(NumPy >= 1.24)
CuPy >= 8 has no              nothing to patch: Chainer already falls back to
``cupy.cudnn``                its im2col + cuBLAS paths when ``cupy.cudnn``
                              cannot be imported.
============================  ==================================================

NumPy 2's promotion rules (NEP 50) would turn float32 into float64 where a
float32 array meets a NumPy float64 *scalar*; :func:`check_float32_step` in the
tests pins that a whole training step stays float32.

Nothing here imports the rest of the project. Each patch is a no-op where the
thing it provides already exists, so on the pinned stack (Python 3.11,
NumPy 1.26, setuptools < 70) only ``np.float`` for ``resize_images`` is touched.
"""
import importlib
import os
import sys
import types
import warnings

import numpy

APPLIED = []  # names of the patches applied in this process, for diagnostics


def _stub_numpy_distutils():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # numpy.distutils warns it is deprecated
            importlib.import_module('numpy.distutils.system_info')
        return
    except Exception:
        pass
    # A failed import can leave half-initialised modules behind.
    for name in [m for m in sys.modules if m == 'numpy.distutils' or m.startswith('numpy.distutils.')]:
        del sys.modules[name]
    distutils = types.ModuleType('numpy.distutils')
    system_info = types.ModuleType('numpy.distutils.system_info')
    system_info.get_info = lambda name, notfound_action=0: {}
    distutils.system_info = system_info
    distutils.__path__ = []  # a package, so "import numpy.distutils.system_info" resolves
    sys.modules['numpy.distutils'] = distutils
    sys.modules['numpy.distutils.system_info'] = system_info
    numpy.distutils = distutils
    APPLIED.append('numpy.distutils')


def _stub_pkg_resources():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # pkg_resources warns it is deprecated
            importlib.import_module('pkg_resources')
        return
    except Exception:
        sys.modules.pop('pkg_resources', None)
    from importlib import metadata

    mod = types.ModuleType('pkg_resources')

    class DistributionNotFound(Exception):
        pass

    class VersionConflict(Exception):
        pass

    def _name(requirement):
        for i, ch in enumerate(requirement):
            if ch in '<>=!~;[ ':
                return requirement[:i]
        return requirement

    def get_distribution(requirement):
        try:
            version = metadata.version(_name(requirement))
        except metadata.PackageNotFoundError:
            raise DistributionNotFound(requirement)
        return types.SimpleNamespace(project_name=_name(requirement), version=version)

    def require(requirement):
        # Presence only: Chainer merely warns on a version mismatch, and the
        # versions it knows (CuPy 7) are long gone anyway.
        return [get_distribution(requirement)]

    mod.DistributionNotFound = DistributionNotFound
    mod.VersionConflict = VersionConflict
    mod.get_distribution = get_distribution
    mod.require = require
    sys.modules['pkg_resources'] = mod
    APPLIED.append('pkg_resources')


def _restore_sctypes():
    try:
        numpy.sctypes
        return
    except AttributeError:
        pass
    numpy.sctypes = {
        'int': [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        'uint': [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        'float': [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
        'complex': [numpy.complex64, numpy.complex128, numpy.clongdouble],
        'others': [bool, object, bytes, str, numpy.void],
    }
    APPLIED.append('numpy.sctypes')


class _NumpyWithFloat(types.ModuleType):
    """``numpy`` plus the removed alias ``numpy.float`` (= Python ``float``)."""

    float = float

    def __getattr__(self, name):
        return getattr(numpy, name)


def _fix_resize_images():
    if hasattr(numpy, 'float') and numpy.float is float:
        return
    from chainer.functions.array import resize_images
    fn = resize_images.compute_indices_and_weights
    if getattr(fn, '_chainer_cifar_patched', False):
        return
    # Rebind only the function that reads ``numpy.float``: the rest of the
    # module compares ``xp is numpy`` and must keep seeing NumPy itself, and
    # NumPy's own namespace is left alone.
    globals_ = dict(fn.__globals__, numpy=_NumpyWithFloat('numpy'))
    patched = types.FunctionType(fn.__code__, globals_, fn.__name__,
                                 fn.__defaults__, fn.__closure__)
    patched._chainer_cifar_patched = True
    resize_images.compute_indices_and_weights = patched
    APPLIED.append('resize_images: numpy.float')


def apply():
    """Apply every patch needed here, import Chainer, and return it."""
    # Chainer compares CuPy against the 7.x series it knew and warns on every
    # import; CuPy 8+ works through its non-cuDNN paths, so that warning misleads.
    os.environ.setdefault('CHAINER_WARN_VERSION_MISMATCH', '0')
    _stub_numpy_distutils()
    _stub_pkg_resources()
    _restore_sctypes()
    import chainer
    _fix_resize_images()
    return chainer


apply()
