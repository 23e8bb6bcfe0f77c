#!/usr/bin/env python
"""An independent PyTorch control for the ResNet paper recipe (a measurement tool, not part of the package).

    python tools/torch_control.py resnet20-paper --scale partial --seeds 1,2,3 -g 0
    python src/compare.py report results/partial/resnet20-paper

trains He et al.'s CIFAR ResNet-20/32/44/56/110 with a preset's recipe, written
directly in PyTorch, so that the Chainer runs of ``compare.py run PRESET`` can
be set beside it. It writes the files the Chainer path writes, under the same
folder (``presets.run_dir``), with the prefix ``PRESET_torch_sSEED``:
``_log.csv``, ``_run.json`` and ``_preset.json`` (framework ``pytorch``).

Shared with the Chainer path: the recipe (the preset's ``train.py`` flags,
parsed by ``training.args.parse_args``) and the data (the pickles and the
train/validation split of ``training.data.load_splits``), and the output
formats. Implemented here independently: the model (option-A shortcuts padded
on both sides, as the common PyTorch reproductions do, which is Chainer's
network up to a permutation of channels), its initialization, BatchNorm
(PyTorch's), the augmentation, the batch order, the optimizer (Chainer's
momentum-SGD form with weight decay on every parameter), the schedule and
the evaluation. Random streams differ from Chainer's: seeds give
reproducible runs, not the same runs. On a GPU, TF32 is off (the recipe is
float32, as CuPy computes it); ``--deterministic`` makes GPU runs repeatable.

Only the recipes it implements are accepted; any other flag value (model,
optimizer, schedule shape, augmentation, dtype, ...) is one ``error:`` line.
``--iter N`` and ``--subset N`` shorten a run and are recorded as overrides.

After every epoch the run's state (weights, momentum, the random streams, the
log so far) goes to ``PRESET_torch_sSEED.ckpt``; ``--resume`` continues each
seed from it, with the same numbers as an uninterrupted run on the same
device. A resume that changes the recipe is refused (a longer ``--iter`` is
allowed). The checkpoint is read with ``torch.load(weights_only=True)``: it
cannot run code. As with ``train.py``, one process writes a seed's files at a
time (``chainer_cifar.training.lock``).
"""
import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'src'))
import chainer_cifar  # noqa: E402,F401  (the compatibility layer, before anything imports Chainer)
from chainer_cifar.data.pickles import atomic_write  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.results import presets  # noqa: E402
from chainer_cifar.training.args import model_options, parse_args  # noqa: E402
from chainer_cifar.training.data import load_splits  # noqa: E402
from chainer_cifar.training.device import device_name  # noqa: E402
from chainer_cifar.training.extensions import CSV_COLUMNS, sigterm_as_ctrl_c  # noqa: E402
from chainer_cifar.training.lock import OutputLock  # noqa: E402
from chainer_cifar.training.record import code_version, dataset_info, write_json  # noqa: E402

import numpy  # noqa: E402

try:
    import torch  # noqa: E402
except ModuleNotFoundError as e:  # an optional development requirement, not a dependency of the package
    chainer_cifar.missing_dependency(e, '`.venv/bin/python -m pip install -r requirements-dev.txt` installs it')
    raise
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODELS = {'resnet20': 3, 'resnet32': 5, 'resnet44': 7, 'resnet56': 9, 'resnet110': 18}  # name -> n
AUGMENTATIONS = ('crop', 'mirror')


# ---------------------------------------------------------------- model

