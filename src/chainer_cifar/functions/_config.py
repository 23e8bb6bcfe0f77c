"""The global switch for the fast NumPy kernels.

``chainer.config.use_fast_kernels`` (default ``True``, set in
``chainer.global_config`` when :mod:`chainer_cifar.functions` is imported)
selects the fast CPU paths of this package. Turn them off for one block::

    with chainer.using_config('use_fast_kernels', False):
        y = model(x)          # Chainer's stock functions

or for the whole process with :func:`set_fast_kernels` (or the environment
variable ``CHAINER_CIFAR_FAST_KERNELS=0`` read at import time).
CuPy / ChainerX arrays always take Chainer's own functions.

``chainer.config.fast_conv_recompute`` (default ``False``; environment variable
``CHAINER_CIFAR_CONV_RECOMPUTE=1``) makes the convolution rebuild its im2col
columns in backward instead of keeping them from forward. The convolution
works in cache-sized chunks of the batch and keeps no columns anyway when the
batch spans several chunks (the usual case at batch 128); the switch only
matters for small batches.
"""
import os

import numpy

import chainer

_ENV = os.environ.get('CHAINER_CIFAR_FAST_KERNELS', '1').strip().lower()
if not hasattr(chainer.global_config, 'use_fast_kernels'):
    chainer.global_config.use_fast_kernels = _ENV not in ('0', 'false', 'no', 'off')
if not hasattr(chainer.global_config, 'fast_conv_recompute'):
    # Rebuild im2col columns in backward instead of keeping them (less memory, a bit slower).
    chainer.global_config.fast_conv_recompute = os.environ.get(
        'CHAINER_CIFAR_CONV_RECOMPUTE', '0').strip().lower() in ('1', 'true', 'yes', 'on')


def set_fast_kernels(enabled):
    """Turn the fast kernels on or off globally (``chainer.global_config``)."""
    chainer.global_config.use_fast_kernels = bool(enabled)


def fast_kernels_enabled():
    """Whether the current configuration asks for the fast kernels."""
    return bool(getattr(chainer.config, 'use_fast_kernels', True))


def use_fast(*arrays):
    """True when the fast path is enabled and every array given is a NumPy array."""
    if not fast_kernels_enabled():
        return False
    for a in arrays:
        if a is None:
            continue
        if isinstance(a, chainer.variable.Variable):
            a = a.array
        if type(a) is not numpy.ndarray:
            return False
    return True
