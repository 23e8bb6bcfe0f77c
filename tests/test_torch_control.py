"""tools/torch_control.py, the PyTorch control: the same network, step, schedule and files as the Chainer path."""
import csv
import os
import sys

import numpy
import pytest

from conftest import import_torch  # noqa: E402

torch = import_torch('the PyTorch control (tools/torch_control.py)')

import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402

from chainer_cifar.errors import UserError, run_main  # noqa: E402
from chainer_cifar.models import create_model  # noqa: E402
from chainer_cifar.models.resnet_paper import ResNet as ChainerResNet  # noqa: E402
from chainer_cifar.results import presets  # noqa: E402
from chainer_cifar.results.runs import load_run  # noqa: E402
from chainer_cifar.training.args import parse_args  # noqa: E402
from chainer_cifar.training.extensions import CSV_COLUMNS  # noqa: E402
from chainer_cifar.training.schedule import Schedule  # noqa: E402
from helpers import write_pickles  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
import torch_control as tc  # noqa: E402
from weight_map import carray, copy_into_chainer, mapped  # noqa: E402

RTOL = 1e-10


def assert_close(chainer_value, torch_value, what):
    t = torch_value.detach().numpy()
    scale = max(float(numpy.abs(t).max()), 1e-300)
    assert float(numpy.abs(chainer_value - t).max()) <= RTOL * scale, what


def models(n):
    """``(control, Chainer)`` in float64, the Chainer one holding the control's weights."""
    torch.manual_seed(n)
    tmodel = tc.ResNet(n).double()
    with chainer.using_config('dtype', numpy.float64):
        cmodel = create_model('resnet20') if n == 3 else ChainerResNet(n)
    pairs = copy_into_chainer(tmodel, cmodel, n)
    return tmodel, cmodel, pairs


def batch(seed=0, size=8):
    rng = numpy.random.RandomState(seed)
    return rng.standard_normal((size, 3, 32, 32)), rng.randint(0, 10, size).astype(numpy.int32)


def chainer_pass(cmodel, x, t, train):
    xv = chainer.Variable(x.copy())
    with chainer.using_config('train', train):
        cmodel.cleargrads()
        y = cmodel(xv)
        F.softmax_cross_entropy(y, t).backward()
    return y.array, xv.grad


def torch_pass(tmodel, x, t, train):
    xt = torch.from_numpy(x.copy()).requires_grad_()
    tmodel.train(train)
    tmodel.zero_grad()
    y = tmodel(xt)
    torch.nn.functional.cross_entropy(y, torch.from_numpy(t).long()).backward()
    return y, xt.grad


# ---------------------------------------------------------------- 1. the same network

@pytest.mark.parametrize('n', [1, 3], ids=['n1', 'resnet20'])
@pytest.mark.parametrize('train', [True, False], ids=['train', 'eval'])
def test_the_control_network_is_chainers_up_to_a_channel_permutation(n, train):
    tmodel, cmodel, pairs = models(n)
    assert sum(p.numel() for p in tmodel.parameters()) == sum(p.size for p in cmodel.params())
    if not train:  # non-trivial running statistics, copied across
        g = torch.Generator().manual_seed(1)
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g, dtype=torch.float64))
        copy_into_chainer(tmodel, cmodel, n)
    x, t = batch()
    cy, cgx = chainer_pass(cmodel, x, t, train)
    ty, tgx = torch_pass(tmodel, x, t, train)
    assert_close(cy, ty, 'logits')
    assert_close(cgx, tgx, 'input gradient')
    for name, clink, cname, tparam, index in mapped(pairs):
        assert_close(getattr(clink, cname).grad[index], tparam.grad, name + ' gradient')
    # Train mode moves the running statistics the same way (momentum 0.1 = decay 0.9, unbiased variance).
    for name, clink, cname, tbuf, index in mapped(pairs, buffers=True):
        assert_close(carray(clink, cname)[index], tbuf, name)


# ---------------------------------------------------------------- 2. the same update

def test_an_update_is_chainers_momentum_sgd_with_weight_decay_on_every_parameter():
    tmodel, cmodel, pairs = models(1)
    optimizer = chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9)
    optimizer.setup(cmodel)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-4))
    control = tc.MomentumSGD(tmodel.parameters(), weight_decay=1e-4)
    x, t = batch()
    # Two steps with a change of rate between them: v = 0.9 v - lr g, not torch.optim.SGD's v = 0.9 v + g.
    for lr in (0.1, 0.01):
        optimizer.lr = lr
        chainer_pass(cmodel, x, t, True)
        optimizer.update()
        torch_pass(tmodel, x, t, True)
        control.step(lr)
    for name, clink, cname, tparam, index in mapped(pairs):
        assert_close(carray(clink, cname)[index], tparam, name)


