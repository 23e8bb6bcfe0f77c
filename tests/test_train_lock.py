"""One run at a time per output prefix: a second train.py on the same -p is refused before it writes."""
import errno
import os
import signal
import subprocess
import sys

import pytest

import compare
import train as train_cli
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.training.lock import OutputLock, lock_path
from helpers import lock_held_elsewhere, tiny_argv, write_pickles

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src')


@pytest.fixture
def data(tmp_path):
    return write_pickles(tmp_path / 'dataset', info={'n_train': 60, 'n_test': 20, 'partial': True})


def test_a_lock_held_by_another_process_is_refused_naming_it(tmp_path):
    base = str(tmp_path / 'out' / 'cnn')
    with lock_held_elsewhere(base) as pid:
        assert lock_path(base) == str(tmp_path / 'out' / '.cnn.lock')
        with pytest.raises(UserError, match=r'another run \(pid {}\) is writing .*cnn\.\*; wait for it to end, or '
                                            r'give this one another -p'.format(pid)):
            OutputLock(base).acquire()
        OutputLock(str(tmp_path / 'out' / 'cnn_2')).acquire().release()  # another prefix in the folder is free
    assert os.listdir(str(tmp_path / 'out')) == []  # the holder removed its file as it let go
    OutputLock(base).acquire().release()


def test_within_one_process_the_lock_is_reentrant_and_the_outer_holder_removes_it(tmp_path):
    base = str(tmp_path / 'cnn')
    outer = OutputLock(base).acquire()
    OutputLock(base).acquire().release()  # compare.py holds it, the train.py run inside takes it again
    assert os.path.isfile(lock_path(base))
    outer.release()
    assert os.listdir(str(tmp_path)) == []


def test_a_killed_run_does_not_block_the_next_one(tmp_path):
    base = str(tmp_path / 'cnn')
    code = ('import os, signal, sys; sys.path.insert(0, {!r}); from chainer_cifar.training.lock import OutputLock; '
            'OutputLock({!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)').format(SRC, base)
    assert subprocess.run([sys.executable, '-c', code], timeout=60).returncode == -signal.SIGKILL
    assert os.path.isfile(lock_path(base))  # left behind, but nobody holds it
    OutputLock(base).acquire().release()
    assert not os.path.exists(lock_path(base))


def test_a_disabled_lock_writes_and_refuses_nothing(tmp_path):
    base = str(tmp_path / 'cnn')
    with lock_held_elsewhere(base):
        OutputLock(base, enabled=False).acquire().release()  # a worker that writes nothing
    assert os.listdir(str(tmp_path)) == []


def test_train_refuses_a_prefix_another_run_is_writing_and_writes_nothing(data, tmp_path, capsys):
    out = tmp_path / 'out'
    with lock_held_elsewhere(str(out / 'run')) as pid:
        assert run_main(train_cli.main, tiny_argv(data, out)) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith('error: another run (pid {}) is writing '.format(pid))
        assert os.listdir(str(out)) == ['.run.lock']
    assert run_main(train_cli.main, tiny_argv(data, out)) == 0
    assert 'run_run.json' in os.listdir(str(out)) and '.run.lock' not in os.listdir(str(out))


def test_compare_run_refuses_a_seed_another_run_is_writing_before_its_preset_file(data, tmp_path, capsys):
    image, label = data
    runs_dir = tmp_path / 'results'
    folder = runs_dir / 'article-cnn'
    argv = ['run', 'article-cnn', '--seeds', '1', '--runs_dir', str(runs_dir), '-m', 'cnn', '--iter', '1',
            '--subset', '16', '-d', image, '-l', label, '--quiet']
    with lock_held_elsewhere(str(folder / 'article-cnn_s1')) as pid:
        assert run_main(compare.main, argv) == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith('error: another run (pid {}) is writing '.format(pid))
        assert os.listdir(str(folder)) == ['.article-cnn_s1.lock']
    assert run_main(compare.main, argv) == 0
    assert '.article-cnn_s1.lock' not in os.listdir(str(folder))


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


def test_a_file_system_that_cannot_lock_trains_unlocked_and_leaves_no_file(data, tmp_path, monkeypatch):
    from chainer_cifar.training import lock

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(lock.fcntl, 'flock', no_locks)
    out = tmp_path / 'out'
    assert run_main(train_cli.main, tiny_argv(data, out)) == 0
    assert 'run_run.json' in os.listdir(str(out)) and '.run.lock' not in os.listdir(str(out))
