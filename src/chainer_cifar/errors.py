"""The one exception type front ends turn into a one-line message."""
import sys


class UserError(Exception):
    """Bad input the user can fix: the message names the problem and the fix.

    Front ends catch it (see :func:`run_main`) and print it as a single line,
    never as a traceback from deep inside Chainer.
    """

    exit_code = 2


def run_main(main, argv=None):
    """Run ``main(argv)``; turn :class:`UserError` and Ctrl-C into one line + exit code."""
    try:
        return main(argv) or 0
    except UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
