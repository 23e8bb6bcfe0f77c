"""Smoke test of the benchmark front end (tiny batch; no timing assertions)."""
import json

import chainer
import chainer.functions as F

import bench
from chainer_cifar import bench as cbench


def test_bench_cli_writes_json(tmp_path, capsys):
    out = tmp_path / 'b.json'
    original = F.max_pooling_2d
    rc = bench.main(['--models', 'cnn,resnet20', '--batch', '2', '--repeats', '1', '--warmup', '0',
                     '--no-torch', '--json', str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [r['model'] for r in data['results']] == ['cnn', 'resnet20']
    for r in data['results']:
        for backend in ('fast', 'stock'):
            for kind in ('train', 'infer'):
                assert r[backend][kind]['median'] > 0
            assert r[backend]['peak_mib_train'] > 0
    assert 'data_pipeline' in data
    text = capsys.readouterr().out
    assert '| resnet20 | train |' in text
    assert F.max_pooling_2d is original  # the benchmark's patch is undone


def test_pooling_patch_is_restored():
    original = F.max_pooling_2d
    with cbench.fast_pooling_in_model_code():
        assert F.max_pooling_2d is not original
        with chainer.using_config('use_fast_kernels', False):
            import numpy
            y = F.max_pooling_2d(numpy.zeros((1, 1, 4, 4), numpy.float32), 2)
            assert y.creator.__class__.__name__ != 'MaxPooling2DFast'
    assert F.max_pooling_2d is original


def test_reference_models_build():
    for name in ('cnn', 'resnet20'):
        model, source = cbench.build_chainer_model(name, source='reference')
        assert source == 'reference'
        assert sum(p.size for p in model.params(include_uninit=False)) > 0
