"""2-D convolution for NumPy arrays: one im2col copy, one GEMM, no transposes of the columns.

Layout
------
The input is padded once; the column matrix is a strided *view* of the padded
input in the order ``(C, kh, kw, N, Ho, Wo)``, copied once (on all cores) into
a contiguous ``(K, N*Ho*Wo)`` matrix with ``K = C*kh*kw``. Then

* forward: ``y = W(O, K) @ col`` gives ``(O, N, Ho*Wo)``; a single pass writes it
  to NCHW and adds the bias (and, in inference, a residual and the ReLU);
* backward: ``gW = gy(O, N*Ho*Wo) @ colᵀ`` and ``gcol = Wᵀ @ gy``, two GEMMs on
  the same big matrices; ``gcol`` is added back into a padded ``(C, N, Hp, Wp)``
  buffer with ``kh*kw`` strided ``+=`` (col2im), split over channels across the
  cores, and transposed to NCHW once.

Chunks and wide rows: the batch is processed in chunks of images whose
columns fit in the cache (``_CHUNK_ELEMENTS``, about 4 MiB), so each chunk's
im2col copy is read by its GEMM from the cache, and backward rebuilds each
chunk's columns from ``x`` instead of keeping ``K*N*Ho*Wo`` floats per layer
(only when the whole batch is one chunk are the columns kept, unless
``chainer.config.fast_conv_recompute = True``). Stride-1 layers whose padded
rows (``Wq = W + pw``: the padding between two rows is shared) are close to
their output width use "wide-row" columns (:func:`im2col_wide`): contiguous
runs of ``Ho*Wq`` elements, for a few percent more GEMM columns.

Inference without a graph (``relu`` / ``residual``, see
:class:`Convolution2DFast`) puts the bias in the GEMM and the residual and
ReLU in the write; training's ``backward_accumulate`` adds the gradient of
``x`` from other paths in the write of ``gx``. See docs/performance.md for
measured numbers.

Only ``groups=1``, ``dilate=1``, ``cover_all=False`` and one dtype for ``x``,
``W`` and ``b`` are implemented here; :func:`convolution_2d` hands everything
else (and CuPy / ChainerX arrays, and ``use_fast_kernels=False``) to
:func:`chainer.functions.convolution_2d`, captured at import (so routing
Chainer's name to this module's function cannot make the fallback call
itself). Double backpropagation (``enable_double_backprop=True``) is
supported through Chainer's differentiable formulas.

NaN and inf: forward and ``gW`` add the same products as Chainer's im2col +
GEMM (zeros where the window hangs over the padding, as Chainer's columns).
``gx`` as a convolution of the zero-padded ``gy`` with the flipped kernel
also multiplies weights by zeros that Chainer's col2im never forms, and the
strided kernel multiplies ``gy`` by the zero weights of its stacked phases:
harmless while those are finite (``0 * w == 0``), NaN where Chainer has
none otherwise. So ``gx`` takes GEMM + col2im, Chainer's formula, when ``W``
holds a NaN or inf, or (strided layers) ``gy`` does; both are checked on the
small arrays at hand (``W``, ``gW``/``gb``) before touching ``gy``.
"""
import math

import numpy
from numpy.lib.stride_tricks import as_strided

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.functions.connection import convolution_2d as _chainer_conv
from chainer.functions.connection import deconvolution_2d as _chainer_deconv
from chainer.utils import type_check

from chainer_cifar.functions import _direct, _parallel
from chainer_cifar.functions._elementwise import relu_
from chainer_cifar.functions._config import use_fast


# Chainer's own functions, captured at import so the fallbacks stay Chainer's
# even if someone routes chainer.functions' names to the functions here.
_chainer_convolution_2d = _chainer_conv.convolution_2d
_chainer_deconvolution_2d = _chainer_deconv.deconvolution_2d


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
    _pad_into(xp, x, ph, pw)
    return xp


