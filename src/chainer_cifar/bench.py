"""Throughput benchmark: Chainer (fast kernels and stock) next to PyTorch, in one run.

``python src/bench.py`` prints, for each model, the images per second of a
full training step (forward, softmax cross-entropy, backward, MomentumSGD
with weight decay) and of inference, as median / min / max over repeats after
warm-up (the backends take turns, one call each per repeat, so other jobs'
load falls on all of them alike), for

* ``fast``:  Chainer with :mod:`chainer_cifar.links` and the fast kernels,
* ``stock``: the same model object under ``use_fast_kernels=False`` (Chainer's
  own functions),
* ``torch`` / ``torch_cl``: an equivalent PyTorch model in the default
  (NCHW) and channels_last layouts, when torch is importable,

and, as "paired", the median over repeats of the fast : PyTorch speed ratio
within each repeat (steadier than the ratio of medians on a shared machine),
plus the data-pipeline rate, the peak Python-heap memory of one training step
(tracemalloc; NumPy allocations included) and the BLAS in use, and writes it
all as JSON with ``--json``. Timings belong here, not in the unit tests.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

import numpy

import chainer
import chainer.functions as F
import chainer.links as CL

from chainer_cifar import links as FL
from chainer_cifar.errors import UserError
from chainer_cifar.functions import _native, _parallel

DEFAULT_MODELS = ('cnn', 'resnet20')
BACKENDS = ('fast', 'stock', 'torch', 'torch_cl')


# --------------------------------------------------------------------------------------------
# Reference models (used when the registry does not provide the name)

class RefCNN(chainer.Chain):
    """The article CNN: 3 x (conv5x5 pad 2 + ReLU + maxpool 3/2), fc 1000, fc 10, dropout."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv1 = FL.Convolution2D(3, 64, 5, pad=2)
            self.conv2 = FL.Convolution2D(64, 64, 5, pad=2)
            self.conv3 = FL.Convolution2D(64, 128, 5, pad=2)
            self.l1 = CL.Linear(4 * 4 * 128, 1000)
            self.l2 = CL.Linear(1000, 10)

    def forward(self, x):
        h = x
        for conv in (self.conv1, self.conv2, self.conv3):
            h = FL.max_pooling_2d(F.relu(conv(h)), 3, 2)
        h = F.relu(self.l1(F.dropout(h)))
        return self.l2(F.dropout(h))


class RefBlock(chainer.Chain):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, self.extra = stride, cout - cin
        w = chainer.initializers.HeNormal()
        with self.init_scope():
            self.conv1 = FL.Convolution2D(cin, cout, 3, stride, 1, nobias=True, initialW=w)
            self.bn1 = FL.BatchNormalization(cout)
            self.conv2 = FL.Convolution2D(cout, cout, 3, 1, 1, nobias=True, initialW=w)
            self.bn2 = FL.BatchNormalization(cout)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        s = x
        if self.stride > 1:
            s = s[:, :, ::self.stride, ::self.stride]
        if self.extra:
            s = F.pad(s, ((0, 0), (0, self.extra), (0, 0), (0, 0)), 'constant')
        return F.relu(h + s)


class RefResNet(chainer.Chain):
    """ResNet-(6n+2) of He et al. 2015 for CIFAR, option-A shortcuts."""

    def __init__(self, n=3):
        super().__init__()
        w = chainer.initializers.HeNormal()
        with self.init_scope():
            self.conv = FL.Convolution2D(3, 16, 3, 1, 1, nobias=True, initialW=w)
            self.bn = FL.BatchNormalization(16)
            self.blocks = chainer.ChainList(*[
                RefBlock(cin, cout, stride) for cin, cout, stride in _plan(n)])
            self.fc = CL.Linear(64, 10)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x)))
        for b in self.blocks:
            h = b(h)
        return self.fc(F.average(h, axis=(2, 3)))


def _plan(n):
    out, cin = [], 16
    for stage, cout in enumerate((16, 32, 64)):
        for i in range(n):
            out.append((cin, cout, 2 if stage > 0 and i == 0 else 1))
            cin = cout
    return out


REFERENCE = {'cnn': RefCNN, 'resnet20': lambda: RefResNet(3), 'resnet56': lambda: RefResNet(9),
             'resnet110': lambda: RefResNet(18)}


