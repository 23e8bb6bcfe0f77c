"""Assemble and run Chainer's ``Trainer`` for ``train.py``.

:func:`train` does every check that can fail (flags, data, model, device,
snapshot) *before* it writes anything, so a bad command leaves no
half-written output; then it runs the trainer and returns a summary.
"""
import collections
import datetime
import json
import math
import os
import platform
import sys
import time

import numpy

import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions as E

from chainer_cifar.data.augment import Augmenter
from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError
from chainer_cifar.models.registry import create_model
from chainer_cifar.training import checkpoint, extensions as X
from chainer_cifar.training.args import model_options
from chainer_cifar.training.data import (Converter, EpochIterator, load_splits, make_eval_iterator,
                                         resident_arrays)
from chainer_cifar.training.schedule import LearningRate, Schedule
from chainer_cifar.training.updater import AccumulatingUpdater

Summary = collections.namedtuple('Summary', 'best_epoch best_valid_error test_error_at_best '
                                            'final_test_error epochs wall_seconds paths')


class Classifier(chainer.Chain):
    """Softmax cross entropy and accuracy around a predictor; mixup-aware.

    Called as ``(x, t)`` or, with mixup, ``(x, t_a, t_b, lam)``: the loss and
    accuracy are then ``lam * f(t_a) + (1 - lam) * f(t_b)``. Loss and accuracy
    are reported weighted by the batch size, so an evaluator's numbers are
    exact means over the data set even when the last batch is smaller.
    """

    def __init__(self, predictor):
        super().__init__()
        with self.init_scope():
            self.predictor = predictor

    def forward(self, x, t, t_b=None, lam=None):
        y = self.predictor(x)
        if y.dtype != numpy.float32:
            y = F.cast(y, numpy.float32)  # mixed16: the loss in float32
        if t_b is None:
            loss, acc = F.softmax_cross_entropy(y, t), F.accuracy(y, t)
        else:
            loss = lam * F.softmax_cross_entropy(y, t) + (1.0 - lam) * F.softmax_cross_entropy(y, t_b)
            acc = lam * F.accuracy(y, t) + (1.0 - lam) * F.accuracy(y, t_b)
        n = len(x)
        chainer.report({'loss': (loss, n), 'accuracy': (acc, n)}, self)
        return loss


def get_device(gpu):
    """``-g``: a negative id is the CPU; a GPU needs CuPy and a CUDA driver that can reach it.

    Every way of failing is one :class:`UserError` naming the cause, so that a
    missing CuPy, a machine without a (recent enough) driver and a wrong id all
    end in one line instead of a traceback from inside CuPy.
    """
    if gpu < 0:
        return chainer.get_device('@numpy')
    cuda = chainer.backends.cuda
    if not cuda.available:
        why = getattr(cuda, '_resolution_error', None)
        raise UserError('-g {} asks for a GPU, but CuPy is not installed or cannot be imported{}; '
                        'use -g -1 to run on the CPU'.format(gpu, ' ({})'.format(_one_line(why)) if why else ''))
    import cupy
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError, whose module moves between CuPy versions
        raise UserError('-g {} asks for a GPU, but CUDA cannot reach one ({}); '
                        'use -g -1 to run on the CPU'.format(gpu, _one_line(e)))
    if count == 0:
        raise UserError('-g {} asks for a GPU, but CUDA sees none; use -g -1 to run on the CPU'.format(gpu))
    if gpu >= count:
        raise UserError('-g {}: there is no such GPU ({} found; ids 0-{})'.format(gpu, count, count - 1))
    return chainer.get_device('@cupy:{}'.format(gpu))


def _one_line(error):
    text = ' '.join(str(error).split())
    return '{}: {}'.format(type(error).__name__, text) if text else type(error).__name__


def stream_seed(seed, k):
    """The seed of the run's k-th random stream: ``--seed + k`` kept in NumPy's range 0..2**32-1."""
    return (seed + k) % 2 ** 32


def seed_everything(seed, device):
    numpy.random.seed(seed)
    if device.xp is not numpy:
        device.xp.random.seed(seed)


