"""The official CIFAR-10 archive: download, verify, extract safely, read the batches.

The archive is fetched from the official URL (or a mirror, ``--url``) or taken
from a local copy (``--archive PATH`` or ``$CIFAR10_ARCHIVE``), checked against
its MD5, and extracted member by member after refusing anything that could
write outside the target folder. Everything lands under a temporary name
first, so an interrupted or failed run leaves nothing half-written behind.
"""
import hashlib
import json
import os
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib

import numpy

from chainer_cifar.data.pickles import Refused, atomic_write, refused_message, safe_load, stale_temps, temp_prefix
from chainer_cifar.errors import UserError

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
ARCHIVE_NAME = 'cifar-10-python.tar.gz'
MD5 = 'c58f30108f718f92721af3b95e74349a'
BATCHES_DIR = 'cifar-10-batches-py'
TRAIN_BATCHES = ['data_batch_{}'.format(i) for i in range(1, 6)]
TEST_BATCHES = ['test_batch']
MEMBERS = TRAIN_BATCHES + TEST_BATCHES + ['batches.meta']
FULL_SIZES = {'train': 50000, 'test': 10000}
INFO_NAME = 'archive_info.json'
# The partial copy this project keeps for its tests, next to the checkout (when it is there).
PARTIAL_COPY = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..',
                                             'shared', 'cifar10', 'cifar-10-python-mini.tar.gz'))
PARTIAL_MD5 = 'c1366a7aca9f64f5a55aeab36eb1bc98'
PARTIAL_SIZES = {'train': 8336, 'test': 1017}


def offline_command(path, md5):
    """How to run offline on ``path``: the quick start's variables and download.py's flags."""
    path = shlex.quote(path)
    return 'CIFAR10_ARCHIVE={p} CIFAR10_MD5={m} bash quickstart.sh, or python src/download.py --archive {p} ' \
           '--md5 {m}'.format(p=path, m=md5)


def _shown(path):
    """``path`` relative to the current folder when that is shorter, else absolute."""
    rel = os.path.relpath(path)
    return rel if len(rel) < len(path) else path


def partial_copy():
    """``(path as shown, sentence naming it)`` of the project's partial copy, or None where it is absent."""
    if not os.path.isfile(PARTIAL_COPY):
        return None
    return _shown(PARTIAL_COPY), 'this project keeps a partial copy ({:,} train / {:,} test images) next to ' \
                                 'the checkout'.format(PARTIAL_SIZES['train'], PARTIAL_SIZES['test'])


def partial_copy_hint():
    """'; this project keeps a partial copy ...: COMMAND', or '' where the copy is absent."""
    copy = partial_copy()
    return '; {}: {}'.format(copy[1], offline_command(copy[0], PARTIAL_MD5)) if copy else ''


def offline_hint():
    return ('to work offline, give a local copy of the archive and its MD5 (needed unless it is the official '
            'archive): {}{}'.format(offline_command('PATH', 'HEX'), partial_copy_hint()))


def md5sum(path, chunk=1 << 20):
    h = hashlib.md5()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def check_md5(path, expected):
    """The MD5 of the local copy ``path``; a mismatch names the command that accepts the copy."""
    actual = md5sum(path)
    if expected and actual != expected.lower():
        what = ('the official archive' if expected.lower() == MD5 else 'the one given')
        if actual == PARTIAL_MD5:
            trust = 'it is the partial copy this project keeps ({:,} train / {:,} test images); to use it'.format(
                PARTIAL_SIZES['train'], PARTIAL_SIZES['test'])
        else:
            trust = 'the file is corrupt or truncated (get it again), or, if it is a different copy you trust'
        raise UserError('MD5 mismatch for {}: expected {} ({}), got {}; {}, give its MD5: {}'.format(
            path, expected.lower(), what, actual, trust, offline_command(path, actual)))
    return actual


