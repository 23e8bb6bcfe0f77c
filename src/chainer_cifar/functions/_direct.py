"""Stride-1 convolutions of float32 NCHW arrays with the compiled direct kernel (``direct_conv.c``).

Used by :class:`~chainer_cifar.functions.convolution.Convolution2DFast` for
the forward pass of stride-1 layers and for the gradient of their input (a
stride-1 convolution of ``gy`` with the flipped kernel), when
:func:`usable` says so; everything else stays on im2col + GEMM. The batch is
cut into small runs of images, one per task of the thread pool; each run is
zero-padded into a cache-sized buffer and convolved by one C call, which
releases the GIL. Every image is computed the same way whatever the split,
so results do not depend on the number of threads.
"""
import numpy

from chainer_cifar.functions import _native, _parallel

_OB = 2  # output channels per block in the kernel (its weight layout)
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


def conv2d_s1(x, W, b, ph, pw, residual=None, relu=False, out=None, packed=None):
    """``relu?(conv(x, W, stride 1, pad (ph, pw)) + b + residual)`` as a new (or ``out``) NCHW array.

    ``x`` (N, C, H, W) and ``W`` (O, C, kh, kw) float32 (check :func:`usable`);
    ``b`` (O,) or None; ``residual`` None or the output's shape; ``packed``:
    :func:`pack_weights` of ``W`` when the caller reuses it.
    """
    lib = _native.library()
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    ho, wo, hp, wp, toff = _geometry(x.shape, kh, kw, ph, pw)
    wpk = pack_weights(W) if packed is None else packed
    bias = None if b is None else numpy.ascontiguousarray(b, dtype=numpy.float32)
    res = None if residual is None else numpy.ascontiguousarray(residual)
    y = numpy.empty((n, o, ho, wo), dtype=numpy.float32) if out is None else out
    assert y.shape == (n, o, ho, wo) and y.flags.c_contiguous and y.dtype == numpy.float32
    assert res is None or (res.shape == y.shape and res.dtype == y.dtype)

    def task(ae):
        a, e = ae
        xp = _pad_images(x[a:e], hp, wp, ph, pw)
        rc = lib.cc_conv2d_s1_f32(
            xp.ctypes.data, 0, e - a, c, hp, wp, wpk.ctypes.data, o, toff.ctypes.data, toff.size,
            None if bias is None else bias.ctypes.data, None if res is None else res[a:e].ctypes.data,
            y[a:e].ctypes.data, ho, wo, int(bool(relu)))
        if rc != 0:
            raise RuntimeError('direct convolution kernel failed ({})'.format(rc))
    tasks = _parallel.split(n, -(-n // _IMAGES_PER_TASK))
    _parallel.map_tasks(task, tasks, y.size * kh * kw)
    return y


def grad_w_s1(x, gy, kh, kw, ph, pw, bias=False):
    """``(gW, gb)`` of a stride-1 convolution: ``gW`` (O, C, kh, kw), ``gb`` (O,) with ``bias`` else None.

    Each task pads its images of ``x`` and adds their products with ``gy``
    into its own ``(O, C*kh*kw)`` sums; the tasks' sums are added in task
    order, so the result does not depend on the number of threads.
    """
    lib = _native.library()
    n, c = x.shape[:2]
    o = gy.shape[1]
    ho, wo, hp, wp, toff = _geometry(x.shape, kh, kw, ph, pw)
    assert gy.shape == (n, o, ho, wo) and gy.dtype == numpy.float32
    gy = numpy.ascontiguousarray(gy)

    def task(ae):
        a, e = ae
        xp = _pad_images(x[a:e], hp, wp, ph, pw)
        gw = numpy.zeros((o, toff.size), dtype=numpy.float32)
        rc = lib.cc_conv2d_s1_grad_w_f32(xp.ctypes.data, 0, e - a, c, hp, wp, toff.ctypes.data,
                                         toff.size, gy[a:e].ctypes.data, o, gw.ctypes.data, ho, wo)
        if rc != 0:
            raise RuntimeError('direct convolution kernel failed ({})'.format(rc))
        gb = None
        if bias:
            g2 = gy[a:e].reshape((e - a) * o, -1)
            gb = g2.dot(numpy.ones(g2.shape[1], dtype=numpy.float32)).reshape(e - a, o).sum(axis=0)
        return gw, gb
    tasks = _parallel.split(n, -(-n // _IMAGES_PER_TASK))
    parts = _parallel.map_tasks(task, tasks, gy.size * kh * kw)
    gW = _parallel.sum_in_order(p[0] for p in parts).reshape(o, c, kh, kw)
    gb = _parallel.sum_in_order(p[1] for p in parts) if bias else None
    return gW, gb


def _geometry(x_shape, kh, kw, ph, pw):
    """``(Ho, Wo, Hp, Wp, toff)``: output size, padded size and tap offsets for the kernel.

    Rows are padded to a whole number of 8-wide vectors plus the kernel's
    reach, so every vector load stays inside the padded image; ``toff[t]`` is
    tap ``t = (c, i, j)``'s offset ``c*Hp*Wp + i*Wp + j``.
    """
    _, c, h, w = x_shape
    ho, wo = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    hp, wp = ho + kh - 1, -(-wo // 8) * 8 + kw - 1
    toff = ((numpy.arange(c, dtype=numpy.int64) * (hp * wp))[:, None, None]
            + (numpy.arange(kh, dtype=numpy.int64) * wp)[:, None] + numpy.arange(kw)).ravel()
    return ho, wo, hp, wp, toff


def _pad_images(x, hp, wp, ph, pw):
    """``x`` (m, C, H, W) at ``[ph:ph+H, pw:pw+W]`` of a new ``(m, C, hp, wp)`` array, zeros around it."""
    m, c, h, w = x.shape
    xp = numpy.empty((m, c, hp, wp), dtype=numpy.float32)
    xp[:, :, :ph] = 0
    xp[:, :, ph + h:] = 0
    xp[:, :, ph:ph + h, :pw] = 0
    xp[:, :, ph:ph + h, pw + w:] = 0
    numpy.copyto(xp[:, :, ph:ph + h, pw:pw + w], x)
    return xp
