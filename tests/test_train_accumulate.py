"""Gradient accumulation (``train.py --accumulate N``): the same step as one batch, in parts."""
import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import training

import train as train_cli
from chainer_cifar.errors import run_main
from chainer_cifar.training.trainer import Classifier
from chainer_cifar.training.updater import AccumulatingUpdater
from helpers import read_log, tiny_argv, write_pickles


class _NoBN(chainer.Chain):
    """conv + linear, no BatchNormalization: accumulation must give the one-batch step exactly."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, pad=1, initialW=chainer.initializers.Normal(0.3))
            self.fc = L.Linear(4 * 4 * 4, 10, initialW=chainer.initializers.Normal(0.3))

    def forward(self, x):
        return self.fc(F.max_pooling_2d(F.relu(self.conv(x)), 2))


def _one_step(parts, converter=None, n=12, seed=0):
    """Parameters and the observation after one MomentumSGD + weight-decay step on one batch of ``n``."""
    rng = numpy.random.RandomState(seed)
    data = [(rng.standard_normal((3, 8, 8)).astype(numpy.float32), numpy.int32(rng.randint(10)))
            for _ in range(n)]
    numpy.random.seed(1)
    model = Classifier(_NoBN())
    optimizer = chainer.optimizers.MomentumSGD(lr=0.1, momentum=0.9)
    optimizer.setup(model)
    optimizer.add_hook(chainer.optimizer_hooks.WeightDecay(1e-3))
    it = chainer.iterators.SerialIterator(data, n, shuffle=False)
    kwargs = {} if converter is None else {'converter': converter}
    if parts is None:
        updater = training.updaters.StandardUpdater(it, optimizer, **kwargs)
    else:
        updater = AccumulatingUpdater(it, optimizer, converter or chainer.dataset.concat_examples, parts)
    observation = {}
    reporter = chainer.Reporter()
    reporter.add_observer('main', model)
    with reporter.scope(observation):
        updater.update()
        updater.update()  # a second step: momentum carries the first one's gradient
    return {name: p.array.copy() for name, p in model.namedparams()}, observation


@pytest.mark.parametrize('parts', [1, 2, 3, 5, 12])
def test_accumulated_step_equals_the_one_batch_step(parts):
    ref, ref_obs = _one_step(None)
    got, obs = _one_step(parts)
    assert ref.keys() == got.keys()
    for name in ref:
        numpy.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # the reported loss and accuracy are the whole batch's: size-weighted means over the parts
    # the reported loss and accuracy are the whole batch's (size-weighted means of 5 + 5 + 2 ...)
    for key in ('main/loss', 'main/accuracy'):
        value, weight = obs[key]
        ref_value, ref_weight = ref_obs[key]
        assert weight == ref_weight == 12
        numpy.testing.assert_allclose(float(getattr(value, 'array', value)),
                                   float(ref_value.array), rtol=1e-5)


def test_mixup_lam_goes_to_every_micro_batch():
    # The converter returns (x, t_a, t_b, lam); lam is a scalar, not cut.
    def mixup_converter(batch, device=None):
        x, t = chainer.dataset.concat_examples(batch)
        return x, t, t[::-1].copy(), 0.3
    ref, _ = _one_step(None, converter=mixup_converter)
    got, _ = _one_step(3, converter=mixup_converter)
    for name in ref:
        numpy.testing.assert_allclose(got[name], ref[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_train_py_accumulate_trains_and_logs(tmp_path):
    data = write_pickles(tmp_path / 'dataset')
    out = tmp_path / 'out'
    assert run_main(train_cli.main, tiny_argv(data, out, '--accumulate', '4')) == 0
    rows = read_log(str(out / 'run_log.csv'))
    assert [r['epoch'] for r in rows] == ['1', '2']
    assert all(numpy.isfinite(float(r['train_loss'])) for r in rows)


@pytest.mark.parametrize('value, message', [('0', 'must be positive'), ('9', 'at most -b')])
def test_bad_accumulate_is_one_error_line(tmp_path, capsys, value, message):
    data = write_pickles(tmp_path / 'dataset')
    assert run_main(train_cli.main, tiny_argv(data, tmp_path / 'out', '--accumulate', value)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and message in err[0], err
