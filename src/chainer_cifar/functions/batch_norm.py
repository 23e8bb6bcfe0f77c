"""Batch normalization for NumPy arrays, fused and split across the cores.

Train mode (:class:`BatchNormalizationFast`) computes the per-channel mean and
(biased) variance over ``(N, H, W)``, writes the centred ``x - mean`` once
(kept for backward instead of ``x``) and ``y = (x - mean) * gamma / std + beta``
in one pass, optionally followed in the same pass by a ReLU (``relu=True``:
the ReLU's mask is applied to ``gy`` in backward, no separate node);
backward is the standard fused form

    gx = gamma / std * (gy - (x_hat * sum(gy * x_hat) + sum(gy)) / m).

The running averages are updated exactly as
:func:`chainer.functions.batch_normalization` does::

    running_mean = decay * running_mean + (1 - decay) * mean
    running_var  = decay * running_var  + (1 - decay) * m / (m - 1) * var

Test mode (:class:`FixedBatchNormalizationFast`) is one multiply-add per
element with the folded scale and shift.

Only the default axes are handled (``x`` of shape (N, C) or (N, C, H, W),
parameters of shape (C,)); the links fall back to Chainer otherwise. The
train-mode node supports first-order gradients only: run double
backpropagation under ``chainer.using_config('use_fast_kernels', False)``.
"""
import numpy

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.utils import type_check

from chainer_cifar.functions import _parallel
from chainer_cifar.functions._config import use_fast


def _as3(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


def _channel_sums(*arrays):
    """Per-channel sums over (N, rest) of each 3-D array, in float32/64 like the input."""
    n = arrays[0].shape[0]
    parts = {}  # by chunk start, so the order of the final sum is fixed

    def work(a, b):
        parts[a] = [arr[a:b].sum(axis=2).sum(axis=0) for arr in arrays]
    _parallel.run_chunks(work, n, arrays[0].size * len(arrays))
    keys = sorted(parts)
    return [sum(parts[k][i] for k in keys) for i in range(len(arrays))]


class BatchNormalizationFast(function_node.FunctionNode):

    def __init__(self, eps=2e-5, running_mean=None, running_var=None, decay=0.9, relu=False):
        self.eps = eps
        self.running_mean = running_mean
        self.running_var = running_var
        self.decay = decay
        self.relu = relu

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 3)
        x_type, gamma_type, beta_type = in_types
        type_check.expect(
            x_type.dtype.kind == 'f', gamma_type.dtype.kind == 'f',
            beta_type.dtype == gamma_type.dtype, gamma_type.ndim == 1,
            beta_type.shape == gamma_type.shape, x_type.shape[1] == gamma_type.shape[0])

    def forward_cpu(self, inputs):
        x, gamma, beta = inputs
        self.retain_inputs((1,))
        dt = numpy.promote_types(x.dtype, gamma.dtype)
        x3 = _as3(x)
        n, c, r = x3.shape
        m = n * r
        self.m = m
        s, = _channel_sums(x3)
        mean = (s / m).astype(dt, copy=False)
        xhat = numpy.empty(x3.shape, dtype=dt)
        mean3 = mean[:, None]

        def center(a, b):
            numpy.subtract(x3[a:b], mean3, out=xhat[a:b])
        _parallel.run_chunks(center, n, x3.size)
        sq, = _channel_sums(_Product(xhat, xhat))
        var = (sq / m).astype(dt, copy=False)
        inv_std = numpy.reciprocal(numpy.sqrt(var + dt.type(self.eps), dtype=dt))
        self.inv_std = inv_std
        y = numpy.empty(x3.shape, dtype=x.dtype)
        # y = (x - mean) * (gamma / std) + beta [then max(y, 0)], in one pass per chunk;
        # the centred x is kept for backward (x_hat = xc / std).
        scale = (gamma.astype(dt, copy=False) * inv_std)[:, None]
        shift = beta.astype(dt, copy=False)[:, None]
        relu = self.relu

        def normalize(a, b):
            ya = y[a:b]
            numpy.multiply(xhat[a:b], scale, out=ya, casting='same_kind')
            ya += shift
            if relu:
                numpy.maximum(ya, 0, out=ya)
        _parallel.run_chunks(normalize, n, x3.size)
        if relu:
            self.retain_outputs((0,))
        self.xhat = xhat
        if self.running_mean is not None:
            adjust = m / max(m - 1., 1.)
            decay = self.decay
            self.running_mean *= decay
            self.running_mean += (1 - decay) * mean
            self.running_var *= decay
            self.running_var += (1 - decay) * adjust * var
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        if chainer.config.enable_backprop:
            raise NotImplementedError(
                'chainer_cifar BatchNormalization does not support double backpropagation; '
                "run it under chainer.using_config('use_fast_kernels', False)")
        gamma, = self.get_retained_inputs()
        gy = grad_outputs[0].array
        g3 = _as3(gy)
        xc = self.xhat  # centred x: x_hat = xc * inv_std
        n = g3.shape[0]
        m = self.m
        dt = xc.dtype
        if self.relu:
            y3 = _as3(self.get_retained_outputs()[0].array)
            gr = numpy.empty(g3.shape, dtype=g3.dtype)

            def mask(a, b):
                numpy.multiply(g3[a:b], y3[a:b] > 0, out=gr[a:b])
            _parallel.run_chunks(mask, n, g3.size)
            g3 = gr
        gbeta, gxc = _channel_sums(g3, _Product(g3, xc))
        gbeta = gbeta.astype(dt, copy=False)
        ggamma = gxc.astype(dt, copy=False) * self.inv_std
        gx = numpy.empty(g3.shape, dtype=gy.dtype)
        coef = (gamma.array.astype(dt, copy=False) * self.inv_std)[:, None]
        a1 = (ggamma * self.inv_std / m)[:, None]
        a0 = (gbeta / m)[:, None]

        def work(a, b):
            t = numpy.multiply(xc[a:b], a1)
            t += a0
            numpy.subtract(g3[a:b], t, out=t)
            numpy.multiply(t, coef, out=gx[a:b], casting='same_kind')
        _parallel.run_chunks(work, n, g3.size)
        self.xhat = None
        gtype = gamma.dtype
        return (chainer.Variable(gx.reshape(gy.shape)),
                chainer.Variable(ggamma.astype(gtype, copy=False)),
                chainer.Variable(gbeta.astype(gtype, copy=False)))


