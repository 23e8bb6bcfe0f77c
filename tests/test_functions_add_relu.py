"""The fused residual merge ``relu(a + b)`` against Chainer's ``F.relu(a + b)``.

float32 runs the compiled loops (``elementwise.c``) where they are available
and NumPy otherwise; both must give Chainer's results bit for bit.
"""
import importlib

import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

from chainer_cifar.functions.add_relu import AddReLU, add_relu
from helpers import native_available

add_relu_module = importlib.import_module('chainer_cifar.functions.add_relu')  # the package exports the function
SHAPES = [(3, 4), (2, 3, 5, 5), (4, 16, 8, 8), (1, 1, 1, 1), (16, 16, 32, 33)]  # the last one threaded


def _away_from_kink(shape, dtype, seed):
    rng = numpy.random.RandomState(seed)
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    s = a + b
    bad = numpy.abs(s) < 0.05
    a[bad] += 0.2  # keep every sum clear of 0, where the ReLU has its kink
    return a, b, rng


@pytest.mark.parametrize('native', [True, False])
@pytest.mark.parametrize('shape', SHAPES + [()])
def test_float32_matches_chainer_and_uses_one_node(shape, native, threads, monkeypatch):
    if native and not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    calls = []
    real = add_relu_module._run_compiled
    monkeypatch.setattr(add_relu_module, '_run_compiled', lambda name, *a: calls.append(name) or real(name, *a))
    a, b, rng = _away_from_kink(shape, numpy.float32, 0)
    gy = rng.standard_normal(shape).astype(numpy.float32)
    res = []
    for fast in (True, False):
        va, vb = chainer.Variable(a), chainer.Variable(b)
        with chainer.using_config('use_fast_kernels', fast), chainer.using_config('use_native_kernels', native):
            y = add_relu(va, vb)
            y.grad = gy
            y.backward(enable_double_backprop=True)  # keeps the gradient's creator to look at
        assert (type(y.creator).__name__ == 'AddReLU') == fast
        if fast:  # the gradient is masked by one node, shared by both inputs
            assert type(va.grad_var.creator).__name__ == 'MaskedGrad'
            assert va.grad_var is vb.grad_var
        res.append((y.array, va.grad, vb.grad))
    assert calls == (['cc_add_relu_f32', 'cc_masked_grad_f32'] if native else [])
    for f, c in zip(*res):
        assert f.dtype == numpy.float32
        numpy.testing.assert_array_equal(f, c)


@pytest.mark.parametrize('shape', SHAPES)
def test_gradient_check_float64_first_and_second_order(shape):
    a, b, rng = _away_from_kink(shape, numpy.float64, 1)
    gy = rng.standard_normal(shape)
    gga, ggb = rng.standard_normal(shape), rng.standard_normal(shape)

    def f(a, b):
        return AddReLU().apply((a, b))[0]
    gradient_check.check_backward(f, (a, b), gy, dtype=numpy.float64, eps=1e-4, atol=1e-7, rtol=1e-7)
    gradient_check.check_double_backward(f, (a, b), gy, (gga, ggb), dtype=numpy.float64, eps=1e-4,
                                         atol=1e-7, rtol=1e-7)


def test_falls_back_on_shape_mismatch_and_non_numpy():
    class NotNumpy(numpy.ndarray):
        pass
    a = numpy.ones((2, 3), numpy.float32)
    assert type(add_relu(a.view(NotNumpy), a).creator).__name__ == 'ReLU'
    y = add_relu(a, numpy.ones((1, 3), numpy.float32))  # broadcasting: Chainer's path
    assert type(y.creator).__name__ == 'ReLU'
    assert F.relu is not None
