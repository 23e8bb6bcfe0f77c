"""2-D max and average pooling for NumPy arrays, without im2col.

The window maximum is a running ``numpy.maximum`` over the ``kh*kw`` strided
slices of the padded input (each slice is output-sized), and the position of
the maximum is kept as one ``int8`` per output (the first maximum in window
order, as Chainer's ``argmax`` does). Backward adds ``gy`` where the index
matches into each slice: ``kh*kw`` output-sized passes, no scatter with
``numpy.add.at``. Images are split across the cores.

Both pooling gradients are FunctionNodes with their own backward, so double
backpropagation works. Anything not handled here (CuPy, ChainerX,
``use_fast_kernels=False``, ``return_indices=True``) goes to Chainer.
"""
import numpy

import chainer.functions as F
from chainer import function_node
from chainer.utils import type_check

from chainer_cifar.functions import _parallel
from chainer_cifar.functions._config import use_fast

# Chainer's own functions, captured at import so the fallbacks stay Chainer's
# even if someone routes chainer.functions' names to the functions here.
_chainer_max_pooling_2d = F.max_pooling_2d
_chainer_average_pooling_2d = F.average_pooling_2d


def _pair(v):
    if hasattr(v, '__getitem__'):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def _outsize(size, k, s, p, cover_all):
    if cover_all:
        return (size + p * 2 - k + s - 1) // s + 1
    return (size + p * 2 - k) // s + 1


class _Geometry(object):
    def __init__(self, ksize, stride, pad, cover_all):
        self.kh, self.kw = _pair(ksize)
        self.sy, self.sx = _pair(ksize if stride is None else stride)
        self.ph, self.pw = _pair(pad)
        self.cover_all = cover_all

    def setup(self, shape):
        n, c, h, w = shape
        self.in_shape = shape
        self.ho = _outsize(h, self.kh, self.sy, self.ph, self.cover_all)
        self.wo = _outsize(w, self.kw, self.sx, self.pw, self.cover_all)
        if self.ho <= 0 or self.wo <= 0:
            raise ValueError('pooling output would be empty for input {}'.format(shape))
        # The padded extent every window fits into.
        self.hp = max(h + 2 * self.ph, (self.ho - 1) * self.sy + self.kh)
        self.wp = max(w + 2 * self.pw, (self.wo - 1) * self.sx + self.kw)

    def window(self, a, i, j):
        """The ``(i, j)`` tap of every window: an output-sized strided view of padded ``a``."""
        return a[:, :, i:i + self.sy * (self.ho - 1) + 1:self.sy, j:j + self.sx * (self.wo - 1) + 1:self.sx]

    def padded(self, x, value):
        n, c, h, w = x.shape
        if self.hp == h and self.wp == w and self.ph == 0 and self.pw == 0:
            return x
        xp = numpy.full((n, c, self.hp, self.wp), value, dtype=x.dtype)
        xp[:, :, self.ph:self.ph + h, self.pw:self.pw + w] = x
        return xp

    def unpad(self, gxp):
        n, c, h, w = self.in_shape
        if gxp.shape[2:] == (h, w):
            return gxp
        return numpy.ascontiguousarray(gxp[:, :, self.ph:self.ph + h, self.pw:self.pw + w])


def _scatter_max(geo, gy, idx):
    """Gradient of max pooling: ``gy`` added at each window's argmax."""
    n, c = gy.shape[:2]
    gxp = numpy.zeros((n, c, geo.hp, geo.wp), dtype=gy.dtype)

    def work(a, b):
        g = gy[a:b]
        ix = idx[a:b]
        tmp = numpy.empty_like(g)
        for i in range(geo.kh):
            for j in range(geo.kw):
                numpy.multiply(g, ix == i * geo.kw + j, out=tmp)
                geo.window(gxp[a:b], i, j)[...] += tmp
    _parallel.run_chunks(work, n, gxp.size)
    return geo.unpad(gxp)


def _gather_max(geo, ggx, idx):
    """Adjoint of :func:`_scatter_max`: each output takes ``ggx`` at its argmax."""
    ggxp = geo.padded(ggx, 0)
    n, c = idx.shape[:2]
    out = numpy.zeros(idx.shape, dtype=ggx.dtype)

    def work(a, b):
        ix = idx[a:b]
        for i in range(geo.kh):
            for j in range(geo.kw):
                numpy.copyto(out[a:b], geo.window(ggxp[a:b], i, j), where=(ix == i * geo.kw + j))
    _parallel.run_chunks(work, n, out.size * geo.kh * geo.kw)
    return out


