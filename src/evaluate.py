#!/usr/bin/env python
"""Report the test error of a saved model.

    python src/evaluate.py cnn.model -m cnn -d dataset/image.pkl

The model name and options default to those in <prefix>_run.json beside the file.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer before chainer)
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.functions import keep_memory  # noqa: E402
from chainer_cifar.training import args as targs  # noqa: E402
from chainer_cifar.training import get_device  # noqa: E402
from chainer_cifar.training.evaluate import test_saved_model  # noqa: E402


def build_parser():
    p = Parser(description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('model_file', help='<prefix>.model or <prefix>_<epoch>.model written by train.py')
    targs.add_device_arguments(p)
    targs.add_model_arguments(p)
    p.set_defaults(model=None)
    targs.add_data_arguments(p)
    return p


def check_args(args):
    """Counts and sizes are positive (``--subset -5`` would silently drop the last five images)."""
    for name in ['batch_size', 'subset'] + targs.model_option_names('count'):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UserError('--{} must be positive, got {}'.format(name, value))
    if args.label is None:
        args.label = targs.labels_beside(args.dataset)
    return args


def main(argv=None):
    args = check_args(build_parser().parse_args(argv))
    keep_memory()  # each batch frees and reallocates the same large buffers: keep them (functions._malloc)
    loss, error, n = test_saved_model(args.model_file, args.model, targs.model_options(args), args.dataset,
                                      args.label, get_device(args.gpu), args.batch_size, args.subset)
    print('{}: test error {:.2f}% (accuracy {:.2f}%, loss {:.4f}) on {} images'.format(
        args.model_file, 100 * error, 100 * (1 - error), loss, n))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
