"""Convolutions of float32 NCHW arrays with the compiled direct kernel (``direct_conv.c``).

Used by :class:`~chainer_cifar.functions.convolution.Convolution2DFast`, when
:func:`usable` says so, for the forward pass and the input gradient of every
stride and padding (:func:`grad_x`: a stride-1 convolution of ``gy`` with
the flipped kernel, the phases of a strided layer's input stacked as
channels), and for the weight gradient (:func:`grad_w`); 1x1 layers stay on
GEMM. The batch is
cut into small runs of images, one per task of the thread pool; each run is
zero-padded into a cache-sized buffer and convolved by one C call, which
releases the GIL. Every image is computed the same way whatever the split,
so results do not depend on the number of threads.
"""
import collections

import numpy

from chainer_cifar.functions import _native, _parallel

_OB = 2  # output channels per block in the kernel (its weight layout)
_GW_CHANNELS_LAST_MAX_WIDTH = 16  # measured: faster up to 16x16 planes, not at 32x32 (direct_conv.c)
_IMAGES_PER_TASK = 4


def usable(x, W, b=None):
    """Whether the direct kernel can compute ``conv(x, W, b)`` here (float32, more than one tap)."""
    return (x.dtype == numpy.float32 and W.dtype == numpy.float32
            and (b is None or b.dtype == numpy.float32)
            and W.shape[2] * W.shape[3] > 1  # 1x1: GEMM needs no im2col and wins
            and _native.library() is not None)


