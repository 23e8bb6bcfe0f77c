"""Data-parallel training with ChainerMN (``mpiexec -n N python src/train.py ... --communicator NAME``).

Every piece of communication is ChainerMN's: the communicator, the
multi-node optimizer (gradients averaged over the workers after each
backward pass), ``create_multi_node_evaluator``, ``scatter_index`` (the core
of ``scatter_dataset``), ``create_mnbn_model`` for ``--sync_bn`` and the
communicator's ``bcast_data``/``allreduce_obj``. This module only decides how
the project's pieces use them.

Nothing here imports ``mpi4py`` or ``chainermn`` at module level: a run
without ``--communicator`` never needs them.

Conventions (see docs/distributed.md):

* ``-b`` is the batch size **per worker** (ChainerMN's convention); the total
  batch of one update is ``b x N``. ``--lr``/``--alpha`` are used as given,
  never rescaled behind the user's back.
* Rank 0 uses exactly the random streams of a single-process run with the
  same seed; rank r > 0 offsets them, so workers do not draw the same crops,
  dropout masks or orders.
* Only rank 0 writes files and prints.
"""
import numpy

import chainer
from chainer import training
from chainer.training import extensions as E

from chainer_cifar.errors import UserError
from chainer_cifar.training.data import make_eval_iterator
from chainer_cifar.training.device import get_device as single_process_device

# Far from the small offsets (+1, +2) the single-process run uses between its own streams.
RANK_SEED_STRIDE = 1000003
TRAIN_KEYS = ('main/loss', 'main/accuracy')


class Distributed(object):
    """One worker of a data-parallel run: what the training loop asks, answered with ChainerMN.

    The same methods as :class:`.workers.Single`, the one-process run; the
    flags were checked by ``args.check_distributed``.
    """

    def __init__(self, communicator, sync_bn, shard_seed):
        self.comm = create_communicator(communicator)
        self.communicator = communicator
        self.sync_bn = sync_bn
        self.shard_seed = shard_seed  # the same shuffle of the data on every worker

    @property
    def workers(self):
        return self.comm.size

    @property
    def is_writer(self):
        return is_writer(self.comm)

    @property
    def seed_offset(self):
        return seed_offset(self.comm)

    def device(self, gpu):
        """The CPU for ``-g -1``; else GPU ``comm.intra_rank`` (one GPU per worker on each node)."""
        if gpu < 0:
            return chainer.get_device('@numpy')
        return single_process_device(self.comm.intra_rank)

    def prepare_model(self, predictor):
        return sync_batch_norm(predictor, self.comm) if self.sync_bn else predictor

    def wrap_optimizer(self, optimizer):
        return multi_node_optimizer(optimizer, self.comm)

    def scatter(self, dataset):
        return scatter(dataset, self.comm, self.shard_seed, True)

    def evaluator(self, dataset, batch_size, target, converter):
        return evaluator(dataset, batch_size, target, converter, self.comm, self.shard_seed)

    def extensions(self):
        return [AggregateTrainObservation(self.comm)]

    def interrupt_sync(self):
        return Agreement(self.comm)

    def after_resume(self, seed, iteration, generators):
        reseed_after_resume(self.comm, seed, iteration, generators)

    def broadcast(self, model, optimizer):
        broadcast_initial_model(model, optimizer, self.comm)

    def describe(self, batch_size, lr_name, lr):
        return describe(self.comm, batch_size, lr_name, lr)

    def meta(self):
        return {'workers': self.comm.size}

    def record(self, batch_size):
        return {'workers': self.comm.size, 'communicator': self.communicator,
                'total_batch_size': batch_size * self.comm.size}


