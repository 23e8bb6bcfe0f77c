"""Batch normalization for NumPy arrays, fused and split across the cores.

Train mode (:class:`BatchNormalizationFast`) computes the per-channel mean and
(biased) variance over ``(N, H, W)`` in one pass (shifted sums, float64
totals), then, group of images by group while each is in the cache
(see ``_GROUP_ELEMENTS``), writes ``y = (x - mean) * gamma / std + beta`` in
one pass, optionally followed in the same pass by a ReLU (``relu=True``:
the ReLU's mask is applied to ``gy`` in backward, no separate node). It keeps
``x`` for backward (as Chainer's node does) and centres it again there;
backward is the standard fused form

    gx = gamma / std * (gy - (x_hat * sum(gy * x_hat) + sum(gy)) / m).

The running averages are updated exactly as
:func:`chainer.functions.batch_normalization` does::

    running_mean = decay * running_mean + (1 - decay) * mean
    running_var  = decay * running_var  + (1 - decay) * m / (m - 1) * var

and a batch that has one value per channel gets Chainer's warning. Double
backpropagation (``enable_double_backprop=True``) takes Chainer's own
differentiable gradient node (``BatchNormalizationGrad``) from the same
statistics.

Test mode (:class:`FixedBatchNormalizationFast`) is one multiply-add per
element with the folded scale and shift (or Chainer's ``(x - mean) * scale +
beta`` when a parameter is NaN or infinite, where folding would turn an inf
into NaN); its backward is Chainer's ``FixedBatchNormalizationGrad``.

Only the default axes are handled (``x`` of shape (N, C) or (N, C, H, W),
parameters of shape (C,)); anything else goes to Chainer's functions,
captured at import (so routing ``chainer.functions.batch_normalization`` to
this module's function cannot make the fallback call itself).
"""
import numpy

import warnings

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.functions.activation.relu import ReLUGrad2
from chainer.functions.normalization import batch_normalization as _chainer_bn
from chainer.utils import type_check

from chainer_cifar.functions import _native, _parallel
from chainer_cifar.functions._elementwise import channel_sums, relu_
from chainer_cifar.functions._config import use_fast


# Chainer's own functions, captured at import so the fallbacks stay Chainer's
# even if someone routes chainer.functions' names to the functions here.
_chainer_batch_normalization = _chainer_bn.batch_normalization
_chainer_fixed_batch_normalization = _chainer_bn.fixed_batch_normalization


def _as3(a):
    return a.reshape(a.shape[0], a.shape[1], -1)


# Train mode works in groups of images of about this many elements (1 MiB
# of float32): each pass over a group runs while the group is still in the
# cache, and the groups are dealt to the threads. The groups do not depend on
# the number of threads, and the partial sums are added in group order in
# float64: the same result for any thread count. (Much smaller groups cost
# more in per-call overhead than the cache saves.)
_GROUP_ELEMENTS = 1 << 18


