"""The option-A ResNet shortcut (subsample, then zero channels in front) as one FunctionNode.

Chainer's composition ``F.pad(x[:, :, ::s, ::s], ...)`` costs a ``GetItem``
whose backward scatters with ``numpy.add.at`` and a ``Pad`` node; here the
forward is one strided copy into a zeroed array and the backward one strided
copy back. Both directions are linear maps, each the other's adjoint, so
double backpropagation works. CuPy / ChainerX arrays and
``use_fast_kernels=False`` use Chainer's composition.
"""
import numpy

import chainer.functions as F
from chainer import function_node

from chainer_cifar.functions._config import use_fast


class ZeroPadShortcut(function_node.FunctionNode):
    """``y[:, missing:] = x[:, :, ::stride, ::stride]``, ``y[:, :missing] = 0``."""

    def __init__(self, stride, missing):
        self.stride = stride
        self.missing = missing

    def forward_cpu(self, inputs):
        x, = inputs
        self.x_shape = x.shape
        return _pad_forward(x, self.stride, self.missing),

    def backward(self, indexes, grad_outputs):
        return ZeroPadShortcutGrad(self.stride, self.missing, self.x_shape).apply(grad_outputs)


class ZeroPadShortcutGrad(function_node.FunctionNode):
    """Adjoint of :class:`ZeroPadShortcut`: ``gx[:, :, ::s, ::s] = gy[:, missing:]``, zero elsewhere."""

    def __init__(self, stride, missing, x_shape):
        self.stride = stride
        self.missing = missing
        self.x_shape = x_shape

    def forward_cpu(self, inputs):
        gy, = inputs
        s, m = self.stride, self.missing
        if s == 1:
            return numpy.array(gy[:, m:], copy=True),
        gx = numpy.zeros(self.x_shape, dtype=gy.dtype)
        gx[:, :, ::s, ::s] = gy[:, m:]
        return gx,

    def backward(self, indexes, grad_outputs):
        return ZeroPadShortcut(self.stride, self.missing).apply(grad_outputs)


def _pad_forward(x, s, m):
    sub = x[:, :, ::s, ::s] if s != 1 else x
    n, c, h, w = sub.shape
    y = numpy.empty((n, c + m, h, w), dtype=x.dtype)
    y[:, :m] = 0
    y[:, m:] = sub
    return y


def zero_pad_shortcut(x, out_channels, stride=1):
    """``x`` subsampled by ``stride`` with ``out_channels - C`` zero channels in front."""
    missing = max(0, out_channels - x.shape[1])
    if stride == 1 and missing == 0:
        return x  # identity: no node, no copy
    if x.ndim == 4 and use_fast(x):
        y, = ZeroPadShortcut(int(stride), missing).apply((x,))
        return y
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    if missing > 0:
        x = F.pad(x, ((0, 0), (missing, 0), (0, 0), (0, 0)), 'constant')
    return x
