"""Training data: the pickles, the train/validation split, iterators and the converter."""
import collections

import numpy

import chainer
from chainer import iterators
from chainer.dataset import concat_examples

from chainer_cifar.data.pickles import load_dataset
from chainer_cifar.errors import UserError
from chainer_cifar.training.seeds import serialize_random_state

FULL_TRAIN = 50000
FULL_VALID = 5000

Splits = collections.namedtuple('Splits', 'train valid test')


def default_valid_size(n_train):
    """5,000 of the full 50,000 (the original's split); 10% of a smaller set."""
    return FULL_VALID if n_train >= FULL_TRAIN else max(1, int(round(n_train * 0.1)))


def split_train_valid(x, y, valid_size, seed):
    """``((train_x, train_y), (valid_x, valid_y) or None)`` by a permutation seeded with ``seed``."""
    n = len(x)
    if valid_size == 0:
        return (x, y), None
    if valid_size >= n:
        raise UserError('--valid_size {} leaves no training images: the training set has only {} '
                        'images'.format(valid_size, n))
    perm = numpy.random.RandomState(seed).permutation(n)
    v, t = perm[:valid_size], perm[valid_size:]
    return (x[t], y[t]), (x[v], y[v])


def load_splits(args):
    """The train/valid/test ``TupleDataset``s the flags ask for (valid is None without one)."""
    train_x, train_y, test_x, test_y = load_dataset(args.dataset, args.label)
    if args.subset:
        train_x, train_y = train_x[:args.subset], train_y[:args.subset]
        test_x, test_y = test_x[:args.subset], test_y[:args.subset]
    if args.no_valid_data:
        valid_size = 0
    elif args.valid_size is not None:
        valid_size = args.valid_size
    else:
        valid_size = default_valid_size(len(train_x))
    (tx, ty), valid = split_train_valid(train_x, train_y, valid_size, args.seed)
    ds = chainer.datasets.TupleDataset
    return Splits(ds(tx, ty), ds(*valid) if valid is not None else None, ds(test_x, test_y))


class EpochIterator(chainer.dataset.Iterator):
    """Shuffled mini-batches that never cross an epoch boundary, like the original's loop.

    Each epoch is one permutation (drawn from this iterator's own generator)
    cut into batches; its last batch is smaller when the batch size does not
    divide the data. (Chainer's ``SerialIterator`` instead fills that batch
    from the next epoch, so with a batch larger than the data set one
    iteration would count as several epochs.) The position, the order and
    the generator's state are serialized, so a resumed run continues the
    same sequence of batches.
    """

    def __init__(self, dataset, batch_size, seed, indices=False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.rng = numpy.random.RandomState(seed)
        # indices=True: each batch is the array of its examples' indices, for a
        # Converter that holds the whole data set (see resident_arrays).
        self.indices = indices
        self.reset()

    def reset(self):
        self.current_position = 0
        self.epoch = 0
        self.is_new_epoch = False
        self._previous_epoch_detail = -1.0
        self._order = self.rng.permutation(len(self.dataset))

    def __next__(self):
        n = len(self.dataset)
        self._previous_epoch_detail = self.epoch_detail
        idx = self._order[self.current_position:self.current_position + self.batch_size]
        batch = idx.copy() if self.indices else [self.dataset[int(i)] for i in idx]
        position = self.current_position + len(idx)
        if position >= n:
            self.current_position = 0
            self.epoch += 1
            self.is_new_epoch = True
            self._order = self.rng.permutation(n)
        else:
            self.current_position = position
            self.is_new_epoch = False
        return batch

    next = __next__

    @property
    def epoch_detail(self):
        return self.epoch + self.current_position / len(self.dataset)

    @property
    def previous_epoch_detail(self):
        return None if self._previous_epoch_detail < 0 else self._previous_epoch_detail

    def serialize(self, serializer):
        self.current_position = int(serializer('current_position', self.current_position))
        self.epoch = int(serializer('epoch', self.epoch))
        self.is_new_epoch = bool(serializer('is_new_epoch', self.is_new_epoch))
        self._order = serializer('order', self._order)
        self._previous_epoch_detail = float(serializer('previous_epoch_detail', self._previous_epoch_detail))
        serialize_random_state(serializer['rng'], self.rng)


def make_eval_iterator(dataset, batch_size):
    return iterators.SerialIterator(dataset, batch_size, repeat=False, shuffle=False)


class Converter(object):
    """Batches examples onto ``device`` in the compute dtype, then augments them there.

    Used by the updater (with the augmenter) and by the evaluators (without).
    A batch is a list of examples; or, with ``resident`` (the whole data set's
    ``(x, t)`` already on ``device``, see :func:`resident_arrays`), an array of
    indices (``EpochIterator(..., indices=True)``), gathered there in one
    fancy-indexing call: on a GPU the images then never cross the bus again
    after the first copy.
    """

    def __init__(self, device, augmenter=None, resident=None):
        self.device = device
        self.augmenter = augmenter
        self.resident = resident

    def __call__(self, batch, device=None):
        if self.resident is not None:
            xs, ts = self.resident
            idx = self.device.send(numpy.asarray(batch))
            x, t = xs[idx], ts[idx]
        else:
            x, t = concat_examples(batch)
            x = self.device.send(x)
            t = self.device.send(t)
        dtype = chainer.get_dtype()
        if x.dtype != dtype:
            x = x.astype(dtype)
        if self.augmenter is None:
            return x, t
        return self.augmenter(x, t)


def resident_arrays(dataset, device, dtype=None):
    """The ``(x, t)`` arrays of ``dataset`` on ``device``, ``x`` in ``dtype`` (default: the compute dtype).

    ``dataset`` is a ``TupleDataset`` of ``(x, t)`` arrays or a ``SubDataset``
    of one (a worker's shard); on the CPU the arrays are used as they are
    (no copy when the dtype matches). The training set of CIFAR-10 takes
    553 MiB on the device in float32, half in float16.
    """
    x, t = _dataset_arrays(dataset)
    dtype = numpy.dtype(dtype or chainer.get_dtype())
    return device.send(x.astype(dtype, copy=False)), device.send(t)


def _dataset_arrays(dataset):
    # Chainer 7.8.1 (the last release): TupleDataset._datasets, SubDataset's _dataset/_start/_finish/_order.
    if isinstance(dataset, chainer.datasets.TupleDataset) and len(dataset._datasets) == 2:
        return dataset._datasets
    if isinstance(dataset, chainer.datasets.SubDataset):
        x, t = _dataset_arrays(dataset._dataset)
        order = dataset._order
        idx = (numpy.arange(dataset._start, dataset._finish) if order is None
               else numpy.asarray(order)[dataset._start:dataset._finish])
        return x[idx], t[idx]
    return concat_examples([dataset[i] for i in range(len(dataset))])
