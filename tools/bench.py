#!/usr/bin/env python
"""Throughput benchmark: Chainer (fast kernels and stock) next to PyTorch, in one run.

    python tools/bench.py --models cnn,resnet20 --repeats 5 --json docs/results/bench.json
    python tools/bench.py -g 0 --models cnn,cnnbn,vgg,resnet20,resnet56,resnet110,residual:res_depth=12 \
        --dtype float32,mixed16 --profile --repeats 5 --warmup 2 --json OUT.json

prints, for each model, the images per second of a full training step
(forward, softmax cross-entropy, backward, MomentumSGD with weight decay) and
of inference, as median / min / max over repeats after warm-up (the backends
take turns, one call each per repeat, so other jobs' load falls on all of
them alike), for

* ``fast``:  Chainer with :mod:`chainer_cifar.links` and the fast kernels,
* ``stock``: the same model object under ``use_fast_kernels=False`` (Chainer's
  own functions; on a GPU the only Chainer backend),
* ``torch`` / ``torch_cl``: the model's PyTorch twin (``tools/torch_models.py``)
  in the default (NCHW) and channels_last layouts, when torch is importable;
  ``--dtype mixed16`` runs it under ``torch.autocast`` (float16) with a
  ``GradScaler`` on a GPU, and not at all on the CPU,

and, as "paired", the median over repeats of the Chainer : PyTorch speed ratio
within each repeat (steadier than the ratio of medians on a shared machine;
Chainer is ``fast`` where it runs, else ``stock``), plus the data-pipeline
rate, the peak memory of one training step (tracemalloc on the CPU, NumPy
allocations included; CuPy's pool on a GPU) and the BLAS in use, and writes
it all as JSON with ``--json``. Timings belong here, not in the unit tests.

A measurement tool, not part of the package: the package imports no PyTorch.
"""
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (HERE, os.path.normpath(os.path.join(HERE, '..', 'src'))):  # tools/ and the package
    if _path not in sys.path:
        sys.path.insert(0, _path)

import chainer_cifar  # noqa: E402  (compatibility layer before chainer)
import chainer_cifar.errors  # noqa: E402
import numpy  # noqa: E402

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

from chainer_cifar.errors import Parser, UserError  # noqa: E402
from chainer_cifar.functions import _native, _parallel, keep_memory  # noqa: E402

DEFAULT_MODELS = ('cnn', 'resnet20')
BACKENDS = ('fast', 'stock', 'torch', 'torch_cl')


FLAG_VALUES = {'1': True, 'true': True, 'yes': True, 'on': True, '0': False, 'false': False, 'no': False,
               'off': False}


def parse_model_spec(spec):
    """``'residual:res_depth=12,skip_depth=1'`` -> ``('residual', {'res_depth': 12, 'skip_depth': True})``.

    Each value is read as the registry's option of that name is (a whole number or a flag); a name no
    model takes keeps its text, for the registry to refuse when the model is built.
    """
    from chainer_cifar.models.registry import model_options
    known = model_options()
    name, _, rest = spec.partition(':')
    options = {}
    for item in filter(None, (v.strip() for v in rest.split(','))):
        key, eq, value = (part.strip() for part in item.partition('='))
        if not eq:
            raise UserError('model option {!r} in {!r}: expected key=value'.format(item, spec))
        if key not in known:
            options[key] = value
            continue
        try:
            options[key] = FLAG_VALUES[value.lower()] if known[key].kind == 'flag' else int(value)
        except (KeyError, ValueError):
            raise UserError('model option {!r} in {!r}: expected {}'.format(
                item, spec, '1 or 0' if known[key].kind == 'flag' else 'a whole number'))
    return name.strip(), options


def build_chainer_model(spec):
    """The registry's model for ``spec`` (``'resnet20'``, ``'residual:res_depth=12'``)."""
    from chainer_cifar.models import create_model
    name, options = parse_model_spec(spec)
    return create_model(name, **options)  # an unknown name or option: the registry's UserError


def build_torch_model(spec):
    """The PyTorch twin of ``spec`` (see ``tools/torch_models.py``), or ``None`` when it has none."""
    import torch_models
    return torch_models.build(*parse_model_spec(spec))


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


