"""2-D convolution for NumPy arrays: one im2col copy, one GEMM, no transposes of the columns.

Layout
------
The input is padded once; the column matrix is a strided *view* of the padded
input in the order ``(C, kh, kw, N, Ho, Wo)``, copied once (on all cores) into
a contiguous ``(K, N*Ho*Wo)`` matrix with ``K = C*kh*kw``. Then

* forward: ``y = W(O, K) @ col`` gives ``(O, N, Ho*Wo)``; a single pass writes it
  to NCHW and adds the bias;
* backward: ``gW = gy(O, N*Ho*Wo) @ colᵀ`` and ``gcol = Wᵀ @ gy``, two GEMMs on
  the same big matrices; ``gcol`` is added back into a padded ``(C, N, Hp, Wp)``
  buffer with ``kh*kw`` strided ``+=`` (col2im), split over channels across the
  cores, and transposed to NCHW once.

Memory versus recomputation: by default ``col`` is kept from forward to
backward, ``K*N*Ho*Wo`` floats per layer (kh*kw times the input), which is
the fastest; with ``chainer.config.fast_conv_recompute = True`` only ``x`` is
kept and ``col`` is rebuilt in backward (one more im2col copy per layer, about
a third of the peak memory). See docs/performance.md for measured numbers.

Only ``groups=1``, ``dilate=1`` and ``cover_all=False`` are implemented here;
:func:`convolution_2d` hands everything else (and CuPy / ChainerX arrays, and
``use_fast_kernels=False``) to :func:`chainer.functions.convolution_2d`.
Double backpropagation (``enable_double_backprop=True``) is supported through
Chainer's differentiable formulas.
"""
import numpy
from numpy.lib.stride_tricks import as_strided

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.functions.connection import convolution_2d as _chainer_conv
from chainer.utils import type_check

from chainer_cifar.functions import _parallel
from chainer_cifar.functions._config import use_fast


def _recompute():
    """``chainer.config.fast_conv_recompute``: rebuild im2col in backward instead of keeping it."""
    return bool(getattr(chainer.config, 'fast_conv_recompute', False))