class MaxPooling2DFast(function_node.FunctionNode):

    def __init__(self, ksize, stride=None, pad=0, cover_all=True):
        self.geo = _Geometry(ksize, stride, pad, cover_all)

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 1)
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f', x_type.ndim == 4)

    def forward_cpu(self, inputs):
        x, = inputs
        geo = self.geo
        geo.setup(x.shape)
        xp = geo.padded(x, -numpy.inf)
        n, c = x.shape[:2]
        y = numpy.empty((n, c, geo.ho, geo.wo), dtype=x.dtype)
        idx = numpy.zeros(y.shape, dtype=numpy.int8 if geo.kh * geo.kw < 128 else numpy.int32)

        def work(a, b):
            ya, ia, xa = y[a:b], idx[a:b], xp[a:b]
            numpy.copyto(ya, geo.window(xa, 0, 0))
            mask = numpy.empty(ya.shape, dtype=bool)
            for i in range(geo.kh):
                for j in range(geo.kw):
                    if i == 0 and j == 0:
                        continue
                    v = geo.window(xa, i, j)
                    numpy.greater(v, ya, out=mask)
                    numpy.copyto(ia, i * geo.kw + j, where=mask)
                    numpy.maximum(ya, v, out=ya)
        _parallel.run_chunks(work, n, xp.size)
        self.idx = idx
        return y,

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self.geo, self.idx).apply(grad_outputs)


class MaxPooling2DGrad(function_node.FunctionNode):

    def __init__(self, geo, idx):
        self.geo = geo
        self.idx = idx

    def forward_cpu(self, inputs):
        gy, = inputs
        return _scatter_max(self.geo, gy, self.idx),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGradGrad(self.geo, self.idx).apply(grad_outputs)


class MaxPooling2DGradGrad(function_node.FunctionNode):

    def __init__(self, geo, idx):
        self.geo = geo
        self.idx = idx

    def forward_cpu(self, inputs):
        ggx, = inputs
        return _gather_max(self.geo, ggx, self.idx),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self.geo, self.idx).apply(grad_outputs)


def _avg_sum(geo, x):
    """Sum over each window of the zero-padded ``x``, divided by ``kh*kw``."""
    xp = geo.padded(x, 0)
    n, c = x.shape[:2]
    y = numpy.zeros((n, c, geo.ho, geo.wo), dtype=x.dtype)
    coeff = x.dtype.type(1.0 / (geo.kh * geo.kw))

    def work(a, b):
        for i in range(geo.kh):
            for j in range(geo.kw):
                y[a:b] += geo.window(xp[a:b], i, j)
        y[a:b] *= coeff
    _parallel.run_chunks(work, n, xp.size)
    return y


def _avg_spread(geo, gy):
    """Adjoint of :func:`_avg_sum`."""
    n, c = gy.shape[:2]
    gxp = numpy.zeros((n, c, geo.hp, geo.wp), dtype=gy.dtype)
    coeff = gy.dtype.type(1.0 / (geo.kh * geo.kw))

    def work(a, b):
        g = gy[a:b] * coeff
        for i in range(geo.kh):
            for j in range(geo.kw):
                geo.window(gxp[a:b], i, j)[...] += g
    _parallel.run_chunks(work, n, gxp.size)
    return geo.unpad(gxp)


class AveragePooling2DFast(function_node.FunctionNode):

    def __init__(self, ksize, stride=None, pad=0):
        self.geo = _Geometry(ksize, stride, pad, False)

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 1)
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f', x_type.ndim == 4)

    def forward_cpu(self, inputs):
        x, = inputs
        self.geo.setup(x.shape)
        return _avg_sum(self.geo, x),

    def backward(self, indexes, grad_outputs):
        return AveragePooling2DGrad(self.geo).apply(grad_outputs)


class AveragePooling2DGrad(function_node.FunctionNode):

    def __init__(self, geo):
        self.geo = geo

    def forward_cpu(self, inputs):
        gy, = inputs
        return _avg_spread(self.geo, gy),

    def backward(self, indexes, grad_outputs):
        return AveragePooling2DAdjoint(self.geo).apply(grad_outputs)


class AveragePooling2DAdjoint(function_node.FunctionNode):
    """Average pooling again, on a fixed geometry (the gradient of the gradient)."""

    def __init__(self, geo):
        self.geo = geo

    def forward_cpu(self, inputs):
        ggx, = inputs
        return _avg_sum(self.geo, ggx),

    def backward(self, indexes, grad_outputs):
        return AveragePooling2DGrad(self.geo).apply(grad_outputs)


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True, return_indices=False):
    """Drop-in for :func:`chainer.functions.max_pooling_2d` with a fast NumPy path."""
    if not return_indices and use_fast(x) and x.ndim == 4:
        y, = MaxPooling2DFast(ksize, stride, pad, cover_all).apply((x,))
        return y
    return _chainer_max_pooling_2d(x, ksize, stride, pad, cover_all, return_indices)


def average_pooling_2d(x, ksize, stride=None, pad=0):
    """Drop-in for :func:`chainer.functions.average_pooling_2d` with a fast NumPy path."""
    if use_fast(x) and x.ndim == 4:
        y, = AveragePooling2DFast(ksize, stride, pad).apply((x,))
        return y
    return _chainer_average_pooling_2d(x, ksize, stride, pad)
