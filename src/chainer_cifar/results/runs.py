"""Read training runs back: ``<prefix>_log.csv``, ``<prefix>_run.json`` and the preset sidecar.

A run's protocol number is the test error *at the epoch of best validation
error* (Huang et al.'s protocol); the final epoch's test error is kept beside
it. The best test error over epochs is never used: picking an epoch by the
test set overstates how good a model is.
"""
import collections
import csv
import json
import math
import os

from chainer_cifar.data.archive import MD5 as OFFICIAL_MD5
from chainer_cifar.errors import UserError

PRESET_SUFFIX = '_preset.json'
RUN_SUFFIX = '_run.json'
LOG_SUFFIX = '_log.csv'
FULL_TRAIN_IMAGES = 50000
FULL_TEST_IMAGES = 10000
# Record statuses of a run that can go on from its snapshot: stopped by a signal, or killed (SIGKILL, a machine
# taken back) after an epoch's snapshot, or going on now (its output lock then refuses a second one). A
# diverged run would diverge again; a finished one is done.
RESUMABLE = ('interrupted', 'running')

Run = collections.namedtuple('Run', 'path prefix rows meta preset')
Summary = collections.namedtuple(
    'Summary', 'run epochs best_epoch best_valid_error test_at_best final_test_error wall_seconds')


def _float(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def load_run(log_path):
    """Read one run from its ``<prefix>_log.csv`` and the files beside it."""
    if not os.path.isfile(log_path):
        raise UserError('log {} not found'.format(log_path))
    if not log_path.endswith(LOG_SUFFIX):
        raise UserError('{} is not a <prefix>{} file written by train.py'.format(log_path, LOG_SUFFIX))
    prefix = log_path[:-len(LOG_SUFFIX)]
    with open(log_path, newline='') as f:
        reader = csv.DictReader(f)
        missing = {'epoch', 'test_error'} - set(reader.fieldnames or [])
        if missing:
            raise UserError('{} lacks the column(s) {}; is it a train.py log?'.format(
                log_path, ', '.join(sorted(missing))))
        rows = [{k: _float(v) for k, v in row.items()} for row in reader]
    if not rows:
        raise UserError('{} has no epochs yet'.format(log_path))
    meta = _load_json(prefix + RUN_SUFFIX)
    preset = _load_json(prefix + PRESET_SUFFIX)
    return Run(log_path, os.path.basename(prefix), rows, meta, preset)


def _load_json(path):
    if not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise UserError('{} is not valid JSON ({})'.format(path, e))


def summarize(run):
    """The protocol numbers of one run (errors in percent)."""
    rows = run.rows
    scale = 100.0 if max(r['test_error'] for r in rows if r['test_error'] is not None) <= 1.0 else 1.0
    with_valid = [r for r in rows if r.get('valid_error') is not None]
    if with_valid:
        # First epoch of the minimum: ties go to the earlier epoch, as an early-stopping run would.
        best = min(with_valid, key=lambda r: (r['valid_error'], r['epoch']))
        best_valid = best['valid_error'] * scale
    else:
        best, best_valid = rows[-1], None  # no validation set: the last epoch, as train.py saves
    elapsed = rows[-1].get('elapsed')
    return Summary(run, int(rows[-1]['epoch']), int(best['epoch']), best_valid,
                   best['test_error'] * scale, rows[-1]['test_error'] * scale, elapsed)


def dataset_of(run):
    """``(description, comparable)`` of the data a run used, from its ``_run.json``.

    Comparable means: the full 50,000 / 10,000 images, built from an archive
    whose recorded MD5 is the official one, and no ``--subset``. Anything
    else is labelled PARTIAL (fewer images) or UNVERIFIED (full counts but
    another or no recorded archive MD5).
    """
    info = run.meta.get('dataset') or {}
    n_train = info.get('n_train')
    n_test = info.get('n_test')
    if n_train is None or n_test is None:
        return 'unknown dataset (no dataset_info.json recorded)', False
    subset = (run.meta.get('args') or {}).get('subset')
    partial = bool(info.get('partial')) or n_train < FULL_TRAIN_IMAGES or n_test < FULL_TEST_IMAGES or bool(subset)
    md5 = (info.get('archive') or {}).get('md5')
    official = md5 == OFFICIAL_MD5
    used = ' (first {} images used)'.format(subset) if subset else ''
    kind = 'PARTIAL' if partial else ('full' if official else 'UNVERIFIED (not the official archive MD5)')
    label = '{} {:,} train / {:,} test images, archive MD5 {}{}'.format(
        kind, n_train, n_test, md5 or 'unknown', used)
    return label, not partial and official


def status_of(run):
    """The run's status from ``_run.json`` (``finished``, ``running``, ``interrupted``, ...), or None."""
    return (run.meta or {}).get('status')
