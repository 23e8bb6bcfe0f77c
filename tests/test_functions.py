"""The fast NumPy kernels against Chainer's reference functions.

float64: ``chainer.gradient_check`` (first order, and second order where the
node supports it); float32: outputs and gradients equal to Chainer's within
tolerance. Small shapes only; timings live in tools/bench.py.
"""
import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

import chainer_cifar.functions as CF
from chainer_cifar.functions.batch_norm import BatchNormalizationFast, FixedBatchNormalizationFast
from helpers import (BN_SHAPES, CONV_CASES, assert_convolution_matches_chainer, check_convolution_backward,
                     check_convolution_double_backward, conv_args, grads, pooling_window_in_padding)


@pytest.mark.parametrize('case', CONV_CASES)
def test_convolution_float32_matches_chainer(case, threads):
    assert_convolution_matches_chainer(case)


@pytest.mark.parametrize('case', CONV_CASES)
def test_convolution_gradient_check_float64(case):
    check_convolution_backward(case)


@pytest.mark.parametrize('case', CONV_CASES[:4])
def test_convolution_double_backward_float64(case):
    check_convolution_double_backward(case)


def test_convolution_falls_back_for_unsupported_options():
    rng = numpy.random.RandomState(3)
    x = rng.standard_normal((1, 4, 6, 6)).astype(numpy.float32)
    W = rng.standard_normal((4, 2, 3, 3)).astype(numpy.float32)
    y = CF.convolution_2d(x, W, None, 1, 1, groups=2)
    assert y.creator.__class__.__name__ != 'Convolution2DFast'
    numpy.testing.assert_allclose(y.array, F.convolution_2d(x, W, None, 1, 1, groups=2).array)
    W1 = rng.standard_normal((3, 4, 3, 3)).astype(numpy.float32)
    for kwargs in ({'cover_all': True}, {'dilate': 2}):
        y = CF.convolution_2d(x, W1, None, 2, 1, **kwargs)
        assert y.creator.__class__.__name__ != 'Convolution2DFast'


POOL_CASES = [
    # (shape, ksize, stride, pad)
    ((2, 3, 7, 9), 3, 2, 1),
    ((1, 2, 6, 6), 2, None, 0),
    ((2, 2, 8, 7), 3, 2, 0),
    ((2, 2, 5, 5), 3, 1, 1),
    ((1, 1, 9, 9), (3, 2), (2, 3), (1, 0)),
    ((1, 2, 32, 32), 3, 2, 0),
]


@pytest.mark.parametrize('case', POOL_CASES)
@pytest.mark.parametrize('cover_all', [True, False])
def test_max_pooling_matches_chainer(case, cover_all, threads):
    shape, k, s, p = case
    rng = numpy.random.RandomState(4)
    x = rng.standard_normal(shape).astype(numpy.float32)
    x[:, :, ::2, ::3] = 0  # ties (as after a ReLU): the gradient goes to the first maximum
    y_ref = F.max_pooling_2d(x, k, s, p, cover_all).array
    gy = rng.standard_normal(y_ref.shape).astype(numpy.float32)
    y, (gx,) = grads(lambda v: CF.max_pooling_2d(v, k, s, p, cover_all), (x,), gy)
    y2, (gx2,) = grads(lambda v: F.max_pooling_2d(v, k, s, p, cover_all), (x,), gy)
    assert y.shape == y2.shape
    numpy.testing.assert_array_equal(y, y2)
    numpy.testing.assert_allclose(gx, gx2, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('case', POOL_CASES)
def test_max_pooling_routes_ties_to_the_first_maximum_in_row_major_order(case, threads):
    # Values in {0, 1, 2}: most windows hold several maxima, in every arrangement.
    shape, k, s, p = case
    rng = numpy.random.RandomState(6)
    x = rng.randint(0, 3, size=shape).astype(numpy.float32)
    y_ref = F.max_pooling_2d(x, k, s, p).array
    gy = rng.standard_normal(y_ref.shape).astype(numpy.float32)
    y, (gx,) = grads(lambda v: CF.max_pooling_2d(v, k, s, p), (x,), gy)
    _, (gx_ref,) = grads(lambda v: F.max_pooling_2d(v, k, s, p), (x,), gy)
    numpy.testing.assert_array_equal(y, y_ref)
    numpy.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)


# A window wholly in the padding gives -inf, where finite differences mean nothing.
@pytest.mark.parametrize('case,cover_all', [(case, cover_all) for case in POOL_CASES[:5] for cover_all in (True, False)
                                            if not pooling_window_in_padding(*case, cover_all)])
