"""The run record ``<prefix>_run.json``: what ran, on what, and how it ended.

It is written with the status ``running`` before the first update and
rewritten by every way the run ends (``finished``, ``interrupted``,
``diverged``, ``failed``), so only a killed process leaves ``running``.
A resumed run's record keeps what ran before it: ``segments`` lists each
process that trained the run (device, code, versions, times, epochs at its
end), so a run stopped on a GPU and finished on a CPU says so.
"""
import datetime
import json
import os
import platform
import subprocess
import time

import numpy

import chainer

from chainer_cifar.data.pickles import atomic_write


# What one process of a run records about itself; a resumed run's record lists them all as ``segments``.
SEGMENT_FIELDS = ('device', 'device_name', 'code', 'versions', 'start_time', 'end_time', 'wall_seconds',
                  'epochs', 'status')


class RunRecord(object):
    """The fields of ``<prefix>_run.json``; ``write=False`` (a worker other than rank 0) keeps them in memory.

    ``earlier``: the segments of the processes that trained the run before this one (:func:`earlier_segments`).
    """

    def __init__(self, path, fields, write=True, earlier=()):
        self.path = path
        self.fields = dict(fields, end_time=None, wall_seconds=None, status='running')
        self.write = write
        self.earlier = list(earlier)
        self._t0 = None

    def start(self):
        """Write the record saying ``running``; the wall time counts from here."""
        self._t0 = time.time()
        self._save()

    @property
    def seconds(self):
        return time.time() - self._t0

    def finish(self, status, **results):
        """Rewrite the record with how the run ended and its ``results`` (epochs, best epoch ...)."""
        self.fields.update(status=status, end_time=datetime.datetime.now().isoformat(),
                           wall_seconds=round(self.seconds, 3), **results)
        self._save()

    def _save(self):
        if self.earlier:
            self.fields['segments'] = self.earlier + [{k: self.fields.get(k) for k in SEGMENT_FIELDS}]
        if self.write:
            os.makedirs(os.path.dirname(self.path) or os.curdir, exist_ok=True)
            write_json(self.path, self.fields)


def earlier_segments(path):
    """The segments of the record a resumed run finds at ``path`` (its own, beside its snapshot), or [].

    A record written before segments were kept counts as one segment. Read as JSON only.
    """
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return []
    if not isinstance(old, dict):
        return []
    if isinstance(old.get('segments'), list):
        return old['segments']
    return [{k: old.get(k) for k in SEGMENT_FIELDS}]


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + '\n'),
                 mode='w')


def versions(device):
    v = {'python': platform.python_version(), 'chainer': chainer.__version__, 'numpy': numpy.__version__}
    if device.xp is not numpy:
        v['cupy'] = device.xp.__version__
    return v


def code_version():
    """``git describe`` of the checkout this package runs from (``+dirty`` with local changes), or None.

    Recorded in ``_run.json`` so that a result can be traced to the code that produced it.
    ``$CHAINER_CIFAR_CODE`` overrides it, for a copied tree whose ``.git`` is not its own
    (a lent GPU machine's copy of the history can be older than the files it runs).
    """
    if os.environ.get('CHAINER_CIFAR_CODE'):
        return os.environ['CHAINER_CIFAR_CODE']
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


def dataset_info(image_path):
    """The ``dataset_info.json`` that ``dataset.py`` wrote beside the image pickle, or None."""
    path = os.path.join(os.path.dirname(os.path.abspath(image_path)), 'dataset_info.json')
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return None


def count_parameters(model):
    return int(sum(p.size for p in model.params() if p.array is not None))
