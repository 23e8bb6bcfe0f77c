"""The compiled direct convolution (``direct_conv.c``) against Chainer, and its fallbacks.

The kernel is float32 only, so instead of ``gradient_check`` in float64 its
outputs are compared with Chainer's float64 convolution, and its use for the
input gradient is checked as the adjoint of its forward (``<conv(x), gy> ==
<x, gx>``) on shapes that exercise every edge of its blocking: widths that are
not a multiple of 8 (masked stores), planes smaller than one block, odd
numbers of output channels, non-square kernels and paddings, batch 1.

``CHAINER_CIFAR_REQUIRE_NATIVE=1`` (set by CI) turns "cannot be built here"
from a skip into a failure, so the kernel's tests cannot silently vanish.
"""
import os

import numpy
import pytest

import chainer
import chainer.functions as F

import chainer_cifar.functions as CF
from chainer_cifar.functions import _direct, _native, _parallel
from helpers import merged_reference, native_available


@pytest.fixture
def native():
    if not native_available():
        pytest.skip('the direct convolution kernel cannot be built here: ' + _native.status())


SHAPES = [
    # (N, C, H, W, O, (kh, kw), (ph, pw), (sy, sx))
    (2, 16, 32, 32, 16, (3, 3), (1, 1), (1, 1)),   # ResNet stage 1
    (3, 32, 16, 16, 32, (3, 3), (1, 1), (1, 1)),   # stage 2
    (2, 64, 8, 8, 64, (3, 3), (1, 1), (1, 1)),     # stage 3: 4 rows per block
    (1, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1)),       # odd sizes, odd O, batch 1
    (2, 2, 12, 13, 3, (5, 5), (2, 2), (1, 1)),     # the CNN's 5x5 pad 2, width 13: a masked tail
    (2, 3, 6, 17, 4, (3, 3), (0, 0), (1, 1)),      # no padding, width 15
    (3, 2, 5, 4, 1, (3, 2), (1, 0), (1, 1)),       # non-square kernel and padding, 3-wide rows, one channel
    (1, 1, 3, 3, 2, (3, 3), (2, 2), (1, 1)),       # padding larger than the kernel's reach
    (2, 4, 9, 41, 7, (1, 3), (0, 1), (1, 1)),      # a row wider than one block (6 vectors)
    (2, 16, 32, 32, 32, (3, 3), (1, 1), (2, 2)),   # ResNet's transitions: 16 -> 32
    (2, 32, 16, 16, 64, (3, 3), (1, 1), (2, 2)),   # ... and 32 -> 64, 8x8 out
    (1, 3, 9, 11, 5, (3, 3), (1, 1), (2, 2)),      # odd sizes: the last input row and column unused
    (2, 2, 13, 37, 3, (5, 5), (2, 2), (2, 3)),     # unequal strides, sx = 3 phase planes, 2 vectors a row
    (1, 2, 7, 20, 3, (2, 2), (0, 1), (3, 3)),      # stride larger than the kernel: skipped inputs
    (2, 4, 9, 41, 7, (1, 3), (0, 1), (1, 2)),      # kw = 3 over 2 phases, no vertical reach
    (1, 2, 9, 10, 3, (3, 3), (3, 2), (2, 2)),      # strided, padding beyond the kernel's reach
    # shapes for gW's channels-last kernel (O a multiple of 16, planes at most 16 wide):
    (1, 2, 12, 13, 16, (5, 5), (2, 2), (1, 1)),    # 50 taps: a last block of 2 of 6 taps, batch 1
    (3, 5, 9, 11, 48, (3, 3), (1, 1), (2, 2)),     # 3 blocks of 16 channels, 45 taps, odd strided plane
    (5, 7, 10, 6, 32, (1, 3), (0, 1), (1, 2)),     # kw = 3 over 2 phases, 3-wide rows, 2 tasks
]


def _inputs(shape, seed=0):
    n, c, h, w, o, (kh, kw) = shape[:6]
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((n, c, h, w)).astype(numpy.float32)
    W = rng.standard_normal((o, c, kh, kw)).astype(numpy.float32)
    b = rng.standard_normal(o).astype(numpy.float32)
    return x, W, b, rng


def _case(shape, seed):
    """``(x, W, b, pad, stride, gy, rng)`` for a shape of ``SHAPES``, ``gy`` of the output's shape."""
    x, W, b, rng = _inputs(shape, seed)
    pad, stride = shape[6:]
    gy = rng.standard_normal(_reference(x, W, None, pad, stride).shape).astype(numpy.float32)
    return x, W, b, pad, stride, gy, rng


