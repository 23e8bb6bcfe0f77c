"""Assemble and run Chainer's ``Trainer`` for ``train.py``.

:func:`train` follows Chainer's ``examples/cifar/train_cifar.py``: model,
optimizer, updater, trainer, extensions, resume, run; each step is one
function below. Everything a data-parallel run does differently is asked of
one object, ``workers`` (:mod:`.workers`: one process, or a ChainerMN worker),
so the loop reads as the loop of one process.

Every check that can fail (flags, data, model, device, snapshot) happens
*before* the first file is written, so a bad command leaves no half-written
output; then the trainer runs and :func:`train` returns a :class:`Summary`.
"""
import collections
import datetime
import math
import os
import sys

import numpy

import chainer
import chainer.functions as F
from chainer import training
from chainer.training import extensions as E

from chainer_cifar.data.augment import Augmenter
from chainer_cifar.errors import UserError
from chainer_cifar.models.registry import create_model
from chainer_cifar.training import checkpoint, extensions as X, workers as workers_
from chainer_cifar.training.args import model_options
from chainer_cifar.training.data import Converter, EpochIterator, load_splits, resident_arrays
from chainer_cifar.training.device import device_name
from chainer_cifar.training.lock import OutputLock
from chainer_cifar.training.record import (RunRecord, code_version, count_parameters, dataset_info,
                                          earlier_segments, versions)
from chainer_cifar.training.schedule import LearningRate, Schedule
from chainer_cifar.training.seeds import AUGMENT, ORDER, seed_everything, stream_seed
from chainer_cifar.training.updater import AccumulatingUpdater

# ``files``: what this process wrote, for the closing summary (none on a worker that writes nothing).
Summary = collections.namedtuple('Summary', 'best_epoch best_valid_error test_error_at_best '
                                            'final_test_error epochs wall_seconds paths files')


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


# ---------------------------------------------------------------- the loop

def train(args, recipe=None):
    """Train as the (already checked) ``args`` say; returns a :class:`Summary`.

    With ``args.communicator`` this is one worker of a data-parallel run
    (see :mod:`.distributed`); without it nothing of MPI is imported.
    ``recipe`` is for the divergence message (:func:`divergence_advice`).
    """
    workers = workers_.create(args)
    device = workers.device(args.gpu)
    # The same seed on every worker: identical initial weights before the broadcast, too.
    seed_everything(args.seed, device)
    dtype = chainer.mixed16 if args.dtype == 'mixed16' else numpy.float32
    with chainer.using_config('dtype', dtype):
        # The model first: a bad name or option is refused before the (slow) data load.
        predictor = create_model(args.model, **model_options(args))
        splits = load_splits(args)
        return _train(args, device, splits, predictor, workers, divergence_advice(args, recipe))


