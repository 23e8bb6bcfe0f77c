"""The fast option-A shortcut node against Chainer's ``F.pad(x[:, :, ::s, ::s])``."""
import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

from chainer_cifar.functions.shortcut import ZeroPadShortcut, zero_pad_shortcut

CASES = [((2, 3, 8, 8), 6, 2), ((2, 4, 7, 5), 8, 2), ((3, 2, 6, 6), 2, 2), ((1, 2, 5, 5), 5, 1),
         ((2, 16, 32, 32), 32, 2), ((2, 3, 9, 9), 3, 3)]


def _chainer(x, out_channels, stride):
    x = chainer.as_variable(x)
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    missing = out_channels - x.shape[1]
    if missing > 0:
        x = F.pad(x, ((0, 0), (missing, 0), (0, 0), (0, 0)), 'constant')
    return x


@pytest.mark.parametrize('shape,cout,stride', CASES)
def test_float32_matches_chainer(shape, cout, stride):
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal(shape).astype(numpy.float32)
    outs = []
    for fast in (True, False):
        v = chainer.Variable(x)
        with chainer.using_config('use_fast_kernels', fast):
            y = zero_pad_shortcut(v, cout, stride)
        assert (type(y.creator).__name__ == 'ZeroPadShortcut') == fast
        gy = numpy.random.RandomState(1).standard_normal(y.shape).astype(numpy.float32)
        y.grad = gy
        y.backward()
        outs.append((y.array, v.grad))
    numpy.testing.assert_array_equal(outs[0][0], outs[1][0])
    numpy.testing.assert_array_equal(outs[0][1], outs[1][1])
    numpy.testing.assert_array_equal(outs[0][0], _chainer(x, cout, stride).array)


@pytest.mark.parametrize('shape,cout,stride', CASES[:4] + CASES[5:])
def test_gradient_check_float64_first_and_second_order(shape, cout, stride):
    rng = numpy.random.RandomState(2)
    x = rng.standard_normal(shape)
    missing = max(0, cout - shape[1])
    y = _chainer(x, cout, stride).array
    gy = rng.standard_normal(y.shape)
    ggx = rng.standard_normal(shape)

    def f(x):
        return ZeroPadShortcut(stride, missing).apply((x,))[0]
    gradient_check.check_backward(f, (x,), gy, dtype=numpy.float64, atol=1e-7, rtol=1e-7)
    gradient_check.check_double_backward(f, (x,), gy, ggx, dtype=numpy.float64, atol=1e-7, rtol=1e-7)


def test_identity_shortcut_is_the_input_itself():
    x = chainer.Variable(numpy.ones((1, 2, 3, 3), numpy.float32))
    assert zero_pad_shortcut(x, 2, 1) is x
