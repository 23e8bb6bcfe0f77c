"""Time the layers the compiled kernels take over (ResNet-20's, the CNN's pooling) with the kernels on and off.

    python tools/native_layers.py [--repeats 15] [--batch 128] [--threads N]

For each layer it alternates ``use_native_kernels`` on and off within one
process (so a slow or busy host slows both alike) and prints the median
forward and backward times of the node, float32, at the batch size given:

- BatchNormalization + ReLU (train mode) at the three stage shapes
  (16x32x32, 32x16x16, 64x8x8): ``batch_norm.c`` against the NumPy passes;
- the residual merge ``relu(h + s)`` and its gradient at the same shapes:
  ``elementwise.c`` against NumPy;
- the two stride-2 3x3 convolutions (16 -> 32, 32 -> 64): the node's
  forward and backward on the direct kernel against im2col + GEMM, and then
  the two halves of the backward alone: ``gx`` (the kernel's stacked phases
  against GEMM + col2im) and ``gW``;
- max pooling: the article CNN's ReLU + 3x3 stride-2 pooling (one node,
  ``relu=True``) at its three shapes (64x32x32, 64x16x16, 128x8x8) and the
  VGG's plain 2x2 pooling (64x32x32): ``pooling.c`` against the separable
  NumPy passes;
- the direct convolution's padding of one task's 4 images into its layout
  (``cc_pad_f32`` against NumPy's strided slices) at ResNet-20's shapes;
- the weight gradient's two kernels, channels-last (``grad_w_cl``) against
  the plane kernel (``grad_w``), at ResNet-20's and the CNN's layer shapes,
  with the rate in GFLOP/s (the third column says which one ``_direct.py``
  picks).
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src'))

import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before Chainer)
import numpy  # noqa: E402

import chainer  # noqa: E402

import chainer_cifar.functions as CF  # noqa: E402
from chainer_cifar.functions import _direct, _native, _parallel, keep_memory  # noqa: E402
from chainer_cifar.errors import Parser, run_main  # noqa: E402
from chainer_cifar.functions.convolution import Convolution2DFast  # noqa: E402


def _bn(batch, c, hw, rng):
    x = rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(numpy.float32)
    beta = rng.standard_normal(c).astype(numpy.float32)
    return (x, gamma, beta), lambda x, g, b: CF.batch_normalization(x, g, b, relu=True)


def _add_relu(batch, c, hw, rng):
    h, s = (rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32) for _ in range(2))
    return (h, s), CF.add_relu


def _conv_s2(batch, c, hw, rng):
    x = rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32)
    W = (rng.standard_normal((2 * c, c, 3, 3)) * 0.1).astype(numpy.float32)
    return (x, W), lambda x, W: CF.convolution_2d(x, W, None, 2, 1)


def _pool(ksize, relu):
    def make(batch, c, hw, rng):
        x = rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32)
        return (x,), lambda x: CF.max_pooling_2d(x, ksize, 2, relu=relu)
    return make


LAYERS = [
    ('bn_relu 16x32x32', _bn, 16, 32),
    ('bn_relu 32x16x16', _bn, 32, 16),
    ('bn_relu 64x8x8', _bn, 64, 8),
    ('add_relu 16x32x32', _add_relu, 16, 32),
    ('add_relu 32x16x16', _add_relu, 32, 16),
    ('add_relu 64x8x8', _add_relu, 64, 8),
    ('conv3x3/2 16->32 at 32x32', _conv_s2, 16, 32),
    ('conv3x3/2 32->64 at 16x16', _conv_s2, 32, 16),
    ('relu+max_pool 3/2 64x32x32', _pool(3, True), 64, 32),
    ('relu+max_pool 3/2 64x16x16', _pool(3, True), 64, 16),
    ('relu+max_pool 3/2 128x8x8', _pool(3, True), 128, 8),
    ('max_pool 2/2 64x32x32', _pool(2, False), 64, 32),
]


def time_layer(make, batch, c, hw, repeats, seed=0):
    """``{native: (forward seconds list, backward seconds list)}``, modes alternating every repeat."""
    rng = numpy.random.RandomState(seed)
    arrays, f = make(batch, c, hw, rng)
    gy = None
    out = {True: ([], []), False: ([], [])}
    for r in range(repeats + 1):  # the first round warms both modes up and is dropped
        for native in (True, False):
            with chainer.using_config('use_native_kernels', native):
                vs = [chainer.Variable(a) for a in arrays]
                t0 = time.perf_counter()
                y = f(*vs)
                t1 = time.perf_counter()
                if gy is None:
                    gy = rng.standard_normal(y.shape).astype(numpy.float32)
                y.grad = gy
                y.backward()
                t2 = time.perf_counter()
            if r:
                out[native][0].append(t1 - t0)
                out[native][1].append(t2 - t1)
    return out


def time_strided_parts(batch, c, hw, repeats, seed=0):
    """``{part: (kernel seconds list, GEMM seconds list)}`` for ``gx`` and ``gW`` of a 3x3 stride-2 layer."""
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32)
    W = (rng.standard_normal((2 * c, c, 3, 3)) * 0.1).astype(numpy.float32)
    gy = rng.standard_normal((batch, 2 * c, hw // 2, hw // 2)).astype(numpy.float32)
    with chainer.using_config('use_native_kernels', False):
        node = Convolution2DFast(2, 1)
        node.apply((x, W))  # sets the node's geometry for _backward_gemm
    node._acc = None
    runs = {
        'gx': (lambda: _direct.grad_x(gy, W, x.shape, (2, 2), (1, 1)),
               lambda: node._backward_gemm((0,), x, W, gy, False)),
        'gW': (lambda: _direct.grad_w(x, gy, 3, 3, (2, 2), (1, 1)),
               lambda: node._backward_gemm((1,), x, W, gy, False)),
    }
    out = {}
    for part, fns in runs.items():
        out[part] = ([], [])
        for r in range(repeats + 1):
            for i, f in enumerate(fns):
                t0 = time.perf_counter()
                f()
                if r:
                    out[part][i].append(time.perf_counter() - t0)
    return out


PADS = [('pad 4x16x32x32 3x3', (4, 16, 32, 32), (1, 1)), ('pad 4x32x16x16 3x3', (4, 32, 16, 16), (1, 1)),
        ('pad 4x64x8x8 3x3', (4, 64, 8, 8), (1, 1)), ('pad 4x16x32x32 3x3/2', (4, 16, 32, 32), (2, 2))]


def time_pad(shape, stride, repeats, seed=0):
    """``{native: seconds list}`` of ``_direct._pad_images`` for a 3x3 pad-1 layer, modes alternating."""
    x = numpy.random.RandomState(seed).standard_normal(shape).astype(numpy.float32)
    g = _direct._geometry(shape, 3, 3, stride, (1, 1))
    out = {True: [], False: []}
    for r in range(repeats + 1):
        for native in (True, False):
            with chainer.using_config('use_native_kernels', native):
                t0 = time.perf_counter()
                for _ in range(20):
                    _direct._pad_images(x, g, (1, 1))
                if r:
                    out[native].append((time.perf_counter() - t0) / 20)
    return out


GW_LAYERS = [  # (name, C, O, input side, kernel side, stride)
    ('3x3 16->16 at 32x32', 16, 16, 32, 3, 1), ('3x3 32->32 at 16x16', 32, 32, 16, 3, 1),
    ('3x3 64->64 at 8x8', 64, 64, 8, 3, 1), ('3x3/2 16->32 at 32x32', 16, 32, 32, 3, 2),
    ('3x3/2 32->64 at 16x16', 32, 64, 16, 3, 2), ('5x5 32->32 at 16x16', 32, 32, 16, 5, 1),
    ('5x5 32->64 at 8x8', 32, 64, 8, 5, 1)]


def time_grad_w_kernels(batch, c, o, hw, k, stride, repeats, seed=0):
    """``({kernel: seconds list}, GFLOP, picked kernel)`` of ``_direct.grad_w``, the two kernels alternating."""
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((batch, c, hw, hw)).astype(numpy.float32)
    side = (hw + 2 * (k // 2) - k) // stride + 1
    gy = rng.standard_normal((batch, o, side, side)).astype(numpy.float32)
    args = (x, gy, k, k, (stride, stride), (k // 2, k // 2))
    picked = 'channels-last' if _direct.gw_takes_channels_last(o, side) else 'plane'
    default = _direct._GW_CHANNELS_LAST_MAX_WIDTH
    out = {'channels-last': [], 'plane': []}
    try:
        for r in range(repeats + 1):
            for kernel, width in (('channels-last', 10 ** 6), ('plane', -1)):
                _direct._GW_CHANNELS_LAST_MAX_WIDTH = width
                t0 = time.perf_counter()
                _direct.grad_w(*args)
                if r:
                    out[kernel].append(time.perf_counter() - t0)
    finally:
        _direct._GW_CHANNELS_LAST_MAX_WIDTH = default
    return out, 2e-9 * batch * o * side * side * c * k * k, picked


def main(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
    p.add_argument('--repeats', type=int, default=15)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args(argv)
    keep_memory()  # time the layers as train.py runs them
    if args.threads:
        _parallel.set_num_threads(args.threads)
    if _native.library() is None:
        sys.exit('error: the compiled kernels do not run here: ' + _native.status())
    print('# {} | batch {} | {} repeats | threads {} | {}'.format(
        time.strftime('%Y-%m-%d %H:%M'), args.batch, args.repeats, _parallel.num_threads(),
        _native.status()))
    print('| layer | forward, kernel (ms) | forward, NumPy (ms) | backward, kernel (ms) | '
          'backward, NumPy (ms) | speed-up fwd / bwd |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, make, c, hw in LAYERS:
        t = time_layer(make, args.batch, c, hw, args.repeats)
        med = {k: [1e3 * numpy.median(v) for v in t[k]] for k in t}
        print('| {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} / {:.2f} |'.format(
            name, med[True][0], med[False][0], med[True][1], med[False][1],
            med[False][0] / med[True][0], med[False][1] / med[True][1]), flush=True)
    print()
    print('| stride-2 layer, one half of the backward | kernel (ms) | GEMM (ms) | speed-up |')
    print('|---|---:|---:|---:|')
    for name, make, c, hw in LAYERS:
        if make is not _conv_s2:
            continue
        for part, (k, g) in time_strided_parts(args.batch, c, hw, args.repeats).items():
            k, g = 1e3 * numpy.median(k), 1e3 * numpy.median(g)
            print('| {} {} | {:.2f} | {:.2f} | {:.2f} |'.format(name, part, k, g, g / k), flush=True)
    print()
    print('| padding of one task (4 images) | C (us) | NumPy (us) | speed-up |')
    print('|---|---:|---:|---:|')
    for name, shape, stride in PADS:
        t = time_pad(shape, stride, args.repeats)
        k, n = 1e6 * numpy.median(t[True]), 1e6 * numpy.median(t[False])
        print('| {} | {:.1f} | {:.1f} | {:.2f} |'.format(name, k, n, n / k), flush=True)
    print()
    print('| weight gradient | channels-last (ms) | plane (ms) | picked | speed-up | GFLOP/s, channels-last / plane |')
    print('|---|---:|---:|---|---:|---:|')
    for name, c, o, hw, k, stride in GW_LAYERS:
        t, gflop, picked = time_grad_w_kernels(args.batch, c, o, hw, k, stride, args.repeats)
        cl, pl = numpy.median(t['channels-last']), numpy.median(t['plane'])
        print('| {} gW | {:.2f} | {:.2f} | {} | {:.2f} | {:.0f} / {:.0f} |'.format(
            name, 1e3 * cl, 1e3 * pl, picked, pl / cl, gflop / cl, gflop / pl), flush=True)


if __name__ == '__main__':
    sys.exit(run_main(main))
