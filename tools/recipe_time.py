#!/usr/bin/env python
"""Time a published recipe at full size on synthetic data, and extrapolate the whole run.

    python tools/recipe_time.py -g 0 --preset resnet20-paper --epochs 6 --out results/recipe_time [--control]

The full CIFAR-10 cannot be had offline, so this writes 50,000 training and
10,000 test images of random noise in the layout ``src/dataset.py`` writes,
runs ``train.py`` on them with the preset's recipe for ``--epochs`` epochs (6
epochs of the 45,000-image split are 2,112 iterations of batch 128), and
extrapolates the preset's full schedule from the epochs after the first (the
first pays CuPy's kernel compilation). Each epoch's time includes its
evaluation of the 5,000 validation and 10,000 test images, as in a real run.
With ``--control`` the PyTorch control (``tools/torch_control.py``) runs the
same recipe on the same data. Prints the result and writes ``recipe_time.json``.
"""
import argparse
import csv
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'src'))

import chainer_cifar  # noqa: E402,F401  (compat layer first)
import numpy  # noqa: E402

from chainer_cifar.data.pickles import save_pickle  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.results import presets  # noqa: E402


def write_synthetic(folder, n_train, n_test, seed=0):
    """``(image.pkl, label.pkl)`` paths of random float32 images and labels in the dataset.py layout."""
    rng = numpy.random.RandomState(seed)
    images, labels = os.path.join(folder, 'image.pkl'), os.path.join(folder, 'label.pkl')
    save_pickle({'train': rng.standard_normal((n_train, 3072)).astype(numpy.float32),
                 'test': rng.standard_normal((n_test, 3072)).astype(numpy.float32)}, images)
    save_pickle({'train': rng.randint(0, 10, n_train).astype(numpy.int32),
                 'test': rng.randint(0, 10, n_test).astype(numpy.int32)}, labels)
    return images, labels


def epoch_seconds(log_path):
    """Seconds per epoch after the first, from a ``_log.csv``'s cumulative ``elapsed`` column."""
    with open(log_path, newline='') as f:
        elapsed = [float(r['elapsed']) for r in csv.DictReader(f)]
    if len(elapsed) < 2:
        raise UserError('{}: need at least 2 epochs to leave the first one out'.format(log_path))
    return (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1), elapsed[0]


def _flag(args, name):
    return args[args.index(name) + 1]


def build_parser():
    p = Parser(description=__doc__.split('\n')[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n', 1)[1])
    p.add_argument('-g', '--gpu', type=int, default=-1, help='GPU id; negative = CPU')
    p.add_argument('--preset', default='resnet20-paper', help='the recipe (see `compare.py list`)')
    p.add_argument('--epochs', type=int, default=6, help='epochs to time (>= 2; the first is left out)')
    p.add_argument('--images', type=int, default=50000, help='synthetic training images (the full set: 50,000)')
    p.add_argument('--test_images', type=int, default=10000, help='synthetic test images')
    p.add_argument('--control', action='store_true', help='also time the PyTorch control on the same data')
    p.add_argument('--out', default='results/recipe_time', help='folder for the data, logs and JSON')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.epochs < 2:
        raise UserError('--epochs must be at least 2 (the first epoch is left out), got {}'.format(args.epochs))
    recipe = presets.recipe(args.preset, 'full')
    full_epochs = int(_flag(recipe, '--iter'))
    batch = int(_flag(recipe, '-b'))
    images, labels = write_synthetic(os.path.join(args.out, 'synthetic'), args.images, args.test_images)
    import train
    prefix = args.preset + '_synthetic'
    argv = recipe + ['--iter', str(args.epochs), '-d', images, '-l', labels, '-g', str(args.gpu),
                     '--out', args.out, '-p', prefix, '--quiet']
    print('python src/train.py ' + ' '.join(argv), flush=True)
    if train.main(argv):
        raise UserError('train.py stopped before the end of the timing run')
    with open(os.path.join(args.out, prefix + '_run.json')) as f:
        record = json.load(f)
    iterations = -(-record['n_train'] // batch)
    results = {'preset': args.preset, 'device': record['device'], 'device_name': record.get('device_name'),
               'n_train': record['n_train'], 'batch': batch, 'iterations_per_epoch': iterations,
               'epochs_timed': args.epochs, 'full_epochs': full_epochs}

    def report(name, log):
        per_epoch, first = epoch_seconds(log)
        results[name] = {'seconds_per_epoch': per_epoch, 'first_epoch_seconds': first,
                         'ms_per_iteration': 1000 * per_epoch / iterations,
                         'full_recipe_minutes': full_epochs * per_epoch / 60}
        print('{}: {:.2f} s per epoch of {} iterations ({:.1f} ms each, evaluation included; first epoch '
              '{:.1f} s) -> the full recipe, {} epochs = {:,} iterations: {:.1f} minutes on {}'.format(
                  name, per_epoch, iterations, 1000 * per_epoch / iterations, first, full_epochs,
                  full_epochs * iterations, full_epochs * per_epoch / 60, record.get('device_name') or
                  record['device']), flush=True)

    report('chainer', os.path.join(args.out, prefix + '_log.csv'))
    if args.control:
        command = [sys.executable, os.path.join(ROOT, 'tools', 'torch_control.py'), args.preset, '--seeds', '1',
                   '--iter', str(args.epochs), '-d', images, '-l', labels, '-g', str(args.gpu),
                   '--runs_dir', os.path.join(args.out, 'control'), '--quiet']
        print(' '.join(command[1:]), flush=True)
        subprocess.check_call(command)
        report('pytorch', os.path.join(presets.run_dir(os.path.join(args.out, 'control'), args.preset),
                                       args.preset + '_torch_s1_log.csv'))
    with open(os.path.join(args.out, 'recipe_time.json'), 'w') as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