def _chainer_steps(model, x, t, device=None, dtype='float32'):
    """``(train, infer)`` closures; ``x`` and ``t`` already on ``device`` (kept there: no transfers).

    ``dtype='mixed16'`` runs under ``chainer.mixed16`` with float32 master
    weights and dynamic loss scaling, as ``train.py --dtype mixed16``. On a
    GPU each step ends with a device synchronization, so it is timed whole.
    """
    optimizer = chainer.optimizers.MomentumSGD(lr=0.01, momentum=0.9)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(5e-4))
    config = chainer.mixed16 if dtype == 'mixed16' else numpy.float32
    if dtype == 'mixed16':
        optimizer.use_fp32_update()
        optimizer.loss_scaling()
    sync = _synchronizer(device)

    def train():
        with chainer.using_config('train', True), chainer.using_config('dtype', config):
            model.cleargrads()
            y = model(x)
            if y.dtype != numpy.float32:
                y = F.cast(y, numpy.float32)
            loss = F.softmax_cross_entropy(y, t)
            loss.backward(loss_scale=optimizer._loss_scale)
            optimizer.update()
        sync()

    def infer():
        with chainer.using_config('train', False), chainer.no_backprop_mode(), \
                chainer.using_config('dtype', config):
            model(x)
        sync()
    return train, infer


def _synchronizer(device):
    """A function that waits for ``device`` (a CuPy GPU) to finish its queued work; a no-op on the CPU."""
    cuda_device = getattr(device, 'device', None)
    if device is None or getattr(device, 'xp', numpy) is numpy or cuda_device is None:
        return lambda: None
    return cuda_device.synchronize


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


def peak_device_memory(step):
    """MiB held by CuPy's memory pool after one call of ``step`` from an emptied pool.

    The pool keeps freed blocks, so what it holds after the step is the
    step's peak of simultaneously live arrays (parameters and optimizer state
    included), up to the pool's rounding and fragmentation.
    """
    import cupy
    pool = cupy.get_default_memory_pool()
    gc.collect()
    pool.free_all_blocks()
    step()
    return pool.total_bytes() / 2 ** 20


def profile_step(step, steps=3, top=10):
    """The ``top`` Chainer functions by total time over ``steps`` calls (``TimerHook``; CUDA events on a GPU)."""
    from chainer.function_hooks import TimerHook
    hook = TimerHook()
    with hook:
        for _ in range(steps):
            step()
    rows = sorted(hook.summary().items(), key=lambda kv: -kv[1]['elapsed_time'])
    total = sum(v['elapsed_time'] for _, v in rows) or 1.0
    return [{'function': name, 'ms_per_step': 1e3 * v['elapsed_time'] / steps,
             'calls_per_step': v['occurrence'] / steps, 'share': v['elapsed_time'] / total}
            for name, v in rows[:top]]


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


def bench_model(name, backends, batch, repeats, warmup, memory=True, log=print, device=None,
                dtype='float32', profile=False):
    """img/s of ``name``'s train and inference steps for each backend, on ``device`` (default: CPU).

    On a GPU the Chainer backend is ``stock`` (the fast kernels are NumPy's),
    the batch is sent to the device once and stays there, and PyTorch runs on
    CUDA when it can (mixed16 there under autocast; on the CPU float32 only).
    """
    device = device or chainer.get_device('@numpy')
    gpu = device.xp is not numpy
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(numpy.float32)
    t = rng.randint(0, 10, size=batch).astype(numpy.int32)
    result = {'model': name, 'dtype': dtype, 'device': str(device)}
    label = name if dtype == 'float32' else '{} {}'.format(name, dtype)
    steps = {}  # backend -> {'train': fn, 'infer': fn}
    chainer_backends = [b for b in backends if b in ('fast', 'stock') and not (gpu and b == 'fast')]
    if chainer_backends:
        config = chainer.mixed16 if dtype == 'mixed16' else numpy.float32
        with chainer.using_config('dtype', config):
            model = build_chainer_model(name)
            xd = device.send(x.astype(chainer.get_dtype()))
        model.to_device(device)
        result['source'] = 'registry'
        result['params'] = int(sum(p.size for p in model.params()))
        train, infer = _chainer_steps(model, xd, device.send(t), device, dtype)
        for backend in chainer_backends:
            fast = backend == 'fast'
            steps[backend] = {'train': _under_switch(train, fast), 'infer': _under_switch(infer, fast)}
    torch_backends = [b for b in backends if b.startswith('torch')]
    torch = _import_torch() if torch_backends and (dtype == 'float32' or gpu) else None
    if torch is not None and gpu and not torch.cuda.is_available():
        torch = None
    if torch is not None:
        import torch_models
        torch.manual_seed(0)
        for backend in torch_backends:
            m = build_torch_model(name)
            if m is None:  # no twin: the PyTorch columns stay n/a
                break
            result['torch_params'] = sum(p.numel() for p in m.parameters())
            result['torch_precision'] = 'autocast float16, GradScaler' if dtype == 'mixed16' else 'float32'
            xt = torch.from_numpy(x.copy())
            if backend == 'torch_cl':
                m = m.to(memory_format=torch.channels_last)
                xt = xt.contiguous(memory_format=torch.channels_last)
            tt = torch.from_numpy(t.astype(numpy.int64))
            if gpu:
                m, xt, tt = m.cuda(device.device.id), xt.cuda(device.device.id), tt.cuda(device.device.id)
            train_t, infer_t = torch_models.train_steps(m, xt, tt, mixed16=dtype == 'mixed16')
            if gpu:
                train_t, infer_t = _then(train_t, torch.cuda.synchronize), _then(infer_t, torch.cuda.synchronize)
            steps[backend] = {'train': train_t, 'infer': infer_t}
    # the Chainer side of the PyTorch ratio: the fast kernels where they run, else stock (a GPU)
    reference = next((b for b in ('fast', 'stock') if b in steps), None)
    for kind in ('train', 'infer'):
        seconds = time_interleaved({b: fns[kind] for b, fns in steps.items()}, repeats, warmup)
        for backend in steps:
            entry = result.setdefault(backend, {})
            entry[kind] = _summary(seconds[backend], batch)
            log('  {:<10} {:<8} {:<5} {:8.1f} img/s'.format(label, backend, kind, entry[kind]['median']))
        if reference is not None and 'torch' in seconds:
            result[reference][kind]['paired_ratio_torch'] = paired_ratio(seconds[reference], seconds['torch'])
    if memory:
        for backend in chainer_backends:
            measure = peak_device_memory if gpu else peak_memory
            result[backend]['peak_mib_train'] = measure(steps[backend]['train'])
    if profile and chainer_backends:
        backend = chainer_backends[0]
        result[backend]['profile_train'] = profile_step(steps[backend]['train'])
        for row in result[backend]['profile_train']:
            log('  {:<10} {:<8} profile {:<40} {:8.2f} ms/step {:5.1f} %'.format(
                label, backend, row['function'], row['ms_per_step'], 100 * row['share']))
    return result