def batch_norm(channels):
    return nn.BatchNorm2d(channels, eps=2e-5, momentum=0.1)  # Chainer's defaults: eps 2e-5, decay 0.9


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, + shortcut, ReLU; option A pads the new channels with zeros on both sides."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(planes)
        self.planes = planes
        self.option_a = stride != 1 or in_planes != planes

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x
        if self.option_a:
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.planes // 4, self.planes // 4))
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """He et al. 2015 CIFAR ResNet of depth 6n+2, initialized as the Chainer model is."""

    def __init__(self, n):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = batch_norm(16)
        stages, in_planes = [], 16
        for i, planes in enumerate((16, 32, 64)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, 2 if i > 0 and j == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He normal, N(0, 2/fan_in)
                nn.init.kaiming_normal_(m.weight, mode='fan_in', nonlinearity='relu')
            elif isinstance(m, nn.Linear):  # Chainer's Linear default: LeCun normal, N(0, 1/fan_in), bias 0
                nn.init.normal_(m.weight, 0.0, m.in_features ** -0.5)
                nn.init.zeros_(m.bias)
        # BatchNorm2d starts at gamma 1, beta 0, as Chainer's does.

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer3(self.layer2(self.layer1(h)))
        return self.fc(h.mean(dim=(2, 3)))


# ---------------------------------------------------------------- the recipe

def check_supported(args):
    """Refuse, in one line, every flag value of ``args`` that this control does not implement."""
    augment = ','.join(a for a in args.augment if a not in AUGMENTATIONS)
    checks = ([(args.model not in MODELS, '-m ' + args.model)] + [(v, '--' + k) for k, v in model_options(args).items()]
              + [(args.optimizer != 'sgd', '--optimizer ' + args.optimizer),
                 (args.lr_shape != 'multistep', '--lr_shape ' + args.lr_shape),
                 (augment, '--augment ' + augment), (args.dtype != 'float32', '--dtype ' + args.dtype),
                 (args.accumulate != 1, '--accumulate {}'.format(args.accumulate)),
                 (args.communicator or args.sync_bn, '--communicator/--sync_bn')])
    missing = [flag for bad, flag in checks if bad]
    if missing:
        raise UserError('the PyTorch control does not implement {} (it trains {} with momentum SGD, a multistep '
                        'schedule and crop/mirror augmentation in float32)'.format(', '.join(missing),
                                                                                  '/'.join(MODELS)))


def learning_rate(args, epoch):
    """The rate at fractional ``epoch``: warm-up, then x0.1 every N epochs or at each listed epoch."""
    if epoch < args.warmup_epochs:
        return args.warmup_lr
    decay = args.lr_decay_iter
    steps = int(epoch // decay) if isinstance(decay, int) else sum(1 for m in decay if epoch >= m)
    return args.lr * 0.1 ** steps


class MomentumSGD(object):
    """Chainer's MomentumSGD(lr, 0.9) with its WeightDecay hook on every parameter.

    g = grad + wd * p; v = 0.9 * v - lr * g; p += v. (torch.optim.SGD keeps
    v = 0.9 * v + g and steps by lr * v, which differs once the rate changes.)
    """

    def __init__(self, params, weight_decay, momentum=0.9):
        self.params = list(params)
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr):
        g = torch._foreach_add([p.grad for p in self.params], self.params, alpha=self.weight_decay)
        torch._foreach_mul_(self.v, self.momentum)
        torch._foreach_add_(self.v, g, alpha=-lr)
        torch._foreach_add_(self.params, self.v)


def batches(n, batch_size, generator, device):
    """One epoch of index batches: a fresh permutation cut into ``batch_size`` pieces, the last one smaller."""
    order = torch.randperm(n, generator=generator, device=device)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def shift(x, oy, ox, pad=4):
    """Each image translated: window (oy, ox) in [0, 2 pad]^2 of the zero-padded image (pad = no shift)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]


def augment(x, names, generator, pad=4):
    """Random translation by up to +-pad px with zero fill ('crop'), then left-right flips with p 0.5 ('mirror')."""
    n = len(x)
    if 'crop' in names:
        oy, ox = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=x.device)
        x = shift(x, oy, ox, pad)
    if 'mirror' in names:
        flip = torch.rand(n, generator=generator, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


@torch.no_grad()
def evaluate(model, x, t, batch_size):
    """``(mean loss, error)`` over the whole set, in eval mode."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, len(x), batch_size):
        y, tb = model(x[i:i + batch_size]), t[i:i + batch_size]
        loss += F.cross_entropy(y, tb, reduction='sum').double()
        wrong += (y.argmax(1) != tb).sum()
    model.train()
    return loss.item() / len(x), wrong.item() / len(x)


# ---------------------------------------------------------------- one run

def write_csv(path, rows):
    lines = [','.join(CSV_COLUMNS)]
    for row in rows:  # as CSVLog: repr of floats, an empty cell for None
        lines.append(','.join('' if row[c] is None else repr(row[c]) for c in CSV_COLUMNS))
    atomic_write(path, lambda f: f.write('\n'.join(lines) + '\n'), mode='w')


def on_device(split, device):
    x, t = split._datasets  # the arrays of load_splits' TupleDataset, put on the device once
    return torch.from_numpy(x).to(device), torch.from_numpy(t).long().to(device)


def train_epoch(model, optimizer, args, x, t, epoch, order_gen, augment_gen):
    """One epoch of updates: ``(mean loss, error)`` over its augmented batches, and the last update's rate."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)  # summed on the device: no sync per batch
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for k, idx in enumerate(batches(len(x), args.batch_size, order_gen, x.device)):
        # As Chainer's LearningRate: each update's rate at the fraction of the epoch's images seen before it.
        lr = learning_rate(args, epoch + k * args.batch_size / len(x))
        xb, tb = x[idx], t[idx]
        if args.augment:
            xb = augment(xb, args.augment, augment_gen)
        y = model(xb)
        loss = F.cross_entropy(y, tb)
        model.zero_grad()
        loss.backward()
        optimizer.step(lr)
        loss_sum += loss.detach().double() * len(idx)
        wrong += (y.argmax(1) != tb).sum()
    return loss_sum.item() / len(x), wrong.item() / len(x), lr


def device_label(device):
    """The hardware's name, as train.py records it: the GPU's, or the CPU's model name."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    import chainer
    return device_name(chainer.get_device('@numpy'))


def recipe_argv(argv):
    """A run's flags without those a resume may change: ``--iter``, ``--quiet``, and where the files go."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in ('--iter', '--out', '-p'):
            skip = True
        elif a != '--quiet':
            kept.append(a)
    return kept


def save_checkpoint(path, model, optimizer, generators, rows, record, recipe):
    state = {'model': model.state_dict(), 'momentum': optimizer.v,
             'generators': [g.get_state() for g in generators],
             'rows': json.dumps(rows), 'record': json.dumps(record), 'recipe': json.dumps(recipe)}
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path, model, optimizer, generators, recipe, device):
    """Restore the state :func:`save_checkpoint` wrote: ``(rows, record)``; a changed recipe is a UserError."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        saved = json.loads(state['recipe'])
    except Exception as e:  # truncated, not a checkpoint, or holding more than tensors and plain data
        raise UserError('--resume: {} is not a checkpoint of this tool ({}: {}); delete it to start the seed '
                        'over'.format(path, type(e).__name__, str(e).splitlines()[0] if str(e) else ''))
    if saved != recipe:
        changed = sorted(set(saved) ^ set(recipe))
        raise UserError('--resume: {} was trained with another recipe (differing: {}); resume with the same '
                        'flags, or delete it to start the seed over'.format(path, ' '.join(changed)))
    model.load_state_dict(state['model'])
    for v, saved_v in zip(optimizer.v, state['momentum']):
        v.copy_(saved_v)
    for g, saved_g in zip(generators, state['generators']):
        g.set_state(saved_g.cpu())  # a generator's state is a CPU byte tensor on every device
    return json.loads(state['rows']), json.loads(state['record'])


def train(args, device, sidecar, resume=False):
    """Train one seed as ``args`` say, writing ``<prefix>_log.csv``, ``_run.json`` and ``_preset.json``.

    With ``resume``, a seed whose ``<prefix>.ckpt`` exists continues from it.
    """
    torch.manual_seed(args.seed)  # the initial weights: drawn on the CPU, the same on every device
    model = ResNet(MODELS[args.model]).to(device)
    splits = load_splits(args)
    data = {name: on_device(split, device) for name, split in splits._asdict().items() if split is not None}
    order_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    augment_gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    optimizer = MomentumSGD(model.parameters(), args.weight_decay)

    base = os.path.join(args.out, args.prefix)
    sizes = {'n_' + name: len(data[name][0]) if name in data else 0 for name in ('train', 'valid', 'test')}
    record = dict(sizes, args=vars(args), model=args.model, parameters=sum(p.numel() for p in model.parameters()),
                  images=os.path.abspath(args.dataset), labels=os.path.abspath(args.label), device=str(device),
                  device_name=device_label(device), code=code_version(),
                  versions={'python': platform.python_version(), 'torch': torch.__version__, 'numpy': numpy.__version__},
                  dataset=dataset_info(args.dataset), start_time=datetime.datetime.now().isoformat(), end_time=None,
                  wall_seconds=None, status='running', epochs=0, best_epoch=0, best_valid_error=None,
                  test_error_at_best=None, framework='pytorch')
    recipe = recipe_argv(sidecar['argv'])
    checkpoint = base + '.ckpt'
    rows = []
    if resume and os.path.isfile(checkpoint):
        rows, saved = load_checkpoint(checkpoint, model, optimizer, (order_gen, augment_gen), recipe, device)
        record.update({k: saved[k] for k in ('start_time', 'best_epoch', 'best_valid_error', 'test_error_at_best')})
        record['epochs'] = len(rows)  # the run record says how far the run is while it goes on
    if not args.quiet:
        print('{}: {:,} parameters; {n_train} train / {n_valid} valid / {n_test} test images; {}'.format(
            args.model, record['parameters'], device, **sizes), flush=True)

    # As BestModel: the first epoch of the lowest validation error.
    best_error = min([r['valid_error'] for r in rows if r['valid_error'] is not None] or [float('inf')])
    status, t0 = 'failed', time.time() - (rows[-1]['elapsed'] if rows else 0.0)
    lock = OutputLock(base).acquire()  # one process per seed's files, as train.py
    try:
        write_json(base + '_preset.json', sidecar)
        write_json(base + '_run.json', record)
        for epoch in range(len(rows) + 1, args.iter + 1):
            train_loss, train_error, lr = train_epoch(model, optimizer, args, *data['train'], epoch - 1,
                                                      order_gen, augment_gen)
            if not math.isfinite(train_loss):
                status = 'diverged'
                raise UserError('training loss became {} in epoch {}; stopped'.format(train_loss, epoch))
            valid_loss = valid_error = None
            if 'valid' in data:
                valid_loss, valid_error = evaluate(model, *data['valid'], args.batch_size)
            test_loss, test_error = evaluate(model, *data['test'], args.batch_size)
            rows.append(dict(epoch=epoch, train_loss=train_loss, train_error=train_error, valid_loss=valid_loss,
                             valid_error=valid_error, test_loss=test_loss, test_error=test_error, lr=lr,
                             elapsed=time.time() - t0))
            write_csv(base + '_log.csv', rows)
            # As BestModel: the first epoch of the lowest validation error; without one, the last epoch.
            if valid_error is None or valid_error < best_error:
                best_error = best_error if valid_error is None else valid_error
                record.update(best_epoch=epoch, best_valid_error=valid_error, test_error_at_best=test_error)
            save_checkpoint(checkpoint, model, optimizer, (order_gen, augment_gen), rows, record, recipe)
            if not args.quiet:
                print('epoch {}/{}  train loss {:.4f} error {:.2%}  valid error {}  test error {:.2%}  lr {:g}  '
                      '{:.1f} s'.format(epoch, args.iter, train_loss, train_error,
                                        '-' if valid_error is None else '{:.2%}'.format(valid_error),
                                        test_error, lr, rows[-1]['elapsed']), flush=True)
        status = 'finished'
    except KeyboardInterrupt:
        status = 'interrupted'
        raise
    finally:
        record.update(status=status, end_time=datetime.datetime.now().isoformat(),
                      wall_seconds=round(time.time() - t0, 3), epochs=len(rows))
        try:
            write_json(base + '_run.json', record)
        finally:
            lock.release()
    final = 100 * rows[-1]['test_error']
    if record['best_valid_error'] is None:
        print('no validation set: test error of the last epoch ({}) {:.2f}%'.format(len(rows), final))
    else:
        print('best validation error {:.2f}% at epoch {}; test error at that epoch {:.2f}% (final test error '
              '{:.2f}%)'.format(100 * record['best_valid_error'], record['best_epoch'],
                                100 * record['test_error_at_best'], final))
    return record


# ---------------------------------------------------------------- command line

def get_device(gpu):
    if gpu < 0:
        return torch.device('cpu')
    if not torch.cuda.is_available():
        raise UserError('-g {} asks for a GPU, but this PyTorch ({}) sees no CUDA device; use -g -1 to run on '
                        'the CPU'.format(gpu, torch.__version__))
    if gpu >= torch.cuda.device_count():
        raise UserError('-g {}: there is no such GPU ({} found)'.format(gpu, torch.cuda.device_count()))
    return torch.device('cuda', gpu)


def build_parser():
    p = Parser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=__doc__.split('\n', 1)[1])
    p.add_argument('preset', help='a preset name (see `python src/compare.py list`)')
    p.add_argument('--scale', choices=presets.SCALES, default='full', help='the preset\'s full or partial recipe')
    p.add_argument('--seeds', default='1', help='comma-separated seeds, e.g. 1,2,3')
    p.add_argument('-g', '--gpu', type=int, default=-1, help='CUDA device id; negative = the CPU')
    p.add_argument('--runs_dir', default='results', help='runs go to presets.run_dir(RUNS_DIR, PRESET, SCALE)')
    p.add_argument('-d', '--dataset', help='image pickle (default: the recipe\'s)')
    p.add_argument('-l', '--label', help='label pickle (default: the recipe\'s)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads (CPU)')
    p.add_argument('--quiet', action='store_true', help='print only the summary line of each seed')
    p.add_argument('--deterministic', action='store_true',
                   help='GPU: deterministic algorithms instead of cuDNN autotuning (slower, repeatable)')
    p.add_argument('--iter', type=int, help='override: train this many epochs (recorded as a change to the recipe)')
    p.add_argument('--subset', type=int, help='override: only the first N training and test images (recorded)')
    p.add_argument('--resume', action='store_true',
                   help='continue each seed from its checkpoint PRESET_torch_sSEED.ckpt where there is one')
    return p


