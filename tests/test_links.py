"""The fused layers of chainer_cifar.links: the same results as the layers they stand for, on every path."""
import copy

import numpy
import pytest

import chainer
import chainer.functions as F

from chainer_cifar import links as L


class _Block(chainer.Chain):
    conv_bn_relu1 = L.conv_bn_relu('conv1', 'bn1')
    conv_bn2 = L.conv_bn('conv2', 'bn2')
    bn_relu2 = L.bn_relu('bn2')

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(3, 4, 3, pad=1)
            self.bn1 = L.BatchNormalization(4)
            self.conv2 = L.Convolution2D(4, 4, 3, pad=1)
            self.bn2 = L.BatchNormalization(4)


def _input(seed=0, shape=(2, 3, 6, 6)):
    return numpy.random.RandomState(seed).standard_normal(shape).astype(numpy.float32)


def _moved_statistics(block):
    rng = numpy.random.RandomState(1)
    for bn in (block.bn1, block.bn2):
        bn.avg_mean[...] = rng.standard_normal(4)
        bn.avg_var[...] = rng.uniform(0.5, 2.0, 4)
    return block


MODES = {'train': dict(train=True, enable_backprop=True),
         'test_graph': dict(train=False, enable_backprop=True),
         'test_no_graph': dict(train=False, enable_backprop=False)}


@pytest.mark.parametrize('mode', sorted(MODES))
@pytest.mark.parametrize('fast', [True, False], ids=['fast', 'stock'])
def test_named_layers_compute_what_they_name(mode, fast):
    block = _moved_statistics(_Block())
    reference = copy.deepcopy(block)
    x = _input()
    s = _input(2, (2, 4, 6, 6))
    with chainer.using_config('train', MODES[mode]['train']):
        with chainer.using_config('use_fast_kernels', fast), \
                chainer.using_config('enable_backprop', MODES[mode]['enable_backprop']):
            fused = [block.conv_bn_relu1(x), block.conv_bn2.add_relu(block.conv_bn_relu1(x), s, 0.7),
                     block.bn_relu2(block.conv1(x))]
        with chainer.using_config('use_fast_kernels', False):  # the layers named, one Chainer function each
            h = F.relu(reference.bn1(reference.conv1(x)))
            expected = [h, F.relu(0.7 * reference.bn2(reference.conv2(h)) + s),
                        F.relu(reference.bn2(reference.conv1(x)))]
    for got, want in zip(fused, expected):
        numpy.testing.assert_allclose(got.array, want.array, rtol=1e-5, atol=1e-5)


def test_a_copy_of_the_chain_runs_its_own_links():
    block = _Block()
    x = _input()
    y = block.conv_bn_relu1(x).array
    twin = block.copy(mode='copy')
    twin.conv1.W.array[...] = 0
    assert (block.conv_bn_relu1(x).array == y).all()
    numpy.testing.assert_array_equal(twin.conv_bn_relu1(x).array, F.relu(twin.bn1(twin.conv1(x))).array)


def test_the_merge_follows_a_layer_without_relu():
    with pytest.raises(ValueError, match='conv-BN layer'):
        _Block().conv_bn_relu1.add_relu(_input(), _input(2, (2, 4, 6, 6)))


@pytest.mark.parametrize('relu,bn', [(True, True), (False, True), (True, False), (False, False)])
def test_conv_bn_switches_its_relu_and_batch_norm(relu, bn):
    layer = L.ConvBN(3, 4, 3, relu=relu, bn=bn)
    assert hasattr(layer, 'bn') == bn
    x = _input()
    with chainer.using_config('use_fast_kernels', False):
        h = layer.conv(x)
        h = layer.bn(h) if bn else h
        expected = F.relu(h) if relu else h
    numpy.testing.assert_allclose(layer(x).array, expected.array, rtol=1e-5, atol=1e-5)


def test_relu_max_pooling_pools_the_rectified_input():
    x = _input(3, (2, 3, 7, 7))
    numpy.testing.assert_array_equal(L.relu_max_pooling_2d(x, 3, 2).array,
                                     F.max_pooling_2d(F.relu(x), 3, 2).array)