def create_communicator(name):
    """ChainerMN's communicator ``name``; a missing MPI/mpi4py/NCCL is one :class:`UserError`."""
    try:
        import mpi4py.MPI  # noqa: F401
    except (ImportError, OSError) as e:
        raise UserError('--communicator {} needs MPI and mpi4py ({}); install them with '
                        '`apt-get install openmpi-bin libopenmpi-dev` (Debian) and '
                        '`pip install -r requirements-mpi.txt`, then run under mpiexec -n N'.format(name, e))
    import chainermn
    if name == 'pure_nccl':
        from chainermn import nccl
        if not nccl._available:
            raise UserError('--communicator pure_nccl needs NCCL through CuPy (cupy.cuda.nccl), which is not '
                            'available here; use --communicator flat or naive')
    try:
        return chainermn.create_communicator(name)
    except (ImportError, RuntimeError) as e:
        raise UserError('--communicator {}: ChainerMN could not create it ({})'.format(name, e))


def seed_offset(comm):
    """Added to every seed of this worker: 0 on rank 0 (its streams are a single-process run's)."""
    return 0 if comm is None else RANK_SEED_STRIDE * comm.rank


def is_writer(comm):
    return comm is None or comm.rank == 0


# ---------------------------------------------------------------- model and optimizer

def count_batch_norms(link):
    return sum(1 for l in link.links() if isinstance(l, chainer.links.BatchNormalization))


def sync_batch_norm(predictor, comm):
    """``--sync_bn``: a copy of ``predictor`` whose BatchNormalization links use global batch statistics.

    ``chainermn.links.create_mnbn_model`` replaces every
    ``chainer.links.BatchNormalization`` (our fast subclass included) by a
    ``MultiNodeBatchNormalization`` with the same parameter and persistent
    names, so the saved model still loads into the plain network.
    """
    if count_batch_norms(predictor) == 0:
        raise UserError('--sync_bn: this model has no BatchNormalization layer to synchronize')
    import chainermn
    return chainermn.links.create_mnbn_model(predictor, comm)


def multi_node_optimizer(optimizer, comm):
    import chainermn
    return chainermn.create_multi_node_optimizer(optimizer, comm)


def broadcast_initial_model(model, optimizer, comm):
    """Give every worker rank 0's initial weights before the first update.

    ChainerMN's optimizer broadcasts by itself on the first ``update`` whose
    parameter layout it has not seen, and *skips* that update. Broadcasting
    here and letting it record the layout makes the first update a real one,
    so N workers do exactly the updates of one process (the equivalence test
    relies on it). With lazily initialized parameters the layout is not known
    yet; ChainerMN's own first-step broadcast then does the job.
    """
    if any(p.array is None for p in model.params()):
        return
    comm.bcast_data(model)
    optimizer.is_changed(model)


# ---------------------------------------------------------------- data

def scatter(dataset, comm, seed, equal_length):
    """This worker's shard of ``dataset``.

    ``chainermn.scatter_index`` is the core of ``scatter_dataset`` without its
    broadcast of the data: every worker has already read the pickles, so
    sending 550 MB of pickled arrays from rank 0 would only cost time and
    memory. The shuffle (the same on every rank, from ``seed``) mixes the
    shards; a single worker keeps the data's order, so that ``mpiexec -n 1``
    trains exactly like a plain run. ``equal_length`` (training): every shard has ceil(n/N) examples
    so every worker runs the same number of iterations; up to N-1 examples
    then appear in two shards. Without it (evaluation) no example is
    repeated and the shards differ in size by at most one.
    """
    from chainermn.datasets import scatter_index
    n = len(dataset)
    if n < comm.size:
        raise UserError('{} images cannot be shared by {} workers; use fewer workers or more data'.format(
            n, comm.size))
    begin, end = scatter_index(n, comm, force_equal_length=equal_length)
    order = numpy.random.RandomState(seed).permutation(n) if comm.size > 1 else None
    return chainer.datasets.SubDataset(dataset, begin, end, order)