# ---------------------------------------------------------------- 3. the same schedule

@pytest.mark.parametrize('flags', [
    presets.recipe('resnet20-paper', 'partial'),
    presets.recipe('resnet110-paper', 'partial'),  # warm-up: 1 epoch at 0.01
    ['-m', 'resnet20', '--iter', '12', '--lr_decay_iter', '5', '--warmup_epochs', '0.5'],
], ids=['resnet20-partial', 'resnet110-partial-warmup', 'every-5-half-epoch-warmup'])
def test_every_update_gets_the_rate_of_chainers_schedule(flags):
    args = parse_args(flags)
    schedule = Schedule(args.lr, args.iter, args.lr_shape, args.lr_decay_iter, args.warmup_epochs, args.warmup_lr)
    n, b = 7502, 128  # the partial archive's training split: 59 updates per epoch, the last of 78 images
    for epoch in range(args.iter):
        for k in range(-(-n // b)):
            e = epoch + k * b / n
            assert tc.learning_rate(args, e) == schedule(e), e


# ---------------------------------------------------------------- 4. augmentation and batches

def test_augmentation_translates_by_up_to_4_px_with_zero_fill_and_flips_half_the_images():
    n = 2000
    plane = torch.arange(1, 32 * 32 + 1, dtype=torch.float32).reshape(32, 32)  # pixel (i, j) holds 1 + 32 i + j
    x = torch.stack([plane, -plane]).expand(n, 2, 32, 32).contiguous()
    out = tc.augment(x, ['crop', 'mirror'], torch.Generator().manual_seed(0))
    # Read each image's shift and flip off its centre, then compare it with NumPy's pad-crop-flip.
    i, j = numpy.divmod(out[:, 0, 16, 16].numpy().astype(int) - 1, 32)
    flip = (out[:, 0, 16, 17] < out[:, 0, 16, 16]).numpy()
    dy, dx = i - 16, numpy.where(flip, j - 15, j - 16)
    padded = numpy.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)))
    for k in range(n):
        window = padded[k, :, 4 + dy[k]:36 + dy[k], 4 + dx[k]:36 + dx[k]]
        numpy.testing.assert_array_equal(out[k].numpy(), window[:, :, ::-1] if flip[k] else window)
    for d in (dy, dx):
        counts = numpy.bincount(d + 4, minlength=9)
        assert len(counts) == 9 and counts.min() > 150, counts  # every offset in [-4, 4], about 222 each
    assert 0.45 < flip.mean() < 0.55
    assert torch.equal(tc.shift(x, torch.full((n,), 4), torch.full((n,), 4)), x)  # the middle window: no shift
    assert torch.equal(tc.augment(x, [], torch.Generator()), x)


def test_each_epoch_is_a_fresh_permutation_cut_into_batches_the_last_one_smaller():
    g = torch.Generator().manual_seed(0)
    first, second = (tc.batches(10, 4, g, torch.device('cpu')) for _ in range(2))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == sorted(torch.cat(second).tolist()) == list(range(10))
    assert torch.cat(first).tolist() != torch.cat(second).tolist()


# ---------------------------------------------------------------- 5. what it does not implement

