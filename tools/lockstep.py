#!/usr/bin/env python
"""Chainer and the PyTorch control trained in lockstep: the same initial weights, the same batches.

    python tools/lockstep.py resnet56-paper --seed 1 --steps 300 --out lockstep.csv

Both networks start from the control's initial weights for ``--seed``
(``torch_control.train`` draws them; ``weight_map`` copies them into the
Chainer model), and every step feeds both the control run's augmented batch
of that step (its order and augmentation streams, on the preset's partial-set
split). Each then steps with its own code: Chainer with ``train.py``'s
classifier, optimizer (``make_optimizer``/``setup_optimizer``) and schedule,
the control with ``torch_control``'s. Both compute in float32 on the CPU, as
the runs do.

A difference in the recipe shows at the first step (as in float64 in
``tests/test_torch_control.py``) as a distance well above what rounding gives;
rounding differences grow only as fast as the training dynamics amplify them.
``--baseline`` adds a third network, Chainer again from the same weights nudged by one float32 rounding
(relative 2^-23), to show how fast that amplification is within one framework.

Per step the CSV has both training losses (and the baseline's) and the
relative distance between the parameter vectors, ||a - b|| / ||b||.
"""
import argparse
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src'))
import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before anything imports Chainer)
from chainer_cifar.data.pickles import atomic_write  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.models import create_model  # noqa: E402
from chainer_cifar.results import presets  # noqa: E402
from chainer_cifar.training import workers  # noqa: E402
from chainer_cifar.training.args import parse_args  # noqa: E402
from chainer_cifar.training.data import load_splits  # noqa: E402
from chainer_cifar.training.trainer import Classifier, make_optimizer, make_schedule, setup_optimizer  # noqa: E402

import torch_control as tc  # noqa: E402  (first: it says in one line when PyTorch is missing)

import chainer  # noqa: E402
import numpy  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from weight_map import carray, copy_into_chainer, mapped  # noqa: E402

COLUMNS = ['step', 'lr', 'chainer_loss', 'control_loss', 'baseline_loss', 'param_distance',
           'baseline_param_distance']


class ChainerSide(object):
    """A Chainer model as ``train.py`` trains it, started from the control's weights."""

    def __init__(self, args, control, n, nudge=0.0):
        self.predictor = create_model(args.model)
        self.pairs = copy_into_chainer(control, self.predictor, n)
        if nudge:  # every weight moved by about one float32 rounding step
            for p in self.predictor.params():
                p.array *= numpy.float32(1 + nudge)
        self.model = Classifier(self.predictor)
        optimizer, self.lr_attr, base_lr = make_optimizer(args)
        self.optimizer = setup_optimizer(optimizer, self.model, args, workers.Single())
        self.schedule = make_schedule(args, base_lr)

    def step(self, x, t, epoch_detail):
        setattr(self.optimizer, self.lr_attr, self.schedule(epoch_detail))
        with chainer.using_config('train', True):
            loss = self.model(x, t)
            self.model.cleargrads()
            loss.backward()
        self.optimizer.update()
        return float(loss.array)

    def flat(self):
        """``(Chainer's parameters in the control's layout, the control's)``, each as one float64 vector."""
        rows = mapped(self.pairs)
        return (numpy.concatenate([carray(clink, cname)[index].astype(numpy.float64).ravel()
                                   for _, clink, cname, _, index in rows]),
                numpy.concatenate([t.detach().double().numpy().ravel() for _, _, _, t, _ in rows]))


def control_batches(args, n, order_gen):
    """``(epoch_detail, indices)`` of every update, epoch after epoch, as ``torch_control.train_epoch`` draws them."""
    epoch = 0
    while True:
        for k, idx in enumerate(tc.batches(n, args.batch_size, order_gen, torch.device('cpu'))):
            yield epoch + k * args.batch_size / n, idx
        epoch += 1


def write_csv(path, rows):
    def write(f):
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    atomic_write(path, write, mode='w')


def distance(a, b):
    return float(numpy.linalg.norm(a - b) / numpy.linalg.norm(b))


