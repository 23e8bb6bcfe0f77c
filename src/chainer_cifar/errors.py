"""The one exception type front ends turn into a one-line message, and the parser that raises it."""
import argparse
import errno
import sys


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix.

    Front ends catch it (see :func:`run_main`) and print it as a single line,
    never as a traceback from deep inside Chainer.
    """

    exit_code = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is a :class:`UserError` (one ``error:`` line, exit 2)."""

    def error(self, message):
        raise UserError('{} (see --help)'.format(message))


# Failures of a write that the user fixes outside the program, and how.
_WRITE_FIXES = {
    errno.ENOSPC: 'free some space and run again',
    errno.EDQUOT: 'free some space (or raise your disk quota) and run again',
    errno.EROFS: 'the file system is read-only; write somewhere else',
    errno.EACCES: 'choose a folder you may write to, or fix its permissions',
    errno.EPERM: 'choose a folder you may write to, or fix its permissions',
}
# Outside atomic_write a permission error may come from reading, so only these are
# certainly failed writes.
_ALWAYS_WRITES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def cannot_write(path, error):
    """A :class:`UserError` for an ``OSError`` of writing ``path`` that the user can fix, else None."""
    fix = _WRITE_FIXES.get(getattr(error, 'errno', None))
    if fix is None:
        return None
    return UserError('cannot write {}: {}; {}'.format(path or 'a file', error.strerror or error, fix))


def run_main(main, argv=None):
    """Run ``main(argv)``; turn :class:`UserError`, a full disk and Ctrl-C into one line + exit code."""
    try:
        return main(argv) or 0
    except UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return e.exit_code
    except OSError as e:
        # A write that bypassed atomic_write (a library, a plot) can still hit a full disk.
        if e.errno not in _ALWAYS_WRITES:
            raise
        error = cannot_write(e.filename, e)
        print('error: {}'.format(error), file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