@pytest.mark.parametrize('preset, named', [
    ('article-cnn', ['-m cnn', '--optimizer adam']),
    ('keras-ablation-mixup', ['--augment mixup']),
    ('resnet110-sd-paper', ['-m residual', '--skip_depth']),
])
def test_a_recipe_it_does_not_implement_is_one_error_line_and_writes_nothing(preset, named, tmp_path, capsys):
    assert run_main(tc.main, [preset, '--runs_dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: the PyTorch control does not implement') and err.count('\n') == 1
    for flag in named:
        assert flag in err
    assert os.listdir(str(tmp_path)) == []


def test_flags_it_does_not_implement_are_named_together():
    args = parse_args(['-m', 'resnet20', '--lr_shape', 'cosine', '--dtype', 'mixed16', '--accumulate', '2'])
    with pytest.raises(UserError, match='--lr_shape cosine, --dtype mixed16, --accumulate 2'):
        tc.check_supported(args)
    tc.check_supported(parse_args(presets.recipe('resnet56-paper') + ['--augment', 'none']))


def test_a_gpu_without_cuda_is_one_error_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert run_main(tc.main, ['resnet20-paper', '-g', '0', '--runs_dir', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: -g 0 asks for a GPU') and err.count('\n') == 1


# ---------------------------------------------------------------- 6. end to end

def _control(tmp_path, runs_dir):
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12,
                                 info={'n_train': 40, 'n_test': 12, 'partial': True})
    argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', '2', '-d', image, '-l', label,
            '--runs_dir', str(runs_dir), '--quiet']
    assert run_main(tc.main, argv) == 0
    return os.path.join(presets.run_dir(str(runs_dir), 'resnet20-paper', 'partial'), 'resnet20-paper_torch_s1')


def test_a_partial_preset_run_writes_the_files_the_chainer_path_writes(tmp_path, capsys):
    prefix = _control(tmp_path, tmp_path / 'results')
    assert capsys.readouterr().out.startswith('best validation error')  # --quiet: the summary line alone
    with open(prefix + '_log.csv', newline='') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [r['epoch'] for r in rows] == ['1', '2']
    for r in rows:
        for k in ('train_error', 'valid_error', 'test_error'):
            assert 0.0 <= float(r[k]) <= 1.0
        assert r['lr'] == '0.1' and float(r['elapsed']) > 0
    run = load_run(prefix + '_log.csv')
    assert run.preset == {'preset': 'resnet20-paper', 'seed': 1, 'scale': 'partial', 'framework': 'pytorch',
                          'overrides': ['--iter', '2'], 'argv': run.preset['argv']}
    meta = run.meta
    assert meta['status'] == 'finished' and meta['framework'] == 'pytorch' and meta['device'] == 'cpu'
    assert (meta['n_train'], meta['n_valid'], meta['n_test'], meta['epochs']) == (36, 4, 12, 2)
    assert meta['dataset'] == {'n_train': 40, 'n_test': 12, 'partial': True}
    assert meta['args']['model'] == 'resnet20' and meta['args']['lr_decay_iter'] == [20, 30]
    assert meta['parameters'] == 269722 and 'torch' in meta['versions']
    best = min(rows, key=lambda r: (float(r['valid_error']), int(r['epoch'])))
    assert meta['best_epoch'] == int(best['epoch']) and meta['test_error_at_best'] == float(best['test_error'])

    # The seeds fix every random stream: a second run repeats the numbers.
    again = _control(tmp_path, tmp_path / 'again')
    with open(again + '_log.csv', newline='') as f:
        rows_again = list(csv.DictReader(f))
    assert [dict(r, elapsed=None) for r in rows] == [dict(r, elapsed=None) for r in rows_again]


def test_sigterm_stops_a_run_as_ctrl_c_does_and_records_it_interrupted(tmp_path, monkeypatch, capsys):
    import signal

    def unhandled(*_):  # SIGTERM's default action would kill pytest: fail the test instead
        raise AssertionError('SIGTERM reached the default handler: the control does not handle it')

    original, epochs = tc.train_epoch, []

    def killed_in_epoch_2(*args, **kwargs):
        epochs.append(1)
        if len(epochs) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(tc, 'train_epoch', killed_in_epoch_2)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)
        argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1,2', '--iter', '3', '-d', image, '-l', label,
                '--runs_dir', str(tmp_path / 'results'), '--quiet']
        assert run_main(tc.main, argv) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert capsys.readouterr().err.strip().splitlines() == ['interrupted']
    prefix = os.path.join(presets.run_dir(str(tmp_path / 'results'), 'resnet20-paper', 'partial'),
                          'resnet20-paper_torch_s')
    meta = load_run(prefix + '1_log.csv').meta
    assert (meta['status'], meta['epochs']) == ('interrupted', 1)
    assert not os.path.exists(prefix + '2_run.json')  # the series stopped


def _log_rows(prefix):
    with open(prefix + '_log.csv', newline='') as f:
        return [dict(r, elapsed=None) for r in csv.DictReader(f)]


def test_resume_continues_from_the_checkpoint_with_the_numbers_of_an_uninterrupted_run(tmp_path, capsys):
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)

    def control(runs_dir, iters, *extra):
        argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', str(iters), '-d', image,
                '-l', label, '--runs_dir', str(tmp_path / runs_dir), '--quiet'] + list(extra)
        assert run_main(tc.main, argv) == 0
        return os.path.join(presets.run_dir(str(tmp_path / runs_dir), 'resnet20-paper', 'partial'),
                            'resnet20-paper_torch_s1')

    straight = control('straight', 3)
    control('stopped', 2)
    resumed = control('stopped', 3, '--resume')
    assert len(_log_rows(straight)) == 3 and _log_rows(resumed) == _log_rows(straight)
    a, b = load_run(straight + '_log.csv').meta, load_run(resumed + '_log.csv').meta
    for key in ('status', 'epochs', 'best_epoch', 'best_valid_error', 'test_error_at_best'):
        assert a[key] == b[key], key

    # Without --resume a seed starts over, and overwrites the checkpoint.
    restarted = control('stopped', 1)
    assert _log_rows(restarted) == _log_rows(straight)[:1]


