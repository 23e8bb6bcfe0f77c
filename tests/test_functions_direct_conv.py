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
from test_functions import merged_reference


def native_available():
    """Whether the kernel runs here; a failure instead of False when CI requires it."""
    ok = _native.library() is not None
    if not ok and os.environ.get('CHAINER_CIFAR_REQUIRE_NATIVE') == '1':
        pytest.fail('CHAINER_CIFAR_REQUIRE_NATIVE=1 but ' + _native.status())
    return ok


@pytest.fixture
def native():
    if not native_available():
        pytest.skip('the direct convolution kernel cannot be built here: ' + _native.status())


SHAPES = [
    # (N, C, H, W, O, (kh, kw), (ph, pw))
    (2, 16, 32, 32, 16, (3, 3), (1, 1)),   # ResNet stage 1
    (3, 32, 16, 16, 32, (3, 3), (1, 1)),   # stage 2
    (2, 64, 8, 8, 64, (3, 3), (1, 1)),     # stage 3: 4 rows per block
    (1, 3, 7, 9, 5, (3, 3), (1, 1)),       # odd sizes, odd O, batch 1
    (2, 2, 12, 13, 3, (5, 5), (2, 2)),     # the CNN's 5x5 pad 2, width 13: a masked tail
    (2, 3, 6, 17, 4, (3, 3), (0, 0)),      # no padding, width 15
    (3, 2, 5, 4, 1, (3, 2), (1, 0)),       # non-square kernel and padding, 3-wide rows, one channel
    (1, 1, 3, 3, 2, (3, 3), (2, 2)),       # padding larger than the kernel's reach
    (2, 4, 9, 41, 7, (1, 3), (0, 1)),      # a row wider than one block (6 vectors)
]


def _inputs(shape, seed=0):
    n, c, h, w, o, (kh, kw), _ = shape
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((n, c, h, w)).astype(numpy.float32)
    W = rng.standard_normal((o, c, kh, kw)).astype(numpy.float32)
    b = rng.standard_normal(o).astype(numpy.float32)
    return x, W, b, rng


def _reference(x, W, b, pad):
    return F.convolution_2d(x.astype(numpy.float64), W.astype(numpy.float64),
                            None if b is None else b.astype(numpy.float64), 1, pad).array


@pytest.mark.parametrize('shape', SHAPES)
@pytest.mark.parametrize('merge', ['plain', 'bias', 'bias_residual_relu', 'residual'])
def test_direct_kernel_matches_chainer_float64(shape, merge, native, threads):
    x, W, b, rng = _inputs(shape)
    pad = shape[-1]
    b = b if 'bias' in merge else None
    ref, residual, relu = merged_reference(_reference(x, W, b, pad), merge, rng)
    y = _direct.conv2d_s1(x, W, b, pad[0], pad[1], residual=residual, relu=relu)
    assert y.dtype == numpy.float32 and y.shape == ref.shape
    numpy.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * numpy.sqrt(W[0].size))


@pytest.mark.parametrize('shape', SHAPES)
def test_input_gradient_is_the_adjoint_of_the_forward(shape, native):
    # <conv(x), gy> = <x, gx> for the gx the convolution node computes with the
    # kernel (stride 1: gy convolved with the flipped weights).
    x, W, _, rng = _inputs(shape, 1)
    pad = shape[-1]
    if pad[0] >= W.shape[2] or pad[1] >= W.shape[3]:
        pytest.skip('pad >= kernel: gx takes the col2im path')
    xv = chainer.Variable(x)
    y = CF.convolution_2d(xv, W, None, 1, pad)
    gy = rng.standard_normal(y.shape).astype(numpy.float32)
    y.grad = gy
    y.backward()
    lhs = numpy.vdot(y.array.astype(numpy.float64), gy)
    rhs = numpy.vdot(x.astype(numpy.float64), xv.grad)
    assert abs(lhs - rhs) <= 1e-5 * (abs(lhs) + 1) * numpy.sqrt(y.size)
    ref_gx = F.deconvolution_2d(gy.astype(numpy.float64), W.astype(numpy.float64), None, 1, pad,
                                outsize=x.shape[2:]).array
    numpy.testing.assert_allclose(xv.grad, ref_gx, rtol=1e-5, atol=1e-5 * numpy.sqrt(W.size))


def test_results_do_not_depend_on_threads_or_tasks(native, monkeypatch):
    x, W, b, _ = _inputs(SHAPES[0])
    results = []
    old = _parallel.num_threads()
    try:
        for threads, per_task in ((1, 4), (2, 4), (2, 1), (2, 3)):
            _parallel.set_num_threads(threads)
            monkeypatch.setattr(_direct, '_IMAGES_PER_TASK', per_task)
            results.append(_direct.conv2d_s1(x, W, b, 1, 1))
    finally:
        _parallel.set_num_threads(old)
    for r in results[1:]:
        numpy.testing.assert_array_equal(r, results[0])


def test_convolution_uses_the_kernel_for_stride_1_float32_only(native, monkeypatch):
    calls = []
    real = _direct.conv2d_s1
    monkeypatch.setattr(_direct, 'conv2d_s1', lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    x, W, b, _ = _inputs(SHAPES[3])
    with chainer.no_backprop_mode():
        CF.convolution_2d(x, W, b, 1, 1)
        assert len(calls) == 1
        CF.convolution_2d(x, W, b, 2, 1)                           # stride 2: im2col + GEMM
        CF.convolution_2d(x.astype('d'), W.astype('d'), None, 1, 1)  # float64: im2col + GEMM
        CF.convolution_2d(x, W[:, :, :1, :1], None, 1, 0)          # 1x1: GEMM
        with chainer.using_config('use_native_conv', False):
            CF.convolution_2d(x, W, b, 1, 1)
    assert len(calls) == 1


def test_training_step_matches_the_im2col_path(native):
    # The same float32 gradients with the kernel (forward and gx) and without it.
    x, W, b, rng = _inputs(SHAPES[4], 2)
    gy = rng.standard_normal(_reference(x, W, b, (2, 2)).shape).astype(numpy.float32)
    grads = []
    for on in (True, False):
        with chainer.using_config('use_native_conv', on):
            vs = [chainer.Variable(a) for a in (x, W, b)]
            y = CF.convolution_2d(*vs, stride=1, pad=2)
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
    assert len(built) == 1 and built[0].startswith('direct_conv-') and built[0].endswith('.so')
    assert str(tmp_path) in _native.status()


def test_use_native_conv_false_reports_off():
    with chainer.using_config('use_native_conv', False):
        assert _native.library() is None
        assert _native.status().startswith('off')