def _pad_into(xp, x, ph, pw):
    """Write ``x`` into the middle of ``xp`` and zero only the borders around it."""
    h, w = x.shape[2:]
    if ph:
        xp[:, :, :ph, :] = 0
        xp[:, :, ph + h:, :] = 0
    if pw:
        xp[:, :, ph:ph + h, :pw] = 0
        xp[:, :, ph:ph + h, pw + w:] = 0
    _parallel.copyto(xp[:, :, ph:ph + h, pw:pw + w], x)


def im2col_cn(x, kh, kw, sy, sx, ph, pw, ones=False):
    """Columns of ``x`` (N, C, H, W) as a contiguous ``(C, kh, kw, N, Ho, Wo)`` array.

    ``ones=True``: followed in memory by a row of ones (see :func:`_new_columns`).
    """
    n, c, h, w = x.shape
    ho, wo = out_size(h, kh, sy, ph), out_size(w, kw, sx, pw)
    xp = pad_nchw(x, ph, pw)
    s0, s1, s2, s3 = xp.strides
    view = as_strided(xp, (c, kh, kw, n, ho, wo), (s1, s2, s3, s0, s2 * sy, s3 * sx), writeable=False)
    col = _new_columns(view.shape, x.dtype, ones)
    _parallel.copyto(col, view)
    return col


