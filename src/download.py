#!/usr/bin/env python
"""Download (or take a local copy of) CIFAR-10, verify its MD5 and extract it to dataset/.

    python src/download.py                                   # official URL
    python src/download.py --archive cifar-10-python.tar.gz  # offline copy
    CIFAR10_ARCHIVE=/path/to/archive.tar.gz python src/download.py
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer first)
from chainer_cifar.data import archive  # noqa: E402
from chainer_cifar.errors import run_main  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--archive', default=os.environ.get('CIFAR10_ARCHIVE'),
                   help='use this local copy of the archive instead of downloading '
                        '(default: $CIFAR10_ARCHIVE)')
    p.add_argument('--url', default=archive.URL, help='where to download the archive from (a mirror)')
    p.add_argument('--md5', default=os.environ.get('CIFAR10_MD5') or archive.MD5,
                   help="expected MD5 of the archive (default: $CIFAR10_MD5 or the official one)")
    p.add_argument('--out', default='dataset', help='folder to extract cifar-10-batches-py into')
    p.add_argument('--quiet', action='store_true', help='no progress display')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    info = archive.fetch(args.out, archive=args.archive, url=args.url, md5=args.md5,
                         progress=not args.quiet, log=(lambda *a: None) if args.quiet else print)
    print('ok: {} (MD5 {}{}) extracted to {}'.format(
        info['source'], info['md5'], '' if info['official'] else ', not the official archive',
        os.path.join(args.out, archive.BATCHES_DIR)))


if __name__ == '__main__':
    sys.exit(run_main(main))