def main(argv=None):
    opts = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in opts.seeds.split(',') if s.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise UserError('--seeds must be a comma-separated list of integers, got {!r}'.format(opts.seeds))
    overrides = []
    for flag in ('--iter', '--subset'):
        if getattr(opts, flag[2:]) is not None:
            overrides += [flag, str(getattr(opts, flag[2:]))]
    if opts.threads is not None and opts.threads < 1:
        raise UserError('--threads must be positive, got {}'.format(opts.threads))
    quiet = ['--quiet'] if opts.quiet else []
    data = [a for flag, value in (('-d', opts.dataset), ('-l', opts.label)) if value for a in (flag, value)]
    out = presets.run_dir(opts.runs_dir, opts.preset, opts.scale)
    runs = []
    for seed in seeds:  # every seed's flags are checked before anything is written
        prefix = '{}_torch_s{}'.format(opts.preset, seed)
        argv = (presets.recipe(opts.preset, opts.scale) + ['-p', prefix, '--out', out, '--seed', str(seed),
                                                           '-g', str(opts.gpu)] + quiet + data + overrides)
        args = parse_args(argv)
        check_supported(args)
        runs.append((args, {'preset': opts.preset, 'seed': seed, 'scale': opts.scale, 'framework': 'pytorch',
                            'overrides': overrides, 'argv': argv}))
    device = get_device(opts.gpu)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # float32, as CuPy
        torch.backends.cudnn.benchmark = not opts.deterministic
        if opts.deterministic:
            os.environ.setdefault('CUBLAS_WORKSPACE_CONFIG', ':4096:8')  # cuBLAS needs it to be deterministic
            torch.use_deterministic_algorithms(True)
    # SIGTERM (kill, a job scheduler) stops the series as Ctrl-C does: the run records "interrupted".
    with sigterm_as_ctrl_c():
        for args, sidecar in runs:
            if not args.quiet:
                print('== {} seed {} (PyTorch control): {}'.format(opts.preset, args.seed, ' '.join(sidecar['argv'])),
                      flush=True)
            train(args, device, sidecar, resume=opts.resume)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
