"""Training: the argument parser, data split, schedules, checkpoints and the Trainer assembly.

``train(args)`` runs a whole training as ``train.py`` does; ``parse_args`` builds
and checks its arguments. See docs/training.md.
"""
from chainer_cifar.training.args import build_parser, check_args, parse_args  # noqa: F401
from chainer_cifar.training.device import get_device  # noqa: F401
from chainer_cifar.training.extensions import TrainingDiverged, TrainingInterrupted  # noqa: F401
from chainer_cifar.training.trainer import Classifier, train  # noqa: F401
