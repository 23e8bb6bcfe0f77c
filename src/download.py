#!/usr/bin/env python
"""Download (or take a local copy of) CIFAR-10, verify its MD5 and extract it to dataset/.

    python src/download.py                                   # the official URL
    python src/download.py --archive cifar-10-python.tar.gz  # a local copy of the official archive
    python src/download.py --archive PATH --md5 HEX          # any other copy (a partial one)
    CIFAR10_ARCHIVE=PATH CIFAR10_MD5=HEX bash quickstart.sh  # the same for the quick start
"""
import argparse
import os
import re
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer first)
from chainer_cifar.data import archive  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402


def _env_default(var, otherwise):
    """'(default: $VAR if set, else ...)', or '(default: $VAR, now VALUE)': each default said once."""
    value = os.environ.get(var)
    text = '${}, now {}'.format(var, value) if value else '${} if set, else {}'.format(var, otherwise)
    return '(default: {})'.format(text.replace('%', '%%'))


def build_parser():
    epilog = 'examples:\n' + __doc__.split('\n', 1)[1].strip('\n')
    copy = archive.partial_copy()
    if copy:
        epilog += '\n\n{}:\n    CIFAR10_ARCHIVE={} CIFAR10_MD5={} bash quickstart.sh'.format(
            copy[1][0].upper() + copy[1][1:], shlex.quote(copy[0]), archive.PARTIAL_MD5)
    p = Parser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=epilog.replace('%', '%%'))
    p.add_argument('--archive', default=os.environ.get('CIFAR10_ARCHIVE'), metavar='PATH',
                   help='use this local copy of the archive instead of downloading ' +
                        _env_default('CIFAR10_ARCHIVE', 'download'))
    p.add_argument('--url', default=archive.URL, help='where to download the archive from (a mirror) '
                                                      '(default: %(default)s)')
    p.add_argument('--md5', default=os.environ.get('CIFAR10_MD5') or archive.MD5, metavar='HEX',
                   help='expected MD5 of the archive ' + _env_default('CIFAR10_MD5', 'the official ' + archive.MD5))
    p.add_argument('--out', default='dataset', help='folder to extract cifar-10-batches-py into (default: %(default)s)')
    p.add_argument('--quiet', action='store_true', help='no progress display')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not re.match(r'[0-9a-fA-F]{32}$', args.md5):
        raise UserError('--md5 {!r} is not an MD5 sum (32 hexadecimal digits); `md5sum FILE` prints one'.format(
            args.md5))
    info = archive.fetch(args.out, archive=args.archive, url=args.url, md5=args.md5,
                         progress=not args.quiet, log=(lambda *a: None) if args.quiet else print)
    print('ok: {} (MD5 {}{}) extracted to {}'.format(
        info['source'], info['md5'], '' if info['official'] else ', not the official archive',
        os.path.join(args.out, archive.BATCHES_DIR)))


if __name__ == '__main__':
    sys.exit(run_main(main))
