"""The command line of ``train.py``: the original's flags plus the new ones.

:func:`build_parser` is reusable (``evaluate.py`` and tools that launch runs
share it); :func:`parse_args` also checks the flags against each other and
turns ``--lr_decay_iter`` and ``--augment`` into lists, so every later step
can trust them.
"""
import argparse
import math
import os

from chainer_cifar.data import augment
from chainer_cifar.errors import Parser, UserError
from chainer_cifar.models import registry

OPTIMIZERS = ('sgd', 'nesterov', 'adam', 'amsgrad')
LR_SHAPES = ('multistep', 'cosine')
DTYPES = ('float32', 'mixed16')
# ChainerMN's communicators, and those that work on GPU arrays only (``naive`` is the one
# that takes host arrays). Here, not in distributed.py, so that checking the flags imports
# neither Chainer nor MPI.
COMMUNICATORS = ('naive', 'flat', 'non_cuda_aware', 'pure_nccl')
GPU_ONLY_COMMUNICATORS = ('flat', 'non_cuda_aware', 'pure_nccl')
# Where a run writes without --out and with a -p that names no folder: results/<prefix>/.
DEFAULT_RESULTS = 'results'
OUTPUT_RULE = ('-p NAME writes {0}/NAME/NAME.*; a path -p DIR/NAME writes DIR/NAME.* (-p ./NAME: the current '
               'folder); --out DIR puts them in DIR (DIR/NAME.*, -p then relative to DIR)'.format(DEFAULT_RESULTS))


def add_data_arguments(p):
    p.add_argument('-d', '--dataset', default='dataset/image.pkl',
                   help='image pickle written by src/dataset.py (image.pkl, image_norm.pkl, '
                        'image_zca.pkl or image_norm_zca.pkl)')
    p.add_argument('-l', '--label', default=None,
                   help='label pickle (default: label.pkl in the folder of the -d file, which dataset.py '
                        'wrote with it)')
    p.add_argument('--subset', type=int, default=None, metavar='N',
                   help='for smoke tests: use only the first N training and the first N test images')


def labels_beside(images):
    """The ``label.pkl`` that ``dataset.py`` writes beside an image pickle: the default of ``-l``.

    Labels from another folder could belong to other images of the same count and
    train a model on wrong labels without any error.
    """
    return os.path.join(os.path.dirname(images), 'label.pkl')


def add_model_arguments(p):
    p.add_argument('-m', '--model', default='cnn',
                   help='model name; `python src/net.py` lists them (cnn, cnnbn, vgg, residual, ...)')
    add_model_option_arguments(p)


def add_model_option_arguments(p, count_type=int):
    """A flag for each option of the registered models (``models.registry.model_options``).

    A flag option is ``store_true``; a whole-number one is parsed by
    ``count_type`` and defaults to None, "the model's default".
    """
    for option in registry.model_options().values():
        if option.kind == 'flag':
            p.add_argument('--' + option.name, action='store_true', help='{}; models: {}'.format(
                option.meaning, ', '.join(option.defaults)))
        else:
            p.add_argument('--' + option.name, type=count_type, default=None, help='{}; default: {}'.format(
                option.meaning, ', '.join('{} {}'.format(m, d) for m, d in option.defaults.items())))


def model_option_names(kind=None):
    """The names of the model options (of one ``kind``: 'flag' or 'count')."""
    return [name for name, option in registry.model_options().items() if kind in (None, option.kind)]


