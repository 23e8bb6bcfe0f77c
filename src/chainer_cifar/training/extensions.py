"""Trainer extensions: the CSV log and plots, best-model saving, NaN guard, snapshot, Ctrl-C, progress.

Priorities (higher runs first at the end of an iteration)::

    LearningRate (writer+10) > Evaluators (writer) > NaNGuard (writer-1)
    > LogReport (reader) > BestModel > CSVLog > PrintReport/Progress > Snapshot > Interrupt
"""
import csv
import io
import math
import os
import signal
import sys
import threading
import time

import numpy

import chainer
from chainer import serializers, training
from chainer.training import extensions as E

from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError

CSV_COLUMNS = ('epoch', 'train_loss', 'train_error', 'valid_loss', 'valid_error',
               'test_loss', 'test_error', 'lr', 'elapsed')
_SOURCES = {'train': 'main', 'valid': 'validation/main', 'test': 'test/main'}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last snapshot is kept."""


class TrainingInterrupted(Exception):
    """Ctrl-C: a snapshot was written at an iteration boundary."""

    def __init__(self, snapshot):
        super().__init__('interrupted; snapshot saved to {}'.format(snapshot))
        self.snapshot = snapshot


def save_npz_atomic(path, obj):
    atomic_write(path, lambda f: serializers.save_npz(f, obj))


def log_rows(log):
    """CSV rows (dicts keyed by :data:`CSV_COLUMNS`) from ``LogReport.log``; errors as fractions."""
    rows = []
    for entry in log:
        row = {'epoch': entry['epoch']}
        for part, source in _SOURCES.items():
            loss, acc = entry.get(source + '/loss'), entry.get(source + '/accuracy')
            row[part + '_loss'] = loss
            row[part + '_error'] = None if acc is None else 1.0 - acc
        row['lr'] = entry.get('lr')
        row['elapsed'] = entry.get('elapsed_time')
        rows.append(row)
    return rows


def _fmt(v):
    if v is None:
        return ''
    if isinstance(v, float):
        return repr(float(v))
    return str(v)


class CSVLog(training.Extension):
    """Rewrites ``<prefix>_log.csv`` (and the two plots) from the LogReport at each epoch.

    Rewriting from the log (which the snapshot carries) makes a resumed run's
    file identical to an uninterrupted one's.
    """

    trigger = (1, 'epoch')
    priority = training.PRIORITY_READER - 2
    name = 'csv_log'

    def __init__(self, log_report, csv_path, loss_png=None, error_png=None):
        self.log_report = log_report
        self.csv_path = csv_path
        self.loss_png = loss_png
        self.error_png = error_png

    def __call__(self, trainer):
        rows = log_rows(self.log_report.log)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator='\n')
        w.writerow(CSV_COLUMNS)
        for row in rows:
            w.writerow([_fmt(row[c]) for c in CSV_COLUMNS])
        atomic_write(self.csv_path, lambda f: f.write(buf.getvalue()), mode='w')
        if self.loss_png or self.error_png:
            plot_curves(rows, self.loss_png, self.error_png)


def plot_curves(rows, loss_png, error_png):
    """Loss and error (%) against epoch for train/valid/test; skipped without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r['epoch'] for r in rows]
    for path, what, scale, label in ((loss_png, 'loss', 1.0, 'loss'), (error_png, 'error', 100.0, 'error (%)')):
        if not path:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for part in ('train', 'valid', 'test'):
            values = [r[part + '_' + what] for r in rows]
            if any(v is not None for v in values):
                ax.plot(epochs, [numpy.nan if v is None else v * scale for v in values], marker='.', label=part)
        ax.set_xlabel('epoch')
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=80))
        plt.close(fig)


class BestModel(training.Extension):
    """Saves ``<prefix>.model`` and ``<prefix>.state`` when the validation error improves.

    Without a validation set every epoch is saved (the last one is kept). Ties
    keep the earlier epoch. The best error and its epoch go into the snapshot.
    """

    trigger = (1, 'epoch')
    priority = training.PRIORITY_READER - 1
    name = 'best_model'

    def __init__(self, model, optimizer, model_path, state_path, has_valid):
        self.model = model
        self.optimizer = optimizer
        self.model_path = model_path
        self.state_path = state_path
        self.has_valid = has_valid
        self.best_error = float('inf')
        self.best_epoch = 0
        self.test_error_at_best = float('nan')

    def __call__(self, trainer):
        obs = trainer.observation
        test_acc = obs.get('test/main/accuracy')
        test_error = float('nan') if test_acc is None else 1.0 - float(test_acc)
        if self.has_valid:
            error = 1.0 - float(obs['validation/main/accuracy'])
            if not error < self.best_error:
                return
            self.best_error = error
        self.best_epoch = trainer.updater.epoch
        self.test_error_at_best = test_error
        save_npz_atomic(self.model_path, self.model)
        save_npz_atomic(self.state_path, self.optimizer)

    def serialize(self, serializer):
        self.best_error = float(serializer('best_error', self.best_error))
        self.best_epoch = int(serializer('best_epoch', self.best_epoch))
        self.test_error_at_best = float(serializer('test_error_at_best', self.test_error_at_best))


