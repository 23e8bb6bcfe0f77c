#!/usr/bin/env python
"""Train a CIFAR-10 model: the chainer-cifar article's train.py, on Chainer's Trainer, resumable.

    python src/train.py -g 0 -m cnn -b 128 -p cnn --optimizer adam --iter 300 --lr_decay_iter 100

Writes <out>/<prefix>.model (best validation error), .state, _log.csv, _loss.png,
_error.png, .snapshot (for --resume) and _run.json. See docs/training.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer before chainer)
from chainer_cifar.errors import run_main  # noqa: E402
from chainer_cifar.training import TrainingInterrupted, get_device, parse_args, train  # noqa: E402
from chainer_cifar.training.args import model_options  # noqa: E402
from chainer_cifar.training.evaluate import test_saved_model  # noqa: E402


def main(argv=None):
    args = parse_args(argv)
    if args.test_only:
        path = os.path.join(args.out, args.prefix + '.model')
        loss, error, n = test_saved_model(path, args.model, model_options(args), args.dataset, args.label,
                                          get_device(args.gpu), args.batch_size, args.subset)
        print('{}: test error {:.2f}% (loss {:.4f}) on {} images'.format(path, 100 * error, loss, n))
        return 0
    try:
        train(args)
    except TrainingInterrupted as e:
        print('{}; continue with --resume {}'.format(e, e.snapshot), file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
