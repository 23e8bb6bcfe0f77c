"""Resume: an interrupted-then-resumed run gives the same log and weights as an uninterrupted one."""
import os
import signal

import numpy
import pytest

import train as train_cli
from chainer_cifar.data import augment
from chainer_cifar.errors import run_main
from test_train_helpers import load_params, read_log, tiny_argv, write_pickles

# Every source of randomness at once: shuffling, all augmentations, dropout, BN batch statistics.
FLAGS = ('--augment', 'crop,mirror,erase,cutout,mixup', '--optimizer', 'adam', '--lr_decay_iter', '1,2')


@pytest.fixture
def data(tmp_path):
    return write_pickles(tmp_path / 'dataset')


def run(argv):
    return run_main(train_cli.main, argv)


def assert_same_run(a_dir, a, b_dir, b):
    assert read_log(os.path.join(str(a_dir), a + '_log.csv')) == read_log(os.path.join(str(b_dir), b + '_log.csv'))
    for suffix in ('.model', '.state'):
        pa = load_params(os.path.join(str(a_dir), a + suffix))
        pb = load_params(os.path.join(str(b_dir), b + suffix))
        assert sorted(pa) == sorted(pb)
        for k in pa:
            numpy.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@pytest.fixture
def straight(data, tmp_path):
    out = tmp_path / 'straight'
    assert run(tiny_argv(data, out, '--iter', '3', *FLAGS)) == 0
    return out


def test_resuming_after_two_epochs_matches_three_epochs_straight(data, tmp_path, straight):
    out = tmp_path / 'resumed'
    assert run(tiny_argv(data, out, '--iter', '2', *FLAGS)) == 0
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    assert_same_run(straight, 'run', out, 'run')
    # and the final snapshot's weights too (the best model may be an earlier epoch)
    sa, sb = load_params(str(straight / 'run.snapshot')), load_params(str(out / 'run.snapshot'))
    for k in sa:
        if k.startswith('updater/model:main/') or k.startswith('updater/optimizer:main/'):
            numpy.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_ctrl_c_mid_epoch_saves_a_snapshot_that_resumes_bit_exactly(data, tmp_path, straight, monkeypatch, capsys):
    out = tmp_path / 'interrupted'
    calls = []
    original = augment.Augmenter.__call__

    def interrupt_at_call_10(self, x, t):
        calls.append(1)
        if len(calls) == 10:  # epoch 2, third batch: Ctrl-C in the middle of an update
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, t)

    monkeypatch.setattr(augment.Augmenter, '__call__', interrupt_at_call_10)
    assert run(tiny_argv(data, out, '--iter', '3', *FLAGS)) == 130
    assert 'snapshot saved' in capsys.readouterr().err
    assert len(read_log(str(out / 'run_log.csv'))) == 1
    monkeypatch.setattr(augment.Augmenter, '__call__', original)
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    assert_same_run(straight, 'run', out, 'run')


def test_resume_refuses_a_snapshot_of_another_model_or_split(data, tmp_path, straight, capsys):
    snap = str(straight / 'run.snapshot')
    out = tmp_path / 'other'
    assert run(tiny_argv(data, out, '--resume', snap, '-m', 'tiny_test_nan', *FLAGS)) == 2
    assert run(tiny_argv(data, out, '--resume', snap, '--no_valid_data', *FLAGS)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith('error: snapshot') and 'does not match' in e for e in err)
    assert not out.exists()


def test_resume_refuses_a_corrupt_snapshot(data, tmp_path, capsys):
    bad = tmp_path / 'bad.snapshot'
    bad.write_bytes(b'not a zip file')
    assert run(tiny_argv(data, tmp_path / 'out', '--resume', str(bad))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is corrupt' in err[0]