def pack_weights(W):
    """``W`` (O, C, kh, kw) as the kernel's ``(ceil(O/2), C*kh*kw, 2)`` channel pairs."""
    o = W.shape[0]
    taps = W[0].size
    blocks = -(-o // _OB)
    wpk = numpy.zeros((blocks * _OB, taps), dtype=numpy.float32)
    wpk[:o] = W.reshape(o, taps)
    return numpy.ascontiguousarray(wpk.reshape(blocks, _OB, taps).transpose(0, 2, 1))


def conv2d(x, W, b, stride, pad, residual=None, relu=False, out=None, packed=None, out_size=None):
    """``relu?(conv(x, W, stride, pad) + b + residual)`` as a new (or ``out``) NCHW array.

    ``x`` (N, C, H, W) and ``W`` (O, C, kh, kw) float32 (check :func:`usable`);
    ``b`` (O,) or None; ``stride`` and ``pad`` (top, left) pairs, the pad
    possibly negative (a crop); ``out_size`` (Ho, Wo) when the bottom and
    right padding differ from the top and left ones; ``residual`` None or the
    output's shape; ``packed``: :func:`pack_weights` of ``W`` when the caller
    reuses it.
    """
    lib = _native.library()
    n, c = x.shape[:2]
    o, _, kh, kw = W.shape
    g = _geometry(x.shape, kh, kw, stride, pad, out_size)
    wpk = pack_weights(W) if packed is None else packed
    bias = None if b is None else numpy.ascontiguousarray(b, dtype=numpy.float32)
    res = None if residual is None else numpy.ascontiguousarray(residual)
    y = numpy.empty((n, o, g.ho, g.wo), dtype=numpy.float32) if out is None else out
    assert y.shape == (n, o, g.ho, g.wo) and y.flags.c_contiguous and y.dtype == numpy.float32
    assert res is None or (res.shape == y.shape and res.dtype == y.dtype)

    def task(ae):
        a, e = ae
        xp = _pad_images(x[a:e], g, pad)
        rc = lib.cc_conv2d_f32(
            xp.ctypes.data, 0, e - a, g.istride, g.rstride, wpk.ctypes.data, o, g.toff.ctypes.data,
            g.toff.size, None if bias is None else bias.ctypes.data,
            None if res is None else res[a:e].ctypes.data, y[a:e].ctypes.data, g.ho, g.wo, int(bool(relu)))
        if rc != 0:
            raise RuntimeError('direct convolution kernel failed ({})'.format(rc))
    tasks = _parallel.split(n, -(-n // _IMAGES_PER_TASK))
    _parallel.map_tasks(task, tasks, y.size * kh * kw)
    return y


def grad_x(gy, W, x_shape, stride, pad, acc=None):
    """The input gradient (+ ``acc``) of ``conv(x, W, stride, pad)`` for ``gy``, as a new array.

    One stride-1 convolution of ``gy``. At stride 1 its kernel is ``W``
    flipped. At stride ``(sy, sx)`` the pixels of ``x`` fall into ``sy*sx``
    phases ``x[py::sy, px::sx]``, each reached by its own subset of the taps
    (rows ``i = (py + ph) % sy + sy*m``); the kernel stacks the phases as
    ``sy*sx*C`` output channels over the union of their tap offsets (2x2 for
    3x3 stride 2: 16 taps for 9, zeros elsewhere), and the phases are then
    written into ``gx`` (plus ``acc``) by one strided pass each. No zeros
    inserted into ``gy``, no col2im.
    """
    n, c, h, w = x_shape
    o, _, kh, kw = W.shape
    (sy, sx), (ph, pw) = stride, pad
    # Per phase and axis: the taps reaching it, as (tap index, gy offset d - m).
    rows = [[(i, (py + ph - i) // sy) for i in range((py + ph) % sy, kh, sy)] for py in range(sy)]
    cols = [[(j, (px + pw - j) // sx) for j in range((px + pw) % sx, kw, sx)] for px in range(sx)]
    offs_y = [d for r in rows for _, d in r]
    offs_x = [d for r in cols for _, d in r]
    if not offs_y or not offs_x:  # no tap reaches any pixel
        return numpy.zeros(x_shape, numpy.float32) if acc is None else numpy.array(acc, numpy.float32)
    lo_y, lo_x = min(offs_y), min(offs_x)
    wu = numpy.zeros((sy * sx, c, o, max(offs_y) - lo_y + 1, max(offs_x) - lo_x + 1), numpy.float32)
    wt = W.transpose(1, 0, 2, 3)  # (C, O, kh, kw)
    for py in range(sy):
        for px in range(sx):
            for i, dy in rows[py]:
                for j, dx in cols[px]:
                    wu[py * sx + px, :, :, dy - lo_y, dx - lo_x] = wt[:, :, i, j]
    wu = wu.reshape(sy * sx * c, o, wu.shape[3], wu.shape[4])
    out_size = (len(range(0, h, sy)), len(range(0, w, sx)))  # phase (0, 0) has the most pixels
    if (sy, sx) == (1, 1):
        return conv2d(gy, wu, None, (1, 1), (-lo_y, -lo_x), residual=acc, out_size=out_size)
    y = conv2d(gy, wu, None, (1, 1), (-lo_y, -lo_x), out_size=out_size)
    gx = numpy.empty(x_shape, dtype=numpy.float32)

    def interleave(a, b):
        for py in range(sy):
            for px in range(sx):
                p = py * sx + px
                dst = gx[a:b, :, py::sy, px::sx]
                src = y[a:b, p * c:(p + 1) * c, :dst.shape[2], :dst.shape[3]]
                if acc is None:
                    numpy.copyto(dst, src)
                else:
                    numpy.add(src, acc[a:b, :, py::sy, px::sx], out=dst)
    _parallel.run_chunks(interleave, n, gx.size)
    return gx


def grad_w(x, gy, kh, kw, stride, pad, bias=False):
    """``(gW, gb)`` of a convolution: ``gW`` (O, C, kh, kw), ``gb`` (O,) with ``bias`` else None.

    Each task pads its images of ``x`` and adds their products with ``gy``
    into its own sums; the tasks' sums are added in task order, so the result
    does not depend on the number of threads. Output planes at most
    ``_GW_CHANNELS_LAST_MAX_WIDTH`` wide with a multiple of 16 channels take
    the channels-last kernel (the task's ``gy`` transposed to (m, Ho*Wo, O)
    first), the rest the plane kernel (direct_conv.c says why).
    """
    lib = _native.library()
    n, c = x.shape[:2]
    o = gy.shape[1]
    g = _geometry(x.shape, kh, kw, stride, pad)
    assert gy.shape == (n, o, g.ho, g.wo) and gy.dtype == numpy.float32
    gy = numpy.ascontiguousarray(gy)
    channels_last = gw_takes_channels_last(o, g.wo)
    taps = g.toff.size

    def task(ae):
        a, e = ae
        xp = _pad_images(x[a:e], g, pad)
        if channels_last:
            gw = numpy.zeros((taps, o), dtype=numpy.float32)
            gyt = numpy.ascontiguousarray(gy[a:e].reshape(e - a, o, -1).transpose(0, 2, 1))
            rc = lib.cc_conv2d_grad_w_cl_f32(xp.ctypes.data, e - a, g.istride, g.rstride, g.toff.ctypes.data,
                                             taps, gyt.ctypes.data, o, gw.ctypes.data, g.ho, g.wo)
        else:
            gw = numpy.zeros((o, taps), dtype=numpy.float32)
            rc = lib.cc_conv2d_grad_w_f32(xp.ctypes.data, 0, e - a, g.istride, g.rstride, g.toff.ctypes.data,
                                          taps, gy[a:e].ctypes.data, o, gw.ctypes.data, g.ho, g.wo)
        if rc != 0:
            raise RuntimeError('direct convolution kernel failed ({})'.format(rc))
        gb = None
        if bias:
            g2 = gy[a:e].reshape((e - a) * o, -1)
            gb = g2.dot(numpy.ones(g2.shape[1], dtype=numpy.float32)).reshape(e - a, o).sum(axis=0)
        return gw, gb
    tasks = _parallel.split(n, -(-n // _IMAGES_PER_TASK))
    parts = _parallel.map_tasks(task, tasks, gy.size * kh * kw)
    gW = _parallel.sum_in_order(p[0] for p in parts)
    if channels_last:
        gW = numpy.ascontiguousarray(gW.T)
    gb = _parallel.sum_in_order(p[1] for p in parts) if bias else None
    return gW.reshape(o, c, kh, kw), gb


def gw_takes_channels_last(o, wo):
    """Whether :func:`grad_w` runs the channels-last kernel for ``o`` channels on planes ``wo`` wide."""
    return o % 16 == 0 and wo <= _GW_CHANNELS_LAST_MAX_WIDTH


_Geometry = collections.namedtuple('_Geometry', 'ho wo sx hp wq toff istride rstride')


def _geometry(x_shape, kh, kw, stride, pad, out_size=None):
    """Output size, padded layout and tap offsets of the kernel's input (see ``direct_conv.c``).

    Each image is ``(C, sx, Hp, Wq)``: channel ``c``'s zero-padded rows, split
    into ``sx`` phase planes of every ``sx``-th column, so the inputs of 8
    neighbouring outputs are 8 consecutive floats for any stride. Planes are
    a whole number of 8-wide vectors plus the kernel's reach wide, so every
    vector load stays inside the image; ``toff[t]`` is tap ``t = (c, i, j)``'s
    offset ``((c*sx + j%sx)*Hp + i)*Wq + j//sx``. The padded image starts
    ``pad`` before the input (after it where negative) and ends where the
    last output needs it: ``out_size`` sets the outputs, by default
    symmetric padding's.
    """
    _, c, h, w = x_shape
    (sy, sx), (ph, pw) = stride, pad
    if out_size is None:
        out_size = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    ho, wo = out_size
    if ho <= 0 or wo <= 0:
        raise ValueError('empty convolution output {}'.format(out_size))
    hp, wq = (ho - 1) * sy + kh, -(-wo // 8) * 8 + (kw - 1) // sx
    j = numpy.arange(kw, dtype=numpy.int64)
    toff = (((numpy.arange(c, dtype=numpy.int64)[:, None, None] * sx + j % sx) * hp
             + numpy.arange(kh, dtype=numpy.int64)[:, None]) * wq + j // sx).ravel()
    return _Geometry(ho, wo, sx, hp, wq, toff, c * sx * hp * wq, sy * wq)


def _pad_images(x, g, pad):
    """``x`` (m, C, H, W) zero-padded by ``pad`` into a new ``(m, C, sx, Hp, Wq)`` array (see :func:`_geometry`).

    One C pass (``cc_pad_f32``) for a contiguous float32 ``x``, else NumPy's
    strided copies (the reference, and slower on ResNet-20's shapes:
    ``tools/native_layers.py``).
    """
    m, c, h, w = x.shape
    ph, pw = pad
    sx = g.sx
    xp = numpy.empty((m, c, sx, g.hp, g.wq), dtype=numpy.float32)
    lib = _native.library()
    if lib is not None and x.dtype == numpy.float32 and x.flags.c_contiguous:
        lib.cc_pad_f32(x.ctypes.data, m, c, h, w, sx, g.hp, g.wq, ph, pw, xp.ctypes.data)
        return xp
    # padded row r holds input row r - ph: rows r0..r1-1 hold input, the rest are zeros
    r0 = min(max(ph, 0), g.hp)
    r1 = max(r0, min(ph + h, g.hp))
    xp[:, :, :, :r0] = 0
    xp[:, :, :, r1:] = 0
    for q in range(sx):
        # plane q holds padded columns k*sx + q, i.e. input columns k*sx + q - pw
        k0 = min(max(0, -(-(pw - q) // sx)), g.wq)
        k1 = max(k0, min(g.wq, -(-(w + pw - q) // sx)))
        plane = xp[:, :, q, r0:r1]
        plane[:, :, :, :k0] = 0
        plane[:, :, :, k1:] = 0
        if k1 > k0 and r1 > r0:
            s0 = k0 * sx + q - pw
            numpy.copyto(plane[:, :, :, k0:k1],
                         x[:, :, r0 - ph:r1 - ph, s0:s0 + (k1 - k0 - 1) * sx + 1:sx])
    return xp