def _reference(x, W, b, pad, stride=1):
    return F.convolution_2d(x.astype(numpy.float64), W.astype(numpy.float64),
                            None if b is None else b.astype(numpy.float64), stride, pad).array


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('merge', ['plain', 'bias', 'bias_residual_relu', 'residual'])
def test_direct_kernel_matches_chainer_float64(shape, merge, native, threads):
    x, W, b, rng = _inputs(shape)
    pad, stride = shape[6:]
    b = b if 'bias' in merge else None
    ref, residual, relu = merged_reference(_reference(x, W, b, pad, stride), merge, rng)
    y = _direct.conv2d(x, W, b, stride, pad, residual=residual, relu=relu)
    assert y.dtype == numpy.float32 and y.shape == ref.shape
    numpy.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * numpy.sqrt(W[0].size))


# The channels-last kernel takes multiples of 16 output channels.
@pytest.mark.parametrize('shape,kernel', [(shape, kernel) for shape in SHAPES
                                          for kernel in ('chosen', 'planes', 'channels_last')
                                          if kernel != 'channels_last' or shape[4] % 16 == 0])
@pytest.mark.parametrize('bias', [False, True])
def test_weight_gradient_matches_chainer_float64(shape, bias, kernel, native, threads, monkeypatch):
    if kernel != 'chosen':
        monkeypatch.setattr(_direct, '_GW_CHANNELS_LAST_MAX_WIDTH', 10 ** 6 if kernel == 'channels_last' else -1)
    x, W, b, pad, stride, gy, _ = _case(shape, 3)
    ref = [chainer.Variable(a.astype(numpy.float64)) for a in (x, W, b)]
    y = F.convolution_2d(ref[0], ref[1], ref[2] if bias else None, stride, pad)
    y.grad = gy.astype(numpy.float64)
    y.backward()
    gW, gb = _direct.grad_w(x, gy, W.shape[2], W.shape[3], stride, pad, bias=bias)
    assert gW.dtype == numpy.float32 and gW.shape == W.shape
    numpy.testing.assert_allclose(gW, ref[1].grad, rtol=1e-4, atol=1e-4 * numpy.sqrt(gy[:, 0].size))
    if bias:
        numpy.testing.assert_allclose(gb, ref[2].grad, rtol=1e-4, atol=1e-4 * numpy.sqrt(gy[:, 0].size))
    else:
        assert gb is None


@pytest.mark.parametrize('acc', [False, True])
@pytest.mark.parametrize('shape', SHAPES)
def test_input_gradient_matches_chainer_float64(shape, acc, native, threads):
    # gx (+ the gradient from other paths) per phase of the strided input
    x, W, _, pad, stride, gy, rng = _case(shape, 6)
    other = rng.standard_normal(x.shape).astype(numpy.float32) if acc else None
    ref = F.deconvolution_2d(gy.astype(numpy.float64), W.astype(numpy.float64), None, stride, pad,
                             outsize=x.shape[2:]).array
    if acc:
        ref = ref + other
    gx = _direct.grad_x(gy, W, x.shape, stride, pad, acc=other)
    assert gx.dtype == numpy.float32 and gx.shape == x.shape
    numpy.testing.assert_allclose(gx, ref, rtol=1e-5, atol=1e-5 * numpy.sqrt(W.size))


@pytest.mark.parametrize('shape', SHAPES)
def test_input_gradient_is_the_adjoint_of_the_forward(shape, native):
    # <conv(x), gy> = <x, gx> for the gx the convolution node computes with
    # the kernel (gy convolved with the flipped weights, per input phase).
    x, W, _, rng = _inputs(shape, 1)
    pad, stride = shape[6:]
    xv = chainer.Variable(x)
    y = CF.convolution_2d(xv, W, None, stride, pad)
    gy = rng.standard_normal(y.shape).astype(numpy.float32)
    y.grad = gy
    y.backward()
    lhs = numpy.vdot(y.array.astype(numpy.float64), gy)
    rhs = numpy.vdot(x.astype(numpy.float64), xv.grad)
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + 1) * numpy.sqrt(y.size)
    ref_gx = F.deconvolution_2d(gy.astype(numpy.float64), W.astype(numpy.float64), None, stride, pad,
                                outsize=x.shape[2:]).array
    numpy.testing.assert_allclose(xv.grad, ref_gx, rtol=1e-5, atol=1e-5 * numpy.sqrt(W.size))


def _leaves_a_window(shape, crop):
    """Whether cropping ``shape``'s input by the negative pads of ``crop`` leaves at least one window."""
    (kh, kw), pad = shape[5], crop[0]
    return shape[2] + 2 * pad[0] >= kh and shape[3] + 2 * pad[1] >= kw


@pytest.mark.parametrize('shape,crop', [(shape, crop) for shape in SHAPES
                                        for crop in (None, ((-1, -2), (5, 4)), ((-3, 0), (2, 9)))
                                        if crop is None or _leaves_a_window(shape, crop)])
def test_compiled_padding_equals_numpys(shape, crop, native):
    # The kernel's padded layout (phase planes, zero borders, negative pads
    # cropping, as grad_x asks for) from cc_pad_f32 and from NumPy's slices.
    x, W = _inputs(shape, 2)[:2]
    (kh, kw), pad, stride = shape[5], shape[6], shape[7]
    out_size = None
    if crop is not None:
        pad, out_size = crop
    g = _direct._geometry(x.shape, kh, kw, stride, pad, out_size)
    compiled = _direct._pad_images(x, g, pad)
    with chainer.using_config('use_native_kernels', False):
        reference = _direct._pad_images(x, g, pad)
    assert not numpy.shares_memory(compiled, reference)
    numpy.testing.assert_array_equal(compiled, reference)


