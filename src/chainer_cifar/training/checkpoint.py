"""The resumable snapshot ``<prefix>.snapshot``: everything a run needs to go on bit-exactly.

It is an ``.npz`` holding Chainer's serialization of the whole ``Trainer``
(model, optimizer with its hooks and loss scale, iterator position and order,
stop trigger, elapsed time and every extension with state: the log so far,
the best validation error, the random generators of :class:`RandomStates`)
plus a JSON ``meta`` entry holding the run's recipe (:func:`recipe`: model and
options, optimizer and its rate, weight decay, schedule, batch, dtype,
augmentation, seed, data files, split sizes and a fingerprint of the data),
checked on ``--resume``: a snapshot of another model, optimizer or data is
refused with the differences listed, instead of being loaded into the wrong
network or optimizer (Adam's second moment as SGD's momentum). It is written
to a temporary file and renamed, so a crash while writing keeps the previous
snapshot.
"""
import hashlib
import json
import os
import warnings
import zipfile

import numpy

import chainer
from chainer import serializers, training

from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError
from chainer_cifar.training.data import _dataset_arrays  # the arrays behind a (Sub/Tuple)Dataset
from chainer_cifar.training.seeds import serialize_random_state

META_KEY = 'chainer_cifar_meta'
# 2: the meta holds the run's ``recipe`` (see :func:`recipe`). 1: model, options, sizes, batch, dtype only.
FORMAT = 2
# Per-parameter state of each optimizer's update rule in Chainer 7.8.1 (the last release, frozen):
# how a format-1 snapshot, which does not record --optimizer, still tells Adam from SGD.
OPTIMIZER_STATE = {'sgd': {'v'}, 'nesterov': {'v'}, 'adam': {'m', 'v'}, 'amsgrad': {'m', 'v', 'vhat'}}
_OPTIMIZER_PREFIX = 'updater/optimizer:main/'
# How a difference in the data is named: the flags that explain it first, then the sizes,
# then the fingerprint ('data'); the paths only when the data differ (moved data is fine).
_PATH_KEYS = {'-d', '-l'}
_SIZE_CAUSES = _PATH_KEYS | {'--subset'}
_DATA_CAUSES = _SIZE_CAUSES | {'--seed', 'images'}
_NOTES = {'--iter': ' (the cosine schedule spans --iter: it cannot change)'}
_MAY_CHANGE = 'resume with the flags of the snapshot\'s run (a longer --iter, -g and --quiet may change)'


def data_fingerprint(splits):
    """SHA-256 of the train, validation and test images and labels as split: the data's identity.

    Equal for the same data at another path; different for another file
    (image.pkl vs image_norm.pkl, a rebuilt set), subset, split or seed.
    """
    h = hashlib.sha256()
    for part in splits:
        for a in ([] if part is None else _dataset_arrays(part)):
            a = numpy.ascontiguousarray(a)
            h.update('{}{}'.format(a.dtype.str, a.shape).encode())
            h.update(memoryview(a).cast('B'))
        h.update(b'|')
    return h.hexdigest()


def recipe(args, sizes, fingerprint):
    """What a resumed run must share with its snapshot: flag -> value, plus the data's identity.

    Only what the run uses: the rate of its optimizer (--lr or --alpha), the
    decay epochs of a multistep schedule but --iter of a cosine one (its curve
    spans the run), the warm-up rate when there is a warm-up. ``sizes`` is
    (train, validation, test) images. Values are JSON's, as read back.
    """
    from chainer_cifar.training.args import model_options
    r = {'-m': args.model}
    r.update(('--' + k, v) for k, v in model_options(args).items())
    rate = 'lr' if args.optimizer in ('sgd', 'nesterov') else 'alpha'
    r.update({'--optimizer': args.optimizer, '--' + rate: getattr(args, rate), '--weight_decay': args.weight_decay,
              '--lr_shape': args.lr_shape, '--warmup_epochs': args.warmup_epochs, '-b': args.batch_size,
              '--accumulate': getattr(args, 'accumulate', 1), '--dtype': args.dtype, '--augment': args.augment,
              '--seed': args.seed, '--subset': args.subset, '--sync_bn': bool(getattr(args, 'sync_bn', False)),
              '-d': os.path.abspath(args.dataset), '-l': os.path.abspath(args.label), 'images': list(sizes),
              'data': fingerprint})
    if args.lr_shape == 'multistep':
        r['--lr_decay_iter'] = args.lr_decay_iter
    else:
        r['--iter'] = args.iter
    if args.warmup_epochs > 0:
        r['--warmup_lr'] = args.warmup_lr
    return json.loads(json.dumps(r))


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


