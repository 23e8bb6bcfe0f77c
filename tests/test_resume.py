"""Resume: an interrupted-then-resumed run gives the same log and weights as an uninterrupted one."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy
import pytest

import train as train_cli
from chainer_cifar.data import augment
from chainer_cifar.errors import run_main
from helpers import TINY_NAN, load_params, read_log, tiny_argv, write_pickles

TRAIN_PY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src', 'train.py')
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


@pytest.fixture
def sigterm_fails_the_test():
    """Were SIGTERM left to its default action, it would kill pytest: make it fail the test instead."""
    def unhandled(*_):
        raise AssertionError('SIGTERM reached the default handler: train.py does not handle it')
    previous = signal.signal(signal.SIGTERM, unhandled)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_stop_signal_mid_epoch_saves_a_snapshot_that_resumes_bit_exactly(
        data, tmp_path, straight, monkeypatch, capsys, sigterm_fails_the_test, signum):
    out = tmp_path / 'interrupted'
    calls = []
    original = augment.Augmenter.__call__

    def interrupt_at_call_10(self, x, t):
        calls.append(1)
        if len(calls) == 10:  # epoch 2, third batch: Ctrl-C or kill in the middle of an update
            os.kill(os.getpid(), signum)
        return original(self, x, t)

    monkeypatch.setattr(augment.Augmenter, '__call__', interrupt_at_call_10)
    assert run(tiny_argv(data, out, '--iter', '3', *FLAGS)) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        'interrupted; snapshot saved to {0}; continue with --resume {0}'.format(out / 'run.snapshot')]
    assert len(read_log(str(out / 'run_log.csv'))) == 1
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'interrupted'
    with numpy.load(str(out / 'run.snapshot')) as npz:  # the iteration boundary after the signal
        assert int(npz['updater/iteration']) == 10
    monkeypatch.setattr(augment.Augmenter, '__call__', original)
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    assert_same_run(straight, 'run', out, 'run')
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'finished'


def test_a_second_signal_stops_at_once_and_the_last_epoch_snapshot_resumes_bit_exactly(
        data, tmp_path, straight, monkeypatch, capsys):
    out = tmp_path / 'twice'
    calls = []
    original = augment.Augmenter.__call__

    def interrupt_twice_at_call_10(self, x, t):
        calls.append(1)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGINT)  # snapshot at the end of this iteration, please
            os.kill(os.getpid(), signal.SIGINT)  # no: now
        return original(self, x, t)

    monkeypatch.setattr(augment.Augmenter, '__call__', interrupt_twice_at_call_10)
    assert run(tiny_argv(data, out, '--iter', '3', *FLAGS)) == 130
    snap = out / 'run.snapshot'
    assert capsys.readouterr().err.strip().splitlines() == [
        'interrupted at once by a second signal; the last snapshot written is {0}; continue with --resume {0}'
        .format(snap)]
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'interrupted'
    with numpy.load(str(snap)) as npz:
        assert int(npz['updater/iterator:main/epoch']) == 1 and int(npz['updater/iteration']) == 7
    monkeypatch.setattr(augment.Augmenter, '__call__', original)
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(snap), *FLAGS)) == 0
    assert_same_run(straight, 'run', out, 'run')


def test_a_second_signal_before_the_first_snapshot_says_to_start_again(data, tmp_path, monkeypatch, capsys):
    calls = []
    original = augment.Augmenter.__call__

    def interrupt_twice_at_call_2(self, x, t):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, x, t)

    monkeypatch.setattr(augment.Augmenter, '__call__', interrupt_twice_at_call_2)
    assert run(tiny_argv(data, tmp_path, '--iter', '3', *FLAGS)) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        'interrupted at once by a second signal, before the first snapshot was written; start the run again']
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'interrupted'
    assert not (tmp_path / 'run.snapshot').exists()


def test_sigterm_while_loading_the_data_stops_like_ctrl_c_and_writes_nothing(
        data, tmp_path, monkeypatch, capsys, sigterm_fails_the_test):
    from chainer_cifar.training import trainer
    original = trainer.load_splits

    def killed_while_loading(args):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(args)

    monkeypatch.setattr(trainer, 'load_splits', killed_while_loading)
    assert run(tiny_argv(data, tmp_path / 'out')) == 130
    assert capsys.readouterr().err.strip().splitlines() == ['interrupted']
    assert not (tmp_path / 'out').exists()
    assert signal.getsignal(signal.SIGTERM) is not signal.default_int_handler  # put back afterwards


def test_an_error_inside_training_leaves_the_record_failed_and_the_last_snapshot(data, tmp_path, monkeypatch):
    calls = []
    original = augment.Augmenter.__call__

    def fail_at_call_10(self, x, t):
        calls.append(1)
        if len(calls) == 10:
            raise RuntimeError('a bug')
        return original(self, x, t)

    monkeypatch.setattr(augment.Augmenter, '__call__', fail_at_call_10)
    with pytest.raises(RuntimeError, match='a bug'):  # a bug keeps its traceback
        run(tiny_argv(data, tmp_path, '--iter', '3', *FLAGS))
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'failed'
    with numpy.load(str(tmp_path / 'run.snapshot')) as npz:
        assert int(npz['updater/iteration']) == 7


def test_sigterm_to_a_train_py_process_snapshots_exits_130_and_the_run_resumes_to_the_end(data, tmp_path):
    """The real command in a subprocess: kill it while it trains, then finish the run with --resume."""
    out = tmp_path / 'killed'
    argv = [sys.executable, TRAIN_PY, '-m', 'cnn', '-b', '8', '-d', data[0], '-l', data[1], '--out', str(out),
            '-p', 'run', '--quiet', '--iter', '1000']
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / 'run.snapshot').exists():  # it trains: the first epoch is done
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    snap = out / 'run.snapshot'
    assert stderr.strip().splitlines()[-1] == \
        'interrupted; snapshot saved to {0}; continue with --resume {0}'.format(snap)
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'interrupted'
    with numpy.load(str(snap)) as npz:
        epoch = int(npz['updater/iterator:main/epoch'])
        position = int(npz['updater/iterator:main/current_position'])
    done = epoch + (position > 0)  # the epoch it stopped in
    resumed = subprocess.run(argv[:-1] + [str(done + 1), '--resume', str(snap)], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'finished'
    assert [r['epoch'] for r in read_log(str(out / 'run_log.csv'))] == [str(e) for e in range(1, done + 2)]


def copy_run(src, dst):
    """A copy of a run's folder (to resume there) and a fingerprint of its files, to show nothing changed."""
    shutil.copytree(str(src), str(dst))
    return files_of(dst)


