"""The CIFAR-10 models: ``python src/net.py`` prints every model with its layers and parameters.

``from net import CNN, CNNBN, VGG, ResidualNet`` keeps working as with the
original chainer-cifar; the models themselves live in ``chainer_cifar.models``.

    python src/net.py                          # the table of every model
    python src/net.py -m residual --res_depth 12
    python src/net.py --memory resnet110 resnet1202 --batch 2
"""
import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import chainer_cifar  # noqa: E402,F401  (compatibility layer before chainer)
from chainer_cifar.errors import Parser, run_main  # noqa: E402
from chainer_cifar.models import (CNN, CNNBN, CNNWN, VGG, CNNWithBatch, IdentityMapping,  # noqa: E402,F401
                                  PyramidNet, ResidualNet, ResNet, ShakeShakeNet, create_model,
                                  list_models, model_info, register_model)
from chainer_cifar.models import summary  # noqa: E402
from chainer_cifar.training.args import add_model_option_arguments, model_options  # noqa: E402


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError('must be at least 1')
    return value


def build_parser():
    p = Parser(description='List the CIFAR-10 models with their layer and parameter counts.')
    p.add_argument('--model', '-m', nargs='+', metavar='NAME',
                   help='only these models (default: all)')
    add_model_option_arguments(p, count_type=_positive)  # flags change no count, but -m must take them
    p.add_argument('--memory', nargs='+', metavar='NAME',
                   help='measure activation memory of these models instead of printing the table')
    p.add_argument('--batch', type=_positive, default=2, help='batch size to measure memory at (default 2)')
    p.add_argument('--scale_to', type=_positive, default=128,
                   help='batch size the memory is scaled to (default 128)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in model_options(args).items() if v not in (None, False)}
    if args.memory:
        for name in args.memory:
            model_info(name)  # unknown names fail before any measuring
        print(summary.memory_report(args.memory, args.batch, args.scale_to, **given))
        return 0
    # Models named with -m must take every option given, as train.py insists;
    # for the full table an option applies to the models that take it.
    print(summary.format_table(summary.table(args.model, strict=bool(args.model), **given)))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
