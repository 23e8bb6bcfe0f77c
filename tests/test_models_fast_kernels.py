"""The registered models run through the fast NumPy kernels, and through Chainer's when switched off.

Every model is built by ``create_model`` from :mod:`chainer_cifar.links`, so on
NumPy arrays its convolutions, BatchNormalizations and poolings are the
``*Fast`` FunctionNodes of :mod:`chainer_cifar.functions`; under
``use_fast_kernels=False`` they are Chainer's own, with equal outputs and
gradients within float32 tolerance.
"""
import copy

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as CL

from chainer_cifar import links as FL
from chainer_cifar.models import create_model


def creator_classes(y):
    """Names of every FunctionNode class in the graph that produced ``y``."""
    seen, names, stack = set(), set(), [y.creator_node]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(type(node).__name__)
        stack.extend(v.creator_node for v in node.inputs)
    return names


FAST = {'Convolution2DFast', 'BatchNormalizationFast', 'FixedBatchNormalizationFast',
        'MaxPooling2DFast', 'AveragePooling2DFast'}
STOCK = {'Convolution2DFunction', 'BatchNormalization', 'FixedBatchNormalization',
         'MaxPooling2D', 'MaxPoolingND', 'AveragePooling2D', 'AveragePoolingND'}

# model -> the fast nodes a training forward must contain
CASES = {
    'cnn': {'Convolution2DFast', 'MaxPooling2DFast'},
    'cnnbn': {'Convolution2DFast', 'BatchNormalizationFast', 'MaxPooling2DFast'},
    'resnet20': {'Convolution2DFast', 'BatchNormalizationFast'},
    'keras_simple_cnn': {'Convolution2DFast', 'MaxPooling2DFast'},
}


def _forward_backward(model, x, seed, train=True):
    numpy.random.seed(seed)  # dropout draws from numpy.random on the CPU
    model.cleargrads()
    with chainer.using_config('train', train):
        y = model(x)
    loss = F.sum(y * y)
    loss.backward()
    return y, {name: p.grad.copy() for name, p in model.namedparams()}


@pytest.mark.parametrize('name', sorted(CASES))
def test_registered_model_uses_the_fast_nodes_and_matches_chainer(name):
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(numpy.float32)
    numpy.random.seed(1)
    fast_model = create_model(name)
    stock_model = copy.deepcopy(fast_model)

    y_fast, g_fast = _forward_backward(fast_model, x, seed=7)
    names = creator_classes(y_fast)
    assert CASES[name] <= names, names
    assert not names & STOCK, names & STOCK

    with chainer.using_config('use_fast_kernels', False):
        y_stock, g_stock = _forward_backward(stock_model, x, seed=7)
    names = creator_classes(y_stock)
    assert not names & FAST, names & FAST
    assert names & STOCK

    numpy.testing.assert_allclose(y_fast.array, y_stock.array, rtol=1e-4, atol=1e-4)
    for k in g_stock:
        scale = max(1.0, float(numpy.abs(g_stock[k]).max()))
        numpy.testing.assert_allclose(g_fast[k] / scale, g_stock[k] / scale, rtol=1e-3, atol=1e-4,
                                      err_msg=k)
    # BatchNormalization's running statistics move the same way on both paths
    for (k, a), (_, b) in zip(sorted(fast_model.namedlinks()), sorted(stock_model.namedlinks())):
        if hasattr(a, 'avg_mean') and a.avg_mean is not None:
            numpy.testing.assert_allclose(a.avg_mean, b.avg_mean, rtol=1e-4, atol=1e-5, err_msg=k)
            numpy.testing.assert_allclose(a.avg_var, b.avg_var, rtol=1e-4, atol=1e-5, err_msg=k)


def test_test_mode_uses_the_fixed_fast_batch_norm_and_matches_chainer():
    x = numpy.random.RandomState(0).standard_normal((3, 3, 32, 32)).astype(numpy.float32)
    model = create_model('resnet20')
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y_fast = model(x)
        with chainer.using_config('use_fast_kernels', False):
            y_stock = model(x)
    numpy.testing.assert_allclose(y_fast.array, y_stock.array, rtol=1e-4, atol=1e-4)
    with chainer.using_config('train', False):
        names = creator_classes(model(x))
    assert {'Convolution2DFast', 'FixedBatchNormalizationFast'} <= names


class _Applied(chainer.FunctionHook):
    """Records the class name of every function node applied (with or without a graph)."""

    def __init__(self):
        self.names = []

    def forward_preprocess(self, function, in_data):
        self.names.append(type(function).__name__)


def _randomize_batch_norm(model, rng):
    for link in model.links():
        if isinstance(link, CL.BatchNormalization):
            c = link.avg_mean.shape[0]
            link.avg_mean[...] = rng.standard_normal(c)
            link.avg_var[...] = rng.uniform(0.2, 3.0, c)
            link.gamma.array[...] = rng.uniform(0.5, 2.0, c)
            link.beta.array[...] = rng.standard_normal(c)


