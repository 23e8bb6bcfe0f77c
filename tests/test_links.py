"""chainer_cifar.links: the drop-ins behave and serialize as Chainer's links; the fused layers compute what they name."""
import copy

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as CL

from chainer_cifar import links as FL
from helpers import BN_SHAPES, grads


# ---------------------------------------------------------------- the drop-ins

@pytest.mark.parametrize('shape', BN_SHAPES)
def test_batch_normalization_link_matches_chainer(shape, threads):
    """Train steps (outputs, gradients, running averages) and test mode, link against link."""
    rng = numpy.random.RandomState(8)
    fast, ref = FL.BatchNormalization(shape[1], decay=0.8), CL.BatchNormalization(shape[1], decay=0.8)
    for link in (fast, ref):
        link.gamma.array[...] = numpy.linspace(0.5, 1.5, shape[1])
        link.beta.array[...] = numpy.linspace(-1, 1, shape[1])
    for _ in range(3):
        x = (rng.standard_normal(shape) * 3 + 1).astype(numpy.float32)
        gy = rng.standard_normal(shape).astype(numpy.float32)
        out = []
        for link in (fast, ref):
            link.cleargrads()
            y, (gx,) = grads(link, (x,), gy)
            out.append((y, gx, link.gamma.grad, link.beta.grad))
        for a, r in zip(*out):
            assert a.dtype == numpy.float32
            numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
        numpy.testing.assert_allclose(fast.avg_mean, ref.avg_mean, rtol=1e-6, atol=1e-6)
        numpy.testing.assert_allclose(fast.avg_var, ref.avg_var, rtol=1e-5, atol=1e-6)
    assert fast.avg_mean.dtype == ref.avg_mean.dtype == numpy.float32
    assert fast.N == ref.N == 0
    x = rng.standard_normal(shape).astype(numpy.float32)
    with chainer.using_config('train', False):
        gy = rng.standard_normal(shape).astype(numpy.float32)
        (y, (gx,)), (y2, (gx2,)) = grads(fast, (x,), gy), grads(ref, (x,), gy)
    numpy.testing.assert_allclose(y, y2, rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(gx, gx2, rtol=1e-5, atol=1e-5)


def test_batch_normalization_finetune_and_options_fall_back():
    rng = numpy.random.RandomState(9)
    x = rng.standard_normal((4, 3, 2, 2)).astype(numpy.float32)
    fast, ref = FL.BatchNormalization(3), CL.BatchNormalization(3)
    for _ in range(2):
        numpy.testing.assert_allclose(fast(x, finetune=True).array, ref(x, finetune=True).array, rtol=1e-5)
    assert fast.N == ref.N == 2
    numpy.testing.assert_allclose(fast.avg_var, ref.avg_var, rtol=1e-5)
    nogamma, ref2 = FL.BatchNormalization(3, use_gamma=False, use_beta=False), CL.BatchNormalization(
        3, use_gamma=False, use_beta=False)
    numpy.testing.assert_allclose(nogamma(x).array, ref2(x).array, rtol=1e-5, atol=1e-5)
    lazy = FL.BatchNormalization(axis=(0, 2, 3))
    assert lazy(x).shape == x.shape


@pytest.mark.parametrize('relu', [False, True])
def test_batch_normalization_double_backprop_takes_chainers_gradient_node(relu):
    # The fast node's first-order backward is its own; with enable_double_backprop it
    # builds Chainer's differentiable BatchNormalizationGrad from the same statistics.
    x0 = numpy.random.RandomState(0).standard_normal((4, 3, 2, 2)).astype(numpy.float32)
    out = []
    for fast in (True, False):
        x = chainer.Variable(x0)
        with chainer.using_config('use_fast_kernels', fast):
            y = FL.BatchNormalization(3)(x, relu=relu)
            assert (type(y.creator).__name__ == 'BatchNormalizationFast') == fast
            gx, = chainer.grad([F.sum(y * y)], [x], enable_double_backprop=True)
            assert gx.creator is not None
            ggx, = chainer.grad([F.sum(gx * gx)], [x])
        out.append((gx.array, ggx.array))
    for a, r in zip(*out):
        numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)


