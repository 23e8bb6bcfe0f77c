"""Learning-rate schedules as functions of the (fractional) epoch, and the extension applying them.

A schedule is a pure function of ``updater.epoch_detail``; it keeps no state,
so a resumed run gets exactly the learning rates of an uninterrupted one.
"""
import math

import chainer
from chainer import training


class Schedule(object):
    """``lr(epoch)`` for ``epoch`` in [0, epochs): warm-up, then multistep or cosine.

    * warm-up: ``warmup_lr`` while ``epoch < warmup_epochs`` (He et al.'s ResNet-110 trick);
    * multistep: ``base * 0.1**k``, k = number of decay epochs reached; ``decay`` is
      either an int N (every N epochs, the original's ``--lr_decay_iter``) or a list;
    * cosine: ``base * (1 + cos(pi * t)) / 2`` with t going 0 -> 1 from the end of
      the warm-up to ``epochs``.
    """

    def __init__(self, base, epochs, shape='multistep', decay=100, warmup_epochs=0, warmup_lr=None):
        self.base = base
        self.epochs = epochs
        self.shape = shape
        self.decay = decay
        self.warmup_epochs = warmup_epochs
        self.warmup_lr = warmup_lr

    def decay_count(self, epoch):
        if isinstance(self.decay, int):
            return int(epoch // self.decay)
        return sum(1 for m in self.decay if epoch >= m)

    def __call__(self, epoch):
        if epoch < self.warmup_epochs:
            return self.warmup_lr
        if self.shape == 'cosine':
            span = max(self.epochs - self.warmup_epochs, 1e-12)
            t = min(max((epoch - self.warmup_epochs) / span, 0.0), 1.0)
            return self.base * 0.5 * (1.0 + math.cos(math.pi * t))
        return self.base * 0.1 ** self.decay_count(epoch)


class LearningRate(training.Extension):
    """Every iteration: set the rate of the next update from the schedule.

    At the end of an epoch it first reports the rate the epoch's last update
    used as ``lr`` (only then: a mean over the epoch's iterations would turn
    0.001 into 0.0010000000000000007). It runs before the log extensions.
    """

    trigger = (1, 'iteration')
    priority = training.PRIORITY_WRITER + 10
    name = 'learning_rate'

    def __init__(self, schedule, attr='lr', optimizer_name='main'):
        self.schedule = schedule
        self.attr = attr
        self.optimizer_name = optimizer_name

    def _set(self, trainer):
        optimizer = trainer.updater.get_optimizer(self.optimizer_name)
        setattr(optimizer, self.attr, self.schedule(trainer.updater.epoch_detail))

    def initialize(self, trainer):
        self._set(trainer)

    def __call__(self, trainer):
        if trainer.updater.is_new_epoch:
            optimizer = trainer.updater.get_optimizer(self.optimizer_name)
            chainer.report({'lr': getattr(optimizer, self.attr)})
        self._set(trainer)