def _groups(x3):
    n = x3.shape[0]
    per = max(1, _GROUP_ELEMENTS // max(1, x3.shape[1] * x3.shape[2]))
    return [(a, min(n, a + per)) for a in range(0, n, per)]


def _native_lib(*arrays):
    """The compiled kernels when every array is float32 and they run here, else None."""
    if all(a.dtype == numpy.float32 for a in arrays):
        return _native.library()
    return None


def _ptr(a, dtype=numpy.float32):
    """``a``'s address for the kernels, which read it as a C-contiguous ``dtype`` array."""
    if a is None:
        return None
    if a.dtype != dtype or not a.flags.c_contiguous:
        # The C side cannot tell: a float64 array read as float32 is garbage, not an error.
        raise TypeError('batch normalization kernel needs a C-contiguous {} array, got {} {}'.format(
            numpy.dtype(dtype), a.dtype, 'contiguous' if a.flags.c_contiguous else 'strided'))
    return a.ctypes.data


def _check(rc):
    if rc != 0:
        raise RuntimeError('batch normalization kernel failed ({})'.format(rc))


def _sum_groups(parts):
    """The float64 sums, in group order, of each position of the tuples in ``parts``."""
    return [_parallel.sum_in_order((part[i] for part in parts), numpy.float64)
            for i in range(len(parts[0]))]


def _axes(x):
    """Chainer's ``(axis, key_axis, expander)`` for the default axes of ``x`` (N, C, ...)."""
    axis = (0,) + tuple(range(2, x.ndim))
    return axis, (1,), (None, slice(None)) + (None,) * (x.ndim - 2)


def _warn_if_one_value(x_shape, axis):
    """Chainer's warning for a batch with one value per channel (its output is all zeros)."""
    if all(x_shape[i] == 1 for i in axis):
        warnings.warn(
            'A batch with no more than one sample has been given'
            ' to F.batch_normalization. F.batch_normalization'
            ' will always output a zero tensor for such batches.'
            ' This could be caused by incorrect configuration in'
            ' your code (such as running evaluation while'
            ' chainer.config.train=True),'
            ' but could also happen in the last batch of training'
            ' if non-repeating iterator is used.',
            UserWarning)


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
        self.retain_inputs((0, 1))  # x is centred again in backward (Chainer's node keeps it too)
        _warn_if_one_value(x.shape, _axes(x)[0])
        dt = numpy.promote_types(x.dtype, gamma.dtype)
        lib = _native_lib(x, gamma)
        x3 = _as3(x) if lib is None else numpy.ascontiguousarray(_as3(x))
        n, c, r = x3.shape
        m = n * r
        self.m = m
        groups = _groups(x3)
        # Sums of x - k with k the first group's channel means: the variance
        # E[(x-k)^2] - E[x-k]^2 then loses no precision to a large mean.
        # (A NaN or inf k would make x - k NaN where Chainer's mean is inf: 0 there.)
        a0, b0 = groups[0]
        k = (x3[a0:b0].sum(axis=2).sum(axis=0, dtype=numpy.float64) / ((b0 - a0) * r))
        k[~numpy.isfinite(k)] = 0
        k3 = k.astype(dt)[:, None]

        def stats(ab):
            if lib is not None:
                s = numpy.zeros((2, c))
                _check(lib.cc_bn_stats_f32(_ptr(x3), ab[0], ab[1], c, r, _ptr(k3), _ptr(s[0], numpy.float64),
                                           _ptr(s[1], numpy.float64)))
                return s[0], s[1]
            return channel_sums(numpy.subtract(x3[ab[0]:ab[1]], k3, dtype=dt))
        s1, s2 = _sum_groups(_parallel.map_tasks(stats, groups, x3.size))
        shift_mean = s1 / m
        mean64 = k + shift_mean
        var64 = numpy.maximum(s2 / m - shift_mean * shift_mean, 0)  # (NaN stays NaN)
        mean = mean64.astype(dt)
        var = var64.astype(dt)
        inv_std = numpy.reciprocal(numpy.sqrt(var + dt.type(self.eps), dtype=dt))
        self.mean = mean
        self.inv_std = inv_std
        y = numpy.empty(x3.shape, dtype=x.dtype)
        # y = (x - mean) * (gamma / std) + beta [then max(y, 0)].
        mean3 = mean[:, None]
        scale = numpy.ascontiguousarray(gamma.astype(dt, copy=False) * inv_std)[:, None]
        shift = numpy.ascontiguousarray(beta, dtype=dt)[:, None]
        relu = self.relu

        def normalize(ab):
            a, b = ab
            if lib is not None:
                _check(lib.cc_bn_forward_f32(_ptr(x3), a, b, c, r, _ptr(mean), _ptr(scale), _ptr(shift),
                                             None, _ptr(y), int(relu)))
                return
            ya = y[a:b]
            if dt == y.dtype:
                numpy.subtract(x3[a:b], mean3, out=ya)
                ya *= scale
            else:
                numpy.multiply(numpy.subtract(x3[a:b], mean3, dtype=dt), scale, out=ya, casting='same_kind')
            ya += shift
            if relu:
                relu_(ya)
        _parallel.map_tasks(normalize, groups, x3.size)
        if relu:
            self.retain_outputs((0,))
        if self.running_mean is not None:
            adjust = m / max(m - 1., 1.)
            decay = self.decay
            self.running_mean *= decay
            self.running_mean += (1 - decay) * mean
            self.running_var *= decay
            self.running_var += (1 - decay) * adjust * var
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        x, gamma = self.get_retained_inputs()
        gy, = grad_outputs
        if chainer.config.enable_backprop:
            return self._chainer_backward(x, gamma, gy)
        gy = gy.array
        mean = self.mean
        lib = _native_lib(gy, x.array, gamma.array, mean)
        if lib is None:
            x3, g3 = _as3(x.array), _as3(gy)
        else:
            x3, g3 = numpy.ascontiguousarray(_as3(x.array)), numpy.ascontiguousarray(_as3(gy))
        n, c, r = g3.shape
        m = self.m
        dt = mean.dtype
        mean3 = mean[:, None]
        groups = _groups(g3)
        y3 = _as3(self.get_retained_outputs()[0].array) if self.relu else None
        if lib is not None:
            gr = None  # the kernels re-apply the ReLU's mask on the fly
        elif self.relu:
            gr = numpy.empty(g3.shape, dtype=g3.dtype)
        else:
            gr = g3
        xcs = {}  # NumPy: each group's x - mean, from the sums to the gradient

        def sums(ab):
            a, b = ab
            if lib is not None:
                s = numpy.zeros((2, c))
                _check(lib.cc_bn_grad_sums_f32(_ptr(g3), _ptr(y3), _ptr(x3), _ptr(mean), a, b, c, r,
                                               _ptr(s[0], numpy.float64), _ptr(s[1], numpy.float64)))
                return s[0], s[1]
            if self.relu:
                numpy.multiply(g3[a:b], y3[a:b] > 0, out=gr[a:b])
            xc = xcs[a] = numpy.subtract(x3[a:b], mean3, dtype=dt)
            return channel_sums(gr[a:b], xc)
        gbeta, gxc = _sum_groups(_parallel.map_tasks(sums, groups, g3.size))
        gbeta = gbeta.astype(dt)
        ggamma = gxc.astype(dt) * self.inv_std
        gx = numpy.empty(g3.shape, dtype=gy.dtype)
        coef = numpy.ascontiguousarray(gamma.array.astype(dt, copy=False) * self.inv_std)[:, None]
        # dtype=dt: under NumPy 1's value-based casting, float32 / m is float64 once m
        # (images x pixels) no longer fits 16 bits, e.g. batch 128 at 32x32.
        a1 = numpy.ascontiguousarray(ggamma * self.inv_std / m, dtype=dt)[:, None]
        a0 = numpy.ascontiguousarray(gbeta / m, dtype=dt)[:, None]

        def grad_x(ab):
            a, b = ab
            if lib is not None:
                _check(lib.cc_bn_grad_x_f32(_ptr(g3), _ptr(y3), _ptr(x3), _ptr(mean), a, b, c, r, _ptr(a1),
                                            _ptr(a0), _ptr(coef), _ptr(gx)))
                return
            t = xcs.pop(a)
            t *= a1
            t += a0
            numpy.subtract(gr[a:b], t, out=t)
            numpy.multiply(t, coef, out=gx[a:b], casting='same_kind')
        _parallel.map_tasks(grad_x, groups, g3.size)
        gtype = gamma.dtype
        return (chainer.Variable(gx.reshape(gy.shape)),
                chainer.Variable(ggamma.astype(gtype, copy=False)),
                chainer.Variable(gbeta.astype(gtype, copy=False)))

    def _chainer_backward(self, x, gamma, gy):
        """Double backpropagation: Chainer's differentiable gradient node, on this node's statistics."""
        if self.relu:
            y, = self.get_retained_outputs()
            gy, = ReLUGrad2(y.array).apply((gy,))
        axis, key_axis, expander = _axes(x)
        grad = _chainer_bn.BatchNormalizationGrad(
            self.eps, expander, axis, self.mean, None, self.inv_std, key_axis,
            _chainer_bn.GeneralBatchNormalizationImpl(), None)
        return grad.apply((x, gamma, gy))


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
        self.retain_inputs((0, 1, 3, 4))
        dt = numpy.promote_types(x.dtype, gamma.dtype)
        inv_std = numpy.reciprocal(numpy.sqrt(var.astype(dt) + dt.type(self.eps), dtype=dt))
        scale = (gamma.astype(dt, copy=False) * inv_std)
        shift = (beta.astype(dt, copy=False) - mean.astype(dt, copy=False) * scale)
        x3 = _as3(x)
        y = numpy.empty(x3.shape, dtype=x.dtype)
        # Folded, y = x * scale + shift; with a NaN or inf parameter, Chainer's
        # (x - mean) * scale + beta, where folding would give inf - inf = NaN.
        folded = bool(numpy.isfinite(scale).all() and numpy.isfinite(shift).all())
        s3, t3 = scale[:, None], (shift if folded else beta.astype(dt, copy=False))[:, None]
        m3 = mean.astype(dt, copy=False)[:, None]
        relu = self.relu

        def work(a, b):
            if folded:
                numpy.multiply(x3[a:b], s3, out=y[a:b], casting='same_kind')
            else:
                numpy.multiply(numpy.subtract(x3[a:b], m3, dtype=dt), s3, out=y[a:b], casting='same_kind')
            y[a:b] += t3
            if relu:
                relu_(y[a:b])
        _parallel.run_chunks(work, x3.shape[0], x3.size)
        return y.reshape(x.shape),

    def backward(self, indexes, grad_outputs):
        if self.relu:
            raise NotImplementedError('FixedBatchNormalizationFast(relu=True) is for inference '
                                      '(enable_backprop=False) only')
        x, gamma, mean, var = self.get_retained_inputs()
        gy, = grad_outputs
        # Chainer's own gradient node (first and higher order, mixed dtypes).
        axis, _, expander = _axes(x)
        return _chainer_bn.FixedBatchNormalizationGrad(self.eps, expander, axis, None, None).apply(
            (x, gamma, mean, var, gy))


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
    y = _chainer_batch_normalization(x, gamma, beta, eps=eps, running_mean=running_mean,
                                     running_var=running_var, decay=decay, axis=axis)
    return F.relu(y) if relu else y


def fixed_batch_normalization(x, gamma, beta, mean, var, eps=2e-5, axis=None):
    """Drop-in for :func:`chainer.functions.fixed_batch_normalization` (default axes fast)."""
    if axis is None and _fast_ok(x, gamma, beta, mean, var):
        y, = FixedBatchNormalizationFast(eps).apply((x, gamma, beta, mean, var))
        return y
    return _chainer_fixed_batch_normalization(x, gamma, beta, mean, var, eps=eps, axis=axis)
