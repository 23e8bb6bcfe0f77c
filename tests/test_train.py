"""train.py and evaluate.py on tiny models and data: outputs, flags, errors, schedules."""
import json
import os
import sys
import types

import numpy
import pytest

import chainer

import evaluate as evaluate_cli
import train as train_cli
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.training import data as tdata
from chainer_cifar.training import get_device
from chainer_cifar.training.schedule import Schedule
from helpers import TINY, TINY_NAN, gpu_is_usable, load_params, read_log, tiny_argv, write_pickles

HEADER = 'epoch,train_loss,train_error,valid_loss,valid_error,test_loss,test_error,lr,elapsed'


@pytest.fixture
def data(tmp_path):
    return write_pickles(tmp_path / 'dataset', info={'n_train': 60, 'n_test': 20, 'partial': True})


def run(argv):
    return run_main(train_cli.main, argv)


# ---------------------------------------------------------------- outputs

def test_a_run_writes_model_state_log_plots_snapshot_and_run_record(data, tmp_path, capsys):
    out = tmp_path / 'out'
    assert run(tiny_argv(data, out, '--save_iter', '1')) == 0
    for name in ('run.model', 'run.state', 'run_log.csv', 'run_loss.png', 'run_error.png', 'run.snapshot',
                 'run_run.json', 'run_1.model', 'run_2.model'):
        assert (out / name).is_file(), name
    assert not [p for p in os.listdir(str(out)) if p.endswith('.tmp')]
    with open(str(out / 'run_log.csv')) as f:
        assert f.readline().strip() == HEADER
    rows = read_log(str(out / 'run_log.csv'))
    assert [r['epoch'] for r in rows] == ['1', '2']
    for r in rows:
        for k in ('train_error', 'valid_error', 'test_error'):
            assert 0.0 <= float(r[k]) <= 1.0
        assert float(r['lr']) == 0.01
    record = json.loads((out / 'run_run.json').read_text())
    assert record['model'] == TINY and record['parameters'] > 0
    assert (record['n_train'], record['n_valid'], record['n_test']) == (54, 6, 20)
    assert record['dataset'] == {'n_train': 60, 'n_test': 20, 'partial': True}
    assert record['status'] == 'finished' and record['wall_seconds'] > 0
    assert record['args']['model'] == TINY and 'numpy' in record['versions']
    # The protocol line: best validation error and the test error at that epoch.
    assert 'best validation error' in capsys.readouterr().out


def test_best_model_is_the_epoch_of_lowest_validation_error(data, tmp_path):
    out = tmp_path / 'out'
    assert run(tiny_argv(data, out, '--iter', '3', '--save_iter', '1', '--lr', '0.05')) == 0
    rows = read_log(str(out / 'run_log.csv'))
    errors = [float(r['valid_error']) for r in rows]
    best_epoch = errors.index(min(errors)) + 1  # ties: the earlier epoch
    best, saved = load_params(str(out / 'run.model')), load_params(str(out / 'run_{}.model'.format(best_epoch)))
    for k in best:
        numpy.testing.assert_array_equal(best[k], saved[k])
    record = json.loads((out / 'run_run.json').read_text())
    assert record['best_epoch'] == best_epoch


def test_no_valid_data_leaves_valid_columns_empty_and_keeps_the_last_epoch(data, tmp_path):
    out = tmp_path / 'out'
    assert run(tiny_argv(data, out, '--no_valid_data', '--save_iter', '2')) == 0
    rows = read_log(str(out / 'run_log.csv'))
    assert all(r['valid_loss'] == '' and r['valid_error'] == '' for r in rows)
    last, final = load_params(str(out / 'run.model')), load_params(str(out / 'run_2.model'))
    assert all(numpy.array_equal(last[k], final[k]) for k in last)
    assert json.loads((out / 'run_run.json').read_text())['n_train'] == 60


def test_the_same_seed_gives_the_same_log_and_another_seed_does_not(data, tmp_path):
    argv = ('--augment', 'crop,mirror,erase,cutout,mixup')
    for prefix, seed in (('a', '1'), ('b', '1'), ('c', '2')):
        assert run(tiny_argv(data, tmp_path, '--seed', seed, *argv, prefix=prefix)) == 0
    a, b, c = (read_log(str(tmp_path / (p + '_log.csv'))) for p in 'abc')
    assert a == b and a != c


