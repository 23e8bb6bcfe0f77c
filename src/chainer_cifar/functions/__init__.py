"""Fast NumPy kernels for the CPU, as Chainer FunctionNodes.

Chainer's NumPy paths spend most of a training step copying (im2col,
``tensordot`` transposes, col2im); these nodes do the same arithmetic with one
im2col copy per convolution (per cache-sized chunk of the batch), GEMMs on
untransposed matrices, pooling without im2col, BatchNormalization fused with
its ReLU, the ResNet shortcut and residual merge as single nodes, using every
core for the copies.

Each function has Chainer's signature and falls back to Chainer's own function
for CuPy / ChainerX arrays, unsupported options, or when the fast kernels are
switched off::

    with chainer.using_config('use_fast_kernels', False):   # stock Chainer
        ...
    chainer_cifar.functions.set_fast_kernels(False)          # for the process

The drop-in links are in :mod:`chainer_cifar.links`.

Two process-wide settings make a training step on NumPy faster
(docs/performance.md); importing this package makes neither:
:func:`keep_memory` has glibc keep freed buffers for reuse instead of
unmapping them (:mod:`~chainer_cifar.functions._malloc`), called by the front
ends that train or measure (``CHAINER_CIFAR_KEEP_MEMORY=0`` makes it do
nothing); and when the kernels first run on several threads, OpenBLAS is set
to one thread per call (:mod:`~chainer_cifar.functions._parallel`;
``CHAINER_CIFAR_THREADS=1`` keeps OpenBLAS's own threading).
"""
from chainer_cifar.functions._config import fast_kernels_enabled, set_fast_kernels, use_fast
from chainer_cifar.functions._malloc import keep_memory
from chainer_cifar.functions.add_relu import AddReLU, add_relu
from chainer_cifar.functions._parallel import num_threads, set_num_threads
from chainer_cifar.functions.batch_norm import (BatchNormalizationFast, FixedBatchNormalizationFast,
                                                batch_normalization, fixed_batch_normalization)
from chainer_cifar.functions.convolution import Convolution2DFast, convolution_2d
from chainer_cifar.functions.pooling import (AveragePooling2DFast, MaxPooling2DFast,
                                             average_pooling_2d, max_pooling_2d)
from chainer_cifar.functions.shortcut import ZeroPadShortcut, zero_pad_shortcut

__all__ = ['fast_kernels_enabled', 'set_fast_kernels', 'use_fast', 'keep_memory', 'num_threads', 'set_num_threads',
           'BatchNormalizationFast', 'FixedBatchNormalizationFast', 'batch_normalization',
           'fixed_batch_normalization', 'Convolution2DFast', 'convolution_2d',
           'AveragePooling2DFast', 'MaxPooling2DFast', 'average_pooling_2d', 'max_pooling_2d',
           'AddReLU', 'add_relu', 'ZeroPadShortcut', 'zero_pad_shortcut']
