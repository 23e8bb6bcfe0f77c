"""Trainer extensions: the CSV log and plots, best-model saving, NaN guard, snapshot, Ctrl-C/SIGTERM, progress.

Priorities (higher runs first at the end of an iteration)::

    LearningRate (writer+10) > Evaluators (writer) > NaNGuard (writer-1)
    > LogReport (reader) > BestModel > CSVLog > PrintReport/Progress > Snapshot > Interrupt
"""
import contextlib
import csv
import io
import math
import signal
import sys
import threading
import time

from chainer import serializers, training
from chainer.training import extensions as E

from chainer_cifar import plots
from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError

CSV_COLUMNS = ('epoch', 'train_loss', 'train_error', 'valid_loss', 'valid_error',
               'test_loss', 'test_error', 'lr', 'elapsed')
_SOURCES = {'train': 'main', 'valid': 'validation/main', 'test': 'test/main'}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last snapshot is kept."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a snapshot was written at an iteration boundary.

    ``at_once``: a second signal stopped the run in the middle of an iteration;
    ``snapshot`` is then the last one written (or resumed from), None if there is none.
    """

    def __init__(self, snapshot, at_once=False):
        if not at_once:
            text = 'interrupted; snapshot saved to {}'.format(snapshot)
        elif snapshot:
            text = 'interrupted at once by a second signal; the last snapshot written is {}'.format(snapshot)
        else:
            text = 'interrupted at once by a second signal, before the first snapshot was written'
        super().__init__(text)
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
    """Loss and error (%) against epoch for train/valid/test, one PNG each; skipped without matplotlib."""
    epochs = [r['epoch'] for r in rows]
    for path, what, scale, label in ((loss_png, 'loss', 1.0, 'loss'), (error_png, 'error', 100.0, 'error (%)')):
        if not path:
            continue
        lines = []
        for part in ('train', 'valid', 'test'):
            values = [r[part + '_' + what] for r in rows]
            if any(v is not None for v in values):
                lines.append(plots.Line(epochs, [None if v is None else v * scale for v in values], part, '.-'))
        try:
            plots.plot_curves(path, [plots.Panel(label, lines)])
        except ImportError:
            return


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
    """Stops the run with a clear message as soon as a loss is not finite.

    The training loss every iteration; at an epoch's end also the evaluators'
    (they run first): an update can leave non-finite weights while the loss
    it was computed from was finite, and at an epoch's end those weights
    would otherwise be saved as the best model and the snapshot. It runs
    before the log, the model saving and the snapshot, so none of them
    records the diverged state: the last snapshot stays the last good one.
    Under mixed16 the loss scaler already skips steps with overflowing gradients;
    a non-finite *loss* is still divergence.
    """

    trigger = (1, 'iteration')
    priority = training.PRIORITY_WRITER - 1
    name = 'nan_guard'
    LOSSES = (('main/loss', 'training'), ('validation/main/loss', 'validation'), ('test/main/loss', 'test'))

    def __init__(self, snapshot, advice=None, mixed16=False):
        self.snapshot = snapshot  # the run's Snapshot extension
        self.advice = advice or 'try a lower --lr/--alpha or a warm-up (--warmup_epochs 1)'
        self.mixed16 = mixed16

    def __call__(self, trainer):
        for key, what in self.LOSSES:
            value = trainer.observation.get(key)
            if isinstance(value, tuple):
                value = value[0]
            if value is None:
                continue
            value = float(getattr(value, 'array', value))
            if not math.isfinite(value):
                self._stop(trainer, what, value)

    def _stop(self, trainer, what, value):
        u = trainer.updater
        # The update belongs to the epoch it started in; after an epoch's last
        # one the updater already counts the finished epoch.
        epoch = u.epoch if u.is_new_epoch else u.epoch + 1
        kept = ('the last good snapshot is {}'.format(self.snapshot.path)
                if self.snapshot.on_disk else 'no snapshot was written yet')
        advice = self.advice + ('; or --dtype float32 (float16 overflows where float32 does not)'
                                if self.mixed16 else '')
        raise TrainingDiverged('{} loss became {} at epoch {}, iteration {}; stopped ({}). {}'.format(
            what, value, epoch, u.iteration, kept, advice[:1].upper() + advice[1:]))


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
        # Whether ``path`` holds this run's state (written by it, or resumed from): a file
        # there from an earlier run of the same prefix is not one to resume.
        self.on_disk = False

    def __call__(self, trainer):
        self.save(trainer)

    def save(self, trainer):
        from chainer_cifar.training.checkpoint import save_snapshot
        save_snapshot(self.path, trainer, self.meta)
        self.on_disk = True


class InterruptGuard(training.Extension):
    """Turns Ctrl-C and SIGTERM into "snapshot at the next iteration boundary, then stop".

    A KeyboardInterrupt raised in the middle of an update could leave the
    parameters half-updated; instead SIGINT or SIGTERM (what ``kill``, a job
    scheduler or a container stop sends) only sets a flag and this
    extension, last of all at the end of an iteration, writes a consistent
    snapshot (mid-epoch: the iterator position and the partial epoch's log
    are in it) and raises :class:`TrainingInterrupted`. A second signal
    interrupts at once (KeyboardInterrupt).

    In a data-parallel run ``sync`` (:class:`.distributed.Agreement`) makes
    every worker stop in the same iteration (one that stopped alone would
    leave the others waiting in the next all-reduce); only the worker with
    ``save`` writes the snapshot, and all wait until it is written.
    """

    trigger = (1, 'iteration')
    priority = -200
    name = 'interrupt_guard'
    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, snapshot, sync=None, save=True):
        self.snapshot = snapshot
        self.sync = sync
        self.save = save
        self.requested = False
        self._previous = {}

    def request(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def install(self):
        # Python lets only the main thread set signal handlers (tests may train in another).
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self.request) for s in self.SIGNALS}

    def uninstall(self):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    def __call__(self, trainer):
        requested = self.requested if self.sync is None else self.sync.any(self.requested)
        if requested:
            if self.save:
                self.snapshot.save(trainer)
            if self.sync is not None:
                self.sync.barrier()
            raise TrainingInterrupted(self.snapshot.path)


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the block runs (main thread only).

    Outside the training loop (loading data, building the model) a stop
    request then ends the command as Ctrl-C does: one line, exit code 130,
    instead of the silent death of SIGTERM's default action.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