@pytest.mark.parametrize('optimizer', ['sgd', 'nesterov', 'adam', 'amsgrad'])
def test_every_optimizer_trains_and_logs_its_rate(data, tmp_path, optimizer):
    assert run(tiny_argv(data, tmp_path, '--optimizer', optimizer, '--iter', '2', '--lr_decay_iter', '1',
                         '--alpha', '0.002', '--weight_decay', '0')) == 0
    rates = [float(r['lr']) for r in read_log(str(tmp_path / 'run_log.csv'))]
    base = 0.002 if optimizer in ('adam', 'amsgrad') else 0.01
    assert rates == pytest.approx([base, base * 0.1])


def test_mixed16_trains_one_epoch_on_the_cpu(data, tmp_path):
    assert run(tiny_argv(data, tmp_path, '--dtype', 'mixed16', '--iter', '1')) == 0
    rows = read_log(str(tmp_path / 'run_log.csv'))
    assert numpy.isfinite(float(rows[0]['train_loss']))
    dtypes = {k: v.dtype for k, v in load_params(str(tmp_path / 'run.model')).items()}
    assert dtypes['conv/W'] == numpy.float16 and dtypes['bn/gamma'] == numpy.float32


def test_subset_takes_the_first_n_images_and_splits_ten_percent(data, tmp_path):
    assert run(tiny_argv(data, tmp_path, '--subset', '40', '--iter', '1')) == 0
    record = json.loads((tmp_path / 'run_run.json').read_text())
    assert (record['n_train'], record['n_valid'], record['n_test']) == (36, 4, 20)


# ---------------------------------------------------------------- NaN

def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_snapshot(data, tmp_path, capsys):
    # 54 images / batch 8 = 7 iterations per epoch: the NaN comes in epoch 2.
    argv = tiny_argv(data, tmp_path, '--iter', '3')
    argv[argv.index(TINY)] = TINY_NAN
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: training loss became nan at epoch 2')
    assert len(read_log(str(tmp_path / 'run_log.csv'))) == 1
    with numpy.load(str(tmp_path / 'run.snapshot')) as npz:
        assert int(npz['updater/iterator:main/epoch']) == 1
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'diverged'


# ---------------------------------------------------------------- evaluation

def test_evaluate_and_test_only_report_the_logged_test_error(data, tmp_path, capsys):
    assert run(tiny_argv(data, tmp_path, '--no_valid_data', '--iter', '1')) == 0
    logged = float(read_log(str(tmp_path / 'run_log.csv'))[-1]['test_error'])
    capsys.readouterr()
    assert run_main(evaluate_cli.main, [str(tmp_path / 'run.model'), '-d', data[0], '-l', data[1]]) == 0
    assert 'test error {:.2f}%'.format(100 * logged) in capsys.readouterr().out
    assert run(tiny_argv(data, tmp_path, '--test_only')) == 0
    assert 'test error {:.2f}%'.format(100 * logged) in capsys.readouterr().out


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('extra, message', [
    (['-m', 'no_such_model'], "unknown model 'no_such_model'; choose one of:"),
    (['--augment', 'foo'], 'valid names: crop, mirror'),
    (['--lr_decay_iter', '0'], '--lr_decay_iter'),
    (['--lr_decay_iter', '20,10'], 'strictly increasing'),
    (['--valid_size', '60'], 'leaves no training images'),
    (['--valid_size', '5', '--no_valid_data'], 'contradict'),
    (['--skip_depth'], 'does not take --skip_depth'),
    (['-g', '0'], 'use -g -1'),
    (['--resume', 'missing.snapshot'], 'not found'),
    (['--optimizer', 'rmsprop'], 'invalid choice'),
    (['--batch_size', '0'], 'must be positive'),
])
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(data, tmp_path, capsys, extra, message):
    out = tmp_path / 'out'
    if extra[:1] == ['-g'] and gpu_is_usable(0):
        pytest.skip('GPU 0 is usable here')
    assert run(tiny_argv(data, out) + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
    assert not out.exists() or not os.listdir(str(out))


def _fake_cupy(count=None, error=None):
    def get_device_count():
        if error is not None:
            raise error
        return count
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(
        getDeviceCount=get_device_count)))


