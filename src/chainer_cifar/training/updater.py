"""Gradient accumulation: one optimizer step from several micro-batches (``train.py --accumulate N``).

The way to train a deep net at the paper's batch size on a device that cannot
hold the batch's activations (ResNet-1202 at batch 128 keeps ≈ 11 GiB,
docs/models.md): ``-b 128 --accumulate 2`` runs two micro-batches of 64
through forward and backward, one after the other, and then makes one update.
"""
import contextlib

from chainer import reporter as reporter_module
from chainer import training
from chainer.dataset import convert


class AccumulatingUpdater(training.updaters.StandardUpdater):
    """:class:`~chainer.training.updaters.StandardUpdater` that splits each batch into ``parts``.

    Each micro-batch's loss is scaled by its share of the batch before its
    backward pass, so the gradients summed over the micro-batches are those
    of the whole batch's mean loss, and the optimizer (weight decay,
    momentum, the learning-rate schedule, ChainerMN's gradient averaging)
    sees one batch per iteration, as without accumulation. Activations are
    kept for one micro-batch at a time: about ``1/parts`` of the memory.

    What differs from one big batch: BatchNormalization normalizes over each
    micro-batch and updates its running averages once per micro-batch (as
    with "ghost batches"); models without BatchNormalization take the same
    step up to float rounding. The reported ``loss`` and ``accuracy`` are the
    batch-size-weighted means over the micro-batches.
    """

    def __init__(self, iterator, optimizer, converter, parts, **kwargs):
        super().__init__(iterator, optimizer, converter=converter, **kwargs)
        if int(parts) < 1:
            raise ValueError('parts must be >= 1, got {}'.format(parts))
        self.parts = int(parts)

    def update_core(self):
        iterator = self._iterators['main']
        batch = iterator.next()
        arrays = convert._call_converter(self.converter, batch, self.input_device)
        if not isinstance(arrays, tuple):
            arrays = (arrays,)
        optimizer = self._optimizers['main']
        loss_func = self.loss_func or optimizer.target
        n = len(arrays[0])
        optimizer.target.cleargrads()
        sums = {}
        for a, b in micro_batches(n, self.parts):
            # Per-example arrays are cut; scalars (mixup's lam) go to every part.
            part = tuple(v[a:b] if _per_example(v, n) else v for v in arrays)
            observation = {}
            with _report_scope(observation):
                loss = loss_func(*part)
            share = (b - a) / n
            (loss * share).backward(loss_scale=getattr(optimizer, '_loss_scale', None))
            del loss
            for key, value in observation.items():
                _add(sums, key, value, b - a)
        reporter_module.report({key: _mean(total) for key, total in sums.items()})  # keys as reported
        optimizer.update()  # no loss function: the accumulated gradients
        if self.auto_new_epoch and iterator.is_new_epoch:
            optimizer.new_epoch(auto=True)


def micro_batches(n, parts):
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)``, sizes differing by at most one.

    At most ``n`` ranges: a batch smaller than ``parts`` (the last batch of an epoch) gives one example each.
    """
    parts = max(1, min(parts, n))
    size, longer = divmod(n, parts)  # the first `longer` ranges take one example more
    edges = [i * size + min(i, longer) for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _report_scope(observation):
    """Collect one micro-batch's reports; a no-op outside a reporter (the updater used alone)."""
    if not reporter_module._get_reporters():  # Chainer 7.8.1, the last release: a frozen private API
        return contextlib.nullcontext()
    return reporter_module.report_scope(observation)


def _per_example(v, n):
    return getattr(v, 'ndim', 0) >= 1 and len(v) == n


def _add(sums, key, value, size):
    """Add one micro-batch's reported ``value`` (or ``(value, weight)``) to the running sums."""
    weighted = isinstance(value, tuple)
    v, w = value if weighted else (value, size)
    v = getattr(v, 'array', v)
    total = sums.get(key)
    if total is None:
        sums[key] = [v * w, w, weighted]
    else:
        total[0] = total[0] + v * w
        total[1] += w


def _mean(total):
    s, w, weighted = total
    return (s / w, w) if weighted else s / w