def build_chainer_model(name, source='auto'):
    """The registry's model ``name`` (built from :mod:`chainer_cifar.links`), else a reference model.

    ``accelerate`` is a no-op for the registry's models (they already use the
    fast links); it stays for models that would still build Chainer's links.
    """
    if source in ('auto', 'registry'):
        try:
            from chainer_cifar.models import create_model
            model = create_model(name)
            FL.accelerate(model)
            return model, 'registry'
        except Exception as e:  # registry missing, being rewritten, or no such model
            if source == 'registry' or name not in REFERENCE:
                raise UserError('cannot build model {!r} from the registry: {}'.format(name, e))
    if name not in REFERENCE:
        raise UserError('no reference model {!r}; choose from {}'.format(name, ', '.join(REFERENCE)))
    return REFERENCE[name](), 'reference'


# --------------------------------------------------------------------------------------------
# PyTorch equivalents

def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as TF

    class TorchCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 64, 5, padding=2)
            self.c2 = nn.Conv2d(64, 64, 5, padding=2)
            self.c3 = nn.Conv2d(64, 128, 5, padding=2)
            self.l1 = nn.Linear(4 * 4 * 128, 1000)
            self.l2 = nn.Linear(1000, 10)

        def forward(self, x):
            for c in (self.c1, self.c2, self.c3):
                x = TF.max_pool2d(TF.relu(c(x)), 3, 2, ceil_mode=True)
            x = torch.flatten(x, 1)
            x = TF.relu(self.l1(TF.dropout(x, 0.5, self.training)))
            return self.l2(TF.dropout(x, 0.5, self.training))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.stride, self.extra = stride, cout - cin
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout, eps=2e-5, momentum=0.1)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout, eps=2e-5, momentum=0.1)

        def forward(self, x):
            h = TF.relu(self.b1(self.c1(x)))
            h = self.b2(self.c2(h))
            s = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.extra:
                s = TF.pad(s, (0, 0, 0, 0, 0, self.extra))
            return TF.relu(h + s)

    class TorchResNet(nn.Module):
        def __init__(self, n=3):
            super().__init__()
            self.c = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.b = nn.BatchNorm2d(16, eps=2e-5)
            self.blocks = nn.Sequential(*[Block(a, b, s) for a, b, s in _plan(n)])
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = TF.relu(self.b(self.c(x)))
            x = self.blocks(x)
            return self.fc(x.mean(dim=(2, 3)))

    return {'cnn': TorchCNN, 'resnet20': lambda: TorchResNet(3), 'resnet56': lambda: TorchResNet(9),
            'resnet110': lambda: TorchResNet(18)}


def _import_torch():
    try:
        import torch
        return torch
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
# Timing

def _time(fn, repeats, warmup):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _summary(seconds, batch):
    rates = [batch / s for s in seconds]
    return {'median': statistics.median(rates), 'min': min(rates), 'max': max(rates),
            'seconds': seconds}


def paired_ratio(fast_seconds, other_seconds):
    """Median over repeats of ``other / fast`` time within each repeat (the speed ratio fast : other).

    The backends take turns within a repeat (:func:`time_interleaved`), so the
    two times of one repeat were taken seconds apart: a slow spell of a shared
    machine that spans a repeat slows both, and cancels out of their ratio
    more than out of the ratio of the two medians.
    """
    return statistics.median(o / f for f, o in zip(fast_seconds, other_seconds))


def _chainer_steps(model, x, t):
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(5e-4))

    def train():
        with chainer.using_config('train', True):
            model.cleargrads()
            loss = F.softmax_cross_entropy(model(x), t)
            loss.backward()
            optimizer.update()

    def infer():
        with chainer.using_config('train', False), chainer.no_backprop_mode():
            model(x)
    return train, infer


def _torch_steps(torch, model, x, t):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = torch.nn.CrossEntropyLoss()

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = lossf(model(x), t)
        loss.backward()
        opt.step()

    def infer():
        model.eval()
        with torch.inference_mode():
            model(x)
    return train, infer