def _then(fn, after):
    def step():
        fn()
        after()
    return step


def bench_data_pipeline(batch=128, repeats=20, log=print, device=None):
    """Images/s of the input pipeline exactly as ``train.py`` runs it, on ``device`` (default: CPU).

    The training set is resident on the device (``resident_arrays``);
    ``EpochIterator`` hands out shuffled index batches, ``Converter`` gathers
    each batch there and applies the default ``crop,mirror`` augmentation
    (vectorised over the batch; on the CPU one thread). On a GPU the rate
    includes a synchronization after the batches.
    """
    from chainer_cifar.data.augment import Augmenter
    from chainer_cifar.training.data import Converter, EpochIterator, resident_arrays
    device = device or chainer.get_device('@numpy')
    batches = 8
    rng = numpy.random.RandomState(0)
    x = rng.randn(batch * batches, 3, 32, 32).astype(numpy.float32)
    t = rng.randint(0, 10, batch * batches).astype(numpy.int32)
    dataset = chainer.datasets.TupleDataset(x, t)
    iterator = EpochIterator(dataset, batch, seed=0, indices=True)
    convert = Converter(device, Augmenter(('crop', 'mirror'), seed=0),
                        resident=resident_arrays(dataset, device, numpy.float32))
    sync = _synchronizer(device)

    def step():
        for _ in range(batches):
            convert(next(iterator))
        sync()
    rates = [batch * batches / s for s in _time(step, repeats, 2)]
    function = 'EpochIterator(indices) + Converter(resident, crop,mirror) on {}'.format(device)
    log('  data pipeline ({}): {:,.0f} img/s'.format(function, statistics.median(rates)))
    return {'rate': statistics.median(rates), 'min': min(rates), 'max': max(rates), 'function': function}


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


def _device(gpu):
    """Chainer's device for ``-g``, as ``train.py`` picks it (one clear error without CuPy)."""
    from chainer_cifar.training import get_device
    device = get_device(gpu)
    if device.xp is not numpy:
        device.use()
    return device


def _gpu_info(device):
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(device.device.id)
    name = props.get('name', b'')
    return {'name': name.decode() if isinstance(name, bytes) else str(name),
            'total_mib': props.get('totalGlobalMem', 0) / 2 ** 20, 'cupy': cupy.__version__,
            'cudnn': bool(chainer.backends.cuda.cudnn_enabled)}


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
    """The markdown table; "X / PyTorch" and "paired" compare PyTorch with ``fast`` Chainer, or,
    when no row has ``fast`` (a GPU run, ``--stock``), with ``stock`` Chainer."""
    chainer_side = 'fast' if any('fast' in r for r in results) else 'stock'
    lines = ['| model | mode | stock Chainer | fast Chainer | PyTorch | PyTorch channels_last '
             '| fast / stock | {} / PyTorch | paired |'.format(chainer_side),
             '|---|---|---:|---:|---:|---:|---:|---:|---:|']

    def get(r, b, k):
        return r.get(b, {}).get(k, {}).get('median')

    def label(r):
        return r['model'] if r.get('dtype', 'float32') == 'float32' else '{} {}'.format(r['model'], r['dtype'])

    def fmt(v):
        return 'n/a' if v is None else '{:.0f}'.format(v)

    def ratio(a, b):
        return 'n/a' if a is None or b is None else '{:.2f}'.format(a / b)
    for r in results:
        for kind in ('train', 'infer'):
            s, f, t, c = (get(r, b, kind) for b in ('stock', 'fast', 'torch', 'torch_cl'))
            paired = r.get(chainer_side, {}).get(kind, {}).get('paired_ratio_torch')
            lines.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                label(r), kind, fmt(s), fmt(f), fmt(t), fmt(c), ratio(f, s),
                ratio(get(r, chainer_side, kind), t), 'n/a' if paired is None else '{:.2f}'.format(paired)))
    return '\n'.join(lines)


