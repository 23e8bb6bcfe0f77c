"""Max pooling's compiled kernel (``pooling.c``) and the fused ``relu=True``, against Chainer.

float32 takes the compiled kernel where it runs (a flat int8 tap index per
output) and the separable NumPy passes otherwise (a per-stage index); both
must give Chainer's output bit for bit and its gradient, ties included: the
gradient goes to the first maximum in row-major window order. ``relu=True``
must equal ``F.max_pooling_2d(F.relu(x))``. The general geometry cases live
in test_functions.py, which runs whichever path the machine has.
"""
import numpy
import pytest

import chainer
import chainer.functions as F
from chainer import gradient_check

import chainer_cifar.functions as CF
from chainer_cifar import links as FL
from chainer_cifar.functions import pooling
from helpers import native_available, pooling_window_in_padding

CASES = [
    # (shape, ksize, stride, pad, cover_all)
    ((2, 3, 7, 9), 3, 2, 1, True),
    ((1, 2, 6, 6), 2, None, 0, True),
    ((2, 2, 8, 7), 3, 2, 0, False),
    ((2, 2, 5, 5), 3, 1, 1, True),
    ((1, 1, 9, 9), (3, 2), (2, 3), (1, 0), True),  # a window wholly in the padding (-inf)
    ((2, 3, 33, 21), 5, 3, 2, True),
    ((1, 1, 1, 1), 1, 1, 0, True),
    ((2, 1, 3, 20), (1, 3), 1, 0, False),
    ((1, 1, 4, 4), 2, 3, 0, True),  # stride > window: columns no window reads
    ((4, 8, 32, 32), 3, 2, 0, True),  # the article CNN's first pooling, threaded
]


def _ties(shape, seed):
    """Values in {-2, ..., 2}: windows with several maxima, and non-positive windows for the ReLU."""
    return numpy.random.RandomState(seed).randint(-2, 3, size=shape).astype(numpy.float32)


def _run(fn, x, gy):
    v = chainer.Variable(x)
    y = fn(v)
    y.grad = gy
    y.backward()
    return y, v.grad


def _reference(x, gy, k, s, p, cover_all, relu):
    def fn(v):
        return F.max_pooling_2d(F.relu(v) if relu else v, k, s, p, cover_all)
    return _run(fn, x, gy)


@pytest.mark.parametrize('native', [True, False], ids=['compiled', 'numpy'])
@pytest.mark.parametrize('relu', [False, True], ids=['pool', 'relu_pool'])
@pytest.mark.parametrize('case', CASES)
def test_float32_matches_chainer_with_ties(case, relu, native, threads):
    if native and not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    shape, k, s, p, cover_all = case
    x = _ties(shape, 1)
    with chainer.using_config('use_native_kernels', native):
        shape_y = F.max_pooling_2d(x, k, s, p, cover_all).shape
        gy = numpy.random.RandomState(2).standard_normal(shape_y).astype(numpy.float32)
        y_ref, gx_ref = _reference(x, gy, k, s, p, cover_all, relu)
        y, gx = _run(lambda v: CF.max_pooling_2d(v, k, s, p, cover_all, relu=relu), x, gy)
    assert type(y.creator).__name__ == 'MaxPooling2DFast'
    # The compiled kernel keeps one flat index per output, the NumPy passes one per stage.
    assert isinstance(y.creator.idx, tuple) != native
    numpy.testing.assert_array_equal(y.array, y_ref.array)
    numpy.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-6)