def _new_columns(shape, dtype, ones):
    """An empty contiguous column array; with ``ones``, one more row of ones after it in memory.

    The GEMM then reads ``(K+1, L)`` rows and a weight matrix with the bias as
    its last column adds the bias for free (inference), so the write to NCHW
    is a plain copy that can apply the ReLU on the way.
    """
    size = math.prod(shape)  # (numpy.prod is slow on a short tuple)
    if not ones:
        return numpy.empty(shape, dtype=dtype)
    buf = numpy.empty(size + size // (shape[0] * shape[1] * shape[2]), dtype=dtype)
    buf[size:] = 1
    return buf[:size].reshape(shape)


def _rows(col, k, ones):
    """``col`` as its ``(K, L)`` matrix, or ``(K+1, L)`` with the row of ones after it."""
    if not ones:
        return col.reshape(k, -1)
    base = col.base  # the buffer of _new_columns (NumPy keeps the owner as a view's base)
    assert base is not None and base.size == col.size + col.size // k
    return base.reshape(k + 1, -1)


def _shared_pad(x4, ph, pw, kw):
    """``x4`` (A, B, h, w) zero-padded into "shared-pad wide rows"; returns the flat buffer.

    Each ``(a, b)`` block is ``h + 2*ph`` rows of ``Wq = w + pw`` elements: the
    data, then ``pw`` zeros that are the right padding of their row *and* the
    left padding of the next one (and of the first row, through ``pw`` zeros
    in front of the buffer). The buffer ends with ``kw`` zeros, read only by
    discarded outputs. A tap ``(i, j)`` of an output ``t = y*Wq + x`` of a
    block starting at ``s`` in the buffer is then element ``s + t + i*Wq + j``:
    one constant stride per axis, so the columns are a strided view.
    """
    a, b, h, w = x4.shape
    hp, wq = h + 2 * ph, w + pw
    size = a * b * hp * wq
    buf = numpy.empty(pw + size + kw, dtype=x4.dtype)
    buf[:pw] = 0
    buf[pw + size:] = 0
    b4 = buf[pw:pw + size].reshape(a, b, hp, wq)
    if ph:
        b4[:, :, :ph] = 0
        b4[:, :, ph + h:] = 0
    if pw:
        b4[:, :, ph:ph + h, w:] = 0
    _parallel.copyto(b4[:, :, ph:ph + h, :w], x4)
    return buf


def _wide_columns(buf, chan_stride, image_stride, count, kh, kw, ho, wq, ones=False):
    """The ``(C, kh, kw, N, Ho*Wq)`` columns of a :func:`_shared_pad` buffer, copied contiguous."""
    e = buf.itemsize
    c, n = count
    # (ndarray over the fresh contiguous buffer: a bounds-checked view, 10x cheaper than as_strided)
    view = numpy.ndarray((c, kh, kw, n, ho * wq), buf.dtype, buf, 0,
                         (chan_stride * e, wq * e, e, image_stride * e, e))
    col = _new_columns(view.shape, buf.dtype, ones)
    _parallel.copyto(col, view)
    return col


def im2col_wide(x, kh, kw, ph, pw, ones=False):
    """Stride-1 columns in "wide rows": a contiguous ``(C, kh, kw, N, Ho*Wq)`` array, ``Wq = W + pw``.

    Each tap ``(i, j)`` of image ``n`` and channel ``c`` is a contiguous run
    of ``Ho*Wq`` elements of the :func:`_shared_pad` buffer: the GEMM then
    computes ``Wq`` outputs per row, of which the last ``Wq - Wo`` are
    discarded. Long contiguous runs make this copy much cheaper than the
    ``Wo``-long runs of :func:`im2col_cn`, for ``Wq/Wo`` more GEMM columns
    (one more per row for a 3x3 kernel with pad 1: the zero between two rows
    pads both).
    """
    n, c, h, w = x.shape
    hp, wq = h + 2 * ph, w + pw
    buf = _shared_pad(x, ph, pw, kw)
    return _wide_columns(buf, hp * wq, c * hp * wq, (c, n), kh, kw, hp - kh + 1, wq, ones)


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


# The batch is processed in chunks of images whose im2col columns hold about
# this many elements (4 MiB of float32): the columns of one chunk are written
# and read by the GEMM while they are still in the cache, instead of a
# K*N*Ho*Wo matrix (75 MiB for a 16-channel 32x32 layer at batch 128) going
# to memory and back.  Backward rebuilds each chunk's columns from ``x``.
_CHUNK_ELEMENTS = 1 << 20
# Stride-1 convolutions use wide-row columns (:func:`im2col_wide`) when a row
# of Wq elements has at most max(1, Wo * _WIDE_EXTRA) more than the Wo outputs:
# the GEMM does that much more work, for a copy of long runs instead of
# Wo-long ones. Every 3x3 pad-1 layer qualifies (ResNet's 8x8 stage gains 17 %
# per chunk); the CNN's 5x5 pad-2 layer at 16x16 (two extra columns of 16)
# runs 10 % slower wide, and does not. 0 turns wide rows off.
_WIDE_EXTRA = 1 / 16
# Multi-chunk batches are cut into a multiple of this many chunks (see _chunks).
_CHUNK_GROUP = 4


def _use_wide(sy, sx, wo, wq):
    """Wide rows of ``wq`` elements for ``wo`` outputs (``wq = W + pw``, see :func:`_shared_pad`)."""
    return ((sy, sx) == (1, 1) and _WIDE_EXTRA > 0
            and wo <= wq <= wo + max(1, wo * _WIDE_EXTRA))


def _chunks(n, per_image):
    """Equal ``(start, stop)`` image ranges of at most ``_CHUNK_ELEMENTS`` column elements each.

    A batch that needs more than one chunk gets a multiple of ``_CHUNK_GROUP``
    of them, so they share out evenly over two or four threads; the ranges do
    not depend on the number of threads, and neither do the results.
    """
    most = max(1, _CHUNK_ELEMENTS // max(1, per_image))  # images per chunk
    if n <= most:
        return [(0, n)]
    count = -(-n // most)
    count = min(n, -(-count // _CHUNK_GROUP) * _CHUNK_GROUP)
    return _parallel.split(n, count)


def _write_nchw(dst, y_ocn, bb=None, residual=None, relu=False):
    """``dst`` (n, O, ...) = ``y_ocn`` (O, n, ...) transposed, plus a bias ``bb`` (O, 1, ...)
    or a ``residual`` (n, O, ...) (at most one of them), then max(., 0) if ``relu``."""
    assert bb is None or residual is None  # a bias with a residual rides in the GEMM
    src = y_ocn.swapaxes(0, 1)

    def work(a, c):
        d = dst[a:c]
        addend = bb if residual is None else residual[a:c]
        if addend is None:
            numpy.copyto(d, src[a:c])
        else:
            numpy.add(src[a:c], addend, out=d)
        if relu:
            relu_(d)  # in place on the contiguous result: faster than max(src, 0) on the way
    _parallel.run_chunks(work, dst.shape[0], dst.size)


def _ocn_from_nchw(gy):
    """``(n, O, Ho, Wo)`` to a contiguous ``(O, n*Ho*Wo)`` matrix."""
    n, o = gy.shape[:2]
    out = numpy.empty((o, n, gy.shape[2] * gy.shape[3]), dtype=gy.dtype)
    _parallel.copyto(out, gy.reshape(n, o, -1).transpose(1, 0, 2))
    return out.reshape(o, -1)


class Convolution2DFast(function_node.FunctionNode):
    """``y = conv2d(x, W) + b`` on NumPy arrays (groups 1, dilation 1, cover_all False).

    Chunked over the batch (see ``_CHUNK_ELEMENTS``): per chunk one im2col copy,
    one GEMM and one transposing write to NCHW (bias added on the way). When the
    whole batch fits in one chunk the columns are kept for backward unless
    ``fast_conv_recompute`` is set; otherwise backward rebuilds them per chunk.
    """

    col = None
    wide = False
    _acc = None

    def __init__(self, stride=1, pad=0, relu=False, residual=None):
        self.sy, self.sx = _pair(stride)
        self.ph, self.pw = _pair(pad)
        # Inference only (no graph): ``residual`` (an array of the output's
        # shape) is added to each chunk, then ``relu`` takes max(y, 0), while
        # the chunk is in the cache: a ResNet block's relu(h + s) without a
        # pass of its own.
        self.relu = relu
        self.residual = residual

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
        wq = w + self.pw
        self.wide = wide = _use_wide(self.sy, self.sx, wo, wq)  # the columns' layout, for backward too
        relu, residual = self.relu, self.residual
        if (relu or residual is not None) and chainer.config.enable_backprop:
            raise NotImplementedError('Convolution2DFast(relu=True or residual=...) is for inference '
                                      '(enable_backprop=False) only')
        if residual is not None and (residual.shape != (n, o, ho, wo) or residual.dtype != x.dtype):
            raise ValueError('residual of shape {} {} does not match the output {} {}'.format(
                residual.shape, residual.dtype, (n, o, ho, wo), x.dtype))
        if _direct.usable(x, W, b):
            return _direct.conv2d(x, W, b, (self.sy, self.sx), (self.ph, self.pw), residual, relu),
        k = c * kh * kw
        W2 = W.reshape(o, k)
        # Without a graph, the bias is the GEMM's last weight column, against a
        # row of ones under the columns (see _new_columns).
        ones = b is not None and not chainer.config.enable_backprop
        if ones:
            W2 = numpy.concatenate([W2, b.astype(W2.dtype, copy=False)[:, None]], axis=1)
            b = None
        y = numpy.empty((n, o, ho, wo), dtype=x.dtype)
        bb = None if b is None else b.astype(x.dtype, copy=False)[:, None, None]
        chunks = _chunks(n, k * ho * (wq if wide else wo))
        sy, sx, ph, pw = self.sy, self.sx, self.ph, self.pw

        def chunk(ae):
            # One chunk on one core: im2col, GEMM, transposing write (+ bias, + residual, + ReLU).
            a, e = ae
            res = None if residual is None else residual[a:e]
            if wide:
                col = im2col_wide(x[a:e], kh, kw, ph, pw, ones)
                yc = _gemm_wcol(W2, _rows(col, k, ones)).reshape(o, e - a, ho, wq)[:, :, :, :wo]
            else:
                col = im2col_cn(x[a:e], kh, kw, sy, sx, ph, pw, ones)
                yc = _gemm_wcol(W2, _rows(col, k, ones)).reshape(o, e - a, ho, wo)
            _write_nchw(y[a:e], yc, bb, res, relu)
            return col
        cols = _parallel.map_tasks(chunk, chunks, y.size)
        if len(chunks) == 1 and chainer.config.enable_backprop and not _recompute():
            self.col = cols[0]
        return y.reshape(n, o, ho, wo),

    def backward_accumulate(self, target_input_indexes, grad_outputs, grad_inputs):
        """``backward`` plus the gradients from other paths; ``x``'s is added as ``gx`` is written.

        A ResNet block's input feeds the shortcut and the first convolution:
        adding the shortcut's gradient inside the convolution's last pass over
        ``gx`` saves Chainer's separate ``Add`` pass over the activations.
        """
        acc = grad_inputs[0] if target_input_indexes[0] == 0 else None
        if acc is None or chainer.config.enable_backprop or acc.dtype != grad_outputs[0].dtype:
            return super(Convolution2DFast, self).backward_accumulate(
                target_input_indexes, grad_outputs, grad_inputs)
        self._acc = acc.array
        try:
            gxs = self.backward(target_input_indexes, grad_outputs)
        finally:
            self._acc = None
        return (gxs[0],) + tuple(gx if g is None else gx + g
                                 for gx, g in zip(gxs[1:], grad_inputs[1:]))

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        x, W = self.get_retained_inputs()
        if chainer.config.enable_backprop:
            # Double backprop: Chainer's differentiable formulas.
            return _chainer_backward(self, indexes, x, W, gy)
        gy = gy.array
        Wa = W.array
        xa = x.array
        kh, kw = Wa.shape[2:]
        # gx as a convolution of padded gy with the flipped W needs a finite W (see the module's notes)
        w_finite = 0 not in indexes or _finite(Wa)
        stride1 = (self.sy, self.sx) == (1, 1) and self.ph < kh and self.pw < kw and w_finite
        if _direct.usable(gy, Wa):
            return self._backward_direct(indexes, xa, Wa, gy, w_finite)
        return self._backward_gemm(indexes, xa, Wa, gy, stride1)

    def _backward_gemm(self, indexes, xa, Wa, gy, stride1):
        """The gradients in ``indexes`` from im2col + GEMM (gW, gb) and GEMM (+ col2im) (gx)."""
        n, c, h, w = self.x_shape
        o, _, kh, kw = Wa.shape
        _, _, ho, wo = gy.shape
        k = c * kh * kw
        W2 = Wa.reshape(o, k)
        wf = _flipped(Wa) if 0 in indexes and stride1 else None
        gx = numpy.empty((n, c, h, w), dtype=gy.dtype) if 0 in indexes else None
        acc = self._acc if 0 in indexes else None  # x's gradient from other paths (backward_accumulate)
        wide = self.wide
        wq = w + self.pw
        sy, sx, ph, pw = self.sy, self.sx, self.ph, self.pw
        kept = self.col

        def chunk(ae):
            # One chunk on one core; returns its parts of gWᵀ and gb.
            a, e = ae
            m = e - a
            if wide:
                # gy in the wide-row layout of the columns, zero in the discarded columns
                gyw = numpy.empty((o, m, ho, wq), dtype=gy.dtype)
                gyw[:, :, :, wo:] = 0
                _parallel.copyto(gyw[:, :, :, :wo], gy[a:e].swapaxes(0, 1))
                gy2 = gyw.reshape(o, -1)
                gy4 = gyw[:, :, :, :wo]
            else:
                gy2 = _ocn_from_nchw(gy[a:e])  # (O, m*Ho*Wo)
                gy4 = gy2.reshape(o, m, ho, wo)
            if 0 in indexes:
                if stride1:
                    _grad_x_stride1(gy4, Wa, ph, pw, wf=wf, out=gx[a:e],
                                    acc=None if acc is None else acc[a:e])
                else:
                    g2 = _ocn_from_nchw(gy[a:e]) if wide else gy2  # (wide rows hold extra columns)
                    gcol = numpy.dot(W2.T, g2).reshape(c, kh, kw, m, ho, wo)
                    gx[a:e] = col2im_cn(gcol, sy, sx, ph, pw, h, w)
                    if acc is not None:
                        gx[a:e] += acc[a:e]
            gwt = gbc = None
            if 1 in indexes:
                col = kept if (a, e) == (0, n) else None  # kept only for a one-chunk batch
                if col is None:
                    if wide:
                        col = im2col_wide(xa[a:e], kh, kw, ph, pw)
                    else:
                        col = im2col_cn(xa[a:e], kh, kw, sy, sx, ph, pw)
                if wide and wq > wo:
                    # The discarded columns hold inputs of the next row: 0 there, or a NaN or
                    # inf would reach gW through gy's zeros (0 * inf = NaN).
                    col.reshape(k, m, ho, wq)[:, :, :, wo:] = 0
                gwt = numpy.dot(col.reshape(k, -1), gy2.T)  # gWᵀ (K, O): the faster orientation
            if 2 in indexes:
                gbc = gy2.sum(axis=1)
            return gwt, gbc
        parts = _parallel.map_tasks(chunk, _chunks(n, k * ho * (wq if wide else wo)), gy.size)
        # Summed in chunk order: the same result for any number of threads.
        gW = _parallel.sum_in_order(p[0] for p in parts) if 1 in indexes else None
        gb = _parallel.sum_in_order(p[1] for p in parts) if 2 in indexes else None
        self.col = None
        ret = []
        if 0 in indexes:
            ret.append(chainer.Variable(gx))
        if 1 in indexes:
            ret.append(chainer.Variable(numpy.ascontiguousarray(gW.T).reshape(Wa.shape).astype(
                Wa.dtype, copy=False)))
        if 2 in indexes:
            ret.append(chainer.Variable(gb))
        return tuple(ret)

    def _backward_direct(self, indexes, x, W, gy, w_finite=True):
        """With the compiled kernel: ``gx`` (plus the other paths' gradient, see
        :meth:`backward_accumulate`), ``gW`` and ``gb``, for every stride; no columns.

        ``gx`` takes GEMM + col2im instead where the kernel would make a NaN
        Chainer does not (module notes): ``W`` not finite (``w_finite``), or a
        strided layer's ``gy`` not finite, which shows in ``gW`` or ``gb``
        (each sums products of every ``gy`` value) when they are computed.
        """
        stride, pad = (self.sy, self.sx), (self.ph, self.pw)
        gW = gb = None
        if 1 in indexes or 2 in indexes:
            gW, gb = _direct.grad_w(x, gy, W.shape[2], W.shape[3], stride, pad, bias=2 in indexes)
        gx = None
        if 0 in indexes:
            exact = w_finite
            if exact and stride != (1, 1):
                sums = gW if gW is not None else gb
                exact = _finite(gy) if sums is None or not _finite(sums) else True
            if exact:
                gx = _direct.grad_x(gy, W, self.x_shape, stride, pad, acc=self._acc)
            else:
                gx, = self._backward_gemm((0,), x, W, gy, False)
                gx = gx.array
        self.col = None
        ret = []
        if 0 in indexes:
            ret.append(chainer.Variable(gx))
        if 1 in indexes:
            ret.append(chainer.Variable(gW))
        if 2 in indexes:
            ret.append(chainer.Variable(gb))
        return tuple(ret)


def _finite(a):
    """Whether every value of ``a`` is finite (a NaN or inf anywhere: False)."""
    return bool(numpy.isfinite(a).all())


def _gemm_wcol(W, col):
    """``W @ col`` (a view of shape (O, L)) computed as ``(colᵀ @ Wᵀ)ᵀ``.

    The same product, but OpenBLAS's kernels are faster with the long
    dimension L as the product's rows when there are few output channels O
    (``tools/native_layers.py`` times the layers). The callers read the
    result through a transposing copy anyway. Above O=32 the plain product
    is used.
    """
    if W.shape[0] > 32:  # wide outputs: no gain, and the transposed read costs more
        return numpy.dot(W, col)
    return numpy.dot(col.T, W.T).T


def _flipped(W):
    """``W`` (O, C, kh, kw) flipped and transposed to the ``(C, O*kh*kw)`` matrix of the gx convolution."""
    c = W.shape[1]
    return numpy.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(c, -1)


def _grad_x_stride1(gy_ocn, W, ph, pw, wf=None, out=None, acc=None):
    """``gx`` of a stride-1 convolution as a convolution of ``gy`` with the flipped kernel.

    ``gy_ocn`` is ``(O, N, Ho, Wo)``. One im2col of ``gy`` padded by ``k - 1 - p``
    and one GEMM with ``W`` flipped and transposed to ``(C, O*kh*kw)``: about
    half the memory traffic of ``gcol = Wᵀ gy`` followed by col2im. Written to
    ``out`` (N, C, H, W) when given, plus ``acc`` (N, C, H, W) when given.
    """
    o, n, ho, wo = gy_ocn.shape
    _, c, kh, kw = W.shape
    qh, qw = kh - 1 - ph, kw - 1 - pw
    hg = ho + 2 * qh
    h, w = hg - kh + 1, wo + 2 * qw - kw + 1
    wg = wo + qw  # wide rows of the shared-pad buffer, as im2col_wide
    wide = _use_wide(1, 1, w, wg)
    if wide:
        buf = _shared_pad(gy_ocn, qh, qw, kw)  # blocks in (O, N) order
        col = _wide_columns(buf, n * hg * wg, hg * wg, (o, n), kh, kw, h, wg)
    else:
        gp = numpy.zeros((o, n, hg, wo + 2 * qw), dtype=gy_ocn.dtype)
        _parallel.copyto(gp[:, :, qh:qh + ho, qw:qw + wo], gy_ocn)
        s0, s1, s2, s3 = gp.strides
        view = as_strided(gp, (o, kh, kw, n, h, w), (s0, s2, s3, s1, s2, s3), writeable=False)
        col = numpy.empty(view.shape, dtype=gp.dtype)
        _parallel.copyto(col, view)
    if wf is None:
        wf = _flipped(W)
    g = _gemm_wcol(wf, col.reshape(o * kh * kw, -1))
    g = g.reshape(c, n, h, wg)[:, :, :, :w] if wide else g.reshape(c, n, h, w)
    gx = numpy.empty((n, c, h, w), dtype=g.dtype) if out is None else out
    if acc is None:
        _parallel.copyto(gx, g.transpose(1, 0, 2, 3))
    else:
        numpy.add(g.transpose(1, 0, 2, 3), acc, out=gx)
    return gx


def _chainer_backward(node, indexes, x, W, gy):
    ret = []
    if 0 in indexes:
        xh, xw = x.shape[2:]
        ret.append(_chainer_deconvolution_2d(gy, W, stride=(node.sy, node.sx), pad=(node.ph, node.pw),
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


def fast_path(x, W, b=None, cover_all=False, dilate=1, groups=1):
    """Whether :class:`Convolution2DFast` computes this convolution (else Chainer's function does)."""
    return (not cover_all and _pair(dilate) == (1, 1) and groups == 1 and use_fast(x, W, b)
            and x.dtype == W.dtype and (b is None or b.dtype == x.dtype)
            and x.ndim == 4 and W.ndim == 4)


def convolution_2d(x, W, b=None, stride=1, pad=0, cover_all=False, **kwargs):
    """Drop-in for :func:`chainer.functions.convolution_2d` with a fast NumPy path."""
    if not kwargs.get('cudnn_fast', False) and fast_path(
            x, W, b, cover_all, kwargs.get('dilate', 1), kwargs.get('groups', 1)):
        args = (x, W) if b is None else (x, W, b)
        y, = Convolution2DFast(stride, pad).apply(args)
        return y
    return _chainer_convolution_2d(x, W, b, stride, pad, cover_all, **kwargs)