def _train(args, device, splits, predictor, workers, advice):
    """Chainer's ``train_cifar.py`` loop: model and optimizer, updater, trainer, extensions, resume, run."""
    start_time = datetime.datetime.now()
    predictor = workers.prepare_model(predictor)
    if workers.seed_offset:  # a worker other than rank 0: its own dropout and depth draws from here on
        seed_everything(stream_seed(args.seed, workers.seed_offset), device)
    quiet = args.quiet or not workers.is_writer  # one voice: rank 0 prints
    model = Classifier(predictor)
    model.to_device(device)
    optimizer, lr_attr, base_lr = make_optimizer(args)
    optimizer = setup_optimizer(optimizer, model, args, workers)

    train_data = workers.scatter(splits.train)
    updater, augmenter = make_updater(args, train_data, optimizer, device, workers.seed_offset)
    trainer = training.Trainer(updater, (args.iter, 'epoch'), out=args.out)

    paths = output_paths(args)
    meta = snapshot_meta(args, splits, workers)
    snapshot = X.Snapshot(paths['snapshot'], meta)
    trainer.extend(LearningRate(make_schedule(args, base_lr), lr_attr))
    add_evaluators(trainer, model, splits, args.batch_size, device, workers)
    trainer.extend(X.NaNGuard(snapshot, advice=advice, mixed16=args.dtype == 'mixed16'))
    log_report, best = add_outputs(trainer, args, predictor, optimizer, paths, splits.valid is not None, workers)
    trainer.extend(checkpoint.RandomStates({None: None, 'augment': augmenter.rng}, seed=args.seed, device=device))
    if not quiet:
        add_progress(trainer, splits.valid is not None, args.batch_size * workers.workers, args.iter,
                     -(-len(train_data) // args.batch_size))
    guard = add_snapshot(trainer, snapshot, workers)

    if args.resume:
        generators = [updater.get_iterator('main').rng, augmenter.rng, None]  # None: NumPy's global one
        resume(trainer, args, snapshot, workers, generators, quiet)
    workers.broadcast(model, optimizer)

    # Everything that can be refused has been checked: from here on, write.
    n_params = count_parameters(predictor)
    record = RunRecord(paths['run'], run_fields(args, n_params, meta, device, start_time, workers),
                       write=workers.is_writer, earlier=earlier_segments(paths['run']) if args.resume else ())
    _say(quiet, '{}: {:,} parameters; {} train / {} valid / {} test images; {}'.format(
        args.model, n_params, meta['n_train'], meta['n_valid'], meta['n_test'], device))
    _say(quiet, workers.describe(args.batch_size, lr_attr, base_lr))
    lock = OutputLock(os.path.join(args.out, args.prefix), enabled=workers.is_writer)
    run(trainer, record, guard, snapshot, best, lock)

    rows = X.log_rows(log_report.log)
    return Summary(best.best_epoch, best.best_error if best.has_valid else None, best.test_error_at_best,
                   rows[-1]['test_error'] if rows else None, updater.epoch, record.seconds, paths,
                   files_written(paths, args.save_iter, updater.epoch) if workers.is_writer else [])


# ---------------------------------------------------------------- its steps

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


def setup_optimizer(optimizer, model, args, workers):
    """``optimizer`` set up on ``model`` with weight decay and, for mixed16, master weights and loss scaling."""
    optimizer = workers.wrap_optimizer(optimizer)
    optimizer.setup(model)
    if args.weight_decay > 0:
        optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(args.weight_decay))
    if args.dtype == 'mixed16':
        # mixed16 makes conv/linear weights float16: keep float32 master copies in the
        # optimizer, and scale the loss so small float16 gradients do not flush to zero.
        optimizer.use_fp32_update()
        optimizer.loss_scaling()
    return optimizer


def make_updater(args, train_data, optimizer, device, seed_offset=0):
    """``(updater, augmenter)``: batches of ``train_data`` in epoch order, augmented on the device."""
    augmenter = Augmenter(args.augment, seed=stream_seed(args.seed, AUGMENT + seed_offset))
    # The training set sits on the device once; each batch is gathered there by index.
    train_iter = EpochIterator(train_data, args.batch_size, stream_seed(args.seed, ORDER + seed_offset),
                               indices=True)
    converter = Converter(device, augmenter, resident=resident_arrays(train_data, device))
    if getattr(args, 'accumulate', 1) > 1:
        return AccumulatingUpdater(train_iter, optimizer, converter, args.accumulate), augmenter
    return training.updaters.StandardUpdater(train_iter, optimizer, converter=converter), augmenter


def make_schedule(args, base_lr):
    return Schedule(base_lr, args.iter, args.lr_shape, args.lr_decay_iter, args.warmup_epochs, args.warmup_lr)


def add_evaluators(trainer, model, splits, batch_size, device, workers):
    """Validation (when there is a split) and test every epoch, in test mode, as exact means over the images."""
    converter = Converter(device)
    if splits.valid is not None:
        trainer.extend(workers.evaluator(splits.valid, batch_size, model, converter), name='validation')
    trainer.extend(workers.evaluator(splits.test, batch_size, model, converter), name='test')
    for extension in workers.extensions():
        trainer.extend(extension)


def add_outputs(trainer, args, predictor, optimizer, paths, has_valid, workers):
    """The log, the best model and its optimizer, the CSV log with its plots, a model every ``--save_iter``.

    Returns ``(log_report, best_model)``; every worker keeps them (the same
    weights, the same aggregated log) but only the writer (rank 0) writes files.
    """
    log_report = E.LogReport(log_name=None)
    trainer.extend(log_report)
    best = X.BestModel(predictor, optimizer, paths['model'], paths['state'], has_valid)
    if workers.is_writer:
        trainer.extend(best)
        trainer.extend(X.CSVLog(log_report, paths['log'], paths['loss_png'], paths['error_png']))
        if args.save_iter:
            trainer.extend(X.SaveEvery(predictor, paths['every'], args.save_iter))
    return log_report, best


def add_progress(trainer, has_valid, images_per_iteration, epochs, iters_per_epoch):
    """The table of each epoch's numbers and the img/s + ETA line."""
    trainer.extend(X.print_report(has_valid))
    trainer.extend(X.Progress(images_per_iteration, epochs, iters_per_epoch))


def add_snapshot(trainer, snapshot, workers):
    """The snapshot at each epoch's end, and the Ctrl-C/SIGTERM guard that writes one and stops; returns the guard."""
    if workers.is_writer:
        trainer.extend(snapshot)
    guard = X.InterruptGuard(snapshot, sync=workers.interrupt_sync(), save=workers.is_writer)
    trainer.extend(guard)
    return guard


def resume(trainer, args, snapshot, workers, generators, quiet=False):
    """Load ``--resume`` into ``trainer``, refusing a snapshot that is not this run's to continue.

    ``snapshot`` is the run's :class:`.extensions.Snapshot` (its path and
    meta: the recipe the saved one must match); ``generators`` the random
    generators a data-parallel worker other than rank 0 reseeds.
    """
    saved = checkpoint.read_meta(args.resume)
    checkpoint.check_resume_location(args.resume, snapshot.path)
    checkpoint.check_workers(args.resume, saved, workers.workers)
    saved = checkpoint.load_snapshot(args.resume, trainer, snapshot.meta)
    snapshot.on_disk = True
    updater = trainer.updater
    if updater.epoch_detail > args.iter:
        raise UserError('--iter {} ends before the snapshot, which is at epoch {:g}; give --iter {} or '
                        'more'.format(args.iter, updater.epoch_detail, math.ceil(updater.epoch_detail)))
    if saved['unchecked']:
        print('note: {} predates the recipe record: {} could not be checked against it'.format(
            args.resume, ', '.join(saved['unchecked'])), file=sys.stderr)
    workers.after_resume(args.seed, updater.iteration, generators)
    _say(quiet, 'resumed from {} at epoch {} (iteration {})'.format(
        args.resume, updater.epoch_detail, updater.iteration))


def run(trainer, record, guard, snapshot, best, lock):
    """``trainer.run()`` between the run record saying ``running`` and the one saying how it ended.

    Holds ``lock`` (:class:`.OutputLock`) throughout: a run already writing
    these outputs refuses this one before anything is written. Re-raises how
    it stopped: :class:`.TrainingInterrupted` (a signal; a second one stops at
    once), :class:`.TrainingDiverged` or any error ('failed').
    """
    lock.acquire()
    status = 'failed'
    # From the first "running" record on, every way out rewrites it with how the run ended.
    guard.install()
    try:
        record.start()
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
        try:
            record.finish(status, epochs=trainer.updater.epoch, best_epoch=best.best_epoch,
                          best_valid_error=best.best_error if best.has_valid else None,
                          test_error_at_best=best.test_error_at_best)
        finally:
            lock.release()


# ---------------------------------------------------------------- what the run writes

def output_paths(args):
    """Every file of the run, in ``args.out`` and named ``args.prefix`` as ``check_args`` resolved them."""
    base = os.path.join(args.out, args.prefix)
    return {'model': base + '.model', 'state': base + '.state', 'log': base + '_log.csv',
            'loss_png': base + '_loss.png', 'error_png': base + '_error.png',
            'snapshot': base + '.snapshot', 'run': base + '_run.json',
            'every': base + '_{epoch}.model'}


def files_written(paths, save_iter, epochs):
    """The run's files that exist at its end, in the order of :func:`output_paths`; ``_<epoch>.model`` last.

    A run stopped before its first epoch has no model and no log; without
    matplotlib there are no plots.
    """
    names = ('model', 'state', 'log', 'loss_png', 'error_png', 'snapshot', 'run')
    every = [paths['every'].format(epoch=e) for e in range(save_iter, epochs + 1, save_iter)] if save_iter else []
    return [p for p in [paths[n] for n in names] + every if os.path.isfile(p)]


def snapshot_meta(args, splits, workers):
    """What the snapshot records about the run, checked on ``--resume`` (:func:`.checkpoint.recipe`)."""
    sizes = (len(splits.train), len(splits.valid) if splits.valid is not None else 0, len(splits.test))
    meta = {'model': args.model, 'model_options': model_options(args), 'n_train': sizes[0], 'n_valid': sizes[1],
            'n_test': sizes[2], 'batch_size': args.batch_size, 'dtype': args.dtype, 'seed': args.seed,
            'augment': args.augment, 'recipe': checkpoint.recipe(args, sizes, checkpoint.data_fingerprint(splits))}
    meta.update(workers.meta())  # absent = 1 worker: single-process snapshots stay as they were
    return meta


def run_fields(args, n_params, meta, device, start_time, workers):
    """The run record's fields at the start: flags, model, data, device, versions, code."""
    fields = {'args': vars(args), 'model': args.model, 'model_options': meta['model_options'],
              'parameters': n_params, 'n_train': meta['n_train'], 'n_valid': meta['n_valid'],
              'n_test': meta['n_test'], 'images': os.path.abspath(args.dataset),
              'labels': os.path.abspath(args.label), 'data_sha256': meta['recipe']['data'],
              'device': str(device), 'device_name': device_name(device), 'versions': versions(device),
              'code': code_version(), 'start_time': start_time.isoformat()}
    info = dataset_info(args.dataset)
    if info is not None:
        fields['dataset'] = info
    fields.update(workers.record(args.batch_size))
    return fields


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


def _say(quiet, line):
    if line and not quiet:
        print(line)
        sys.stdout.flush()
