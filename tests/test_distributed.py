"""Data-parallel training with ChainerMN: ``mpiexec -n N train.py ... --communicator naive`` on the CPU.

The MPI tests start real ``mpiexec`` jobs of this file (its ``__main__``
registers the tiny models and runs ``train.py``'s ``main``). They need
``mpiexec`` and ``mpi4py``; without them they skip with the reason, unless
``CHAINER_CIFAR_REQUIRE_MPI=1`` (CI sets it) turns the skip into a failure.

Equivalence with one process is tested where it is exact in exact
arithmetic: full-batch training (each worker's shard is its whole batch), no
dropout, no augmentation. Then N workers with ``-b n/N`` compute the same
mean gradient as one process with ``-b n``, so the weights must agree up to
float rounding; with BatchNorm only when ``--sync_bn`` makes the statistics
global (the test checks that they do *not* agree without it, so the
comparison can fail).
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Also run as a script by mpiexec (see _main), where conftest.py does not set the path up.
for _path in (HERE, os.path.join(os.path.dirname(HERE), 'src')):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy  # noqa: E402
import pytest  # noqa: E402

import chainer_cifar  # noqa: E402,F401  (the compatibility layer before chainer)
import chainer  # noqa: E402
import chainer.functions as F  # noqa: E402
import chainer.links as L  # noqa: E402

from helpers import read_log, write_pickles  # noqa: E402
from chainer_cifar.models import registry  # noqa: E402

PLAIN = 'tiny_dist_plain'   # conv + linear: no BatchNorm, no dropout
BN = 'tiny_dist_bn'         # conv + BatchNorm + linear, no dropout
N_TRAIN, N_TEST = 32, 20
REQUIRE_MPI = os.environ.get('CHAINER_CIFAR_REQUIRE_MPI') == '1'
# Open MPI refuses to start as root (CI containers) without these; harmless otherwise.
MPI_ENV = {'OMPI_ALLOW_RUN_AS_ROOT': '1', 'OMPI_ALLOW_RUN_AS_ROOT_CONFIRM': '1',
           'OMPI_MCA_rmaps_base_oversubscribe': '1', 'OMP_NUM_THREADS': '1'}


class TinyNet(chainer.Chain):
    def __init__(self, bn):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, stride=2, pad=1)
            if bn:
                self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        h = self.conv(x)
        if hasattr(self, 'bn'):
            h = self.bn(h)
        return self.fc(F.relu(h))


def _register():
    if PLAIN in registry._REGISTRY:
        return

    @registry.register_model(PLAIN, source='tests')
    def tiny_dist_plain():
        """One conv + linear, no BatchNorm, no dropout: for the data-parallel tests."""
        return TinyNet(bn=False)

    @registry.register_model(BN, source='tests')
    def tiny_dist_bn():
        """One conv + BatchNorm + linear, no dropout: for the data-parallel tests."""
        return TinyNet(bn=True)


_register()


# ---------------------------------------------------------------- helpers

def mpi_missing():
    """Why MPI tests cannot run here, or None."""
    if shutil.which('mpiexec') is None:
        return 'mpiexec not found (Debian: apt-get install openmpi-bin libopenmpi-dev)'
    probe = subprocess.run([sys.executable, '-c', 'import mpi4py.MPI'], capture_output=True, text=True)
    if probe.returncode != 0:
        return 'mpi4py is not importable ({}); pip install -r requirements-mpi.txt'.format(
            probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode)
    return None


@pytest.fixture(scope='module')
def mpi():
    reason = mpi_missing()
    if reason is not None:
        if REQUIRE_MPI:
            pytest.fail('CHAINER_CIFAR_REQUIRE_MPI=1 but ' + reason)
        pytest.skip(reason)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp('dist') / 'dataset', n_train=N_TRAIN, n_test=N_TEST)


def argv(data, out, model, batch, *extra, epochs=4, valid=False):
    image, label = data
    return ['-m', model, '-b', str(batch), '--iter', str(epochs), '-d', image, '-l', label, '--out', str(out),
            '-p', 'run', '--augment', 'none', '--optimizer', 'sgd', '--lr', '0.05',
            '--lr_decay_iter', '100'] + ([] if valid else ['--no_valid_data']) + list(extra)


def launch(n, args, check=True):
    """``mpiexec -n n`` (or one plain process for n=0) of this file's main; returns the process."""
    cmd = [sys.executable, os.path.abspath(__file__)] + [str(a) for a in args]
    if n:
        cmd = ['mpiexec', '-n', str(n)] + cmd
    env = dict(os.environ, **MPI_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert proc.returncode == 0, 'exit {}\nstdout:\n{}\nstderr:\n{}'.format(
            proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def weights(out, rank=0):
    with numpy.load(os.path.join(str(out), 'weights_rank{}.npz'.format(rank))) as npz:
        return {k: npz[k] for k in npz.files}


def max_diff(a, b):
    assert sorted(a) == sorted(b)
    return max(float(numpy.max(numpy.abs(a[k] - b[k]))) for k in a)


def assert_close(a, b, atol=1e-5):
    for k in a:
        numpy.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=atol, err_msg=k)


# ---------------------------------------------------------------- with MPI

def test_two_workers_end_identical_and_match_one_process_with_the_same_total_batch(mpi, data, tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    launch(0, argv(data, one, PLAIN, N_TRAIN))
    proc = launch(2, argv(data, two, PLAIN, N_TRAIN // 2, '--communicator', 'naive'))
    assert 'data-parallel: 2 workers x batch 16 = total batch 32' in proc.stdout

    w0, w1 = weights(two, 0), weights(two, 1)
    for k in w0:
        numpy.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    assert_close(weights(one), w0)
    # The broadcast made both start from the same weights, and training moved them.
    assert max_diff(weights(one, 'init'), weights(two, 'init')) == 0.0
    assert max_diff(w0, weights(two, 'init')) > 1e-3

    log_one, log_two = read_log(str(one / 'run_log.csv')), read_log(str(two / 'run_log.csv'))
    loss = [float(r['train_loss']) for r in log_two]
    assert loss[-1] < loss[0]
    for a, b in zip(log_one, log_two):
        for column in ('train_loss', 'train_error', 'test_loss', 'test_error'):
            assert abs(float(a[column]) - float(b[column])) < 1e-4, (column, a, b)
    # Only rank 0 writes the run's files.
    assert sorted(p for p in os.listdir(str(two)) if p.startswith('run')) == sorted(
        p for p in os.listdir(str(one)) if p.startswith('run'))


def test_two_workers_accumulating_micro_batches_match_one_process(mpi, data, tmp_path):
    # --accumulate on top of ChainerMN: each worker sums two micro-batches' gradients,
    # the optimizer averages them over the workers, then one update (no BatchNorm here).
    one, two = tmp_path / 'one', tmp_path / 'two'
    launch(0, argv(data, one, PLAIN, N_TRAIN, epochs=2))
    launch(2, argv(data, two, PLAIN, N_TRAIN // 2, '--communicator', 'naive', '--accumulate', '2', epochs=2))
    assert_close(weights(one), weights(two, 0))
    assert max_diff(weights(two, 0), weights(two, 'init')) > 1e-3


def test_batchnorm_matches_one_process_only_with_sync_bn(mpi, data, tmp_path):
    one, local, synced = tmp_path / 'one', tmp_path / 'local', tmp_path / 'synced'
    launch(0, argv(data, one, BN, N_TRAIN))
    launch(2, argv(data, local, BN, N_TRAIN // 2, '--communicator', 'naive'))
    launch(2, argv(data, synced, BN, N_TRAIN // 2, '--communicator', 'naive', '--sync_bn'))
    # Per-worker statistics of 16 images are not those of 32: the weights drift apart...
    assert max_diff(weights(one), weights(local)) > 1e-3
    # ...global statistics (MultiNodeBatchNormalization) give one process's run back.
    assert_close(weights(one), weights(synced))
    assert_close(weights(synced, 0), weights(synced, 1), atol=0)


def test_one_worker_under_mpiexec_is_bit_identical_to_a_plain_run(mpi, data, tmp_path):
    plain, mpi1 = tmp_path / 'plain', tmp_path / 'mpi1'
    extra = ('--augment', 'crop,mirror', '-b', '8', '--valid_size', '8')
    launch(0, argv(data, plain, BN, N_TRAIN, *extra, epochs=2, valid=True))
    launch(1, argv(data, mpi1, BN, N_TRAIN, *extra, '--communicator', 'naive', epochs=2, valid=True))
    a, b = weights(plain), weights(mpi1)
    for k in a:
        numpy.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # The aggregated train columns are averaged in float64 instead of float32: equal to rounding.
    log_plain, log_mpi1 = read_log(str(plain / 'run_log.csv')), read_log(str(mpi1 / 'run_log.csv'))
    assert len(log_plain) == len(log_mpi1) == 2
    for a, b in zip(log_plain, log_mpi1):
        for column in a:
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-6, abs=1e-7), column


def test_distributed_resume_continues_from_rank_0_snapshot(mpi, data, tmp_path):
    straight, resumed = tmp_path / 'straight', tmp_path / 'resumed'
    flags = ('--communicator', 'naive')
    launch(2, argv(data, straight, PLAIN, N_TRAIN // 2, *flags, epochs=4))
    launch(2, argv(data, resumed, PLAIN, N_TRAIN // 2, *flags, epochs=2))
    proc = launch(2, argv(data, resumed, PLAIN, N_TRAIN // 2, *flags, '--resume', resumed / 'run.snapshot',
                          epochs=4))
    assert 'resumed from' in proc.stdout
    assert_close(weights(straight), weights(resumed))
    assert_close(weights(resumed, 0), weights(resumed, 1), atol=0)
    rows = read_log(str(resumed / 'run_log.csv'))
    assert [r['epoch'] for r in rows] == ['1', '2', '3', '4']
    # Another number of workers cannot take over the snapshot (its shards would not fit).
    proc = launch(0, argv(data, resumed, PLAIN, N_TRAIN // 2, '--resume', resumed / 'run.snapshot', epochs=5),
                  check=False)
    assert proc.returncode == 2 and 'taken with 2 worker(s), this run has 1' in proc.stderr


def test_gpu_communicator_on_the_cpu_is_one_error_line(mpi, data, tmp_path):
    proc = launch(0, argv(data, tmp_path, PLAIN, 8, '--communicator', 'flat'), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith('error: --communicator flat works on GPUs only')
    assert len(proc.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- without MPI

def run_train(argv_):
    import train as train_cli
    from chainer_cifar.errors import run_main
    return run_main(train_cli.main, argv_)


@pytest.mark.parametrize('extra, message', [
    (['--sync_bn'], '--sync_bn synchronizes BatchNorm across MPI workers: it needs --communicator'),
    (['--communicator', 'pure_nccl'], '--communicator pure_nccl works on GPUs only'),
    (['--communicator', 'mpi'], "argument --communicator: invalid choice: 'mpi'"),
])
def test_bad_distributed_flags_are_one_error_line(data, tmp_path, capsys, extra, message):
    assert run_train(argv(data, tmp_path / 'out', PLAIN, 8) + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / 'out').exists()


def test_communicator_without_mpi4py_says_how_to_install_it(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'mpi4py', None)  # import mpi4py -> ImportError
    monkeypatch.setitem(sys.modules, 'mpi4py.MPI', None)
    assert run_train(argv(data, tmp_path / 'out', PLAIN, 8, '--communicator', 'naive')) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: --communicator naive needs MPI and mpi4py')
    assert 'requirements-mpi.txt' in err and len(err.splitlines()) == 1


def test_training_without_communicator_imports_neither_mpi4py_nor_chainermn(data, tmp_path):
    code = ('import sys; sys.argv[1:] = {!r}; import runpy; '
            'runpy.run_path({!r}, run_name="__main__")').format(
        argv(data, tmp_path, PLAIN, 8, '--quiet', epochs=1) + ['--check-imports'], os.path.abspath(__file__))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'imported: none' in proc.stdout


def test_sync_bn_refuses_a_model_without_batchnorm():
    from chainer_cifar.errors import UserError
    from chainer_cifar.training import distributed
    with pytest.raises(UserError, match='no BatchNormalization'):
        distributed.sync_batch_norm(TinyNet(bn=False), comm=None)


# ---------------------------------------------------------------- the worker

def _main(argv_):
    """One worker: train.py's main, then this worker's final (and initial) weights for the tests."""
    import train as train_cli
    from chainer_cifar.errors import run_main
    from chainer_cifar.training import trainer as trainer_mod

    check_imports = '--check-imports' in argv_
    argv_ = [a for a in argv_ if a != '--check-imports']
    made = []

    class Recording(trainer_mod.Classifier):
        def __init__(self, predictor):
            super().__init__(predictor)
            made.append(self)

    trainer_mod.Classifier = Recording
    initial = {}
    original_broadcast = None
    if '--communicator' in argv_:
        from chainer_cifar.training import distributed
        original_broadcast = distributed.broadcast_initial_model

        def recording_broadcast(model, optimizer, comm):
            original_broadcast(model, optimizer, comm)
            initial.update({k: v.array.copy() for k, v in model.predictor.namedparams()})
        distributed.broadcast_initial_model = recording_broadcast

    code = run_main(train_cli.main, argv_)
    if check_imports:
        loaded = [m for m in ('mpi4py', 'chainermn') if m in sys.modules]
        print('imported: ' + (', '.join(loaded) if loaded else 'none'))
    if code == 0 and made:
        out = argv_[argv_.index('--out') + 1]
        rank = 0
        if '--communicator' in argv_:
            from mpi4py import MPI
            rank = MPI.COMM_WORLD.rank
        model = made[-1].predictor
        numpy.savez(os.path.join(out, 'weights_rank{}.npz'.format(rank)),
                    **{k: chainer.backends.cuda.to_cpu(v.array) for k, v in model.namedparams()})
        if rank == 0:
            if not initial:  # one process: the weights before the first update are the model's seed
                import chainer_cifar.models.registry as reg
                numpy.random.seed(int(argv_[argv_.index('--seed') + 1]) if '--seed' in argv_ else 1)
                fresh = reg.create_model(argv_[argv_.index('-m') + 1])
                initial.update({k: v.array for k, v in fresh.namedparams()})
            numpy.savez(os.path.join(out, 'weights_rankinit.npz'), **initial)
    return code


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