class ShardEvaluator(E.Evaluator):
    """An ``Evaluator`` whose local means are pre-weighted by the shard's share of the data.

    ``create_multi_node_evaluator`` averages the workers' means with equal
    weights, which is exact only for equal shards. Scaling each local mean by
    ``n_local * N / n_total`` turns that average into the exact mean over all
    images: sum_i(mean_i * n_i) / n_total.
    """

    def __init__(self, iterator, target, converter, n_local, n_total, n_workers):
        super().__init__(iterator, target, converter=converter)
        self._weight = float(n_local) * n_workers / n_total

    def evaluate(self):
        return {k: float(v) * self._weight for k, v in super().evaluate().items()}


def evaluator(dataset, batch_size, target, converter, comm, seed):
    shard = scatter(dataset, comm, seed, equal_length=False)
    import chainermn
    local = ShardEvaluator(make_eval_iterator(shard, batch_size), target, converter,
                           len(shard), len(dataset), comm.size)
    return chainermn.create_multi_node_evaluator(local, comm)


# ---------------------------------------------------------------- extensions

class AggregateTrainObservation(training.Extension):
    """Replaces this worker's training loss/accuracy by the mean over all workers, every iteration.

    So the log's train columns describe the whole total batch, and the NaN
    guard (which runs next) stops every worker in the same iteration instead
    of leaving the others waiting in the next all-reduce. ChainerMN's
    ``ObservationAggregator`` pickles whole ``Variable``s and cannot take the
    ``(value, weight)`` pairs the classifier reports; this sends two floats
    per key through the communicator's ``allreduce_obj``.
    """

    trigger = (1, 'iteration')
    priority = training.PRIORITY_WRITER + 5
    name = 'aggregate_train_observation'

    def __init__(self, comm, keys=TRAIN_KEYS):
        self.comm = comm
        self.keys = keys

    def __call__(self, trainer):
        obs = trainer.observation
        local = numpy.zeros((len(self.keys), 2))
        for i, key in enumerate(self.keys):
            value, weight = obs.get(key), 1.0
            if value is None:
                continue
            if isinstance(value, tuple):
                value, weight = value
            if isinstance(value, chainer.Variable):
                value = value.array
            local[i] = float(value) * float(weight), float(weight)
        total = self.comm.allreduce_obj(local)
        for i, key in enumerate(self.keys):
            if key in obs and total[i, 1] > 0:
                obs[key] = (total[i, 0] / total[i, 1], total[i, 1])


class Agreement(object):
    """What the Ctrl-C guard needs to stop every worker in the same iteration."""

    def __init__(self, comm):
        self.comm = comm

    def any(self, flag):
        return bool(self.comm.allreduce_obj(int(bool(flag))))

    def barrier(self):
        # Open MPI ends the whole job when one process exits non-zero: the
        # others wait here until rank 0's snapshot is on disk.
        self.comm.mpi_comm.Barrier()


# ---------------------------------------------------------------- resume

def reseed_after_resume(comm, seed, iteration, generators):
    """Workers > 0 loaded rank 0's random states from the snapshot: give them their own again.

    Rank 0's snapshot holds rank 0's generators only. Reseeding the others
    from (seed, rank, iteration) keeps a resumed run deterministic and the
    workers' draws independent; rank 0 resumes bit-exactly, the others do not.
    """
    if comm.rank == 0:
        return
    base = (seed + seed_offset(comm) + 7919 * int(iteration)) % (2 ** 32)
    for i, rng in enumerate(generators):
        (rng or numpy.random.mtrand._rand).seed((base + i) % (2 ** 32))


def describe(comm, batch_size, lr_name, lr):
    """The line printed at start: workers, total batch and the rate as used."""
    total = batch_size * comm.size
    return ('data-parallel: {} workers x batch {} = total batch {}; {} {:g} as given (linear scaling rule: '
            'rate x k for a k-times larger total batch, with a warm-up; see docs/distributed.md)'.format(
                comm.size, batch_size, total, lr_name, lr))