class _Progress(object):
    """A one-line progress display on stderr: percent, MiB, speed."""

    def __init__(self, total, stream=sys.stderr, every=0.5):
        self.total, self.stream, self.every = total, stream, every
        self.done, self.start, self.last = 0, time.time(), 0.0

    def update(self, n):
        self.done += n
        now = time.time()
        if now - self.last >= self.every or (self.total and self.done >= self.total):
            self.last = now
            mib = self.done / 2.0 ** 20
            speed = mib / max(now - self.start, 1e-9)
            if self.total:
                self.stream.write('\r  {:5.1f}%  {:7.1f} / {:.1f} MiB  {:6.1f} MiB/s'.format(
                    100.0 * self.done / self.total, mib, self.total / 2.0 ** 20, speed))
            else:
                self.stream.write('\r  {:7.1f} MiB  {:6.1f} MiB/s'.format(mib, speed))
            self.stream.flush()

    def close(self):
        self.stream.write('\n')
        self.stream.flush()


def download(url, path, timeout=60, progress=True):
    """Download ``url`` to ``path`` through a temporary file; return ``path``."""
    def write(f):
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, 'reason', e)
            raise UserError('cannot download {} ({}); {}'.format(url, reason, offline_hint()))
        with response:
            total = int(response.headers.get('Content-Length') or 0)
            bar = _Progress(total) if progress else None
            try:
                for block in iter(lambda: response.read(1 << 16), b''):
                    f.write(block)
                    if bar:
                        bar.update(len(block))
            except (OSError, urllib.error.URLError) as e:
                raise UserError('download of {} broke off ({}); run the command again, or {}'.format(
                    url, e, offline_hint()))
            finally:
                if bar:
                    bar.close()
    atomic_write(path, write)
    return path


def _is_within(base, target):
    base = os.path.realpath(base)
    return os.path.commonpath([base, os.path.realpath(target)]) == base


def check_members(tar, dest):
    """Refuse absolute paths, ``..``, links leaving ``dest`` and special files."""
    for m in tar.getmembers():
        name = m.name
        if name.startswith('/') or os.path.isabs(name) or '..' in name.replace('\\', '/').split('/'):
            raise UserError('refusing archive member {!r}: absolute or contains ".."'.format(name))
        if m.issym() or m.islnk():
            link_base = os.path.dirname(os.path.join(dest, name)) if m.issym() else dest
            if os.path.isabs(m.linkname) or not _is_within(dest, os.path.join(link_base, m.linkname)):
                raise UserError('refusing archive member {!r}: a link pointing outside the target '
                                '({!r})'.format(name, m.linkname))
        elif not (m.isfile() or m.isdir()):
            raise UserError('refusing archive member {!r}: not a regular file or folder'.format(name))


def _drain(tar):
    """Read the compressed stream to its end, so that gzip checks its CRC and length.

    tarfile stops after the last member's data, before the gzip trailer: a flipped
    bit in the last member would otherwise be extracted as a wrong pixel.
    """
    while tar.fileobj.read(1 << 20):
        pass


def _remove_stale(dest_dir):
    # Folders of extractions that were killed (kill -9 runs no cleanup).
    for stem in ('extract', 'old'):
        for path in stale_temps(dest_dir, stem, ''):
            shutil.rmtree(path, ignore_errors=True)