def parse_args(argv=None):
    p = Parser(description=__doc__.split('\n')[0])
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
    p.add_argument('-g', '--gpu', type=int, default=-1,
                   help='GPU id (CuPy): Chainer\'s own functions there, data resident on the GPU; '
                        'negative = CPU')
    p.add_argument('--dtype', default='float32',
                   help='comma list of float32, mixed16 (Chainer\'s mixed precision, as train.py --dtype; '
                        'PyTorch under autocast, on a GPU only)')
    p.add_argument('--profile', action='store_true',
                   help='also list the top Chainer functions of a train step (TimerHook)')
    p.add_argument('--json', help='write the results to this JSON file')
    args = p.parse_args(argv)
    args.dtype = [d.strip() for d in args.dtype.split(',') if d.strip()]
    bad_dtypes = sorted(set(args.dtype) - {'float32', 'mixed16'})
    if bad_dtypes or not args.dtype:
        raise UserError('--dtype {}: choose from float32, mixed16'.format(','.join(bad_dtypes) or '(empty)'))
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
    kept = keep_memory()  # time steps as train.py runs them
    env = environment()
    env['keep_memory'] = kept
    env['threads_set'] = threads
    print('# {} | {} CPUs | Python {} NumPy {} Chainer {} torch {} | load {}'.format(
        env['processor'], env['cpus'], env['python'], env['numpy'], env['chainer'], env['torch'],
        ' '.join('{:.2f}'.format(v) for v in env['loadavg_start'])))
    print('# direct convolution kernel: {}'.format(env['direct_conv']))
    device = _device(args.gpu)
    env['device'] = str(device)
    if device.xp is not numpy:
        env['gpu'] = _gpu_info(device)
        print('# device: {} ({})'.format(device, env['gpu'].get('name')))
    results = []
    out = {'environment': env, 'batch': args.batch, 'repeats': args.repeats, 'warmup': args.warmup,
           'argv': sys.argv[1:] if argv is None else list(argv), 'results': results, 'data_pipeline': None}
    rows = len(args.models) * len(args.dtype)
    interrupted = False
    try:
        for name in args.models:
            for dtype in args.dtype:
                results.append(bench_model(name, args.backends, args.batch, args.repeats, args.warmup,
                                           memory=not args.no_memory, device=device, dtype=dtype,
                                           profile=args.profile))
                if args.json and len(results) < rows:  # a row at a time: a killed run keeps what it measured
                    _write_json(args.json, dict(out, partial='{} of {} rows'.format(len(results), rows)))
        out['data_pipeline'] = None if args.no_data else bench_data_pipeline(args.batch, device=device)
    except KeyboardInterrupt:  # a stage's timeout (SIGINT): report the rows measured so far
        interrupted = True
        out['interrupted'] = 'after {} of {} rows'.format(len(results), rows)
    data = out['data_pipeline']
    env['loadavg_end'] = os.getloadavg()
    print()
    if interrupted:
        print('# interrupted {}: the table and the JSON hold those'.format(out['interrupted']))
    print(format_table(results))
    if data is not None:
        rate = data.get('rate')
        print('\ndata pipeline: {}'.format('{:,.0f} img/s ({})'.format(rate, data.get('function'))
                                           if rate else 'n/a ({})'.format(data.get('note'))))
    for r in results:
        mem = ', '.join('{} {:.0f} MiB'.format(b, r[b]['peak_mib_train'])
                        for b in ('fast', 'stock') if 'peak_mib_train' in r.get(b, {}))
        if mem:
            what = 'CuPy memory pool' if device.xp is not numpy else 'traced memory'
            print('peak {}, {}{} train step batch {}: {}'.format(
                what, r['model'], '' if r['dtype'] == 'float32' else ' ' + r['dtype'], args.batch, mem))
    if args.json:
        _write_json(args.json, out)
        print('wrote', args.json)
    return 130 if interrupted else 0


def _write_json(path, out):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + '.tmp', 'w') as f:
        json.dump(out, f, indent=1)
    os.replace(path + '.tmp', path)


if __name__ == '__main__':
    sys.exit(chainer_cifar.errors.run_main(main))