class NaNGuard(training.Extension):
    """Stops the run with a clear message as soon as the training loss is not finite.

    It runs before the log, the model saving and the snapshot, so none of them
    records the diverged state: the last snapshot stays the last good one.
    Under mixed16 the loss scaler already skips steps with overflowing gradients;
    a non-finite *loss* is still divergence.
    """

    trigger = (1, 'iteration')
    priority = training.PRIORITY_WRITER - 1
    name = 'nan_guard'

    def __init__(self, snapshot_path, key='main/loss'):
        self.snapshot_path = snapshot_path
        self.key = key

    def __call__(self, trainer):
        value = trainer.observation.get(self.key)
        if isinstance(value, tuple):
            value = value[0]
        if value is None:
            return
        if isinstance(value, chainer.Variable):
            value = value.array
        value = float(value)
        if not math.isfinite(value):
            kept = ('the last good snapshot is {}'.format(self.snapshot_path)
                    if os.path.exists(self.snapshot_path) else 'no snapshot was written yet')
            raise TrainingDiverged(
                'training loss became {} at epoch {}, iteration {}; stopped ({}). Try a lower --lr/--alpha, '
                'a warm-up (--warmup_epochs 1) or --dtype float32'.format(
                    value, trainer.updater.epoch + 1, trainer.updater.iteration, kept))


class SaveEvery(training.Extension):
    """``<prefix>_<epoch>.model`` every ``--save_iter`` epochs."""

    priority = training.PRIORITY_READER - 3
    name = 'save_every'

    def __init__(self, model, pattern, every):
        self.model = model
        self.pattern = pattern
        self.trigger = (every, 'epoch')

    def __call__(self, trainer):
        save_npz_atomic(self.pattern.format(epoch=trainer.updater.epoch), self.model)


class Snapshot(training.Extension):
    """The atomic resumable snapshot at the end of every epoch (see :mod:`.checkpoint`)."""

    trigger = (1, 'epoch')
    priority = -100
    name = 'snapshot'

    def __init__(self, path, meta):
        self.path = path
        self.meta = meta

    def __call__(self, trainer):
        self.save(trainer)

    def save(self, trainer):
        from chainer_cifar.training.checkpoint import save_snapshot
        save_snapshot(self.path, trainer, self.meta)


class InterruptGuard(training.Extension):
    """Turns Ctrl-C into "snapshot at the next iteration boundary, then stop".

    A KeyboardInterrupt raised in the middle of an update could leave the
    parameters half-updated; instead SIGINT only sets a flag and this
    extension, last of all at the end of an iteration, writes a consistent
    snapshot (mid-epoch: the iterator position and the partial epoch's log
    are in it) and raises :class:`TrainingInterrupted`. A second Ctrl-C
    interrupts at once.

    In a data-parallel run ``sync`` (:class:`.distributed.Agreement`) makes
    every worker stop in the same iteration (one that stopped alone would
    leave the others waiting in the next all-reduce); only the worker with
    ``save`` writes the snapshot, and all wait until it is written.
    """

    trigger = (1, 'iteration')
    priority = -200
    name = 'interrupt_guard'

    def __init__(self, snapshot, sync=None, save=True):
        self.snapshot = snapshot
        self.sync = sync
        self.save = save
        self.requested = False
        self._previous = None

    def request(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self.request)

    def uninstall(self):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __call__(self, trainer):
        requested = self.requested if self.sync is None else self.sync.any(self.requested)
        if requested:
            if self.save:
                self.snapshot.save(trainer)
            if self.sync is not None:
                self.sync.barrier()
            raise TrainingInterrupted(self.snapshot.path)


class Progress(training.Extension):
    """One status line: epoch, iteration, img/s and ETA; redrawn in place on a terminal.

    Off a terminal (logs, CI) a line is printed at most every ``interval`` seconds.
    """

    trigger = (1, 'iteration')
    priority = training.PRIORITY_READER - 5
    name = 'progress'

    def __init__(self, batch_size, epochs, iters_per_epoch, out=None, interval=None):
        out = sys.stderr if out is None else out
        self.batch_size = batch_size
        self.epochs = epochs
        self.iters_per_epoch = iters_per_epoch
        self.out = out
        self.tty = hasattr(out, 'isatty') and out.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 60.0)
        self._start = None
        self._last = 0.0

    def initialize(self, trainer):
        self._start = (time.time(), trainer.updater.iteration)

    def __call__(self, trainer):
        now = time.time()
        if now - self._last < self.interval:
            return
        self._last = now
        u = trainer.updater
        t0, i0 = self._start
        done = u.iteration - i0
        rate = done / max(now - t0, 1e-9)
        total = self.epochs * self.iters_per_epoch
        eta = (total - u.iteration) / rate if rate > 0 else float('inf')
        line = 'epoch {}/{}  iter {}/{}  {:.0f} img/s  ETA {}'.format(
            min(u.epoch + 1, self.epochs), self.epochs, u.iteration, total, rate * self.batch_size,
            _hms(eta))
        self.out.write(('\r' + line + '\033[K') if self.tty else line + '\n')
        self.out.flush()

    def finalize(self):
        if self.tty:
            self.out.write('\r\033[K')
            self.out.flush()


def _hms(seconds):
    if not math.isfinite(seconds):
        return '?'
    seconds = int(seconds)
    return '{}:{:02d}:{:02d}'.format(seconds // 3600, seconds // 60 % 60, seconds % 60)


def print_report(has_valid, out=None):
    out = sys.stdout if out is None else out
    entries = ['epoch', 'main/loss', 'main/accuracy']
    if has_valid:
        entries += ['validation/main/loss', 'validation/main/accuracy']
    entries += ['test/main/loss', 'test/main/accuracy', 'lr', 'elapsed_time']
    if not (hasattr(out, 'isatty') and out.isatty()):
        out = _NoEscapes(out)
    return E.PrintReport(entries, out=out)


class _NoEscapes(object):
    """A stream that drops the terminal escape PrintReport writes before each line (logs stay clean)."""

    def __init__(self, out):
        self._out = out

    def write(self, text):
        self._out.write(text.replace('\033[J', ''))

    def flush(self):
        self._out.flush()