def _pair(v):
    if hasattr(v, '__getitem__'):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def out_size(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def pad_nchw(x, ph, pw):
    """Zero-pad the two spatial axes (a contiguous copy, borders only zeroed)."""
    if ph == 0 and pw == 0:
        return x
    n, c, h, w = x.shape
    xp = numpy.empty((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    if ph:
        xp[:, :, :ph, :] = 0
        xp[:, :, ph + h:, :] = 0
    if pw:
        xp[:, :, ph:ph + h, :pw] = 0
        xp[:, :, ph:ph + h, pw + w:] = 0
    _parallel.copyto(xp[:, :, ph:ph + h, pw:pw + w], x)
    return xp


def im2col_cn(x, kh, kw, sy, sx, ph, pw):
    """Columns of ``x`` (N, C, H, W) as a contiguous ``(C, kh, kw, N, Ho, Wo)`` array."""
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, sy, ph), out_size(w, kw, sx, pw)
    xp = pad_nchw(x, ph, pw)
    s0, s1, s2, s3 = xp.strides
    view = as_strided(xp, (c, kh, kw, n, ho, wo), (s1, s2, s3, s0, s2 * sy, s3 * sx), writeable=False)
    col = numpy.empty(view.shape, dtype=x.dtype)
    _parallel.copyto(col, view)
    return col


def col2im_cn(gcol, sy, sx, ph, pw, h, w):
    """Adjoint of :func:`im2col_cn`: ``(C, kh, kw, N, Ho, Wo)`` columns to ``(N, C, h, w)``."""
    c, kh, kw, n, ho, wo = gcol.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    # The sums run in (C, N, Hp, Wp) order, the order of gcol, so both sides
    # of each += walk memory forward; one transpose to NCHW at the end.
    acc = numpy.zeros((c, n, hp, wp), dtype=gcol.dtype)

    def work(a, b):
        for i in range(kh):
            for j in range(kw):
                acc[a:b, :, i:i + sy * (ho - 1) + 1:sy, j:j + sx * (wo - 1) + 1:sx] += gcol[a:b, i, j]
    _parallel.run_chunks(work, c, gcol.size)
    gx = numpy.empty((n, c, h, w), dtype=gcol.dtype)
    _parallel.copyto(gx, acc[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))
    return gx


def _nchw_from_ocn(y_ocn, b, n, o, ho, wo):
    """``(O, N*Ho*Wo)`` GEMM output to contiguous NCHW, adding the bias on the way."""
    src = y_ocn.reshape(o, n, ho * wo).transpose(1, 0, 2)
    y = numpy.empty((n, o, ho, wo), dtype=y_ocn.dtype)
    yv = y.reshape(n, o, ho * wo)
    if b is None:
        _parallel.copyto(yv, src)
    else:
        bb = b.astype(y.dtype, copy=False)[:, None]

        def work(a, c):
            numpy.add(src[a:c], bb, out=yv[a:c])
        _parallel.run_chunks(work, n, y.size)
    return y


class Convolution2DFast(function_node.FunctionNode):
    """``y = conv2d(x, W) + b`` on NumPy arrays (groups 1, dilation 1, cover_all False)."""

    col = None

    def __init__(self, stride=1, pad=0):
        self.sy, self.sx = _pair(stride)
        self.ph, self.pw = _pair(pad)

    def check_type_forward(self, in_types):
        n_in = in_types.size()
        type_check.expect(2 <= n_in, n_in <= 3)
        x_type, w_type = in_types[:2]
        type_check.expect(
            x_type.dtype.kind == 'f', w_type.dtype == x_type.dtype,
            x_type.ndim == 4, w_type.ndim == 4, x_type.shape[1] == w_type.shape[1])
        if type_check.eval(n_in) == 3:
            b_type = in_types[2]
            type_check.expect(b_type.dtype == x_type.dtype, b_type.ndim == 1,
                              b_type.shape[0] == w_type.shape[0])

    def forward_cpu(self, inputs):
        x, W = inputs[:2]
        b = inputs[2] if len(inputs) == 3 else None
        self.retain_inputs((0, 1) if chainer.config.enable_backprop else ())
        n, c, h, w = x.shape
        o, _, kh, kw = W.shape
        ho, wo = out_size(h, kh, self.sy, self.ph), out_size(w, kw, self.sx, self.pw)
        if ho <= 0 or wo <= 0:
            raise ValueError('convolution output would be empty: input {}x{}, kernel {}x{}, '
                             'stride {}, pad {}'.format(h, w, kh, kw, (self.sy, self.sx), (self.ph, self.pw)))
        self.x_shape = x.shape
        col = im2col_cn(x, kh, kw, self.sy, self.sx, self.ph, self.pw)
        y = numpy.dot(W.reshape(o, -1), col.reshape(c * kh * kw, -1))
        if chainer.config.enable_backprop and not _recompute():
            self.col = col
        return _nchw_from_ocn(y, b, n, o, ho, wo),

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        x, W = self.get_retained_inputs()
        if chainer.config.enable_backprop:
            # Double backprop: Chainer's differentiable formulas.
            return _chainer_backward(self, indexes, x, W, gy)
        gy = gy.array
        Wa = W.array
        n, c, h, w = self.x_shape
        o, _, kh, kw = Wa.shape
        _, _, ho, wo = gy.shape
        gy_ocn = numpy.empty((o, n, ho * wo), dtype=gy.dtype)
        _parallel.copyto(gy_ocn, gy.reshape(n, o, ho * wo).transpose(1, 0, 2))
        gy2 = gy_ocn.reshape(o, -1)
        col = self.col
        if col is None:  # fast_conv_recompute: rebuild the columns instead of keeping them
            col = im2col_cn(x.array, kh, kw, self.sy, self.sx, self.ph, self.pw)
        ret = []
        if 0 in indexes:
            if (self.sy, self.sx) == (1, 1) and self.ph < kh and self.pw < kw:
                gx = _grad_x_stride1(gy_ocn.reshape(o, n, ho, wo), Wa, self.ph, self.pw)
            else:
                gcol = numpy.dot(Wa.reshape(o, -1).T, gy2)
                gx = col2im_cn(gcol.reshape(col.shape), self.sy, self.sx, self.ph, self.pw, h, w)
            ret.append(chainer.Variable(gx))
        if 1 in indexes:
            gW = numpy.dot(gy2, col.reshape(c * kh * kw, -1).T).reshape(Wa.shape)
            ret.append(chainer.Variable(gW.astype(Wa.dtype, copy=False)))
        if 2 in indexes:
            ret.append(chainer.Variable(gy2.sum(axis=1)))
        self.col = None
        return tuple(ret)


def _grad_x_stride1(gy_ocn, W, ph, pw):
    """``gx`` of a stride-1 convolution as a convolution of ``gy`` with the flipped kernel.

    ``gy_ocn`` is ``(O, N, Ho, Wo)``. One im2col of ``gy`` padded by ``k - 1 - p``
    and one GEMM with ``W`` flipped and transposed to ``(C, O*kh*kw)``: about
    half the memory traffic of ``gcol = Wᵀ gy`` followed by col2im.
    """
    o, n, ho, wo = gy_ocn.shape
    _, c, kh, kw = W.shape
    qh, qw = kh - 1 - ph, kw - 1 - pw
    h, w = ho + 2 * qh - kh + 1, wo + 2 * qw - kw + 1
    gp = numpy.zeros((o, n, ho + 2 * qh, wo + 2 * qw), dtype=gy_ocn.dtype)
    _parallel.copyto(gp[:, :, qh:qh + ho, qw:qw + wo], gy_ocn)
    s0, s1, s2, s3 = gp.strides
    view = as_strided(gp, (o, kh, kw, n, h, w), (s0, s2, s3, s1, s2, s3), writeable=False)
    col = numpy.empty(view.shape, dtype=gp.dtype)
    _parallel.copyto(col, view)
    wf = numpy.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)
    g = numpy.dot(wf, col.reshape(o * kh * kw, -1))
    gx = numpy.empty((n, c, h, w), dtype=g.dtype)
    _parallel.copyto(gx, g.reshape(c, n, h, w).transpose(1, 0, 2, 3))
    return gx


def _chainer_backward(node, indexes, x, W, gy):
    ret = []
    if 0 in indexes:
        xh, xw = x.shape[2:]
        ret.append(F.deconvolution_2d(gy, W, stride=(node.sy, node.sx), pad=(node.ph, node.pw),
                                      outsize=(xh, xw)))
    if 1 in indexes:
        gW, = _chainer_conv.Convolution2DGradW(
            _StockConv(node), W.shape, W.dtype, None).apply((x, gy))
        ret.append(gW)
    if 2 in indexes:
        ret.append(F.sum(gy, axis=(0, 2, 3)))
    return ret


class _StockConv(object):
    """The attributes Chainer's ``Convolution2DGradW`` reads from its parent node."""

    def __init__(self, node):
        self.sy, self.sx = node.sy, node.sx
        self.ph, self.pw = node.ph, node.pw
        self.dy, self.dx = 1, 1
        self.cover_all = False
        self.groups = 1
        self._use_ideep = False


def convolution_2d(x, W, b=None, stride=1, pad=0, cover_all=False, **kwargs):
    """Drop-in for :func:`chainer.functions.convolution_2d` with a fast NumPy path."""
    dilate = kwargs.get('dilate', 1)
    groups = kwargs.get('groups', 1)
    if (not cover_all and _pair(dilate) == (1, 1) and groups == 1 and use_fast(x, W, b)):
        args = (x, W) if b is None else (x, W, b)
        y, = Convolution2DFast(stride, pad).apply(args)
        return y
    return F.convolution_2d(x, W, b, stride, pad, cover_all, **kwargs)