def run(opts):
    presets.get_preset(opts.preset)  # an unknown name is one error line
    data = (['-d', opts.dataset] if opts.dataset else []) + (['-l', opts.label] if opts.label else [])
    args = parse_args(presets.recipe(opts.preset, 'partial') + ['--seed', str(opts.seed)] + data)
    tc.check_supported(args)
    n = tc.MODELS[args.model]
    torch.set_num_threads(opts.threads)

    # The control run's seed: its initial weights, its split, its batch order and augmentation streams.
    torch.manual_seed(args.seed)
    control = tc.ResNet(n)
    x, t = tc.on_device(load_splits(args).train, torch.device('cpu'))
    order_gen = torch.Generator().manual_seed(args.seed + 1)
    augment_gen = torch.Generator().manual_seed(args.seed + 2)
    optimizer = tc.MomentumSGD(control.parameters(), args.weight_decay)
    sides = [ChainerSide(args, control, n)]
    if opts.baseline:
        sides.append(ChainerSide(args, control, n, nudge=2.0 ** -23))

    rows, t0 = [], time.time()
    for step, (epoch_detail, idx) in enumerate(control_batches(args, len(x), order_gen), 1):
        lr = tc.learning_rate(args, epoch_detail)
        xb, tb = x[idx], t[idx]
        if args.augment:
            xb = tc.augment(xb, args.augment, augment_gen)
        xn, tn = xb.numpy().copy(), tb.numpy().astype(numpy.int32)
        losses = [side.step(xn, tn, epoch_detail) for side in sides]
        loss = F.cross_entropy(control(xb), tb)
        control.zero_grad()
        loss.backward()
        optimizer.step(lr)
        flats = [side.flat() for side in sides]
        rows.append({'step': step, 'lr': lr, 'chainer_loss': losses[0], 'control_loss': loss.item(),
                     'baseline_loss': losses[1] if opts.baseline else '',
                     'param_distance': distance(*flats[0]),
                     'baseline_param_distance': distance(flats[1][0], flats[0][0]) if opts.baseline else ''})
        if step % 10 == 0 or step == opts.steps:  # a long run stopped early keeps its steps so far
            write_csv(opts.out, rows)
        if not opts.quiet and (step % 10 == 0 or step == 1):
            r = rows[-1]
            print('step {:4d}  loss chainer {:.4f} control {:.4f}{}  distance {:.2e}{}  {:.0f} s'.format(
                step, r['chainer_loss'], r['control_loss'],
                ' baseline {:.4f}'.format(r['baseline_loss']) if opts.baseline else '', r['param_distance'],
                ' (baseline {:.2e})'.format(r['baseline_param_distance']) if opts.baseline else '',
                time.time() - t0), flush=True)
        if step == opts.steps:
            break

    print('wrote {} ({} steps of {} seed {}, {:.0f} s)'.format(opts.out, len(rows), opts.preset, opts.seed,
                                                               time.time() - t0))
    return rows


def build_parser():
    p = Parser(description=__doc__.split('\n')[0], epilog=__doc__.split('\n', 1)[1],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('preset', help='a preset the control implements, e.g. resnet56-paper (its partial recipe)')
    p.add_argument('--seed', type=int, default=1, help='the control run\'s seed: initial weights and batches')
    p.add_argument('--steps', type=int, default=100, help='updates to take')
    p.add_argument('--baseline', action='store_true',
                   help='also train Chainer from the weights nudged by one float32 rounding')
    p.add_argument('-d', '--dataset', help='image pickle (default: the recipe\'s)')
    p.add_argument('-l', '--label', help='label pickle (default: the recipe\'s)')
    p.add_argument('--threads', type=int, default=1, help='torch.set_num_threads')
    p.add_argument('--out', default='lockstep.csv', help='the per-step CSV')
    p.add_argument('--quiet', action='store_true', help='print only the closing line')
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    if opts.steps < 1 or opts.threads < 1:
        raise UserError('--steps and --threads must be at least 1')
    return run(opts)


if __name__ == '__main__':
    sys.exit(run_main(main))