def make_optimizer(args):
    """``(optimizer, name of its rate attribute, base rate)`` for ``--optimizer``."""
    O = chainer.optimizers
    if args.optimizer == 'sgd':
        return O.MomentumSGD(lr=args.lr, momentum=0.9), 'lr', args.lr
    if args.optimizer == 'nesterov':
        return O.NesterovAG(lr=args.lr, momentum=0.9), 'lr', args.lr
    if args.optimizer == 'adam':
        return O.Adam(alpha=args.alpha), 'alpha', args.alpha
    if args.optimizer == 'amsgrad':
        return O.Adam(alpha=args.alpha, amsgrad=True), 'alpha', args.alpha
    raise UserError('unknown --optimizer {!r}'.format(args.optimizer))


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


def output_paths(args):
    base = os.path.join(args.out, args.prefix)
    return {'model': base + '.model', 'state': base + '.state', 'log': base + '_log.csv',
            'loss_png': base + '_loss.png', 'error_png': base + '_error.png',
            'snapshot': base + '.snapshot', 'run': base + '_run.json',
            'every': base + '_{epoch}.model'}


def versions(device):
    v = {'python': platform.python_version(), 'chainer': chainer.__version__, 'numpy': numpy.__version__}
    if device.xp is not numpy:
        v['cupy'] = device.xp.__version__
    return v


