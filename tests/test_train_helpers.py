"""Shared pieces of the training tests: tiny models and tiny pickles (no tests here).

The models are registered once per process; they have BatchNorm and dropout
so that train/test mode and the saved random state matter.
"""
import csv
import os

import numpy

import chainer
import chainer.functions as F
import chainer.links as L

from chainer_cifar.data.pickles import save_pickle
from chainer_cifar.models import registry

TINY = 'tiny_test_cnn'
TINY_NAN = 'tiny_test_nan'
TINY_NAN_AT_7 = 'tiny_test_nan_at_7'


class TinyCNN(chainer.Chain):
    def __init__(self, nan_after=None):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, stride=2, pad=1)
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4 * 16 * 16, 10)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x):
        y = self.fc(F.dropout(F.relu(self.bn(self.conv(x))), 0.3))
        if self.nan_after is not None and chainer.config.train:
            self.calls += 1
            if self.calls > self.nan_after:
                y = y * float('nan')
        return y


def _register():
    if TINY in registry._REGISTRY:
        return

    @registry.register_model(TINY, source='tests')
    def tiny_test_cnn():
        """One conv + BN + dropout + linear: for the training tests."""
        return TinyCNN()

    @registry.register_model(TINY_NAN, source='tests')
    def tiny_test_nan():
        """TinyCNN whose output becomes NaN after 10 training batches."""
        return TinyCNN(nan_after=10)

    @registry.register_model(TINY_NAN_AT_7, source='tests')
    def tiny_test_nan_at_7():
        """TinyCNN whose output becomes NaN from the 7th training batch (the last of 54 images by 8)."""
        return TinyCNN(nan_after=6)


_register()


def write_pickles(folder, n_train=60, n_test=20, seed=0, info=None):
    """image.pkl / label.pkl of random data; returns (image path, label path)."""
    rng = numpy.random.RandomState(seed)
    os.makedirs(str(folder), exist_ok=True)
    image, label = os.path.join(str(folder), 'image.pkl'), os.path.join(str(folder), 'label.pkl')
    save_pickle({'train': rng.randn(n_train, 3072).astype(numpy.float32),
                 'test': rng.randn(n_test, 3072).astype(numpy.float32)}, image)
    save_pickle({'train': rng.randint(0, 10, n_train).astype(numpy.int32),
                 'test': rng.randint(0, 10, n_test).astype(numpy.int32)}, label)
    if info is not None:
        import json
        with open(os.path.join(str(folder), 'dataset_info.json'), 'w') as f:
            json.dump(info, f)
    return image, label


def tiny_argv(data, out, *extra, prefix='run'):
    image, label = data
    return ['-m', TINY, '-b', '8', '--iter', '2', '-d', image, '-l', label, '--out', str(out),
            '-p', prefix, '--quiet'] + list(extra)


def read_log(path, drop=('elapsed',)):
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def load_params(path):
    with numpy.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def gpu_is_usable(gpu=0):
    """Whether ``-g gpu`` would run here: the tests of its one-line errors skip only then."""
    from chainer_cifar.errors import UserError
    from chainer_cifar.training import get_device
    try:
        get_device(gpu)
    except UserError:
        return False
    return True
