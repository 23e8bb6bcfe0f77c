"""The run's random streams: each draws from its own generator, seeded from ``--seed``.

Separate generators for the split, the batch order and the augmentation mean
that changing one flag (``--augment``) does not change what another stream
draws (the order). Stream k is seeded with ``--seed + k``; a worker of a
data-parallel run adds its offset (``distributed.RANK_SEED_STRIDE x rank``)
to the order and augmentation streams, so rank 0 draws what a single process draws.
The generators' states travel in the snapshot (:func:`serialize_random_state`), so a
resumed run draws what an uninterrupted one would.
"""
import numpy

import chainer

SPLIT = 0    # the train/validation split (training/data.py seeds it with --seed itself)
ORDER = 1    # the batch order (EpochIterator)
AUGMENT = 2  # the augmentation parameters (Augmenter)
SHARDS = 3   # the shuffle before a data-parallel run cuts the data into shards (the same on every worker)


def stream_seed(seed, k):
    """The seed of the run's k-th random stream: ``--seed + k`` kept in NumPy's range 0..2**32-1."""
    return (seed + k) % 2 ** 32


def seed_everything(seed, device):
    """NumPy's global generator (CPU dropout, stochastic depth, initial weights) and CuPy's on a GPU."""
    numpy.random.seed(seed)
    if device.xp is not numpy:
        device.xp.random.seed(seed)


def serialize_random_state(serializer, rng):
    """(De)serialize a ``numpy.random.RandomState``'s full state under ``serializer``."""
    if isinstance(serializer, chainer.serializer.Serializer):
        name, keys, pos, has_gauss, gauss = rng.get_state()
        serializer('keys', numpy.asarray(keys, dtype=numpy.uint32))
        serializer('pos', numpy.asarray(pos, dtype=numpy.int64))
        serializer('has_gauss', numpy.asarray(has_gauss, dtype=numpy.int64))
        serializer('gauss', numpy.asarray(gauss, dtype=numpy.float64))
    else:
        keys = serializer('keys', None)
        pos = serializer('pos', None)
        has_gauss = serializer('has_gauss', None)
        gauss = serializer('gauss', None)
        rng.set_state(('MT19937', numpy.asarray(keys, dtype=numpy.uint32), int(pos), int(has_gauss),
                       float(gauss)))