def test_convolution_link_matches_chainer_and_uses_fast_path():
    rng = numpy.random.RandomState(10)
    x = rng.standard_normal((2, 3, 8, 8)).astype(numpy.float32)
    fast = FL.Convolution2D(3, 4, 3, 2, 1)
    ref = CL.Convolution2D(3, 4, 3, 2, 1)
    ref.W.array[...] = fast.W.array
    ref.b.array[...] = fast.b.array
    y = fast(x)
    assert y.creator.__class__.__name__ == 'Convolution2DFast'
    numpy.testing.assert_allclose(y.array, ref(x).array, rtol=1e-5, atol=1e-5)
    with chainer.using_config('use_fast_kernels', False):
        assert fast(x).creator.__class__.__name__ != 'Convolution2DFast'
    lazy = FL.Convolution2D(None, 4, 3)
    assert lazy(x).shape == (2, 4, 6, 6) and lazy.W.shape == (4, 3, 3, 3)


class _Net(chainer.Chain):
    def __init__(self, L):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, pad=1)
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.average(F.relu(self.bn(self.conv(x))), axis=(2, 3)))


@pytest.mark.parametrize('direction', ['chainer_to_fast', 'fast_to_chainer'])
def test_links_serialize_with_chainers_names(tmp_path, direction):
    rng = numpy.random.RandomState(11)
    src, dst = (_Net(CL), _Net(FL)) if direction == 'chainer_to_fast' else (_Net(FL), _Net(CL))
    src(rng.standard_normal((4, 3, 5, 5)).astype(numpy.float32))  # moves avg_mean / avg_var
    path = str(tmp_path / 'model.npz')
    chainer.serializers.save_npz(path, src)
    keys = set(numpy.load(path).files)
    assert {'conv/W', 'conv/b', 'bn/gamma', 'bn/beta', 'bn/avg_mean', 'bn/avg_var', 'bn/N'} <= keys
    chainer.serializers.load_npz(path, dst)
    for (n1, p1), (n2, p2) in zip(sorted(src.namedparams()), sorted(dst.namedparams())):
        assert n1 == n2
        numpy.testing.assert_array_equal(p1.array, p2.array)
    numpy.testing.assert_array_equal(src.bn.avg_var, dst.bn.avg_var)
    x = rng.standard_normal((2, 3, 5, 5)).astype(numpy.float32)
    with chainer.using_config('train', False):
        numpy.testing.assert_allclose(src(x).array, dst(x).array, rtol=1e-5, atol=1e-5)


def test_float32_training_step_stays_float32():
    net = _Net(FL)
    opt = chainer.optimizers.MomentumSGD(0.1)
    opt.setup(net)
    opt.add_hook(chainer.optimizer_hooks.WeightDecay(5e-4))
    x = numpy.random.RandomState(12).standard_normal((4, 3, 6, 6)).astype(numpy.float32)
    loss = F.softmax_cross_entropy(net(x), numpy.array([0, 1, 0, 1], numpy.int32))
    net.cleargrads()
    loss.backward()
    opt.update()
    for name, p in net.namedparams():
        assert p.array.dtype == numpy.float32 and p.grad.dtype == numpy.float32, name
    assert net.bn.avg_mean.dtype == numpy.float32 and net.bn.avg_var.dtype == numpy.float32


# ---------------------------------------------------------------- the fused layers

class _Block(chainer.Chain):
    conv_bn_relu1 = FL.conv_bn_relu('conv1', 'bn1')
    conv_bn2 = FL.conv_bn('conv2', 'bn2')
    bn_relu2 = FL.bn_relu('bn2')

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv1 = FL.Convolution2D(3, 4, 3, pad=1)
            self.bn1 = FL.BatchNormalization(4)
            self.conv2 = FL.Convolution2D(4, 4, 3, pad=1)
            self.bn2 = FL.BatchNormalization(4)


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
    layer = FL.ConvBN(3, 4, 3, relu=relu, bn=bn)
    assert hasattr(layer, 'bn') == bn
    x = _input()
    with chainer.using_config('use_fast_kernels', False):
        h = layer.conv(x)
        h = layer.bn(h) if bn else h
        expected = F.relu(h) if relu else h
    numpy.testing.assert_allclose(layer(x).array, expected.array, rtol=1e-5, atol=1e-5)


def test_relu_max_pooling_pools_the_rectified_input():
    x = _input(3, (2, 3, 7, 7))
    numpy.testing.assert_array_equal(FL.relu_max_pooling_2d(x, 3, 2).array,
                                     F.max_pooling_2d(F.relu(x), 3, 2).array)