@pytest.mark.parametrize('stride', [(1, 1), (2, 2)])
def test_results_do_not_depend_on_threads_or_tasks(stride, native, monkeypatch):
    # The forward computes each image alone: bitwise the same for any split.
    # gW adds the tasks' sums in task order: the same for any number of threads.
    x, W, b, rng = _inputs((5,) + SHAPES[0][1:])
    gy = rng.standard_normal(_reference(x, W, b, 1, stride).shape).astype(numpy.float32)
    ys, gws = [], {}
    old = _parallel.num_threads()
    try:
        for threads, per_task in ((1, 4), (2, 4), (2, 1), (1, 1), (2, 3)):
            _parallel.set_num_threads(threads)
            monkeypatch.setattr(_direct, '_IMAGES_PER_TASK', per_task)
            ys.append(_direct.conv2d(x, W, b, stride, (1, 1)))
            gws.setdefault(per_task, []).append(_direct.grad_w(x, gy, 3, 3, stride, (1, 1), bias=True))
    finally:
        _parallel.set_num_threads(old)
    for y in ys[1:]:
        numpy.testing.assert_array_equal(y, ys[0])
    for per_task in (4, 1):
        (gw1, gb1), (gw2, gb2) = gws[per_task]
        numpy.testing.assert_array_equal(gw1, gw2)
        numpy.testing.assert_array_equal(gb1, gb2)


def test_convolution_uses_the_kernel_for_float32_layers_with_several_taps_only(native, monkeypatch):
    calls = []
    real = _direct.conv2d
    monkeypatch.setattr(_direct, 'conv2d', lambda *a, **k: calls.append(a[3]) or real(*a, **k))
    x, W, b, _ = _inputs(SHAPES[3])
    with chainer.no_backprop_mode():
        CF.convolution_2d(x, W, b, 1, 1)
        CF.convolution_2d(x, W, b, 2, 1)
        assert calls == [(1, 1), (2, 2)]
        CF.convolution_2d(x.astype('d'), W.astype('d'), None, 1, 1)  # float64: im2col + GEMM
        CF.convolution_2d(x, W[:, :, :1, :1], None, 1, 0)          # 1x1: GEMM
        with chainer.using_config('use_native_kernels', False):
            CF.convolution_2d(x, W, b, 1, 1)
    assert len(calls) == 2


@pytest.mark.parametrize('shape', [SHAPES[4], SHAPES[12]])
def test_training_step_matches_the_im2col_path(shape, native):
    # The same float32 outputs and gradients with the kernel and without it.
    x, W, b, rng = _inputs(shape, 2)
    pad, stride = shape[6:]
    gy = rng.standard_normal(_reference(x, W, b, pad, stride).shape).astype(numpy.float32)
    grads = []
    for on in (True, False):
        with chainer.using_config('use_native_kernels', on):
            vs = [chainer.Variable(a) for a in (x, W, b)]
            y = CF.convolution_2d(*vs, stride=stride, pad=pad)
            y.grad = gy
            y.backward()
            grads.append([y.array] + [v.grad for v in vs])
    for a, r in zip(*grads):
        numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)


def test_a_failed_build_falls_back_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(_native, '_lib', None)  # (monkeypatch puts the loaded library back)
    monkeypatch.setattr(_native, '_why', _native._why)
    monkeypatch.setenv('CC', str(tmp_path / 'no-such-compiler'))
    assert _native.library() is None
    assert 'no C compiler' in _native.status()
    x, W, b, _ = _inputs(SHAPES[3])
    with chainer.no_backprop_mode():
        y = CF.convolution_2d(x, W, b, 1, 1).array  # im2col + GEMM
    numpy.testing.assert_allclose(y, _reference(x, W, b, 1), rtol=1e-4, atol=1e-4)


def test_a_fresh_build_is_cached_under_a_hash_of_the_source(monkeypatch, tmp_path, native):
    if not os.path.exists('/proc/cpuinfo'):
        pytest.skip('Linux only')
    monkeypatch.setattr(_native, '_lib', None)
    monkeypatch.setattr(_native, '_why', _native._why)
    monkeypatch.setenv('CHAINER_CIFAR_NATIVE_CACHE', str(tmp_path))
    assert _native.library() is not None
    built = [p.name for p in tmp_path.iterdir()]
    assert len(built) == 1 and built[0].startswith('native-') and built[0].endswith('.so')
    assert str(tmp_path) in _native.status()


def test_use_native_kernels_false_reports_off():
    with chainer.using_config('use_native_kernels', False):
        assert _native.library() is None
        assert _native.status().startswith('off')