def peak_memory(step):
    """Peak traced heap (MiB) during one call of ``step`` (NumPy buffers are traced)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2 ** 20


def _under_switch(fn, fast):
    def step():
        with chainer.using_config('use_fast_kernels', fast):
            fn()
    return step


def time_interleaved(steps, repeats, warmup):
    """Seconds per call of each ``steps[backend]``, the backends taking turns.

    After ``warmup`` calls of each, every repeat calls each backend once, the
    starting backend rotating from repeat to repeat: load from other jobs on a
    shared machine then falls on all backends alike instead of on whichever
    happened to run while it lasted.
    """
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    out = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t0 = time.perf_counter()
            steps[name]()
            out[name].append(time.perf_counter() - t0)
    return out


def bench_model(name, backends, batch, repeats, warmup, memory=True, log=print):
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(numpy.float32)
    t = rng.randint(0, 10, size=batch).astype(numpy.int32)
    result = {'model': name}
    steps = {}  # backend -> {'train': fn, 'infer': fn}
    chainer_backends = [b for b in backends if b in ('fast', 'stock')]
    if chainer_backends:
        model, source = build_chainer_model(name)
        result['source'] = source
        result['params'] = int(sum(p.size for p in model.params()))
        train, infer = _chainer_steps(model, x, t)
        for backend in chainer_backends:
            fast = backend == 'fast'
            steps[backend] = {'train': _under_switch(train, fast), 'infer': _under_switch(infer, fast)}
    torch = _import_torch() if any(b.startswith('torch') for b in backends) else None
    if torch is not None:
        factories = _torch_models()
        if name in factories:
            torch.manual_seed(0)
            for backend in [b for b in backends if b.startswith('torch')]:
                m = factories[name]()
                xt = torch.from_numpy(x.copy())
                if backend == 'torch_cl':
                    m = m.to(memory_format=torch.channels_last)
                    xt = xt.contiguous(memory_format=torch.channels_last)
                train_t, infer_t = _torch_steps(torch, m, xt, torch.from_numpy(t.astype(numpy.int64)))
                steps[backend] = {'train': train_t, 'infer': infer_t}
    for kind in ('train', 'infer'):
        seconds = time_interleaved({b: fns[kind] for b, fns in steps.items()}, repeats, warmup)
        for backend in steps:
            entry = result.setdefault(backend, {})
            entry[kind] = _summary(seconds[backend], batch)
            log('  {:<10} {:<8} {:<5} {:8.1f} img/s'.format(name, backend, kind, entry[kind]['median']))
        if 'fast' in seconds and 'torch' in seconds:
            result['fast'][kind]['paired_ratio_torch'] = paired_ratio(seconds['fast'], seconds['torch'])
    if memory:
        for backend in chainer_backends:
            result[backend]['peak_mib_train'] = peak_memory(steps[backend]['train'])
    return result


def bench_data_pipeline(batch=128, repeats=20, log=print):
    """Images/s of the CPU input pipeline exactly as ``train.py`` runs it.

    ``EpochIterator`` picks a shuffled batch from a float32 ``TupleDataset``,
    ``Converter`` assembles it and applies the default ``crop,mirror``
    augmentation (one thread: NumPy's copies and ufuncs are single-threaded).
    """
    from chainer_cifar.data.augment import Augmenter
    from chainer_cifar.training.data import Converter, EpochIterator
    batches = 8
    rng = numpy.random.RandomState(0)
    x = rng.randn(batch * batches, 3, 32, 32).astype(numpy.float32)
    t = rng.randint(0, 10, batch * batches).astype(numpy.int32)
    iterator = EpochIterator(chainer.datasets.TupleDataset(x, t), batch, seed=0)
    convert = Converter(chainer.get_device('@numpy'), Augmenter(('crop', 'mirror'), seed=0))

    def step():
        for _ in range(batches):
            convert(next(iterator))
    rates = [batch * batches / s for s in _time(step, repeats, 2)]
    log('  data pipeline (EpochIterator + Converter, crop,mirror): {:,.0f} img/s'.format(
        statistics.median(rates)))
    return {'rate': statistics.median(rates), 'min': min(rates), 'max': max(rates),
            'function': 'EpochIterator + Converter(crop,mirror)'}


def set_threads(n):
    """Use ``n`` threads everywhere: this package's kernels, NumPy's OpenBLAS and PyTorch.

    With ``n > 1`` this package runs its own threads and sets OpenBLAS to one
    (see :mod:`chainer_cifar.functions._parallel`); with ``n == 1`` everything
    is single-threaded. On a shared machine a single-thread run
    (``--threads 1``) compares the libraries per core: another job's load then
    slows all of them alike instead of stalling the multi-threaded ones
    (PyTorch's OpenMP threads collapse when a core is taken). Returns what
    each library reports.
    """
    _parallel.set_num_threads(n)
    if n == 1:
        _parallel.set_blas_threads(1)
    done = {'chainer_cifar': _parallel.num_threads(), 'openblas': _parallel.blas_threads()}
    torch = _import_torch()
    if torch is not None:
        torch.set_num_threads(n)
        done['torch'] = torch.get_num_threads()
    return done


def environment():
    info = {'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'python': platform.python_version(), 'numpy': numpy.__version__,
            'chainer': chainer.__version__, 'machine': platform.machine(),
            'processor': _cpu_name(), 'cpus': os.cpu_count(),
            'threads': _parallel.num_threads(), 'openblas_threads': _parallel.blas_threads(),
            'OPENBLAS_CORETYPE': os.environ.get('OPENBLAS_CORETYPE'),
            'direct_conv': _native.status(),
            'loadavg_start': os.getloadavg()}
    try:
        from threadpoolctl import threadpool_info
        info['blas'] = [{k: d.get(k) for k in ('internal_api', 'version', 'architecture', 'num_threads')}
                        for d in threadpool_info()]
    except Exception:
        info['blas'] = 'threadpoolctl not installed'
    torch = _import_torch()
    info['torch'] = torch.__version__ if torch is not None else None
    if torch is not None:
        info['torch_threads'] = torch.get_num_threads()
    return info


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(results):
    lines = ['| model | mode | stock Chainer | fast Chainer | PyTorch | PyTorch channels_last '
             '| fast / stock | fast / PyTorch | paired |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']

    def get(r, b, k):
        return r.get(b, {}).get(k, {}).get('median')

    def fmt(v):
        return 'n/a' if v is None else '{:.0f}'.format(v)

    def ratio(a, b):
        return 'n/a' if a is None or b is None else '{:.2f}'.format(a / b)
    for r in results:
        for kind in ('train', 'infer'):
            s, f, t, c = (get(r, b, kind) for b in ('stock', 'fast', 'torch', 'torch_cl'))
            paired = r.get('fast', {}).get(kind, {}).get('paired_ratio_torch')
            lines.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                r['model'], kind, fmt(s), fmt(f), fmt(t), fmt(c), ratio(f, s), ratio(f, t),
                'n/a' if paired is None else '{:.2f}'.format(paired)))
    return '\n'.join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default=','.join(DEFAULT_MODELS),
                   help='comma-separated model names (default: %(default)s)')
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--backends', default=','.join(BACKENDS),
                   help='comma-separated subset of {} (default: all)'.format(', '.join(BACKENDS)))
    p.add_argument('--stock', action='store_true', help='only stock Chainer (no fast kernels)')
    p.add_argument('--no-torch', action='store_true', help='skip the PyTorch columns')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--no-data', action='store_true', help='skip the data-pipeline rate')
    p.add_argument('--threads', type=int, default=None,
                   help='threads for every library (this package, OpenBLAS, PyTorch); default: theirs')
    p.add_argument('--json', help='write the results to this JSON file')
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(',') if b.strip()]
    bad = sorted(set(backends) - set(BACKENDS))
    if bad:
        raise UserError('unknown backend(s) {}; choose from {}'.format(', '.join(bad), ', '.join(BACKENDS)))
    if args.stock:
        backends = ['stock'] + [b for b in backends if b.startswith('torch')]
    if args.no_torch:
        backends = [b for b in backends if not b.startswith('torch')]
    if args.threads is not None and args.threads < 1:
        raise UserError('--threads must be >= 1')
    if args.batch < 1 or args.repeats < 1 or args.warmup < 0:
        raise UserError('--batch and --repeats must be >= 1, --warmup >= 0')
    args.backends = backends
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    return args


def main(argv=None):
    args = parse_args(argv)
    threads = set_threads(args.threads) if args.threads is not None else None
    env = environment()
    env['threads_set'] = threads
    print('# {} | {} CPUs | Python {} NumPy {} Chainer {} torch {} | load {}'.format(
        env['processor'], env['cpus'], env['python'], env['numpy'], env['chainer'], env['torch'],
        ' '.join('{:.2f}'.format(v) for v in env['loadavg_start'])))
    print('# direct convolution kernel: {}'.format(env['direct_conv']))
    results = []
    for name in args.models:
        results.append(bench_model(name, args.backends, args.batch, args.repeats, args.warmup,
                                   memory=not args.no_memory))
    data = None if args.no_data else bench_data_pipeline(args.batch)
    env['loadavg_end'] = os.getloadavg()
    print()
    print(format_table(results))
    if data is not None:
        rate = data.get('rate')
        print('\ndata pipeline: {}'.format('{:,.0f} img/s ({})'.format(rate, data.get('function'))
                                           if rate else 'n/a ({})'.format(data.get('note'))))
    for r in results:
        mem = ', '.join('{} {:.0f} MiB'.format(b, r[b]['peak_mib_train'])
                        for b in ('fast', 'stock') if 'peak_mib_train' in r.get(b, {}))
        if mem:
            print('peak traced memory, {} train step batch {}: {}'.format(r['model'], args.batch, mem))
    out = {'environment': env, 'batch': args.batch, 'repeats': args.repeats, 'warmup': args.warmup,
           'argv': sys.argv[1:] if argv is None else list(argv), 'results': results, 'data_pipeline': data}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(out, f, indent=1)
        print('wrote', args.json)
    return 0