def check_resume_location(snapshot, own_snapshot):
    """A resumed run goes on writing beside its snapshot: refuse one that is not ``<out>/<prefix>.snapshot``.

    Elsewhere, the best model, the log and the run record would be split
    between two folders (the best epoch's model left behind).
    """
    if os.path.realpath(snapshot) == os.path.realpath(own_snapshot):
        return
    folder, name = os.path.split(snapshot)
    prefix = name[:-len('.snapshot')] if name.endswith('.snapshot') else name
    raise UserError('--resume {} is not this command\'s snapshot {}: a resumed run goes on writing beside its '
                    'snapshot; give --out {} -p {} (or copy the whole run folder and resume there)'.format(
                        snapshot, own_snapshot, folder or '.', prefix))


def check_workers(path, saved, n_workers):
    """Refuse a snapshot taken with another number of workers (its iterator state would not fit).

    ``saved``: the snapshot's meta (:func:`read_meta`); one without ``workers`` was taken by one process.
    """
    taken = saved.get('workers', 1)
    if taken != n_workers:
        raise UserError('snapshot {} was taken with {} worker(s), this run has {}; resume with mpiexec -n {} '
                        '(and the same -b per worker)'.format(path, taken, n_workers, taken))


def _format_1_recipe(saved, files, optimizer):
    """The part of the recipe a format-1 snapshot records, plus the optimizer its state reveals."""
    r = {'-m': saved.get('model'), 'images': [saved.get(k) for k in ('n_train', 'n_valid', 'n_test')],
         '-b': saved.get('batch_size'), '--dtype': saved.get('dtype')}
    r.update(('--' + k, v) for k, v in (saved.get('model_options') or {}).items())
    r.update((flag, saved[k]) for flag, k in (('--seed', 'seed'), ('--augment', 'augment')) if k in saved)
    # 'updater/optimizer:main/<parameter path>/<state>'; the optimizer's own t and epoch have no '/'.
    names = {k.rsplit('/', 1)[1] for k in files
             if k.startswith(_OPTIMIZER_PREFIX) and '/' in k[len(_OPTIMIZER_PREFIX):]} - {'t'}
    fits = [name for name, state in OPTIMIZER_STATE.items() if state == names]
    if fits:  # sgd and nesterov keep the same state: either fits the other
        r['--optimizer'] = optimizer if optimizer in fits else ' or '.join(fits)
    return r


def _show(value):
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, list):
        return ','.join(str(v) for v in value) or 'none'
    return str(value)


def recipe_differences(saved, current):
    """``['--optimizer adam, this command says sgd', ...]``: the keys both record that differ."""
    differ = {k for k in saved if k in current and saved[k] != current[k]}
    if 'data' not in differ:
        differ -= _PATH_KEYS  # the same data at another path
    if differ & _SIZE_CAUSES:
        differ.discard('images')
    if differ & _DATA_CAUSES:
        differ.discard('data')  # named by what made it differ
    clauses = []
    for key in sorted(differ, key=list(current).index):  # the order of recipe(): model, optimizer, ..., data
        s, c = saved[key], current[key]
        if key == 'images':
            clauses.append('{} train / {} validation / {} test images, this command has {} / {} / {} '
                           '(see --valid_size, --no_valid_data and the data files)'.format(*(s + c)))
        elif key == 'data':
            clauses.append('other data: -d/-l now hold other images or labels than the snapshot was trained '
                           'on (rebuilt or replaced?)')
        else:
            clauses.append('{} {}, this command says {}{}'.format(key, _show(s), _show(c), _NOTES.get(key, '')))
    return clauses


def check_meta(path, saved, current, files=()):
    """Refuse a snapshot whose recipe (model, optimizer, schedule, data, ...) is not this command's.

    ``files`` (the snapshot's entries) lets a format-1 snapshot, which does not
    record the optimizer, still refuse another optimizer type. Returns the list
    of what could not be checked (empty for format 2).
    """
    if saved.get('format', 1) >= 2:
        old, unchecked = saved.get('recipe', {}), []
    else:
        old = _format_1_recipe(saved, files, current['recipe']['--optimizer'])
        unchecked = sorted(k for k in current['recipe'] if k not in old)
    clauses = recipe_differences(old, current['recipe'])
    if clauses:
        raise UserError('--resume: the snapshot {} was trained with {}; {}'.format(
            path, '; '.join(clauses), _MAY_CHANGE))
    return unchecked


def load_snapshot(path, trainer, meta):
    """Check ``meta`` against the snapshot, then restore ``trainer`` from it; returns the saved meta.

    The saved meta gets ``unchecked``: the recipe keys an old snapshot did not record.
    """
    saved = read_meta(path)
    try:
        with numpy.load(path, allow_pickle=False) as npz:
            saved['unchecked'] = check_meta(path, saved, meta, npz.files)
            with warnings.catch_warnings():
                # A run resumed without --quiet has triggers (progress, report) the snapshot lacks;
                # Chainer then warns that it guesses their last call, which is right: every
                # trigger is called at every iteration.
                warnings.filterwarnings('ignore', 'The previous value of', UserWarning)
                trainer.serialize(serializers.NpzDeserializer(npz))
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise UserError('snapshot {} cannot be loaded into this model ({}: {})'.format(
            path, type(e).__name__, e))
    return saved


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