class _Product(object):
    """Lazy ``a * b`` for :func:`_channel_sums` (each chunk multiplied as it is summed)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.shape = a.shape
        self.size = a.size

    def __getitem__(self, sl):
        return _Lazy(self.a[sl], self.b[sl])


class _Lazy(object):
    def __init__(self, a, b):
        self.a, self.b = a, b

    def sum(self, axis):
        return numpy.multiply(self.a, self.b).sum(axis=axis)


class FixedBatchNormalizationFast(function_node.FunctionNode):
    """Test mode: ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` with given statistics."""

    def __init__(self, eps=2e-5, relu=False):
        self.eps = eps
        self.relu = relu  # inference only: ``relu=True`` has no backward

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 5)
        x_type, gamma_type = in_types[:2]
        type_check.expect(x_type.dtype.kind == 'f', gamma_type.dtype.kind == 'f',
                          gamma_type.ndim == 1, x_type.shape[1] == gamma_type.shape[0])
        for t in in_types[2:]:
            type_check.expect(t.dtype == gamma_type.dtype, t.shape == gamma_type.shape)

    def forward_cpu(self, inputs):
        x, gamma, beta, mean, var = inputs
        self.retain_inputs((0, 1, 2, 3, 4))
        dt = numpy.promote_types(x.dtype, gamma.dtype)
        inv_std = numpy.reciprocal(numpy.sqrt(var.astype(dt) + dt.type(self.eps), dtype=dt))
        scale = (gamma.astype(dt, copy=False) * inv_std)
        shift = (beta.astype(dt, copy=False) - mean.astype(dt, copy=False) * scale)
        x3 = _as3(x)
        y = numpy.empty(x3.shape, dtype=x.dtype)
        s3, t3 = scale[:, None], shift[:, None]

        relu = self.relu

        def work(a, b):
            numpy.multiply(x3[a:b], s3, out=y[a:b])
            y[a:b] += t3
            if relu:
                numpy.maximum(y[a:b], 0, out=y[a:b])
        _parallel.run_chunks(work, x3.shape[0], x3.size)
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        if self.relu:
            raise NotImplementedError('FixedBatchNormalizationFast(relu=True) is for inference '
                                      '(enable_backprop=False) only')
        x, gamma, beta, mean, var = self.get_retained_inputs()
        gy, = grad_outputs
        # Differentiable formulas from Chainer functions (first and higher order).
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
        axes = (0,) + tuple(range(2, x.ndim))
        inv_std = (var + self.eps) ** -0.5
        b = lambda v: F.broadcast_to(F.reshape(v, shape), x.shape)  # noqa: E731
        xc = x - b(mean)
        ret = []
        if 0 in indexes:
            ret.append(gy * b(gamma * inv_std))
        if 1 in indexes:
            ret.append(F.sum(gy * xc, axis=axes) * inv_std)
        if 2 in indexes:
            ret.append(F.sum(gy, axis=axes))
        if 3 in indexes:
            ret.append(-F.sum(gy, axis=axes) * gamma * inv_std)
        if 4 in indexes:
            ret.append(F.sum(gy * xc, axis=axes) * gamma * (-0.5) * inv_std ** 3)
        return ret


def _fast_ok(x, gamma, beta, *more):
    return x.ndim in (2, 4) and gamma.ndim == 1 and use_fast(x, gamma, beta, *more)


def batch_normalization(x, gamma, beta, eps=2e-5, running_mean=None, running_var=None,
                        decay=0.9, axis=None, relu=False):
    """Drop-in for :func:`chainer.functions.batch_normalization` (default axes fast).

    ``relu=True`` returns ``relu(batch_normalization(...))``, fused on the fast path.
    """
    if axis is None and _fast_ok(x, gamma, beta, running_mean, running_var):
        y, = BatchNormalizationFast(eps, running_mean, running_var, decay, relu=relu).apply(
            (x, gamma, beta))
        return y
    y = F.batch_normalization(x, gamma, beta, eps=eps, running_mean=running_mean,
                              running_var=running_var, decay=decay, axis=axis)
    return F.relu(y) if relu else y


def fixed_batch_normalization(x, gamma, beta, mean, var, eps=2e-5, axis=None):
    """Drop-in for :func:`chainer.functions.fixed_batch_normalization` (default axes fast)."""
    if axis is None and _fast_ok(x, gamma, beta, mean, var):
        y, = FixedBatchNormalizationFast(eps).apply((x, gamma, beta, mean, var))
        return y
    return F.fixed_batch_normalization(x, gamma, beta, mean, var, eps=eps, axis=axis)
