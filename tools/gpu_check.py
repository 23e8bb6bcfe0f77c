"""Check a device's forward and backward pass against the CPU's fast kernels, model by model.

    python tools/gpu_check.py -g 0 [--models cnn,resnet20,...] [--batch 16] [--dtype float64] [--rtol R]

For each model, one set of weights and one random batch go through the
forward pass, softmax cross-entropy and backward twice: on the CPU with this
package's fast kernels (the reference), and on the device: ``-g N`` runs
CuPy on GPU N (Chainer's own functions: im2col + cuBLAS, or cuDNN where
there is one), ``-g -1`` the CPU with Chainer's stock functions (what the
GPU path computes, so the check itself runs in CI). Two modes: ``test``
(dropout and stochastic depth off, BatchNormalization with its running
statistics) and ``train`` (BatchNormalization with batch statistics) for the
models whose training pass is deterministic (two CPU passes agree; dropout
or stochastic depth make it random, and then the mode is skipped).

Prints the largest difference of the loss and of every parameter gradient,
relative to the reference's largest magnitude (for a parameter whose
gradient is all but zero, such as a bias before BatchNormalization in train
mode, relative to a thousandth of the model's largest gradient), and exits
with 1 when one exceeds ``--rtol``. The default dtype is float64: in float32
the two sides round differently, and an activation within rounding of a
ReLU's kink can land on either side of it and move one gradient element by
its whole value (seen on the CPU: VGG, test mode, 1 element of 131,072).
``--dtype float32`` still runs, with a tolerance (0.1) that catches only
gross errors (a float64 array read as float32 by a kernel gave 1e20).
"""
import argparse
import copy
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'src'))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # bench.py, when this file is loaded by path rather than run

import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before Chainer)
import numpy  # noqa: E402

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.models import create_model, list_models  # noqa: E402
from chainer_cifar.training import get_device  # noqa: E402

from bench import parse_model_spec  # noqa: E402  (tools/bench.py)

GPU_MODELS = 'cnn,cnnbn,vgg,resnet20,resnet56,resnet110,residual:res_depth=12'


def pass_once(model, x, t, train, fast=True):
    """``(loss, {param name: grad})`` of one forward + backward, on the host, as float64."""
    with chainer.using_config('train', train), chainer.using_config('use_fast_kernels', fast):
        model.cleargrads()
        loss = F.softmax_cross_entropy(model(x), t)
        loss.backward()
    host = chainer.backend.CpuDevice()
    grads = {name: numpy.asarray(host.send(p.grad), numpy.float64)
             for name, p in sorted(model.namedparams()) if p.grad is not None}
    return float(host.send(loss.array)), grads


def relative_difference(ref, other, floor=0.0):
    """Largest ``|ref - other|`` relative to ``max(max |ref|, floor)`` (one number)."""
    scale = max(float(numpy.max(numpy.abs(ref))), floor, 1e-300)
    return float(numpy.max(numpy.abs(numpy.asarray(ref) - numpy.asarray(other)))) / scale


def check_model(spec, device, batch, dtype=numpy.float64, seed=0):
    """``[(mode, loss difference, worst gradient difference, worst parameter name)]``, or a skip reason per mode."""
    name, options = parse_model_spec(spec)
    numpy.random.seed(seed)
    with chainer.using_config('dtype', dtype):  # parameters and BN statistics in dtype
        reference = create_model(name, **options)
    other = copy.deepcopy(reference)
    rng = numpy.random.RandomState(seed + 1)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(dtype)
    t = rng.randint(0, 10, batch).astype(numpy.int32)
    other.to_device(device)
    xd, td = device.send(x), device.send(t)
    on_cpu = device.xp is numpy
    rows = []
    for mode in ('test', 'train'):
        train = mode == 'train'
        # Running statistics move in train mode: each pass starts from a copy.
        ref_model = copy.deepcopy(reference)
        loss_ref, g_ref = pass_once(ref_model, x, t, train)
        if train:
            loss_again, _ = pass_once(copy.deepcopy(reference), x, t, train)
            if loss_again != loss_ref:
                rows.append((mode, 'skipped: random layers (dropout or stochastic depth)'))
                continue
        dev_model = copy.deepcopy(other)
        loss_dev, g_dev = pass_once(dev_model, xd, td, train, fast=not on_cpu)
        floor = 1e-3 * max((float(numpy.max(numpy.abs(g))) for g in g_ref.values()), default=0.0)
        worst = max(((relative_difference(g_ref[k], g_dev[k], floor), k) for k in g_ref), default=(0.0, '-'))
        rows.append((mode, relative_difference(numpy.float64(loss_ref), numpy.float64(loss_dev)), worst[0],
                     worst[1]))
    return rows


def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('-g', '--gpu', type=int, default=0, help='GPU id; -1 = the CPU with stock Chainer')
    p.add_argument('--models', default=GPU_MODELS,
                   help='comma list of registry models (name:key=value), or "all": these, then every other '
                        'registered model')
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--dtype', choices=('float64', 'float32'), default='float64')
    p.add_argument('--rtol', type=float, default=None,
                   help='default: 1e-6 in float64; 0.1 in float32, which catches gross errors only')
    args = p.parse_args(argv)
    dtype = numpy.dtype(args.dtype).type
    if args.rtol is None:
        args.rtol = 1e-6 if args.dtype == 'float64' else 0.1
    try:
        device = get_device(args.gpu)
    except UserError as e:
        sys.exit('error: {}'.format(e))
    header = ['# device {} against the CPU fast kernels | {} | batch {} | rtol {}'.format(
        device, args.dtype, args.batch, args.rtol),
        '| model | mode | loss difference | worst gradient difference | in | result |',
        '|---|---|---:|---:|---|---|']
    failed = 0
    specs = [s.strip() for s in args.models.split(',') if s.strip()]
    if specs == ['all']:
        specs = GPU_MODELS.split(',')
        specs += [name for name in list_models() if name not in specs]
    for spec in specs:
        try:
            rows = check_model(spec, device, args.batch, dtype)
        except UserError as e:  # an unknown model or option: the registry's one-line message
            sys.exit('error: {}'.format(e))
        except Exception as e:  # a model that breaks is a failed check, and the others still run
            rows = [('-', 'FAIL: {}: {}'.format(type(e).__name__, ' '.join(str(e).split())[:200]))]
            failed += 1
        while header:  # printed once the first model is known to build
            print(header.pop(0))
        for row in rows:
            if len(row) == 2:
                print('| {} | {} | | | | {} |'.format(spec, row[0], row[1]), flush=True)
                continue
            mode, dl, dg, where = row
            ok = dl <= args.rtol and dg <= args.rtol
            failed += not ok
            print('| {} | {} | {:.2e} | {:.2e} | {} | {} |'.format(spec, mode, dl, dg, where,
                                                                  'ok' if ok else 'FAIL'), flush=True)
    if failed:
        print('{} check(s) above --rtol {}'.format(failed, args.rtol))
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