def files_of(folder):
    return {p: (folder / p).read_bytes() for p in sorted(os.listdir(str(folder)))}


def refusal(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --resume: the snapshot '), err
    return err[0]


# One change of the recipe each (the straight run: adam, alpha 0.001, lr_decay_iter 1,2, every augmentation,
# seed 1, batch 8, 54/6/20 images), and what the error line says about it.
RECIPE_CHANGES = [
    (['-m', TINY_NAN], '-m tiny_test_cnn, this command says tiny_test_nan'),
    (['--optimizer', 'amsgrad'], '--optimizer adam, this command says amsgrad'),
    (['--alpha', '0.002'], '--alpha 0.001, this command says 0.002'),
    (['--weight_decay', '0'], '--weight_decay 0.0001, this command says 0.0'),
    (['--lr_decay_iter', '1,3'], '--lr_decay_iter 1,2, this command says 1,3'),
    (['--lr_shape', 'cosine'], '--lr_shape multistep, this command says cosine'),
    (['--warmup_epochs', '0.5'], '--warmup_epochs 0, this command says 0.5'),
    (['-b', '6'], '-b 8, this command says 6'),
    (['--accumulate', '2'], '--accumulate 1, this command says 2'),
    (['--dtype', 'mixed16'], '--dtype float32, this command says mixed16'),
    (['--augment', 'crop'], '--augment crop,mirror,erase,cutout,mixup, this command says crop'),
    (['--seed', '2'], '--seed 1, this command says 2'),
    (['--subset', '50'], '--subset none, this command says 50'),
    (['--valid_size', '10'], '54 train / 6 validation / 20 test images, this command has 50 / 10 / 20'),
    (['--no_valid_data'], '54 train / 6 validation / 20 test images, this command has 60 / 0 / 20'),
]


@pytest.mark.parametrize('change, says', RECIPE_CHANGES, ids=[c[0] for c, _ in RECIPE_CHANGES])
def test_resume_refuses_a_change_of_the_recipe_naming_it_in_one_line(
        data, tmp_path, straight, capsys, change, says):
    out = tmp_path / 'copy'
    before = copy_run(straight, out)
    argv = tiny_argv(data, out, '--iter', '4', '--resume', str(out / 'run.snapshot'), *FLAGS)
    assert run(argv + change) == 2
    line = refusal(capsys)
    assert says in line and line.count(', this command ') == 1, line
    assert line.endswith('resume with the flags of the snapshot\'s run (a longer --iter, -g and --quiet may change)')
    assert files_of(out) == before


def test_resuming_an_adam_snapshot_with_sgd_lists_every_difference_in_one_line(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    before = copy_run(straight, out)
    argv = tiny_argv(data, out, '--resume', str(out / 'run.snapshot'), '--iter', '3', '--augment',
                     'crop,mirror,erase,cutout,mixup', '--lr_decay_iter', '1,2', '--optimizer', 'sgd',
                     '--weight_decay', '0')
    assert run(argv) == 2
    line = refusal(capsys)
    assert 'was trained with --optimizer adam, this command says sgd; --weight_decay 0.0001, this command says ' \
           '0.0; resume with' in line
    assert files_of(out) == before


def test_resume_refuses_other_data_at_the_same_paths(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    copy_run(straight, out)
    write_pickles(os.path.dirname(data[0]), seed=5)  # rebuilt: same sizes, other images
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 2
    assert 'other data: -d/-l now hold other images or labels than the snapshot was trained on' in refusal(capsys)


def test_resume_names_the_data_files_when_they_differ(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    copy_run(straight, out)
    other = write_pickles(tmp_path / 'other', seed=5)
    assert run(tiny_argv(other, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 2
    line = refusal(capsys)
    assert '-d {}, this command says {}'.format(os.path.abspath(data[0]), os.path.abspath(other[0])) in line
    assert 'other data' not in line  # the paths say it


def test_resume_accepts_the_same_data_moved_and_a_longer_iter_without_quiet(data, tmp_path, straight, recwarn):
    moved = tmp_path / 'moved'
    shutil.copytree(os.path.dirname(data[0]), str(moved))
    out = tmp_path / 'copy'
    copy_run(straight, out)
    argv = tiny_argv((str(moved / 'image.pkl'), str(moved / 'label.pkl')), out, '--iter', '4',
                     '--resume', str(out / 'run.snapshot'), '-g', '-1', *FLAGS)
    argv.remove('--quiet')
    assert run(argv) == 0
    # The progress and report triggers the --quiet run did not have: no warning on stderr about them.
    assert not [w for w in recwarn if 'previous value' in str(w.message)]
    assert len(read_log(str(out / 'run_log.csv'))) == 4
    assert json.loads((out / 'run_run.json').read_text())['status'] == 'finished'


def test_resume_refuses_another_iter_under_a_cosine_schedule(data, tmp_path, capsys):
    out = tmp_path / 'cosine'
    assert run(tiny_argv(data, out, '--iter', '1', '--lr_shape', 'cosine')) == 0
    assert run(tiny_argv(data, out, '--iter', '2', '--lr_shape', 'cosine', '--resume', str(out / 'run.snapshot'))) == 2
    assert '--iter 1, this command says 2 (the cosine schedule spans --iter: it cannot change)' in refusal(capsys)


def test_resume_refuses_an_iter_that_ends_before_the_snapshot(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    before = copy_run(straight, out)
    assert run(tiny_argv(data, out, '--iter', '2', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --iter 2 ends before the snapshot, which is at epoch 3; give --iter 3 or more']
    assert files_of(out) == before


def test_resume_refuses_a_snapshot_outside_the_commands_out_and_prefix(data, tmp_path, straight, capsys):
    snap = str(straight / 'run.snapshot')
    for argv in (tiny_argv(data, tmp_path / 'other', '--resume', snap, *FLAGS),
                 tiny_argv(data, straight, '--resume', snap, *FLAGS, prefix='renamed')):
        assert run(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is not this command's snapshot" in err[0], err
        assert '--out {} -p run'.format(straight) in err[0]
    assert not (tmp_path / 'other').exists() and not (straight / 'renamed_run.json').exists()


def rewrite_as_format_1(path):
    """Turn a snapshot into one written before the recipe record (format 1: its meta had no optimizer)."""
    from chainer_cifar.training.checkpoint import META_KEY
    entries = load_params(path)
    meta = json.loads(entries[META_KEY].tobytes().decode('utf-8'))
    old = {k: meta[k] for k in ('model', 'model_options', 'n_train', 'n_valid', 'n_test', 'batch_size', 'dtype',
                                'seed', 'augment')}
    entries[META_KEY] = numpy.frombuffer(json.dumps(dict(old, format=1)).encode('utf-8'), dtype=numpy.uint8)
    with open(path, 'wb') as f:  # a file object: numpy.savez would add .npz to the name
        numpy.savez(f, **entries)


def test_an_old_adam_snapshot_is_refused_for_sgd_by_its_optimizer_state(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    copy_run(straight, out)
    rewrite_as_format_1(str(out / 'run.snapshot'))
    argv = tiny_argv(data, out, '--iter', '4', '--resume', str(out / 'run.snapshot'), *FLAGS)
    assert run(argv + ['--optimizer', 'sgd']) == 2
    assert '--optimizer adam, this command says sgd' in refusal(capsys)


def test_an_old_snapshot_resumes_with_a_note_naming_what_could_not_be_checked(data, tmp_path, straight, capsys):
    out = tmp_path / 'copy'
    copy_run(straight, out)
    rewrite_as_format_1(str(out / 'run.snapshot'))
    assert run(tiny_argv(data, out, '--iter', '4', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('note: {} predates the recipe record: '.format(out / 'run.snapshot'))
    for key in ('--alpha', '--weight_decay', '--lr_decay_iter', '-d', 'data'):
        assert key in err[0]
    # the snapshot written by the resumed run records the recipe: no note next time
    assert run(tiny_argv(data, out, '--iter', '5', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    assert capsys.readouterr().err == ''


def test_resume_refuses_a_corrupt_snapshot(data, tmp_path, capsys):
    bad = tmp_path / 'bad.snapshot'
    bad.write_bytes(b'not a zip file')
    assert run(tiny_argv(data, tmp_path / 'out', '--resume', str(bad))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'is corrupt' in err[0]


def test_a_resumed_runs_record_lists_each_process_that_trained_it_and_the_report_names_every_device(
        data, tmp_path):
    from chainer_cifar.results import report, runs
    out = tmp_path / 'moved'
    assert run(tiny_argv(data, out, '--iter', '2', *FLAGS)) == 0
    first = json.loads((out / 'run_run.json').read_text())
    assert 'segments' not in first  # a run trained by one process has none
    first.update(device='@cupy:0', device_name='NVIDIA H100 80GB HBM3')  # as if its two epochs ran on a GPU
    (out / 'run_run.json').write_text(json.dumps(first))
    assert run(tiny_argv(data, out, '--iter', '3', '--resume', str(out / 'run.snapshot'), *FLAGS)) == 0
    record = json.loads((out / 'run_run.json').read_text())
    segments = record['segments']
    assert [(s['device'], s['epochs'], s['status']) for s in segments] == [
        ('@cupy:0', 2, 'finished'), ('@numpy', 3, 'finished')]
    assert segments[0]['start_time'] == first['start_time'] and segments[1]['wall_seconds'] == record['wall_seconds']
    (group,) = report.group_runs([runs.load_run(str(out / 'run_log.csv'))])
    cpu = ' '.join(filter(None, [segments[1]['device_name'], 'CPU (@numpy)']))
    assert report._device(group) == 'NVIDIA H100 80GB HBM3 GPU (@cupy:0), ' + cpu


def test_the_run_record_names_the_commit_the_caller_gives_for_a_copied_tree(data, tmp_path, monkeypatch):
    # A lent GPU machine's .git can be older than the files it runs; tools/gpu_session.sh passes COMMIT on.
    from chainer_cifar.training.record import code_version
    monkeypatch.delenv('CHAINER_CIFAR_CODE', raising=False)
    found = code_version()
    monkeypatch.setenv('CHAINER_CIFAR_CODE', 'abc1234')
    assert code_version() == 'abc1234' != found
    assert run(tiny_argv(data, tmp_path / 'out', '--iter', '1', *FLAGS)) == 0
    assert json.loads((tmp_path / 'out' / 'run_run.json').read_text())['code'] == 'abc1234'
