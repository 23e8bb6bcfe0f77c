"""BatchNormalization with the fused ReLU (``relu=True``) against Chainer's ``F.relu(F.batch_normalization(...))``.

float32 runs the compiled kernels (``batch_norm.c``) where they are available
and NumPy otherwise; both are checked here against Chainer and each other.
"""
import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

import chainer_cifar.functions as CF
from chainer_cifar import links as FL
from chainer_cifar.functions import batch_norm as bn
from chainer_cifar.functions.batch_norm import BatchNormalizationFast
from helpers import native_available

SHAPES = [(4, 3), (5, 2, 3, 3), (3, 4, 5, 2), (8, 3, 4, 4), (2, 16, 8, 8), (6, 1, 1, 1),
          (3, 5, 5, 5), (2, 3, 32, 32), (2, 4, 7, 3),  # rows of 25, 1024 and 21: vector tails
          # 65,536 and 72,000 values per channel (batch 128 at 32x32 has 131,072): under NumPy 1
          # a float32 array divided by that count was float64, which the kernel read as float32
          (64, 2, 32, 32), (3, 1, 150, 160)]


def _inputs(shape, dtype, seed):
    rng = numpy.random.RandomState(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.uniform(-0.5, 0.5, c).astype(dtype)
    return x, gamma, beta, rng


@pytest.mark.parametrize('shape', SHAPES)
def test_float32_matches_chainer(shape, threads):
    x, gamma, beta, rng = _inputs(shape, numpy.float32, 0)
    gy = rng.standard_normal(shape).astype(numpy.float32)
    mean_f, var_f = numpy.zeros(shape[1], numpy.float32), numpy.ones(shape[1], numpy.float32)
    mean_c, var_c = mean_f.copy(), var_f.copy()

    def run(fn):
        vs = [chainer.Variable(a) for a in (x, gamma, beta)]
        y = fn(*vs)
        y.grad = gy
        y.backward()
        return y.array, [v.grad for v in vs]
    y, g = run(lambda x, g, b: CF.batch_normalization(x, g, b, running_mean=mean_f, running_var=var_f,
                                                         relu=True))
    y2, g2 = run(lambda x, g, b: F.relu(F.batch_normalization(x, g, b, running_mean=mean_c,
                                                              running_var=var_c)))
    assert y.dtype == numpy.float32 and (y >= 0).all()
    numpy.testing.assert_allclose(y, y2, rtol=1e-4, atol=1e-4)
    for a, r in zip(g, g2):
        assert a.dtype == numpy.float32
        numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
    numpy.testing.assert_allclose(mean_f, mean_c, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(var_f, var_c, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('shape', SHAPES[:5])
@pytest.mark.parametrize('relu', [False, True])
def test_gradient_check_float64(shape, relu):
    # inputs whose outputs keep clear of the ReLU's kink, so finite differences are valid
    for seed in range(50):
        x, gamma, beta, rng = _inputs(shape, numpy.float64, seed)
        y = F.batch_normalization(x, gamma, beta).array
        if numpy.abs(y).min() > 1e-3:
            break
    else:
        pytest.skip('no input clear of the kink')
    gy = rng.standard_normal(shape)

    def f(x, g, b):
        return BatchNormalizationFast(2e-5, relu=relu).apply((x, g, b))[0]
    gradient_check.check_backward(f, (x, gamma, beta), gy, dtype=numpy.float64, eps=1e-6,
                                  atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('train', [True, False])
def test_link_relu_argument_on_both_paths(train):
    x, _, _, rng = _inputs((4, 3, 5, 5), numpy.float32, 3)
    ys = []
    for fast in (True, False):
        bn = FL.BatchNormalization(3)
        bn.gamma.array[:] = [0.5, 1.0, 1.5]
        bn.beta.array[:] = [-0.2, 0.0, 0.3]
        with chainer.using_config('train', train), chainer.using_config('use_fast_kernels', fast):
            y = bn(x, relu=True)
            names = {type(y.creator).__name__}
        ys.append(y.array)
        if fast and train:
            assert names == {'BatchNormalizationFast'}  # ReLU fused, no separate node
        else:
            assert names == {'ReLU'}
    numpy.testing.assert_allclose(ys[0], ys[1], rtol=1e-4, atol=1e-4)
    assert (ys[0] >= 0).all()


def test_inference_without_backprop_fuses_the_relu_into_fixed_batch_norm():
    from chainer_cifar.functions.batch_norm import FixedBatchNormalizationFast
    x, gamma, beta, rng = _inputs((4, 3, 5, 5), numpy.float32, 4)
    mean = rng.standard_normal(3).astype(numpy.float32)
    var = rng.uniform(0.5, 2.0, 3).astype(numpy.float32)
    y, = FixedBatchNormalizationFast(2e-5, relu=True).apply((x, gamma, beta, mean, var))
    ref = F.relu(F.fixed_batch_normalization(x, gamma, beta, mean, var)).array
    numpy.testing.assert_allclose(y.array, ref, rtol=1e-5, atol=1e-5)
    bn = FL.BatchNormalization(3)
    bn.avg_mean[:], bn.avg_var[:] = mean, var
    with chainer.using_config('train', False):
        with chainer.no_backprop_mode():
            fused = bn(x, relu=True).array
        with chainer.using_config('use_fast_kernels', False), chainer.no_backprop_mode():
            stock = bn(x, relu=True).array
        graph = bn(x, relu=True)  # with backprop: separate ReLU node, differentiable
    assert type(graph.creator).__name__ == 'ReLU'
    numpy.testing.assert_allclose(fused, stock, rtol=1e-4, atol=1e-4)
    numpy.testing.assert_allclose(graph.array, stock, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('shape', SHAPES)
def test_compiled_kernels_match_the_numpy_path(shape, relu, monkeypatch):
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    used = []
    real = bn._native_lib
    monkeypatch.setattr(bn, '_native_lib', lambda *a: used.append(real(*a)) or used[-1])
    x, gamma, beta, rng = _inputs(shape, numpy.float32, 4)
    x[0] += 30  # a large mean, far from the shift taken from the first group
    gy = rng.standard_normal(shape).astype(numpy.float32)
    results = []
    for native in (True, False):
        running = [numpy.zeros(shape[1], numpy.float32), numpy.ones(shape[1], numpy.float32)]
        with chainer.using_config('use_native_kernels', native):
            vs = [chainer.Variable(a) for a in (x, gamma, beta)]
            y = CF.batch_normalization(*vs, running_mean=running[0], running_var=running[1], relu=relu)
            y.grad = gy
            y.backward()
        results.append([y.array] + [v.grad for v in vs] + running)
    assert used[0] is not None and used[1] is not None  # forward and backward ran the kernels
    assert used[2] is None and used[3] is None
    for a, r in zip(*results):
        assert a.dtype == numpy.float32
        numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)


def test_non_contiguous_input_and_gradient_on_the_compiled_path():
    x, gamma, beta, rng = _inputs((4, 3, 6, 10), numpy.float32, 5)
    xs = x[:, :, :, ::2]  # a view with strides
    gys = rng.standard_normal(x.shape).astype(numpy.float32)[:, :, :, 1::2]
    vs = [chainer.Variable(a) for a in (xs, gamma, beta)]
    y = CF.batch_normalization(*vs, relu=True)
    y.grad = gys
    y.backward()
    ref = [chainer.Variable(a) for a in (numpy.ascontiguousarray(xs), gamma, beta)]
    y2 = F.relu(F.batch_normalization(*ref))
    y2.grad = numpy.ascontiguousarray(gys)
    y2.backward()
    numpy.testing.assert_allclose(y.array, y2.array, rtol=1e-4, atol=1e-4)
    for a, r in zip(vs, ref):
        numpy.testing.assert_allclose(a.grad, r.grad, rtol=1e-4, atol=1e-4)


def test_kernel_pointers_refuse_arrays_of_the_wrong_dtype_or_layout():
    # The C side reads raw memory: a float64 or strided array must be an error, not garbage.
    assert bn._ptr(None) is None
    assert bn._ptr(numpy.zeros(3, numpy.float32)) is not None
    assert bn._ptr(numpy.zeros(3), numpy.float64) is not None
    with pytest.raises(TypeError, match='float32'):
        bn._ptr(numpy.zeros(3))
    with pytest.raises(TypeError, match='strided'):
        bn._ptr(numpy.zeros((3, 4), numpy.float32)[:, ::2])