# A window wholly in the padding gives -inf, where finite differences mean nothing.
@pytest.mark.parametrize('case', [case for case in CASES[:6] if not pooling_window_in_padding(*case)])
def test_relu_pool_gradient_check_float64(case):
    shape, k, s, p, cover_all = case
    rng = numpy.random.RandomState(3)
    # Distinct values clear of 0: no ties, no kink of the ReLU within eps.
    x = (rng.permutation(numpy.prod(shape)).reshape(shape) - numpy.prod(shape) / 2.0 + 0.5)
    y = F.max_pooling_2d(F.relu(x), k, s, p, cover_all).array
    gy = rng.standard_normal(y.shape)
    ggx = rng.standard_normal(shape)

    def f(v):
        return CF.max_pooling_2d(v, k, s, p, cover_all, relu=True)
    gradient_check.check_backward(f, (x,), gy, dtype=numpy.float64, eps=0.1, atol=1e-6, rtol=1e-6)
    gradient_check.check_double_backward(f, (x,), gy, (ggx,), dtype=numpy.float64, eps=0.1,
                                         atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize('relu', [False, True], ids=['pool', 'relu_pool'])
@pytest.mark.parametrize('case', [CASES[0], CASES[4], CASES[9]])
def test_double_backward_of_the_compiled_path_equals_numpys(case, relu, threads):
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    shape, k, s, p, cover_all = case
    x = _ties(shape, 4)
    rng = numpy.random.RandomState(5)
    results = {}
    for native in (True, False):
        with chainer.using_config('use_native_kernels', native):
            v = chainer.Variable(x)
            y = CF.max_pooling_2d(v, k, s, p, cover_all, relu=relu)
            gy = chainer.Variable(numpy.random.RandomState(6).standard_normal(y.shape).astype(numpy.float32))
            gx, = chainer.grad([y], [v], grad_outputs=[gy], enable_double_backprop=True)
            ggx = rng.standard_normal(shape).astype(numpy.float32) if native else results[True][2]
            ggy, = chainer.grad([gx], [gy], grad_outputs=[ggx])
            results[native] = (gx.array, ggy.array, ggx)
    numpy.testing.assert_allclose(results[True][0], results[False][0], rtol=1e-6, atol=1e-6)
    numpy.testing.assert_array_equal(results[True][1], results[False][1])


@pytest.mark.parametrize('relu', [False, True], ids=['pool', 'relu_pool'])
def test_flat_index_backward_without_the_library(relu, threads):
    # Forward on the kernel, backward with the kernels switched off: the NumPy
    # scatter and gather of the flat index must give the same gradients.
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    shape, k, s, p, cover_all = CASES[0]
    x = _ties(shape, 7)
    out = []
    for native_backward in (True, False):
        v = chainer.Variable(x)
        y = CF.max_pooling_2d(v, k, s, p, cover_all, relu=relu)
        assert not isinstance(y.creator.idx, tuple)
        gy = chainer.Variable(numpy.random.RandomState(9).standard_normal(y.shape).astype(numpy.float32))
        with chainer.using_config('use_native_kernels', native_backward):
            gx, = chainer.grad([y], [v], grad_outputs=[gy], enable_double_backprop=True)
            ggy, = chainer.grad([gx], [gy], grad_outputs=[numpy.random.RandomState(10).standard_normal(shape)
                                                          .astype(numpy.float32)])
        out.append((gx.array, ggy.array))
    numpy.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6, atol=1e-6)
    numpy.testing.assert_array_equal(out[0][1], out[1][1])


def test_compiled_kernel_is_called_for_float32_only(monkeypatch):
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    calls = []
    real = pooling._pool_compiled
    monkeypatch.setattr(pooling, '_pool_compiled', lambda *a: calls.append(a[1].dtype) or real(*a))
    x = _ties((2, 3, 8, 8), 11)
    CF.max_pooling_2d(x, 3, 2)
    CF.max_pooling_2d(x.astype(numpy.float64), 3, 2)
    CF.max_pooling_2d(numpy.zeros((1, 1, 12, 12), numpy.float32), 12)  # 144 taps: no int8 index
    assert calls == [numpy.float32]


def test_no_index_is_kept_without_backprop():
    x = _ties((2, 3, 8, 8), 12)
    with chainer.no_backprop_mode():
        y = CF.max_pooling_2d(x, 3, 2, relu=True)
    assert y.creator is None
    numpy.testing.assert_array_equal(y.array, F.max_pooling_2d(F.relu(x), 3, 2).array)


def test_relu_falls_back_to_chainers_relu_and_pooling():
    x = _ties((2, 3, 8, 8), 13)
    with chainer.using_config('use_fast_kernels', False):
        y = FL.max_pooling_2d(x, 3, 2, relu=True)
    assert type(y.creator).__name__ == 'MaxPoolingND'
    assert type(y.creator.inputs[0].creator).__name__ == 'ReLU'
    numpy.testing.assert_array_equal(y.array, F.max_pooling_2d(F.relu(x), 3, 2).array)