def extract(archive, dest_dir):
    """Extract ``cifar-10-batches-py`` from ``archive`` into ``dest_dir``, all or nothing."""
    os.makedirs(dest_dir, exist_ok=True)
    _remove_stale(dest_dir)
    tmp = tempfile.mkdtemp(dir=dest_dir, prefix=temp_prefix('extract'))
    try:
        try:
            with tarfile.open(archive, 'r:*') as tar:
                check_members(tar, tmp)
                kwargs = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
                tar.extractall(tmp, **kwargs)
                _drain(tar)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            # gzip.BadGzipFile (a CRC or length mismatch) is an OSError.
            raise UserError('{} is corrupt or truncated (CRC mismatch or cut short; {}: {}); download it '
                            'again'.format(archive, type(e).__name__, e))
        src = os.path.join(tmp, BATCHES_DIR)
        missing = [m for m in MEMBERS if not os.path.isfile(os.path.join(src, m))]
        if missing:
            raise UserError('{} lacks {} (expected {}/{{{}}}); it is not the CIFAR-10 python '
                            'archive'.format(archive, ', '.join(missing), BATCHES_DIR, ','.join(MEMBERS)))
        target = os.path.join(dest_dir, BATCHES_DIR)
        if os.path.exists(target):
            old = tempfile.mkdtemp(dir=dest_dir, prefix=temp_prefix('old'))
            os.rename(target, os.path.join(old, BATCHES_DIR))
            os.rename(src, target)
            shutil.rmtree(old)
        else:
            os.rename(src, target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(dest_dir='dataset', archive=None, url=URL, md5=MD5, progress=True, log=print):
    """Get a verified archive and extract it; return the info dict written beside it.

    With ``archive`` (a local copy) nothing is downloaded. Otherwise the archive
    is downloaded to ``dest_dir`` unless a copy with the right MD5 is there.
    """
    expected = (md5 or MD5).lower()
    if archive:
        if not os.path.isfile(archive):
            raise UserError('archive {} not found; check the path given to --archive or '
                            'CIFAR10_ARCHIVE{}'.format(archive, partial_copy_hint()))
        source = os.path.abspath(archive)
        log('verifying {}'.format(archive))
        actual = check_md5(archive, expected)
    else:
        path = os.path.join(dest_dir, ARCHIVE_NAME)
        if os.path.exists(path) and md5sum(path) == expected:
            log('{} is already there and verified; not downloading again'.format(path))
        else:
            if os.path.exists(path):
                log('{} does not match MD5 {}; downloading it again'.format(path, expected))
            log('downloading {} to {}'.format(url, path))
            download(url, path, progress=progress)
            actual = md5sum(path)
            if actual != expected:
                os.remove(path)  # a bad download is not kept as if it were the archive
                raise UserError('MD5 mismatch for the download of {}: expected {}, got {} (deleted); the download '
                                'broke or the server sent another file: run the command again, or {}'.format(
                                    url, expected, actual, offline_hint()))
        source, archive, actual = url, path, expected
    log('extracting {} to {}'.format(BATCHES_DIR, dest_dir))
    extract(archive, dest_dir)
    info = {'source': source, 'md5': actual, 'official': actual == MD5,
            'extracted': time.strftime('%Y-%m-%dT%H:%M:%S')}
    atomic_write(os.path.join(dest_dir, INFO_NAME),
                 lambda f: f.write(json.dumps(info, indent=1, sort_keys=True) + '\n'), mode='w')
    return info


def _load_batch(path, hint):
    """One official pickle (Python 2, so ``bytes`` keys), loaded without running anything in it."""
    if not os.path.isfile(path):
        raise UserError('{} not found; {}'.format(path, hint))
    try:
        with open(path, 'rb') as f:
            return safe_load(f, encoding='bytes')
    except Refused as e:
        raise UserError(refused_message(path, e))
    except Exception as e:
        raise UserError('{} is corrupt or not a CIFAR-10 batch ({}: {}); {}'.format(
            path, type(e).__name__, e, hint))


def read_batch(path):
    """``(images uint8 (N, 3072), labels int32 (N,))`` from one official batch file."""
    hint = 'run `python src/download.py` again to restore it'
    batch = _load_batch(path, hint)
    try:
        data, labels = numpy.asarray(batch[b'data']), numpy.asarray(batch[b'labels'])
    except Exception as e:
        raise UserError('{} is corrupt or not a CIFAR-10 batch ({}: {}); {}'.format(
            path, type(e).__name__, e, hint))
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or len(labels) != len(data):
        raise UserError('{} has data of shape {} and labels of shape {}, expected (N, 3072) and (N,); {}'.format(
            path, data.shape, labels.shape, hint))
    # The official data is uint8 and the labels Python ints: anything else would be cast silently.
    if data.dtype != numpy.uint8 or (labels.size and labels.dtype.kind not in 'iu'):
        raise UserError('{} holds data of dtype {} and labels of dtype {}, expected uint8 pixels and integer '
                        'labels; {}'.format(path, data.dtype, labels.dtype, hint))
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise UserError('{} has labels outside 0-9; {}'.format(path, hint))
    return data, labels.astype(numpy.int32)


def read_batches(batches_dir):
    """``(train_x, train_y, test_x, test_y)`` from an extracted ``cifar-10-batches-py``."""
    if not os.path.isdir(batches_dir):
        raise UserError('{} not found; run `python src/download.py` first'.format(batches_dir))
    splits = []
    for names in (TRAIN_BATCHES, TEST_BATCHES):
        xs, ys = zip(*[read_batch(os.path.join(batches_dir, n)) for n in names])
        splits += [numpy.concatenate(xs), numpy.concatenate(ys)]
    return tuple(splits)
