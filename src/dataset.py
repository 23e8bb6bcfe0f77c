#!/usr/bin/env python
"""Preprocess dataset/cifar-10-batches-py into the pickles train.py reads.

Writes, as the original chainer-cifar did: label.pkl, image.pkl (mean
subtracted), image_norm.pkl (per-channel mean/std), image_zca.pkl,
image_norm_zca.pkl, mean.txt and the sample grids sample*.png; plus
preprocess_stats.npz (the fitted statistics) and dataset_info.json.
--only image_norm builds just that variant (label.pkl, mean.txt, the
statistics and the info always); the ZCA variants take most of the time.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer first)
from chainer_cifar.data import build, pickles, preprocess  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402


def _variants(text):
    try:
        return build.parse_variants(text)
    except UserError as e:  # argparse would say only "invalid value"
        raise argparse.ArgumentTypeError(str(e))


def build_parser():
    p = Parser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--input', default='dataset/cifar-10-batches-py',
                   help='the extracted official batches (from src/download.py)')
    p.add_argument('--output', default='dataset', help='folder for the pickles and images')
    p.add_argument('--zca_eps', type=float, default=preprocess.DEFAULT_ZCA_EPS,
                   help='ZCA epsilon, relative to the mean eigenvalue (the original used 0)')
    p.add_argument('--only', type=_variants, default=','.join(build.VARIANTS), metavar='LIST',
                   help='build only these variants, comma-separated (of {})'.format(', '.join(build.VARIANTS)))
    p.add_argument('--py2', action='store_true',
                   help='write pickle protocol 2, readable by the original Python 2 tool '
                        '(larger and slower to write)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    # NaN passes a "< 0" test, and NaN or inf would write whitened files of NaN or zeros.
    if not (math.isfinite(args.zca_eps) and args.zca_eps >= 0):
        raise UserError('--zca_eps must be a finite number >= 0, got {}'.format(args.zca_eps))
    protocol = pickles.PY2_PROTOCOL if args.py2 else pickles.DEFAULT_PROTOCOL
    info = build.build(args.input, args.output, zca_eps=args.zca_eps, protocol=protocol, only=args.only)
    kept = [v for v in info['variants'] if v not in info['built']]
    print('ok: {} train / {} test images{} -> {}/{{label,{}}}.pkl ({:.1f} s){}'.format(
        info['n_train'], info['n_test'], ' (a PARTIAL dataset)' if info['partial'] else '',
        args.output, ','.join(info['built']), sum(info['seconds'].values()),
        '; kept from an earlier build of the same data: ' + ', '.join(kept) if kept else ''))


if __name__ == '__main__':
    sys.exit(run_main(main))
