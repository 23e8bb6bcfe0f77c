"""The resumable snapshot ``<prefix>.snapshot``: everything a run needs to go on bit-exactly.

It is an ``.npz`` holding Chainer's serialization of the whole ``Trainer``
(model, optimizer with its hooks and loss scale, iterator position and order,
stop trigger, elapsed time and every extension with state: the log so far,
the best validation error, the random generators of :class:`RandomStates`)
plus a JSON ``meta`` entry (model name and options, dataset sizes) checked on
``--resume`` so a snapshot of another model or data split is refused instead
of silently loaded into the wrong network. It is written to a temporary file
and renamed, so a crash while writing keeps the previous snapshot.
"""
import json
import zipfile

import numpy

import chainer
from chainer import serializers, training

from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError

META_KEY = 'chainer_cifar_meta'
FORMAT = 1
# Meta entries that must match between the snapshot and the resumed command line.
MUST_MATCH = ('model', 'model_options', 'n_train', 'n_valid', 'n_test', 'batch_size', 'dtype')


def save_snapshot(path, trainer, meta):
    """Write the trainer and ``meta`` atomically to ``path``."""
    target = {}
    trainer.serialize(serializers.DictionarySerializer(target))
    meta = dict(meta, format=FORMAT)
    target[META_KEY] = numpy.frombuffer(json.dumps(meta, sort_keys=True).encode('utf-8'), dtype=numpy.uint8)
    # Arrays on the GPU (model, optimizer state) are copied to the host by numpy.savez.
    target = {k: chainer.backends.cuda.to_cpu(v) if hasattr(v, 'device') else v for k, v in target.items()}
    atomic_write(path, lambda f: numpy.savez(f, **target))


def read_meta(path):
    """The meta entry of a snapshot; a missing or unreadable file is a :class:`UserError`."""
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            if META_KEY not in npz.files:
                raise UserError('{} is not a train.py snapshot (no {} entry)'.format(path, META_KEY))
            return json.loads(npz[META_KEY].tobytes().decode('utf-8'))
    except FileNotFoundError:
        raise UserError('snapshot {} not found; a run writes <out>/<prefix>.snapshot after its first '
                        'epoch'.format(path))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise UserError('snapshot {} is corrupt or not a train.py snapshot ({}: {})'.format(
            path, type(e).__name__, e))


def check_meta(path, saved, current):
    """Refuse a snapshot whose model, options or data do not match the command line."""
    diffs = ['{} {} (snapshot) vs {} (now)'.format(k, json.dumps(saved.get(k)), json.dumps(current.get(k)))
             for k in MUST_MATCH if saved.get(k) != current.get(k)]
    if diffs:
        raise UserError('snapshot {} does not match this command: {}; resume with the flags of the '
                        'original run'.format(path, '; '.join(diffs)))


def load_snapshot(path, trainer, meta):
    """Check ``meta`` against the snapshot, then restore ``trainer`` from it; returns the saved meta."""
    saved = read_meta(path)
    check_meta(path, saved, meta)
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            trainer.serialize(serializers.NpzDeserializer(npz))
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UserError('snapshot {} cannot be loaded into this model ({}: {})'.format(
            path, type(e).__name__, e))
    return saved


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


class RandomStates(training.Extension):
    """Carries the run's random generators through the snapshot; does nothing while training.

    ``generators`` maps a name to a ``RandomState``; ``None`` stands for NumPy's
    global generator (Chainer's CPU dropout and the models' stochastic depth
    draw from it). CuPy's generator cannot be saved: on resume it is reseeded
    from the seed and the iteration, so GPU runs resume deterministically but
    not bit-exactly.
    """

    trigger = (1, 'epoch')
    priority = training.PRIORITY_READER
    name = 'random_states'

    def __init__(self, generators, seed=0, device=None):
        self.generators = generators
        self.seed = seed
        self.device = device

    def __call__(self, trainer):
        pass

    def serialize(self, serializer):
        for name, rng in sorted(self.generators.items(), key=lambda kv: kv[0] or ''):
            serialize_random_state(serializer[name or 'numpy_global'], rng or numpy.random.mtrand._rand)
        iteration = serializer('iteration', numpy.asarray(self._iteration(), dtype=numpy.int64))
        if not isinstance(serializer, chainer.serializer.Serializer) and self._on_gpu():
            import cupy
            cupy.random.seed((self.seed * 1000003 + int(iteration)) % (2 ** 32))

    _trainer = None

    def initialize(self, trainer):
        self._trainer = trainer

    def _iteration(self):
        return self._trainer.updater.iteration if self._trainer is not None else 0

    def _on_gpu(self):
        return self.device is not None and self.device.xp is not numpy
