"""Peak memory of one training step with ``--accumulate N``, as ``train.py`` runs it.

    python tools/accumulate_memory.py resnet110 --parts 1,2,4 [--stock] [--batch 128]

Builds the registry model in a ``Classifier``, runs one update of
:class:`~chainer_cifar.training.updater.AccumulatingUpdater` on a random
batch to create the optimizer state, then a second one under ``tracemalloc``
and prints its peak (NumPy buffers are traced; the interpreter and BLAS are
not) and its wall time. ``--stock`` uses Chainer's own functions, the ones
a GPU runs, instead of the fast CPU kernels.
"""
import gc
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src'))

import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before Chainer)
import numpy  # noqa: E402

import chainer  # noqa: E402

from chainer_cifar.functions import keep_memory  # noqa: E402
from chainer_cifar.errors import Parser, run_main  # noqa: E402
from chainer_cifar.models.registry import create_model  # noqa: E402
from chainer_cifar.training.trainer import Classifier  # noqa: E402
from chainer_cifar.training.updater import AccumulatingUpdater  # noqa: E402


def measure(name, parts, batch, seed=0):
    """``(peak MiB, seconds)`` of one ``AccumulatingUpdater`` step after a warm-up step."""
    rng = numpy.random.RandomState(seed)
    data = [(rng.standard_normal((3, 32, 32)).astype(numpy.float32), numpy.int32(rng.randint(10)))
            for _ in range(batch)]
    model = Classifier(create_model(name))
    optimizer = chainer.optimizers.MomentumSGD(0.1)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
    iterator = chainer.iterators.SerialIterator(data, batch, shuffle=False)
    updater = AccumulatingUpdater(iterator, optimizer, chainer.dataset.concat_examples, parts)
    updater.update()
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    updater.update()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20, seconds


def main(argv=None):
    p = Parser(description=__doc__.split('\n\n')[0])
    p.add_argument('model')
    p.add_argument('--parts', default='1,2,4', help='comma list of --accumulate values')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--stock', action='store_true', help="Chainer's own functions (what a GPU runs)")
    args = p.parse_args(argv)
    keep_memory()  # measure the step as train.py runs it
    chainer.global_config.use_fast_kernels = not args.stock
    kernels = 'stock Chainer' if args.stock else 'fast kernels'
    for parts in (int(v) for v in args.parts.split(',')):
        peak, seconds = measure(args.model, parts, args.batch)
        print('{} batch {} --accumulate {} ({}): peak {:.0f} MiB, step {:.1f} s'.format(
            args.model, args.batch, parts, kernels, peak, seconds), flush=True)


if __name__ == '__main__':
    sys.exit(run_main(main))