def code_version():
    """``git describe`` of the checkout this package runs from (``+dirty`` with local changes), or None.

    Recorded in ``_run.json`` so that a result can be traced to the code that produced it.
    """
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(['git', '-C', here, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode:
            return None
        dirty = subprocess.run(['git', '-C', here, 'status', '--porcelain', '--untracked-files=no'],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ('+dirty' if dirty else '')


def device_name(device):
    """The hardware behind ``device``: the GPU's name, or the CPU's model name (None if unknown)."""
    try:
        if device.xp is not numpy:
            name = device.xp.cuda.runtime.getDeviceProperties(device.device.id)['name']
            return name.decode() if isinstance(name, bytes) else str(name)
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except Exception:  # a record without the name is still a record
        return None
    return platform.processor() or None


def dataset_info(image_path):
    path = os.path.join(os.path.dirname(os.path.abspath(image_path)), 'dataset_info.json')
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return None


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n'),
                 mode='w')


def count_parameters(model):
    return int(sum(p.size for p in model.params() if p.array is not None))


def _say(args, *msg):
    if not args.quiet:
        print(*msg)
        sys.stdout.flush()


def divergence_advice(args, recipe=None):
    """What the NaN message suggests. ``recipe``: (preset name, its optimizer flags) known to train
    ``args.model`` (the front end looks it up among the presets), or None."""
    rate = '--lr' if args.optimizer in ('sgd', 'nesterov') else '--alpha'
    generic = 'a lower {} or a warm-up (--warmup_epochs 1)'.format(rate)
    if recipe is None:
        return 'try ' + generic
    name, flags = recipe
    return 'preset {} trains -m {} with {} (python src/compare.py run {}); or try {}'.format(
        name, args.model, ' '.join(flags), name, generic)


def train(args, recipe=None):
    """Train as the (already checked) ``args`` say; returns a :class:`Summary`.

    With ``args.communicator`` this is one worker of a data-parallel run
    (see :mod:`.distributed`); without it nothing of MPI is imported.
    ``recipe`` is for the divergence message (:func:`divergence_advice`).
    """
    comm = None
    if getattr(args, 'communicator', None):
        from chainer_cifar.training import distributed
        comm = distributed.create_communicator(args.communicator)
        device = distributed.get_device(comm, args.gpu, get_device)
    else:
        device = get_device(args.gpu)
    # The same seed on every worker: identical initial weights before the broadcast, too.
    seed_everything(args.seed, device)
    options = model_options(args)
    dtype = chainer.mixed16 if args.dtype == 'mixed16' else numpy.float32
    with chainer.using_config('dtype', dtype):
        # The model first: a bad name or option is refused before the (slow) data load.
        predictor = create_model(args.model, **options)
        splits = load_splits(args)
        return _train(args, device, splits, options, predictor, comm, divergence_advice(args, recipe))


def _train(args, device, splits, options, predictor, comm=None, advice=None):
    start_time = datetime.datetime.now()
    dist = None
    if comm is not None:
        from chainer_cifar.training import distributed as dist
        if args.sync_bn:
            predictor = dist.sync_batch_norm(predictor, comm)
        if comm.rank != 0:
            args.quiet = True  # one voice: rank 0 prints
            seed_everything(stream_seed(args.seed, dist.seed_offset(comm)), device)  # own dropout/depth draws
    writer = dist is None or dist.is_writer(comm)
    offset = 0 if dist is None else dist.seed_offset(comm)
    model = Classifier(predictor)
    model.to_device(device)
    optimizer, lr_attr, base_lr = make_optimizer(args)
    if dist is not None:
        optimizer = dist.multi_node_optimizer(optimizer, comm)
    optimizer.setup(model)
    if args.weight_decay > 0:
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(args.weight_decay))
    if args.dtype == 'mixed16':
        # mixed16 makes conv/linear weights float16: keep float32 master copies in the
        # optimizer, and scale the loss so small float16 gradients do not flush to zero.
        optimizer.use_fp32_update()
        optimizer.loss_scaling()

    # Separate generators for the split (seed), the order (seed+1) and the
    # augmentation (seed+2): changing --augment does not change the order.
    augmenter = Augmenter(args.augment, seed=stream_seed(args.seed, 2 + offset))
    train_data = splits.train if dist is None else dist.scatter(splits.train, comm, stream_seed(args.seed, 3), True)
    # The training set sits on the device once; each batch is gathered there by index.
    train_iter = EpochIterator(train_data, args.batch_size, stream_seed(args.seed, 1 + offset), indices=True)
    converter = Converter(device, augmenter, resident=resident_arrays(train_data, device))
    if getattr(args, 'accumulate', 1) > 1:
        updater = AccumulatingUpdater(train_iter, optimizer, converter, args.accumulate)
    else:
        updater = training.updaters.StandardUpdater(train_iter, optimizer, converter=converter)
    paths = output_paths(args)
    trainer = training.Trainer(updater, (args.iter, 'epoch'), out=args.out)

    has_valid = splits.valid is not None
    sizes = (len(splits.train), len(splits.valid) if has_valid else 0, len(splits.test))
    fingerprint = checkpoint.data_fingerprint(splits)
    meta = {'model': args.model, 'model_options': options, 'n_train': sizes[0], 'n_valid': sizes[1],
            'n_test': sizes[2], 'batch_size': args.batch_size, 'dtype': args.dtype, 'seed': args.seed,
            'augment': args.augment, 'recipe': checkpoint.recipe(args, sizes, fingerprint)}
    if dist is not None:
        meta['workers'] = comm.size  # absent = 1: single-process snapshots stay as they were
    schedule = Schedule(base_lr, args.iter, args.lr_shape, args.lr_decay_iter, args.warmup_epochs,
                        args.warmup_lr)
    trainer.extend(LearningRate(schedule, lr_attr))
    eval_converter = Converter(device)

    def evaluator(dataset):
        if dist is None:
            return E.Evaluator(make_eval_iterator(dataset, args.batch_size), model, converter=eval_converter)
        return dist.evaluator(dataset, args.batch_size, model, eval_converter, comm, stream_seed(args.seed, 3),
                              make_eval_iterator)
    if has_valid:
        trainer.extend(evaluator(splits.valid), name='validation')
    trainer.extend(evaluator(splits.test), name='test')
    if dist is not None:
        trainer.extend(dist.AggregateTrainObservation(comm))
    snapshot = X.Snapshot(paths['snapshot'], meta)
    trainer.extend(X.NaNGuard(snapshot, advice=advice, mixed16=args.dtype == 'mixed16'))
    log_report = E.LogReport(log_name=None)
    trainer.extend(log_report)
    best = X.BestModel(predictor, optimizer, paths['model'], paths['state'], has_valid)
    # Every worker holds the same weights and the same aggregated log: rank 0 alone writes them.
    if writer:
        trainer.extend(best)
        trainer.extend(X.CSVLog(log_report, paths['log'], paths['loss_png'], paths['error_png']))
        if args.save_iter:
            trainer.extend(X.SaveEvery(predictor, paths['every'], args.save_iter))
    trainer.extend(checkpoint.RandomStates({None: None, 'augment': augmenter.rng},
                                           seed=args.seed, device=device))
    n_workers = 1 if dist is None else comm.size
    if not args.quiet:
        trainer.extend(X.print_report(has_valid))
        iters_per_epoch = -(-len(train_data) // args.batch_size)
        trainer.extend(X.Progress(args.batch_size * n_workers, args.iter, iters_per_epoch))
    if writer:
        trainer.extend(snapshot)
    guard = X.InterruptGuard(snapshot, sync=None if dist is None else dist.Agreement(comm), save=writer)
    trainer.extend(guard)

    if args.resume:
        saved = checkpoint.read_meta(args.resume)
        check_resume_location(args.resume, paths['snapshot'])
        if dist is not None or 'workers' in saved:
            from chainer_cifar.training import distributed
            distributed.check_resume(args.resume, n_workers)
        saved = checkpoint.load_snapshot(args.resume, trainer, meta)
        snapshot.on_disk = True
        if updater.epoch_detail > args.iter:
            raise UserError('--iter {} ends before the snapshot, which is at epoch {:g}; give --iter {} or '
                            'more'.format(args.iter, updater.epoch_detail, math.ceil(updater.epoch_detail)))
        if saved['unchecked']:
            print('note: {} predates the recipe record: {} could not be checked against it'.format(
                args.resume, ', '.join(saved['unchecked'])), file=sys.stderr)
        if dist is not None:
            dist.reseed_after_resume(comm, args.seed, updater.iteration,
                                     [train_iter.rng, augmenter.rng, None])
        _say(args, 'resumed from {} at epoch {} (iteration {})'.format(
            args.resume, updater.epoch_detail, updater.iteration))
    if dist is not None:
        dist.broadcast_initial_model(model, optimizer, comm)

    # Everything that can be refused has been checked: from here on, write.
    n_params = count_parameters(predictor)
    record = {'args': vars(args), 'model': args.model, 'model_options': options, 'parameters': n_params,
              'n_train': meta['n_train'], 'n_valid': meta['n_valid'], 'n_test': meta['n_test'],
              'images': os.path.abspath(args.dataset), 'labels': os.path.abspath(args.label),
              'data_sha256': fingerprint,
              'device': str(device), 'device_name': device_name(device), 'versions': versions(device),
              'code': code_version(), 'start_time': start_time.isoformat(),
              'end_time': None, 'wall_seconds': None, 'status': 'running'}
    info = dataset_info(args.dataset)
    if info is not None:
        record['dataset'] = info
    if dist is not None:
        record.update(workers=comm.size, communicator=args.communicator,
                      total_batch_size=args.batch_size * comm.size)
    t0 = time.time()
    status = 'failed'
    # From the first "running" record on, every way out rewrites it with how the run ended.
    guard.install()
    try:
        if writer:
            os.makedirs(args.out, exist_ok=True)
            write_json(paths['run'], record)
        _say(args, '{}: {:,} parameters; {} train / {} valid / {} test images; {}'.format(
            args.model, n_params, meta['n_train'], meta['n_valid'], meta['n_test'], device))
        if dist is not None:
            _say(args, dist.describe(comm, args.batch_size, lr_attr, base_lr))
        trainer.run(show_loop_exception_msg=False)
        status = 'finished'
    except X.TrainingInterrupted:
        status = 'interrupted'
        raise
    except KeyboardInterrupt:
        # A second signal stopped the run mid-iteration: resume from the last end-of-epoch snapshot.
        status = 'interrupted'
        raise X.TrainingInterrupted(snapshot.path if snapshot.on_disk else None, at_once=True)
    except X.TrainingDiverged:
        status = 'diverged'
        raise
    finally:
        guard.uninstall()
        record.update(status=status, end_time=datetime.datetime.now().isoformat(),
                      wall_seconds=round(time.time() - t0, 3), epochs=updater.epoch,
                      best_epoch=best.best_epoch,
                      best_valid_error=best.best_error if has_valid else None,
                      test_error_at_best=best.test_error_at_best)
        if writer:
            write_json(paths['run'], record)

    rows = X.log_rows(log_report.log)
    summary = Summary(best.best_epoch, best.best_error if has_valid else None, best.test_error_at_best,
                      rows[-1]['test_error'] if rows else None, updater.epoch, time.time() - t0, paths)
    if not writer:
        return summary
    if has_valid:
        print('best validation error {:.2f}% at epoch {}; test error at that epoch {:.2f}% '
                   '(final test error {:.2f}%)'.format(100 * summary.best_valid_error, summary.best_epoch,
                                                      100 * summary.test_error_at_best,
                                                      100 * summary.final_test_error))
    elif rows:
        print('no validation set: test error of the last epoch ({}) {:.2f}%'.format(
            summary.epochs, 100 * summary.final_test_error))
    return summary
