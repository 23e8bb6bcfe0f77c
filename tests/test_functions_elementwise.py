"""The element-wise helpers of the fused kernels against plain NumPy."""
import numpy
import pytest

from chainer_cifar.functions._elementwise import channel_sums, relu_


@pytest.mark.parametrize('shape', [(4, 16, 32, 32), (2, 64, 8, 8), (3, 5, 7), (7, 17, 33), (1,), (0, 3)])
@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float64])
def test_relu_in_place_equals_numpy_maximum(shape, dtype):
    rng = numpy.random.RandomState(0)
    a = rng.standard_normal(shape).astype(dtype)
    if a.size:
        a.flat[0] = numpy.nan  # propagates, as numpy.maximum's does
    expected = numpy.maximum(a, 0)
    relu_(a)
    numpy.testing.assert_array_equal(a, expected)


def test_relu_in_place_on_a_strided_view_leaves_the_rest_alone():
    a = numpy.random.RandomState(1).standard_normal((8, 1024)).astype(numpy.float32)
    before = a.copy()
    relu_(a[:, ::2])
    numpy.testing.assert_array_equal(a[:, ::2], numpy.maximum(before[:, ::2], 0))
    numpy.testing.assert_array_equal(a[:, 1::2], before[:, 1::2])


@pytest.mark.parametrize('shape', [(3, 4, 1024), (2, 3, 100), (5, 2, 7)])
def test_channel_sums_match_float64_sums(shape):
    rng = numpy.random.RandomState(2)
    d = rng.standard_normal(shape).astype(numpy.float32)
    e = rng.standard_normal(shape).astype(numpy.float32)
    s1, s2 = channel_sums(d)
    d64 = d.astype(numpy.float64)
    numpy.testing.assert_allclose(s1, d64.sum(axis=(0, 2)), rtol=1e-5, atol=1e-3)
    numpy.testing.assert_allclose(s2, (d64 * d64).sum(axis=(0, 2)), rtol=1e-5)
    _, se = channel_sums(d, e)
    numpy.testing.assert_allclose(se, (d64 * e).sum(axis=(0, 2)), rtol=1e-4, atol=1e-3)
