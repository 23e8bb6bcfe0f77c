"""How many processes train: one (:class:`Single`), or N with ChainerMN (:class:`.distributed.Distributed`).

The training loop (``trainer.py``) asks this object for every step that
differs between the two, so it reads as the loop of one process: the
single-process answers below are "as Chainer's examples do"; the
data-parallel ones shard the data, average the gradients and let rank 0
alone write.
"""
from chainer.training import extensions as E

from chainer_cifar.training import seeds
from chainer_cifar.training.data import make_eval_iterator
from chainer_cifar.training.device import get_device


class Single(object):
    """A run in one process (no ``--communicator``)."""

    workers = 1
    is_writer = True   # writes the files and prints
    seed_offset = 0    # added to the seeds of its own random streams

    def device(self, gpu):
        return get_device(gpu)

    def prepare_model(self, predictor):
        """The predictor as this run trains it (``--sync_bn`` makes a data-parallel copy)."""
        return predictor

    def wrap_optimizer(self, optimizer):
        return optimizer

    def scatter(self, dataset):
        """This process's part of the training set: all of it."""
        return dataset

    def evaluator(self, dataset, batch_size, target, converter):
        return E.Evaluator(make_eval_iterator(dataset, batch_size), target, converter=converter)

    def extensions(self):
        """Trainer extensions that only a multi-process run needs."""
        return []

    def interrupt_sync(self):
        """What makes every process stop at the same iteration on Ctrl-C (see ``InterruptGuard``)."""
        return None

    def after_resume(self, seed, iteration, generators):
        """The snapshot restored this process's random generators: nothing to do."""

    def broadcast(self, model, optimizer):
        """Give every process the same initial weights: there is only one."""

    def describe(self, batch_size, lr_name, lr):
        """The line printed at the start about the workers, or None."""
        return None

    def meta(self):
        """What the snapshot records about the workers (nothing: a snapshot without it has one)."""
        return {}

    def record(self, batch_size):
        """What the run record adds about the workers."""
        return {}


def create(args):
    """:class:`Single`, or with ``--communicator`` one worker of a data-parallel run."""
    if getattr(args, 'communicator', None):
        # Imported only here: a run without --communicator never imports mpi4py or chainermn.
        from chainer_cifar.training import distributed
        return distributed.Distributed(args.communicator, args.sync_bn,
                                       shard_seed=seeds.stream_seed(args.seed, seeds.SHARDS))
    return Single()
