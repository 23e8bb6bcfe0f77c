"""The compatibility layer: Chainer imports and computes in float32 on this stack."""
import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L

from chainer_cifar import compat


def test_chainer_imports_and_resize_images_works_without_numpy_float():
    x = numpy.arange(2 * 3 * 4 * 4, dtype=numpy.float32).reshape(2, 3, 4, 4)
    y = F.resize_images(x, (8, 8))
    assert y.shape == (2, 3, 8, 8) and y.dtype == numpy.float32
    # Corners are copied exactly under align_corners (the default).
    assert y.array[0, 0, 0, 0] == x[0, 0, 0, 0] and y.array[1, 2, -1, -1] == x[1, 2, -1, -1]


def test_resize_images_patch_leaves_numpy_namespace_alone():
    if numpy.lib.NumpyVersion(numpy.__version__) >= '1.24.0':
        assert not hasattr(numpy, 'float')


def test_patches_are_idempotent():
    before = list(compat.APPLIED)
    compat.apply()
    assert compat.APPLIED == before


def test_sctypes_available_to_chainer():
    from chainer.functions.array import as_strided
    assert as_strided.index_dtype[8] is numpy.int64


class _TinyNet(chainer.Chain):
    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, pad=1)
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4 * 4 * 4, 10)

    def forward(self, x):
        h = F.max_pooling_2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(F.dropout(h, 0.5))


@pytest.mark.parametrize('make_optimizer', [
    lambda: chainer.optimizers.MomentumSGD(0.1),
    lambda: chainer.optimizers.NesterovAG(0.1),
    lambda: chainer.optimizers.Adam(amsgrad=True),
], ids=['momentum_sgd', 'nesterov', 'amsgrad'])
def test_training_step_stays_float32(make_optimizer):
    # NumPy 2 (NEP 50) promotes float32 arrays combined with NumPy float64
    # scalars to float64; a whole step must not let that happen anywhere.
    model = L.Classifier(_TinyNet())
    optimizer = make_optimizer()
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
    rng = numpy.random.RandomState(0)
    x = rng.rand(4, 3, 8, 8).astype(numpy.float32)
    t = rng.randint(0, 10, 4).astype(numpy.int32)
    for _ in range(2):
        optimizer.update(model, x, t)
    assert model.loss.dtype == numpy.float32
    for name, param in model.namedparams():
        assert param.dtype == numpy.float32, name
        assert param.grad.dtype == numpy.float32, name
        for key, state in param.update_rule.state.items():
            assert state.dtype == numpy.float32, (name, key)
    bn = model.predictor.bn
    assert bn.avg_mean.dtype == numpy.float32 and bn.avg_var.dtype == numpy.float32
