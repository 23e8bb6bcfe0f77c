"""One run at a time per output prefix: a second train.py on the same -p is refused before it writes."""
import errno
import os
import subprocess
import sys

import pytest

import train as train_cli
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.training.lock import OutputLock, lock_path
from helpers import tiny_argv, write_pickles

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src')


@pytest.fixture
def data(tmp_path):
    return write_pickles(tmp_path / 'dataset', info={'n_train': 60, 'n_test': 20, 'partial': True})


def test_a_second_lock_on_the_same_outputs_is_refused_naming_the_holder(tmp_path):
    base = str(tmp_path / 'out' / 'cnn')
    first = OutputLock(base).acquire()
    assert lock_path(base) == str(tmp_path / 'out' / '.cnn.lock') and os.path.isfile(lock_path(base))
    with pytest.raises(UserError, match=r'another run \(pid {}\) is writing .*cnn\.\*; wait for it to end, or '
                                        r'give this one another -p'.format(os.getpid())):
        OutputLock(base).acquire()
    OutputLock(str(tmp_path / 'out' / 'cnn_2')).acquire().release()  # another prefix in the folder is free
    first.release()
    assert os.listdir(str(tmp_path / 'out')) == []
    OutputLock(base).acquire().release()


def test_a_killed_run_does_not_block_the_next_one(tmp_path):
    base = str(tmp_path / 'cnn')
    code = ('import os, signal, sys; sys.path.insert(0, {!r}); from chainer_cifar.training.lock import OutputLock; '
            'OutputLock({!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)').format(SRC, base)
    assert subprocess.run([sys.executable, '-c', code], timeout=60).returncode == -9
    assert os.path.isfile(lock_path(base))  # left behind, but nobody holds it
    lock = OutputLock(base).acquire()
    lock.release()
    assert not os.path.exists(lock_path(base))


def test_a_disabled_lock_writes_and_refuses_nothing(tmp_path):
    base = str(tmp_path / 'cnn')
    held = OutputLock(base).acquire()
    OutputLock(base, enabled=False).acquire().release()  # a worker that writes nothing
    held.release()
    assert os.listdir(str(tmp_path)) == []


def test_train_refuses_a_prefix_another_run_is_writing_and_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / 'out'
    held = OutputLock(str(out / 'run')).acquire()
    assert run_main(train_cli.main, tiny_argv(data, out)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith('error: another run (pid {}) is writing '.format(os.getpid()))
    assert os.listdir(str(out)) == ['.run.lock']
    held.release()
    assert run_main(train_cli.main, tiny_argv(data, out)) == 0
    assert 'run_run.json' in os.listdir(str(out)) and '.run.lock' not in os.listdir(str(out))


def test_a_folder_that_cannot_be_written_is_one_error_line(data, tmp_path, capsys, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith('.lock'):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, 'open', denied)
    out = tmp_path / 'out'
    assert run_main(train_cli.main, tiny_argv(data, out)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == 'error: cannot write {}: Permission denied; choose a folder you may write to, or fix its ' \
                   'permissions'.format(out / '.run.lock')
    assert os.listdir(str(out)) == []
