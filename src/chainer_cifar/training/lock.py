"""One run at a time per output prefix.

Two ``train.py`` processes with the same ``-p`` (say, the same ``--resume``
typed twice) would both finish without an error, with their log lines
interleaved and each overwriting the other's snapshot, model and run record.
So a run holds an advisory ``flock`` on ``.NAME.lock`` beside its outputs
while it writes, and a second run is refused in one line before it writes
anything. The kernel drops the lock when the process ends, however it ends, so
a killed run never blocks the next one; a run that ends normally removes the
file. Within one process the lock is re-entrant: ``compare.py run`` holds a
seed's lock while it writes the seed's ``_preset.json``, and the ``train.py``
run it calls takes the same lock again. Where ``fcntl`` does not exist (not
POSIX) or the file system cannot lock (some network mounts), runs go on
unlocked, as they did before this lock.
"""
import errno
import os

from chainer_cifar.errors import UserError, cannot_write

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN)
# File systems without flock (some network mounts) say so with these: the run goes on unlocked, as before locks.
_UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
_HELD = {}  # this process's locks: absolute lock path -> [file descriptor, times acquired]


def lock_path(base):
    """The lock of the outputs ``base.*`` (``results/cnn/cnn`` -> ``results/cnn/.cnn.lock``)."""
    folder, name = os.path.split(base)
    return os.path.join(folder, '.' + name + '.lock')


class OutputLock:
    """The lock on the outputs ``base.*``; ``enabled=False`` (a worker that writes nothing) makes it a no-op."""

    def __init__(self, base, enabled=True):
        self.base = base
        self.path = lock_path(base)
        self.enabled = enabled and fcntl is not None
        self._key = os.path.abspath(self.path)
        self._held = False

    def acquire(self):
        """Hold the lock, or raise :class:`UserError` naming the process that holds it."""
        if not self.enabled or self._held:
            return self
        if self._key not in _HELD:
            try:
                _HELD[self._key] = [self._lock(), 0]
            except OSError as e:  # the outputs' folder cannot be written: the run could write nothing anyway
                raise cannot_write(self.path, e) or e
        _HELD[self._key][1] += 1
        self._held = True
        return self

    def _lock(self):
        os.makedirs(os.path.dirname(self.path) or os.curdir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode('ascii', 'replace').strip() if e.errno in _BUSY else ''
                os.close(fd)
                if e.errno in _UNSUPPORTED:
                    _remove(self.path)
                    return None
                if e.errno not in _BUSY:
                    raise
                raise UserError('another run{} is writing {}.*; wait for it to end, or give this one another '
                                '-p'.format(' (pid {})'.format(holder) if holder.isdigit() else '', self.base))
            try:  # the file a finishing run removed just as this one opened it: lock the new one instead
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, '{}\n'.format(os.getpid()).encode('ascii'))
        return fd

    def release(self):
        """Remove the file (while still holding it, so that no run locks a file about to vanish), then unlock."""
        if not self._held:
            return
        self._held = False
        held = _HELD[self._key]
        held[1] -= 1
        if held[1]:
            return  # an outer holder in this process still writes
        del _HELD[self._key]
        if held[0] is not None:  # None: this file system cannot lock
            _remove(self.path)
            os.close(held[0])


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
