"""The benchmark's PyTorch twins (tools/torch_models.py) are the registry's networks.

Same parameter count and output shape for every model of the GPU benchmark
list, and, with the Chainer weights and BatchNormalization statistics copied
over, the same logits (float64, test mode) for the ones written here:
that is what makes the benchmark's Chainer : PyTorch ratio a fair one.
"""
import os
import sys

import numpy
import pytest

import chainer

from conftest import import_torch

torch = import_torch('the PyTorch twins (tools/torch_models.py)')

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import bench  # noqa: E402  (tools/bench.py)
import torch_models  # noqa: E402

GPU_LIST = ['cnn', 'cnnbn', 'vgg', 'resnet20', 'resnet56', 'resnet110', 'residual:res_depth=12',
            'residual:res_depth=12,skip_depth=1']
WRITTEN_HERE = ['cnn', 'cnnbn', 'vgg', 'residual:res_depth=2', 'residual:res_depth=2,skip_depth=1']


def _pair(spec, dtype=numpy.float32):
    with chainer.using_config('dtype', dtype):
        chainer_model = bench.build_chainer_model(spec)
    twin = bench.build_torch_model(spec)
    assert twin is not None, spec
    return chainer_model, twin


@pytest.mark.parametrize('spec', GPU_LIST)
def test_twin_has_the_parameter_count_and_output_shape_of_the_registry_model(spec):
    chainer_model, twin = _pair(spec)
    assert sum(p.numel() for p in twin.parameters()) == sum(p.size for p in chainer_model.params())
    x = numpy.random.RandomState(0).standard_normal((2, 3, 32, 32)).astype(numpy.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = chainer_model(x)
    twin.eval()
    with torch.no_grad():
        assert tuple(twin(torch.from_numpy(x)).shape) == y.shape == (2, 10)


def _copy_weights(chainer_model, twin, rng):
    """Randomize the BatchNormalization statistics and affine parameters (so that test mode
    exercises them), then copy every Chainer parameter and statistic into ``twin``."""
    for name, link in chainer_model.namedlinks():
        if isinstance(link, chainer.links.BatchNormalization):
            link.gamma.array[...] = rng.uniform(0.5, 1.5, link.gamma.shape)
            link.beta.array[...] = rng.uniform(-0.5, 0.5, link.beta.shape)
            link.avg_mean[...] = rng.uniform(-0.5, 0.5, link.avg_mean.shape)
            link.avg_var[...] = rng.uniform(0.5, 1.5, link.avg_var.shape)
    values = {torch_models.torch_name(n): p.array for n, p in chainer_model.namedparams()}
    for name, link in chainer_model.namedlinks():
        if isinstance(link, chainer.links.BatchNormalization):
            values[torch_models.torch_name(name + '/avg_mean')] = link.avg_mean
            values[torch_models.torch_name(name + '/avg_var')] = link.avg_var
    state = twin.state_dict()
    expected = {k for k in state if not k.endswith('num_batches_tracked')}
    assert set(values) == expected
    for key, value in values.items():
        assert tuple(state[key].shape) == value.shape, key
        state[key] = torch.from_numpy(numpy.array(value, numpy.float64))
    twin.load_state_dict(state)


@pytest.mark.parametrize('spec', WRITTEN_HERE)
def test_twin_with_the_chainer_weights_computes_the_same_logits(spec):
    numpy.random.seed(0)
    chainer_model, twin = _pair(spec, numpy.float64)
    twin = twin.double().eval()
    rng = numpy.random.RandomState(1)
    _copy_weights(chainer_model, twin, rng)
    x = rng.standard_normal((3, 3, 32, 32))
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        expected = chainer_model(x).array
    with torch.no_grad():
        got = twin(torch.from_numpy(x)).numpy()
    assert expected.dtype == numpy.float64
    numpy.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * numpy.abs(expected).max())


@pytest.mark.parametrize('spec', ['cnn', 'cnnbn', 'vgg'])
def test_twin_applies_dropout_where_the_registry_model_does(spec, monkeypatch):
    """Training mode: the same dropout calls, in order, with the same ratios and input sizes
    (Chainer drops out of the (N, 128, 4, 4) maps that its Linear flattens, the twin of the flat batch)."""
    import chainer.functions as F
    calls = {'chainer': [], 'torch': []}

    def chainer_dropout(x, ratio=.5, **kwargs):
        calls['chainer'].append((ratio, x.size))
        return chainer.as_variable(x)

    def torch_dropout(x, p=0.5, training=True, inplace=False):
        calls['torch'].append((p, x.numel()) if training else ('off', None))
        return x
    monkeypatch.setattr(F, 'dropout', chainer_dropout)
    monkeypatch.setattr(torch_models.TF, 'dropout', torch_dropout)
    chainer_model, twin = _pair(spec)
    x = numpy.random.RandomState(0).standard_normal((2, 3, 32, 32)).astype(numpy.float32)
    with chainer.using_config('train', True):
        chainer_model(x)
    twin.train()
    twin(torch.from_numpy(x))
    assert calls['torch'] == calls['chainer'] and calls['chainer']


def test_stochastic_depth_twin_skips_with_the_registry_probabilities():
    chainer_model, twin = _pair('residual:res_depth=3,skip_depth=1')
    ratios = [b.skip_ratio for b in chainer_model.blocks]
    assert [getattr(twin, 'res{}'.format(i)).skip_ratio for i in range(1, len(ratios) + 1)] == ratios
    assert max(ratios) == 0.5 and ratios[3] == 0.0  # the stage transitions are never skipped


def test_models_without_a_twin_leave_the_pytorch_columns_empty():
    assert bench.build_torch_model('pyramid') is None
    assert bench.build_torch_model('residual:swapout=1') is None
    assert bench.build_torch_model('cnn:foo=1') is None
