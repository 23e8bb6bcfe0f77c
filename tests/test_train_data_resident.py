"""The training set resident on the device: batches gathered by index equal the list-of-examples batches."""
import numpy
import pytest

import chainer

from chainer_cifar.data.augment import Augmenter
from chainer_cifar.training import data as tdata


def _dataset(n=37, seed=0):
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((n, 3, 8, 8)).astype(numpy.float32)
    t = rng.randint(0, 10, n).astype(numpy.int32)
    return chainer.datasets.TupleDataset(x, t)


@pytest.mark.parametrize('augment', [(), ('crop', 'mirror'), ('crop', 'mirror', 'mixup')])
def test_index_batches_on_resident_arrays_equal_example_batches(augment):
    ds = _dataset()
    device = chainer.get_device('@numpy')
    by_example = tdata.EpochIterator(ds, 8, seed=3)
    by_index = tdata.EpochIterator(ds, 8, seed=3, indices=True)
    old = tdata.Converter(device, Augmenter(augment, seed=5) if augment else None)
    new = tdata.Converter(device, Augmenter(augment, seed=5) if augment else None,
                          resident=tdata.resident_arrays(ds, device))
    for _ in range(12):  # past two epoch boundaries (37 = 4 x 8 + 5)
        a, b = old(next(by_example)), new(next(by_index))
        assert len(a) == len(b)
        for u, v in zip(a, b):
            numpy.testing.assert_array_equal(u, v)
        assert by_example.epoch_detail == by_index.epoch_detail


def test_resident_arrays_of_a_shuffled_shard_and_in_the_compute_dtype():
    ds = _dataset()
    order = numpy.random.RandomState(1).permutation(len(ds))
    shard = chainer.datasets.SubDataset(ds, 10, 25, order)
    x, t = tdata.resident_arrays(shard, chainer.get_device('@numpy'))
    expected = chainer.dataset.concat_examples([shard[i] for i in range(len(shard))])
    numpy.testing.assert_array_equal(x, expected[0])
    numpy.testing.assert_array_equal(t, expected[1])
    with chainer.using_config('dtype', chainer.mixed16):
        x16, _ = tdata.resident_arrays(ds, chainer.get_device('@numpy'))
    assert x16.dtype == numpy.float16
    x32, _ = tdata.resident_arrays(ds, chainer.get_device('@numpy'))
    assert x32 is ds._datasets[0]  # on the CPU in float32: no copy