FOLDED = {
    'resnet20': {}, 'cnnbn': {}, 'vgg': {},
    # conv biases, and the test-time scaling 1 - p of stochastic depth folded too
    'residual': {'res_depth': 2, 'skip_depth': True},
    'resnet20_v1_dropout': {},  # projection shortcuts (a convolution with bias)
}


@pytest.mark.parametrize('name', sorted(FOLDED))
def test_inference_folds_batch_norm_into_the_convolution_with_the_same_outputs(name):
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal((3, 3, 32, 32)).astype(numpy.float32)
    model = create_model(name, **FOLDED[name])
    _randomize_batch_norm(model, rng)
    hook = _Applied()
    with chainer.using_config('train', False):
        with chainer.no_backprop_mode(), hook:
            y_folded = model(x).array
        y_graph = model(x)  # a graph is kept: BN stays a node, the ReLU separate
        with chainer.using_config('use_fast_kernels', False), chainer.no_backprop_mode():
            y_stock = model(x).array
    assert 'FixedBatchNormalizationFast' not in hook.names
    assert 'AddReLU' not in hook.names  # residual blocks merge inside their last convolution
    assert 'FixedBatchNormalizationFast' in creator_classes(y_graph)
    atol = 1e-5 * float(numpy.abs(y_stock).max())  # float32 rounding, at the outputs' scale
    numpy.testing.assert_allclose(y_folded, y_graph.array, rtol=1e-4, atol=atol)
    numpy.testing.assert_allclose(y_folded, y_stock, rtol=1e-4, atol=atol)


@pytest.mark.parametrize('name', ['resnet20', 'vgg', 'pyramid', 'identity_mapping', 'cnnwn',
                                  'resnet20_v1_dropout', 'shake_residual'])
def test_every_conv_and_bn_link_is_the_fast_subclass(name):
    kwargs = {'res_depth': 1} if name in ('pyramid', 'identity_mapping', 'shake_residual') else {}
    model = create_model(name, **kwargs)
    kinds = [type(link) for link in model.links()]
    assert not any(k in (CL.Convolution2D, CL.BatchNormalization) for k in kinds)
    assert FL.Convolution2D in kinds or name == 'cnnwn'


def test_fast_links_fall_back_to_chainer_for_non_numpy_arrays():
    """A CuPy (or any non-NumPy) array takes Chainer's path: the check is on the exact array type."""
    class NotNumpy(numpy.ndarray):
        pass
    x = numpy.random.RandomState(0).standard_normal((2, 3, 8, 8)).astype(numpy.float32)
    conv, bn = FL.Convolution2D(3, 4, 3, pad=1), FL.BatchNormalization(3)
    assert type(conv(x.view(NotNumpy)).creator).__name__ == 'Convolution2DFunction'
    assert type(conv(x).creator).__name__ == 'Convolution2DFast'
    assert type(bn(x.view(NotNumpy)).creator).__name__ == 'BatchNormalization'
    assert type(bn(x).creator).__name__ == 'BatchNormalizationFast'
    assert type(FL.max_pooling_2d(x.view(NotNumpy), 2).creator).__name__ == 'MaxPoolingND'
    assert type(FL.max_pooling_2d(x, 2).creator).__name__ == 'MaxPooling2DFast'
    assert type(FL.average_pooling_2d(x.view(NotNumpy), 2).creator).__name__ != 'AveragePooling2DFast'


@pytest.mark.parametrize('name', ['resnet20', 'cnn'])
def test_training_step_at_batch_128_matches_the_numpy_path(name):
    # Full size (batch 128 at 32x32: 131,072 values per channel in ResNet's first
    # stage). The compiled kernels once read float64 coefficients as float32 there
    # and returned gradients of 1e20 while every smaller test passed. Loose
    # tolerance: in float32 a value within rounding of a ReLU's kink may fall on
    # either side in the two paths (seen: 0.6 % of the largest gradient).
    from helpers import native_available
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    numpy.random.seed(0)
    model = create_model(name)
    rng = numpy.random.RandomState(1)
    x = rng.standard_normal((128, 3, 32, 32)).astype(numpy.float32)
    t = rng.randint(0, 10, 128).astype(numpy.int32)
    grads = {}
    for native in (True, False):
        m = copy.deepcopy(model)
        m.cleargrads()  # Chainer fills new parameters' gradients with NaN
        with chainer.using_config('use_native_kernels', native), chainer.using_config('train', True), \
                chainer.using_config('enable_backprop', True):
            numpy.random.seed(2)  # the same dropout masks on both paths
            F.softmax_cross_entropy(m(x), t).backward()
        grads[native] = {n: p.grad for n, p in m.namedparams()}
    scale = max(numpy.abs(g).max() for g in grads[False].values())
    for n, g in grads[False].items():
        assert numpy.isfinite(grads[True][n]).all(), n
        assert numpy.abs(grads[True][n] - g).max() <= 0.05 * scale, n