@pytest.mark.parametrize('change', [['--subset', '30'], ['-g', '-2']], ids=['subset', 'gpu'])
def test_a_resume_that_changes_the_recipe_is_one_error_line_naming_the_change(change, tmp_path, capsys):
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)
    argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', '1', '-d', image, '-l', label,
            '--runs_dir', str(tmp_path / 'results'), '--quiet']
    assert run_main(tc.main, argv) == 0
    prefix = os.path.join(presets.run_dir(str(tmp_path / 'results'), 'resnet20-paper', 'partial'),
                          'resnet20-paper_torch_s1')
    log = open(prefix + '_log.csv').read()
    capsys.readouterr()
    assert run_main(tc.main, argv + ['--resume', '--iter', '2'] + change) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'another recipe' in err[0] and change[-1] in err[0]
    assert open(prefix + '_log.csv').read() == log  # nothing written


def test_a_checkpoint_holding_code_is_refused_without_running_it(tmp_path, capsys):
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)
    folder = presets.run_dir(str(tmp_path / 'results'), 'resnet20-paper', 'partial')
    os.makedirs(folder)
    marker = tmp_path / 'ran'

    class Payload(object):
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    torch.save({'recipe': Payload()}, os.path.join(folder, 'resnet20-paper_torch_s1.ckpt'))
    argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', '1', '-d', image, '-l', label,
            '--runs_dir', str(tmp_path / 'results'), '--quiet', '--resume']
    assert run_main(tc.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is not a checkpoint of this tool' in err[0]
    assert not marker.exists()


# ---------------------------------------------------------------- tools/lockstep.py

def test_lockstep_steps_chainer_beside_the_control_run_from_its_weights_and_batches(tmp_path, capsys):
    import lockstep
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)  # one batch per epoch
    out = str(tmp_path / 'lockstep.csv')
    lockstep.main(['resnet20-paper', '--seed', '1', '--steps', '2', '--baseline', '-d', image, '-l', label,
                   '--out', out, '--quiet'])
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['step'] for r in rows] == ['1', '2'] and rows[0]['lr'] == '0.1'
    # Its control side is the control run of that seed: the same first-epoch (= first-batch) loss.
    assert run_main(tc.main, ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', '1', '-d', image,
                              '-l', label, '--runs_dir', str(tmp_path / 'results'), '--quiet', '--threads', '1']) == 0
    run = os.path.join(presets.run_dir(str(tmp_path / 'results'), 'resnet20-paper', 'partial'),
                       'resnet20-paper_torch_s1')
    assert float(rows[0]['control_loss']) == pytest.approx(float(_log_rows(run)[0]['train_loss']), rel=1e-6)
    # From the same weights on the same batch, Chainer's first loss is the control's up to float32 rounding.
    assert float(rows[0]['chainer_loss']) == pytest.approx(float(rows[0]['control_loss']), rel=1e-5)
    assert 0 < float(rows[0]['param_distance']) < 1e-4
    assert 0 < float(rows[0]['baseline_param_distance']) < 1e-4
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith('.')]  # written atomically


def test_lockstep_refuses_a_recipe_the_control_does_not_implement(capsys):
    import lockstep
    assert run_main(lockstep.main, ['article-cnn', '--steps', '1']) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: the PyTorch control does not implement -m cnn')


def test_a_seed_another_control_run_is_writing_is_refused_before_anything_is_written(tmp_path, capsys):
    from helpers import lock_held_elsewhere
    image, label = write_pickles(tmp_path / 'dataset', n_train=40, n_test=12)
    folder = presets.run_dir(str(tmp_path / 'results'), 'resnet20-paper', 'partial')
    argv = ['resnet20-paper', '--scale', 'partial', '--seeds', '1', '--iter', '1', '-d', image, '-l', label,
            '--runs_dir', str(tmp_path / 'results'), '--quiet']
    with lock_held_elsewhere(os.path.join(folder, 'resnet20-paper_torch_s1')) as pid:
        assert run_main(tc.main, argv) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith('error: another run (pid {}) is writing '.format(pid))
        assert os.listdir(folder) == ['.resnet20-paper_torch_s1.lock']
    assert run_main(tc.main, argv) == 0
    assert sorted(os.listdir(folder)) == ['resnet20-paper_torch_s1' + s for s in
                                          ('.ckpt', '_log.csv', '_preset.json', '_run.json')]