def add_device_arguments(p):
    p.add_argument('-g', '--gpu', type=int, default=-1, help='GPU id; negative = CPU')
    p.add_argument('-b', '--batch_size', type=int, default=100, help='mini-batch size')


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, unless the help already words it or there is none ("None")."""

    def _get_help_string(self, action):
        if action.default is None or '(default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


def build_parser(prog=None):
    p = Parser(prog=prog, description='Train a CIFAR-10 model with Chainer (the chainer-cifar article\'s '
                                       'train.py, resumable).',
                formatter_class=_HelpFormatter)
    add_device_arguments(p)
    add_model_arguments(p)
    add_data_arguments(p)
    p.add_argument('-p', '--prefix', default=None,
                   help='name of the outputs <prefix>.model, .state, _log.csv, _loss.png, _error.png, .snapshot, '
                        '_run.json, optionally with a folder: {} (default NAME: the model name)'.format(OUTPUT_RULE))
    p.add_argument('--out', default=None, metavar='DIR',
                   help='folder of the outputs (default: {}/<prefix>/ for a -p without a folder, else the folder '
                        'of -p)'.format(DEFAULT_RESULTS))
    p.add_argument('--iter', type=int, default=300, help='number of epochs to train')
    p.add_argument('--save_iter', type=int, default=0,
                   help='also save <prefix>_<epoch>.model every this many epochs (0 = never)')
    p.add_argument('--lr_decay_iter', default='100',
                   help='multistep: one number N = multiply the learning rate by 0.1 every N epochs; '
                        'a comma list (e.g. 150,225) = at each of those epochs')
    p.add_argument('--lr_shape', choices=LR_SHAPES, default='multistep',
                   help='learning-rate schedule: multistep (see --lr_decay_iter) or cosine annealing '
                        'to 0 over --iter epochs (after the warm-up)')
    p.add_argument('--weight_decay', type=float, default=1e-4, help='L2 weight decay')
    p.add_argument('--optimizer', choices=OPTIMIZERS, default='sgd',
                   help='sgd = momentum SGD (0.9), nesterov = Nesterov momentum (0.9), adam, '
                        'amsgrad = Adam with AMSGrad')
    p.add_argument('--lr', type=float, default=0.01, help='learning rate of sgd and nesterov')
    p.add_argument('--alpha', type=float, default=0.001, help='Adam/AMSGrad step size (alpha)')
    p.add_argument('--warmup_epochs', type=float, default=0,
                   help='train this many epochs at --warmup_lr first (ResNet-110: 1 epoch at 0.01)')
    p.add_argument('--warmup_lr', type=float, default=0.01, help='learning rate (or alpha) of the warm-up')
    p.add_argument('--augment', default=augment.DEFAULT,
                   help='comma list of {} (crop = random +-4 px translation, erase = random '
                        'erasing)'.format(', '.join(augment.NAMES)))
    p.add_argument('--no_valid_data', action='store_true',
                   help='train on every training image, no validation split')
    p.add_argument('--valid_size', type=int, default=None,
                   help='validation images held out of the training set (default: 5000 of 50,000; '
                        '10%% when the training set is smaller)')
    p.add_argument('--seed', type=int, default=1, help='random seed (NumPy, CuPy, data split, order, '
                                                       'augmentation)')
    p.add_argument('--dtype', choices=DTYPES, default='float32',
                   help='mixed16 = Chainer\'s mixed precision (float16 compute, float32 master '
                        'weights) with dynamic loss scaling')
    p.add_argument('--accumulate', type=int, default=1, metavar='N',
                   help='split each batch of -b images into N micro-batches whose gradients are summed '
                        'before one update: the same step with about 1/N of the activation memory '
                        '(BatchNorm then normalizes over each micro-batch; docs/training.md)')
    p.add_argument('--resume', default=None, metavar='SNAPSHOT',
                   help='continue the run saved in <out>/<prefix>.snapshot')
    p.add_argument('--test_only', action='store_true',
                   help='do not train: report the test error of <out>/<prefix>.model')
    p.add_argument('--quiet', action='store_true', help='print only the final summary')
    add_distributed_arguments(p)
    return p


def add_distributed_arguments(p):
    p.add_argument('--communicator', choices=COMMUNICATORS, default=None,
                   help='data-parallel training with ChainerMN under `mpiexec -n N` (needs MPI and mpi4py): '
                        'naive (CPU or GPU), flat, non_cuda_aware, pure_nccl (GPU). -b is then per worker '
                        '(docs/distributed.md)')
    p.add_argument('--sync_bn', action='store_true',
                   help='with --communicator: BatchNorm statistics over the total batch of all workers '
                        '(ChainerMN\'s MultiNodeBatchNormalization)')


def parse_lr_decay(value):
    """``'100'`` -> 100 (every 100 epochs); ``'150,225'`` -> [150, 225] (at those epochs)."""
    parts = [s.strip() for s in str(value).split(',')]
    try:
        epochs = [int(s) for s in parts]
    except ValueError:
        raise UserError('--lr_decay_iter {!r}: expected a positive number of epochs or a comma '
                        'list of increasing epochs'.format(value))
    if any(e <= 0 for e in epochs):
        raise UserError('--lr_decay_iter {!r}: epochs must be positive'.format(value))
    if len(epochs) == 1:
        return epochs[0]
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise UserError('--lr_decay_iter {!r}: the epochs must be strictly increasing'.format(value))
    return epochs


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    check_args(args)
    return args


# The ranges of the numeric flags. argparse's float() takes 'nan' and 'inf', and
# a comparison with nan is always False, so every check asks for what is allowed
# (finite and in range) instead of refusing what is not.
POSITIVE_FLOATS = ('lr', 'alpha', 'warmup_lr')
NON_NEGATIVE_FLOATS = ('weight_decay', 'warmup_epochs')
POSITIVE_INTS = ('batch_size', 'subset', 'valid_size')  # and the whole-number model options; None = not given
# NumPy's RandomState takes seeds 0..2**32-1; the run derives its other streams from --seed
# modulo 2**32 (seeds.stream_seed), so every seed of this range works.
SEED_RANGE = (0, 2 ** 32 - 1)


def _default(name):
    return build_parser().get_default(name)


def check_numbers(args):
    """Every numeric flag finite and in its range; one :class:`UserError` naming the flag and the fix."""
    for name in POSITIVE_FLOATS:
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise UserError('--{} must be positive and finite (default {}), got {}'.format(
                name, _default(name), value))
    for name in NON_NEGATIVE_FLOATS:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError('--{} must be >= 0 and finite (default {}), got {}'.format(
                name, _default(name), value))
    for name in POSITIVE_INTS + tuple(model_option_names('count')):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            hint = ' (use --no_valid_data for none)' if name == 'valid_size' else ''
            raise UserError('--{} must be positive{}, got {}'.format(name, hint, value))
    if args.iter < 1 and not args.test_only:
        raise UserError('--iter must be positive (a number of epochs), got {}'.format(args.iter))
    if args.save_iter < 0:
        raise UserError('--save_iter must be >= 0 epochs (0 = never), got {}'.format(args.save_iter))
    accumulate = getattr(args, 'accumulate', 1)
    if accumulate < 1:
        raise UserError('--accumulate must be positive (1 = off), got {}'.format(accumulate))
    if accumulate > args.batch_size:
        raise UserError('--accumulate {} splits a batch of {} images into more parts than it has images; '
                        'use at most -b'.format(accumulate, args.batch_size))
    low, high = SEED_RANGE
    if not low <= args.seed <= high:
        raise UserError('--seed must be an integer from {} to {} (NumPy\'s range), got {}'.format(
            low, high, args.seed))


def check_args(args):
    """Check flags against each other; normalise ``lr_decay_iter``, ``augment``, ``out`` and ``prefix``.

    Afterwards ``args.out`` is the folder of the outputs and ``args.prefix`` their plain name
    (:func:`output_location`).
    """
    check_numbers(args)
    if args.label is None:
        args.label = labels_beside(args.dataset)
    if args.valid_size is not None and args.no_valid_data:
        raise UserError('--valid_size and --no_valid_data contradict each other; give one')
    args.lr_decay_iter = parse_lr_decay(args.lr_decay_iter)
    args.augment = list(augment.parse_augment(args.augment))
    args.out, args.prefix = output_location(args.out, args.prefix, args.model)
    if args.dtype == 'mixed16' and args.test_only:
        args.dtype = 'float32'
    check_distributed(args)
    return args


def output_location(out, prefix, model):
    """``(folder, name)`` of a run's files ``folder/name.model``, ``folder/name_log.csv``, ...

    The rule (:data:`OUTPUT_RULE`): ``--out DIR -p NAME`` -> ``DIR/NAME.*``;
    ``-p DIR/NAME`` -> ``DIR/NAME.*`` (a path prefix, as the original's ``-p``
    took); ``-p NAME`` alone -> ``results/NAME/NAME.*``, so that each run has
    a folder and none writes into the checkout's root. No ``-p``: NAME is the
    model name. ``--resume`` and ``--test_only`` find their files by the same rule.
    """
    folder, name = os.path.split(model if prefix is None else prefix)
    if not name or name in (os.curdir, os.pardir):
        raise UserError('--prefix {!r} must end in a file name (e.g. -p cnn or -p runs/cnn)'.format(prefix))
    if out is not None:
        folder = os.path.normpath(os.path.join(out, folder))
    elif not folder:
        folder = os.path.join(DEFAULT_RESULTS, name)
    return folder, name


def check_distributed(args):
    """Flag combinations of data-parallel training that cannot work; no MPI needed to tell."""
    communicator = getattr(args, 'communicator', None)
    if communicator is None:
        if getattr(args, 'sync_bn', False):
            raise UserError('--sync_bn synchronizes BatchNorm across MPI workers: it needs --communicator '
                            '(and mpiexec -n N)')
        return
    if communicator in GPU_ONLY_COMMUNICATORS and args.gpu < 0:
        raise UserError('--communicator {} works on GPUs only: give -g 0 (each worker then uses GPU '
                        '<its rank on the node>) or use --communicator naive on the CPU'.format(communicator))
    if args.test_only:
        raise UserError('--test_only evaluates a saved model in one process; drop --communicator')


def model_options(args):
    """The model options as ``create_model`` takes them (None/False = the model's default)."""
    return {k: getattr(args, k) for k in model_option_names()}