def test_max_pooling_gradient_check_float64(case, cover_all):
    shape, k, s, p = case
    rng = numpy.random.RandomState(5)
    x = rng.permutation(numpy.prod(shape)).reshape(shape).astype(numpy.float64)  # no ties
    y = F.max_pooling_2d(x, k, s, p, cover_all).array
    gy = rng.standard_normal(y.shape)
    ggx = rng.standard_normal(shape)

    def f(v):
        return CF.max_pooling_2d(v, k, s, p, cover_all)
    gradient_check.check_backward(f, (x,), gy, dtype=numpy.float64, eps=0.1, atol=1e-6, rtol=1e-6)
    gradient_check.check_double_backward(f, (x,), gy, (ggx,), dtype=numpy.float64, eps=0.1,
                                         atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('case', POOL_CASES)
def test_average_pooling_matches_chainer(case, threads):
    shape, k, s, p = case
    rng = numpy.random.RandomState(6)
    x = rng.standard_normal(shape).astype(numpy.float32)
    y_ref = F.average_pooling_2d(x, k, s, p).array
    gy = rng.standard_normal(y_ref.shape).astype(numpy.float32)
    y, (gx,) = grads(lambda v: CF.average_pooling_2d(v, k, s, p), (x,), gy)
    y2, (gx2,) = grads(lambda v: F.average_pooling_2d(v, k, s, p), (x,), gy)
    numpy.testing.assert_allclose(y, y2, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(gx, gx2, rtol=1e-5, atol=1e-6)
    x64 = x.astype(numpy.float64)
    f = lambda v: CF.average_pooling_2d(v, k, s, p)  # noqa: E731
    gradient_check.check_backward(f, (x64,), gy.astype(numpy.float64), dtype=numpy.float64)
    gradient_check.check_double_backward(f, (x64,), gy.astype(numpy.float64),
                                         (rng.standard_normal(shape),), dtype=numpy.float64)


@pytest.mark.parametrize('shape', BN_SHAPES)
def test_batch_normalization_gradient_check_float64(shape):
    rng = numpy.random.RandomState(7)
    x = rng.standard_normal(shape)
    gamma, beta = rng.uniform(0.5, 1.5, shape[1]), rng.standard_normal(shape[1])
    gy = rng.standard_normal(shape)
    if numpy.prod(shape) // shape[1] > 1:
        gradient_check.check_backward(lambda *a: BatchNormalizationFast().apply(a)[0],
                                      (x, gamma, beta), gy, dtype=numpy.float64, atol=1e-5, rtol=1e-5)
    args = (x, gamma, beta, rng.standard_normal(shape[1]), rng.uniform(0.5, 1.5, shape[1]))
    f = lambda *a: FixedBatchNormalizationFast().apply(a)[0]  # noqa: E731
    gradient_check.check_backward(f, args, gy, dtype=numpy.float64, atol=1e-5, rtol=1e-5)
    gradient_check.check_double_backward(f, args, gy, [rng.standard_normal(a.shape) for a in args],
                                         dtype=numpy.float64, atol=1e-4, rtol=1e-4)


def test_switch_and_global_default():
    assert chainer.global_config.use_fast_kernels in (True, False)
    x = numpy.zeros((1, 1, 4, 4), numpy.float32)
    assert CF.fast_kernels_enabled() == chainer.global_config.use_fast_kernels
    with chainer.using_config('use_fast_kernels', False):
        assert not CF.fast_kernels_enabled()
        assert CF.max_pooling_2d(x, 2).creator.__class__.__name__ != 'MaxPooling2DFast'
    with chainer.using_config('use_fast_kernels', True):
        assert CF.max_pooling_2d(x, 2).creator.__class__.__name__ == 'MaxPooling2DFast'
    old = chainer.global_config.use_fast_kernels
    try:
        CF.set_fast_kernels(False)
        assert not CF.fast_kernels_enabled()
    finally:
        CF.set_fast_kernels(old)


@pytest.mark.parametrize('case', [CONV_CASES[0], CONV_CASES[3], CONV_CASES[4]])
def test_convolution_recompute_mode_matches(case):
    rng = numpy.random.RandomState(13)
    x, W, b, s, p = conv_args(case, numpy.float32, rng)
    gy = rng.standard_normal(F.convolution_2d(x, W, b, s, p).shape).astype(numpy.float32)
    f = lambda x, W, b: CF.convolution_2d(x, W, b, s, p)  # noqa: E731
    y, g = grads(f, (x, W, b), gy)
    with chainer.using_config('fast_conv_recompute', True):
        y2, g2 = grads(f, (x, W, b), gy)
    numpy.testing.assert_array_equal(y, y2)
    for a, r in zip(g, g2):
        if r is not None:
            numpy.testing.assert_array_equal(a, r)
