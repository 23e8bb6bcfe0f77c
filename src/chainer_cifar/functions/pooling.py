"""2-D max and average pooling for NumPy arrays, without im2col.

Max pooling is done in two separable 1-D stages (along the rows, then along
the columns of row maxima), each a running ``numpy.maximum`` over strided
slices of the padded input; the position of each stage's maximum is kept as
one ``int8`` per stage output (together the first maximum in window order, as
Chainer's ``argmax`` gives), and only when backpropagation is enabled.
Backward adds ``gy`` where the index matches into each slice, stage by stage:
no scatter with ``numpy.add.at``. Average pooling sums the ``kh*kw`` strided
slices. Images are split across the cores.

In float32, where the compiled kernels run, max pooling is one pass of
``pooling.c`` instead: each output is the maximum over its window's taps in a
register, with its first argmax as one ``int8`` flat tap index, and backward
adds ``gy`` at that index. ``relu=True`` gives ``max_pooling_2d(relu(x))`` in
the same pass (the ReLU is monotonic, so it commutes with the maximum), so a
conv -> ReLU -> pool stage needs no ReLU node.

NaN and inf as in Chainer (NumPy's ``max`` and ``argmax`` over the window):
a window holding a NaN gives NaN, and its gradient goes to the first NaN.
With ``relu=True`` Chainer's gradient is the pooled gradient times
``relu(x) > 0``, which at a window's argmax is ``y > 0``: windows whose
maximum is not positive send ``gy * 0`` (0, or NaN for a NaN or inf ``gy``)
to their argmax. The compiled kernel marks them by storing the tap ``t`` as
``~t``; the NumPy passes keep the mask ``y > 0``.

Both pooling gradients are FunctionNodes with their own backward, so double
backpropagation works. Anything not handled here (CuPy, ChainerX,
``use_fast_kernels=False``, ``return_indices=True``) goes to Chainer.
"""
import numpy

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.utils import type_check

from chainer_cifar.functions import _native, _parallel
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


def _taps(a, axis, k, s, n):
    """The ``k`` strided views ``a[..., t : t + s*(n-1) + 1 : s, ...]`` along ``axis``."""
    out = []
    for t in range(k):
        index = [slice(None)] * a.ndim
        index[axis] = slice(t, t + s * (n - 1) + 1, s)
        out.append(a[tuple(index)])
    return out