@pytest.mark.parametrize('gpu, cupy, message', [
    # what CuPy 14 says on a machine with CuPy and the CUDA libraries but no driver (seen here)
    (0, _fake_cupy(error=RuntimeError('cudaErrorInsufficientDriver: CUDA driver version is\n'
                                      'insufficient for CUDA runtime version')),
     '-g 0 asks for a GPU, but CUDA cannot reach one (RuntimeError: cudaErrorInsufficientDriver: '
     'CUDA driver version is insufficient for CUDA runtime version); use -g -1 to run on the CPU'),
    (0, _fake_cupy(count=0), '-g 0 asks for a GPU, but CUDA sees none; use -g -1'),
    (2, _fake_cupy(count=2), '-g 2: there is no such GPU (2 found; ids 0-1)'),
])
def test_a_gpu_that_cannot_be_used_is_one_error_line_naming_why(monkeypatch, gpu, cupy, message):
    monkeypatch.setattr(chainer.backends.cuda, 'available', True)
    monkeypatch.setitem(sys.modules, 'cupy', cupy)
    with pytest.raises(UserError) as e:
        get_device(gpu)
    assert message in str(e.value) and '\n' not in str(e.value)


def test_without_cupy_the_gpu_error_says_why_it_could_not_be_imported(monkeypatch):
    monkeypatch.setattr(chainer.backends.cuda, 'available', False)
    monkeypatch.setattr(chainer.backends.cuda, '_resolution_error',
                        ImportError("No module named 'cupy'"), raising=False)
    with pytest.raises(UserError) as e:
        get_device(1)
    assert str(e.value) == ("-g 1 asks for a GPU, but CuPy is not installed or cannot be imported "
                            "(ImportError: No module named 'cupy'); use -g -1 to run on the CPU")


def test_a_negative_gpu_id_is_the_cpu():
    assert get_device(-1).xp is numpy


def test_missing_dataset_tells_how_to_make_it(tmp_path, capsys):
    argv = tiny_argv((str(tmp_path / 'none.pkl'), str(tmp_path / 'label.pkl')), tmp_path / 'out')
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert 'python src/download.py' in err and 'python src/dataset.py' in err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(['--help'])
    text = capsys.readouterr().out
    for flag in ('--gpu', '--model', '--batch_size', '--dataset', '--label', '--prefix', '--iter', '--save_iter',
                 '--lr_decay_iter', '--lr_shape', '--weight_decay', '--optimizer', '--lr', '--alpha',
                 '--augment', '--no_valid_data', '--valid_size', '--res_depth', '--res_width', '--skip_depth',
                 '--swapout', '--seed', '--resume', '--warmup_epochs', '--warmup_lr', '--out', '--dtype',
                 '--subset', '--test_only', '--accumulate'):
        assert flag in text, flag


# ---------------------------------------------------------------- pieces

def test_multistep_decays_tenfold_every_n_epochs_or_at_listed_epochs():
    every = Schedule(0.1, 300, decay=100)
    assert [every(e) for e in (0, 99.9, 100, 250)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    listed = Schedule(0.1, 182, decay=[91, 137])
    assert [listed(e) for e in (90.5, 91, 136, 137)] == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_warmup_then_cosine_anneals_to_zero():
    s = Schedule(0.1, 11, shape='cosine', warmup_epochs=1, warmup_lr=0.01)
    assert s(0.5) == 0.01 and s(1) == pytest.approx(0.1)
    assert s(6) == pytest.approx(0.05) and s(11) == pytest.approx(0.0, abs=1e-12)


def test_default_validation_split_is_5000_of_50000_else_ten_percent():
    assert tdata.default_valid_size(50000) == 5000
    assert tdata.default_valid_size(8336) == 834
    x, y = numpy.arange(100), numpy.arange(100)
    (tx, ty), (vx, vy) = tdata.split_train_valid(x, y, 10, seed=1)
    (tx2, _), (vx2, _) = tdata.split_train_valid(x, y, 10, seed=1)
    assert len(vx) == 10 and sorted(numpy.concatenate([tx, vx])) == list(range(100))
    numpy.testing.assert_array_equal(vx, vx2)


def test_epoch_iterator_never_crosses_an_epoch_and_shuffles_each_epoch():
    ds = chainer.datasets.TupleDataset(numpy.arange(10), numpy.arange(10))
    it = tdata.EpochIterator(ds, 4, seed=0)
    epochs = []
    for _ in range(2):
        seen = []
        while True:
            batch = next(it)
            seen.extend(int(x) for x, _ in batch)
            if it.is_new_epoch:
                break
        epochs.append(seen)
    assert [sorted(e) for e in epochs] == [list(range(10))] * 2 and epochs[0] != epochs[1]
    assert it.epoch == 2 and it.epoch_detail == 2.0
    big = tdata.EpochIterator(ds, 128, seed=0)  # a batch larger than the data: one epoch, not twelve
    assert len(next(big)) == 10 and big.epoch == 1