def _phase_ranges(geo, r):
    """For phase ``r`` (padded columns ``r, r+s, ...``): its length, and which of its
    entries ``[i0, i1)`` are the input columns ``j0, j0+s, ...``."""
    s, pw, w = geo.sx, geo.pw, geo.in_shape[3]
    length = len(range(r, geo.wp, s))
    i0 = max(0, -(-(pw - r) // s))
    i1 = min(length, -(-(pw + w - r) // s))
    return length, i0, max(i0, i1), r + s * i0 - pw


def _phases(geo, x, fill):
    """The padded input's column phases ``padded[..., r::sx]``, built from ``x`` directly.

    NumPy's loops are several times slower on a strided last axis; with the
    columns split into contiguous phases every tap of the column stage is a
    slice with a contiguous last axis, and the padded array is never made.
    """
    n, c, h, w = x.shape
    ph = geo.ph
    out = []
    for r in range(min(geo.sx, geo.kw)):
        length, i0, i1, j0 = _phase_ranges(geo, r)
        p = numpy.empty((n, c, geo.hp, length), dtype=x.dtype)
        p[:, :, :ph] = fill
        p[:, :, ph + h:] = fill
        p[:, :, ph:ph + h, :i0] = fill
        p[:, :, ph:ph + h, i1:] = fill
        p[:, :, ph:ph + h, i0:i1] = x[:, :, :, j0::geo.sx][..., :i1 - i0]
        out.append(p)
    return out


def _unphase(geo, phases, out):
    """Adjoint of :func:`_phases`: the input-sized part of each phase written to ``out``."""
    h = out.shape[2]
    if geo.kw < geo.sx:
        out[...] = 0  # columns in no window
    for r, p in enumerate(phases):
        _, i0, i1, j0 = _phase_ranges(geo, r)
        out[:, :, :, j0::geo.sx][..., :i1 - i0] = p[:, :, geo.ph:geo.ph + h, i0:i1]


def _col_taps(phases, k, s, n):
    return [phases[t % s][..., t // s:t // s + n] for t in range(k)]


def _max_taps(taps, index, out=None, idx=None, nan=False):
    """Running maximum over ``taps``; with ``index``, the first argmax (int8), else ``None``.

    A later tap replaces the running maximum only when strictly greater, so
    ties go to the first tap, as Chainer's ``argmax`` does. Tap ``t`` is
    larger than every earlier index, so the index update is a ``maximum``
    with ``t * mask``: integer passes instead of a slow masked copy. ``out``
    and ``idx`` are written when given. ``numpy.maximum`` passes NaN on; with
    ``nan`` the index also goes to the first NaN (NumPy's argmax), which
    costs two more passes per tap, so the caller asks for it only when the
    output holds a NaN.
    """
    shape = taps[0].shape
    out = numpy.empty(shape, dtype=taps[0].dtype) if out is None else out
    if index:
        idx = numpy.empty(shape, dtype=numpy.int8) if idx is None else idx
    if len(taps) == 1:
        numpy.copyto(out, taps[0])
        if index:
            idx[...] = 0
        return out, (idx if index else None)
    if not index:
        numpy.maximum(taps[0], taps[1], out=out)
        for v in taps[2:]:
            numpy.maximum(out, v, out=out)
        return out, None
    mask = numpy.empty(shape, dtype=bool)
    m8 = mask.view(numpy.int8)

    def newer(v, best):
        # mask = v replaces the running maximum ``best``
        numpy.greater(v, best, out=mask)
        if nan:
            numpy.logical_or(mask, numpy.isnan(v) & ~numpy.isnan(best), out=mask)
    newer(taps[1], taps[0])
    numpy.maximum(taps[0], taps[1], out=out)
    numpy.copyto(idx, m8)
    for t, v in enumerate(taps[2:], 2):
        newer(v, out)
        m8 *= t
        numpy.maximum(idx, m8, out=idx)
        numpy.maximum(out, v, out=out)
    return out, idx


def _add_masked(views, g, idx):
    """``views[t] += g`` where ``idx == t``, for every tap ``t``.

    ``g * mask`` is the fast way; a NaN or inf in ``g`` would make NaN at every
    other tap (``inf * 0``), so then the slower masked copy of ``g`` into zeros.
    """
    mask = numpy.empty(g.shape, dtype=bool)
    tmp = numpy.empty(g.shape, dtype=g.dtype)
    finite = bool(numpy.isfinite(g).all())
    for t, view in enumerate(views):
        numpy.equal(idx, t, out=mask)
        if finite:
            numpy.multiply(g, mask, out=tmp)
        else:
            tmp[...] = 0
            numpy.copyto(tmp, g, where=mask)
        view += tmp


def _scatter_rows(g, idx, k, s, size):
    """Adjoint of the row stage (axis 2): ``g`` added at each argmax row."""
    shape = g.shape[:2] + (size,) + g.shape[3:]
    out = numpy.zeros(shape, dtype=g.dtype)
    _add_masked(_taps(out, 2, k, s, g.shape[2]), g, idx)
    return out


def _scatter_cols(g, idx, geo):
    """Adjoint of the column stage: ``g`` added at each argmax column, as column phases."""
    n = g.shape[-1]
    phases = [numpy.zeros(g.shape[:-1] + (_phase_ranges(geo, r)[0],), dtype=g.dtype)
              for r in range(min(geo.sx, geo.kw))]
    _add_masked(_col_taps(phases, geo.kw, geo.sx, n), g, idx)
    return phases


def _take_masked(views, idx, out=None):
    """Adjoint of :func:`_add_masked`: ``out`` takes ``views[t]`` where ``idx == t`` (0 elsewhere)."""
    out = numpy.zeros(idx.shape, dtype=views[0].dtype) if out is None else out
    mask = numpy.empty(idx.shape, dtype=bool)
    for t, view in enumerate(views):
        numpy.equal(idx, t, out=mask)
        numpy.copyto(out, view, where=mask)
    return out


def _gather_1d(src, idx, axis, k, s):
    """Adjoint of one stage's scatter: each output takes ``src`` at its argmax."""
    return _take_masked(_taps(src, axis, k, s, idx.shape[axis]), idx)


# Max pooling is separable: the maximum over each row of the window (axis 3),
# then over those row maxima (axis 2). The argmax is kept per stage, first
# the column within each row, then the row: the first maximum in row-major
# window order, which is Chainer's. Each stage reads each input once per tap;
# the 2-D version read it kh*kw times for the maximum and twice more for the
# index.


def _max_2d(geo, x, index, out=None, ih=None, iw=None, nan=False):
    taps = _col_taps(_phases(geo, x, -numpy.inf), geo.kw, geo.sx, geo.wo)
    r, iw = _max_taps(taps, index, idx=iw, nan=nan)
    y, ih = _max_taps(_taps(r, 2, geo.kh, geo.sy, geo.ho), index, out=out, idx=ih, nan=nan)
    return y, (ih, iw)


def _window_taps(geo, a):
    """Every tap's view of padded ``a``, in row-major window order: view ``t`` is the compiled
    kernel's flat index ``t = i * kw + j``."""
    return [geo.window(a, i, j) for i in range(geo.kh) for j in range(geo.kw)]


def _compiled(geo, *arrays):
    """The compiled kernels when they take these float32 arrays and this window, else None."""
    if geo.kh * geo.kw > 127 or not all(a.dtype == numpy.float32 for a in arrays):
        return None
    return _native.library()


def _check(rc, name):
    if rc != 0:
        raise RuntimeError('max pooling kernel {} failed ({})'.format(name, rc))


def _pool_compiled(geo, x, y, idx, relu):
    """``y`` (and ``idx`` unless None) with pooling.c, the batch split across the threads."""
    fn = _native.library().cc_maxpool_f32
    n, c, h, w = geo.in_shape
    per_x, per_y = c * h * w, c * geo.ho * geo.wo

    def work(a, b):
        _check(fn(x.ctypes.data + a * per_x * 4, (b - a) * c, h, w, geo.kh, geo.kw, geo.sy, geo.sx,
                  geo.ph, geo.pw, geo.ho, geo.wo, y.ctypes.data + a * per_y * 4,
                  None if idx is None else idx.ctypes.data + a * per_y, int(relu)), 'cc_maxpool_f32')
    _parallel.run_chunks(work, n, x.size)


def _indexed_compiled(name, geo, src, idx, out):
    """pooling.c's scatter (``name`` ``cc_maxpool_grad_f32``: ``src`` output-sized, ``out``
    input-sized) or gather (``cc_maxpool_gather_f32``: the other way round) at ``idx``."""
    fn = getattr(_native.library(), name)
    n, c, h, w = geo.in_shape
    small, big = c * geo.ho * geo.wo, c * h * w
    per_src, per_out = (small, big) if name == 'cc_maxpool_grad_f32' else (big, small)

    def work(a, b):
        _check(fn(src.ctypes.data + a * per_src * 4, idx.ctypes.data + a * small, (b - a) * c, h, w,
                  geo.kw, geo.sy, geo.sx, geo.ph, geo.pw, geo.ho, geo.wo,
                  out.ctypes.data + a * per_out * 4), name)
    _parallel.run_chunks(work, n, n * big)


def _unmask_flat(idx):
    """``(tap, open)`` of a flat index: a negative ``idx`` is tap ``~idx`` whose gradient is multiplied by 0."""
    closed = idx < 0
    return numpy.where(closed, ~idx, idx), ~closed


def _scatter_flat(geo, gy, idx):
    """Gradient of max pooling from a flat tap index (``~t``: ``gy * 0`` at tap ``t``)."""
    if _compiled(geo, gy) is not None:
        gx = numpy.empty(geo.in_shape, dtype=numpy.float32)
        _indexed_compiled('cc_maxpool_grad_f32', geo, numpy.ascontiguousarray(gy), idx, gx)
        return gx
    taps, is_open = _unmask_flat(idx)
    gxp = numpy.zeros(gy.shape[:2] + (geo.hp, geo.wp), dtype=gy.dtype)
    _add_masked(_window_taps(geo, gxp), gy * is_open, taps)
    return geo.unpad(gxp)


def _gather_flat(geo, ggx, idx):
    """Adjoint of :func:`_scatter_flat`: each output takes ``ggx`` at its argmax (-inf in the padding,
    as Chainer's ``MaxPoolingNDWithIndexes``, which gathers from ``ggx`` padded with -inf)."""
    if _compiled(geo, ggx) is not None:
        out = numpy.empty(idx.shape, dtype=ggx.dtype)
        _indexed_compiled('cc_maxpool_gather_f32', geo, numpy.ascontiguousarray(ggx), idx, out)
        return out
    taps, is_open = _unmask_flat(idx)
    # Chainer's gather pads ggx with -inf: an argmax in the padding takes -inf, open or not.
    out = _take_masked(_window_taps(geo, geo.padded(ggx, -numpy.inf)), taps)
    closed = _take_masked(_window_taps(geo, geo.padded(ggx * 0, -numpy.inf)), taps)
    return numpy.where(is_open, out, closed)


def _scatter_max(geo, gy, idx, mask=None):
    """Gradient of max pooling: ``gy`` (times ``mask``, the fused ReLU's ``y > 0``, when given)
    added at each window's argmax, stage by stage."""
    if not isinstance(idx, tuple):
        return _scatter_flat(geo, gy, idx)
    if mask is not None:
        gy = gy * mask
    ih, iw = idx
    n = gy.shape[0]
    gx = numpy.empty(geo.in_shape, dtype=gy.dtype)

    def work(a, b):
        gr = _scatter_rows(gy[a:b], ih[a:b], geo.kh, geo.sy, geo.hp)
        _unphase(geo, _scatter_cols(gr, iw[a:b], geo), gx[a:b])
    _parallel.run_chunks(work, n, gx.size)
    return gx


def _gather_max(geo, ggx, idx, mask=None):
    """Adjoint of :func:`_scatter_max`: each output takes ``ggx`` at its argmax (times ``mask``;
    -inf in the padding, as :func:`_gather_flat`)."""
    if not isinstance(idx, tuple):
        return _gather_flat(geo, ggx, idx)
    if mask is not None:
        out = _gather_max(geo, ggx, idx)
        out *= mask
        return out
    ih, iw = idx
    ggxp = geo.padded(ggx, -numpy.inf)  # (Chainer's gather pads with -inf too)
    n = ih.shape[0]
    out = numpy.empty(ih.shape, dtype=ggx.dtype)

    def work(a, b):
        r = _gather_1d(ggxp[a:b], iw[a:b], 3, geo.kw, geo.sx)
        out[a:b] = _gather_1d(r, ih[a:b], 2, geo.kh, geo.sy)
    _parallel.run_chunks(work, n, out.size * geo.kh * geo.kw)
    return out


class MaxPooling2DFast(function_node.FunctionNode):
    """Max pooling (of ``relu(x)`` when ``relu``); ``idx`` is the compiled kernel's flat
    tap index (``~t``: the ReLU's gradient is closed), or the NumPy path's per-stage
    ``(ih, iw)`` with ``mask`` (``y > 0``) for the ReLU."""

    mask = None

    def __init__(self, ksize, stride=None, pad=0, cover_all=True, relu=False):
        self.geo = _Geometry(ksize, stride, pad, cover_all)
        self.relu = relu

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 1)
        x_type, = in_types
        type_check.expect(x_type.dtype.kind == 'f', x_type.ndim == 4)

    def forward_cpu(self, inputs):
        x, = inputs
        geo = self.geo
        geo.setup(x.shape)
        n, c = x.shape[:2]
        y = numpy.empty((n, c, geo.ho, geo.wo), dtype=x.dtype)
        index = chainer.config.enable_backprop
        if _compiled(geo, x) is not None:
            self.idx = numpy.empty(y.shape, numpy.int8) if index else None
            _pool_compiled(geo, numpy.ascontiguousarray(x), y, self.idx, self.relu)
            return y,
        ih = numpy.empty(y.shape, numpy.int8) if index else None
        iw = numpy.empty((n, c, geo.hp, geo.wo), numpy.int8) if index else None

        def work(a, b):
            xs = numpy.maximum(x[a:b], 0) if self.relu else x[a:b]
            args = (geo, xs, index, y[a:b], ih[a:b] if index else None, iw[a:b] if index else None)
            _max_2d(*args)
            if index and numpy.isnan(y[a:b]).any():
                _max_2d(*args, nan=True)  # again, the index to the first NaN
        _parallel.run_chunks(work, n, x.size)
        self.idx = (ih, iw)
        if self.relu and index:
            # the ReLU's gradient at each window's argmax; a window wholly in the padding (-inf)
            # keeps its argmax there, where gy is dropped and the gather takes -inf (as Chainer)
            self.mask = (y > 0) | numpy.isneginf(y)
        return y,

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self.geo, self.idx, self.mask).apply(grad_outputs)


class _MaxPoolingLinear(function_node.FunctionNode):
    """A linear map fixed by the forward pass's argmax indices (and ReLU mask): each is the other's gradient."""

    def __init__(self, geo, idx, mask=None):
        self.geo = geo
        self.idx = idx
        self.mask = mask


class MaxPooling2DGrad(_MaxPoolingLinear):

    def forward_cpu(self, inputs):
        gy, = inputs
        return _scatter_max(self.geo, gy, self.idx, self.mask),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGradGrad(self.geo, self.idx, self.mask).apply(grad_outputs)


class MaxPooling2DGradGrad(_MaxPoolingLinear):

    def forward_cpu(self, inputs):
        ggx, = inputs
        return _gather_max(self.geo, ggx, self.idx, self.mask),

    def backward(self, indexes, grad_outputs):
        return MaxPooling2DGrad(self.geo, self.idx, self.mask).apply(grad_outputs)


def _avg_sum(geo, x):
    """Sum over each window of the zero-padded ``x``, divided by ``kh*kw``.

    float16 sums in float32, as NumPy's ``mean`` (Chainer's) does.
    """
    xp = geo.padded(x, 0)
    n, c = x.shape[:2]
    acc = numpy.float32 if x.dtype == numpy.float16 else x.dtype
    y = numpy.zeros((n, c, geo.ho, geo.wo), dtype=acc)
    coeff = y.dtype.type(1.0 / (geo.kh * geo.kw))

    def work(a, b):
        for i in range(geo.kh):
            for j in range(geo.kw):
                y[a:b] += geo.window(xp[a:b], i, j)
        y[a:b] *= coeff
    _parallel.run_chunks(work, n, xp.size)
    return y.astype(x.dtype, copy=False)


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


def max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True, return_indices=False, relu=False):
    """Drop-in for :func:`chainer.functions.max_pooling_2d` with a fast NumPy path.

    ``relu=True`` pools ``F.relu(x)`` (in the same pass on the fast path).
    """
    if not return_indices and use_fast(x) and x.ndim == 4:
        y, = MaxPooling2DFast(ksize, stride, pad, cover_all, relu).apply((x,))
        return y
    if relu:
        x = F.relu(x)
    return _chainer_max_pooling_2d(x, ksize, stride, pad, cover_all, return_indices)


def average_pooling_2d(x, ksize, stride=None, pad=0):
    """Drop-in for :func:`chainer.functions.average_pooling_2d` with a fast NumPy path."""
    if use_fast(x) and x.ndim == 4:
        y, = AveragePooling2DFast(ksize, stride, pad).apply((x,))
        return y
    return _chainer_average_pooling_2d(x, ksize, stride, pad)
