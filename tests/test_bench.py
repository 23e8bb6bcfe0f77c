"""Smoke test of the benchmark, tools/bench.py (tiny batch; no timing assertions)."""
import json
import os
import sys

import pytest

import chainer
import chainer.functions as F

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tools')
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import bench  # noqa: E402  (tools/bench.py)


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
    assert data['data_pipeline']['rate'] > 0  # the real iterator + converter + augmentation
    text = capsys.readouterr().out
    assert '| resnet20 | train |' in text
    assert F.max_pooling_2d is original  # the benchmark patches nothing


def test_the_package_holds_no_benchmark_and_imports_no_torch():
    import importlib.util
    assert importlib.util.find_spec('chainer_cifar.bench') is None
    import subprocess
    code = ('import sys, chainer_cifar, chainer_cifar.models, chainer_cifar.training; '
            'sys.exit("torch" in sys.modules)')
    src = os.path.join(os.path.dirname(TOOLS), 'src')
    assert subprocess.run([sys.executable, '-c', code], cwd=src).returncode == 0


def test_registry_models_run_the_fast_nodes_without_any_patch():
    model = bench.build_chainer_model('cnn')
    import numpy
    x = numpy.zeros((1, 3, 32, 32), numpy.float32)
    with chainer.using_config('train', False):
        assert model(x).creator.__class__.__name__ == 'LinearFunction'
        h = model.conv1(x)
        assert h.creator.__class__.__name__ == 'Convolution2DFast'
        with chainer.using_config('use_fast_kernels', False):
            assert model.conv1(x).creator.__class__.__name__ == 'Convolution2DFunction'
    assert F.max_pooling_2d.__module__.startswith('chainer.')


def test_models_come_from_the_registry_with_their_options():
    from chainer_cifar.errors import UserError
    from chainer_cifar.models.article import ResidualNet
    from chainer_cifar.models.resnet_paper import ResNet
    model = bench.build_chainer_model('residual:res_depth=2,skip_depth=1')
    assert isinstance(model, ResidualNet) and model.res_depth == 2
    assert max(b.skip_ratio for b in model.blocks) > 0
    assert isinstance(bench.build_chainer_model('resnet20'), ResNet)
    with pytest.raises(UserError, match="unknown model 'no_such_model'"):
        bench.build_chainer_model('no_such_model')


def test_threads_flag_sets_every_library_and_is_recorded(tmp_path):
    from chainer_cifar.functions import _parallel
    old = _parallel.num_threads()
    out = tmp_path / 't.json'
    try:
        assert bench.main(['--models', 'resnet20', '--batch', '2', '--repeats', '1', '--warmup', '0',
                           '--no-torch', '--no-memory', '--no-data', '--threads', '1',
                           '--json', str(out)]) == 0
        env = json.loads(out.read_text())['environment']
        assert env['threads_set']['chainer_cifar'] == 1
        assert env['threads_set']['openblas'] in (1, None)
    finally:
        bench.set_threads(old)


def test_backends_take_turns():
    calls = []
    steps = {'a': lambda: calls.append('a'), 'b': lambda: calls.append('b'), 'c': lambda: calls.append('c')}
    seconds = bench.time_interleaved(steps, repeats=3, warmup=1)
    assert calls == ['a', 'b', 'c',  # warm-up
                     'a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']
    assert {k: len(v) for k, v in seconds.items()} == {'a': 3, 'b': 3, 'c': 3}


def test_paired_ratio_is_the_median_of_per_repeat_ratios():
    # repeat 2 ran while the machine was slow for both backends: its times are
    # 3x, but its ratio (2.0) is the same as the others'
    fast = [1.0, 3.0, 1.0]
    torch = [0.5, 1.5, 0.5]
    assert bench.paired_ratio(fast, torch) == 0.5
    assert bench.paired_ratio([1.0, 2.0, 4.0], [1.0, 1.0, 1.0]) == 0.5


def test_model_options_dtypes_and_profile_go_into_the_json(tmp_path):
    out = tmp_path / 'm.json'
    assert bench.main(['--models', 'residual:res_depth=1', '--batch', '2', '--repeats', '1', '--warmup', '0',
                       '--backends', 'fast', '--dtype', 'float32,mixed16', '--profile', '--no-data',
                       '--json', str(out)]) == 0
    data = json.loads(out.read_text())
    rows = data['results']
    assert [(r['model'], r['dtype']) for r in rows] == [('residual:res_depth=1', 'float32'),
                                                        ('residual:res_depth=1', 'mixed16')]
    from chainer_cifar.models import create_model
    small = sum(p.size for p in create_model('residual', res_depth=1).params())
    assert rows[0]['params'] == small < sum(p.size for p in create_model('residual').params())
    for r in rows:
        assert r['fast']['train']['median'] > 0 and r['fast']['peak_mib_train'] > 0
        profile = r['fast']['profile_train']
        assert profile[0]['function'] == 'Convolution2DFast' or profile[0]['share'] > 0.2
        assert 0 < sum(p['share'] for p in profile) <= 1.0 + 1e-9
    assert data['environment']['device'] == '@numpy'


def test_model_spec_parsing():
    assert bench.parse_model_spec('resnet20') == ('resnet20', {})
    assert bench.parse_model_spec('residual:res_depth=12,skip_depth=1') == (
        'residual', {'res_depth': 12, 'skip_depth': True})
    assert bench.parse_model_spec('residual:swapout=off') == ('residual', {'swapout': False})


@pytest.mark.parametrize('argv, message', [
    (['--dtype', 'float64'], '--dtype float64'),
    (['--models', 'residual:res_depth'], 'expected key=value'),
    (['--models', 'residual:depth=3'], "model 'residual' does not take --depth"),
    (['--models', 'residual:res_depth=1.5'], 'expected a whole number'),
    (['--models', 'residual:skip_depth=maybe'], 'expected 1 or 0'),
])
def test_bad_bench_flags_are_one_error_line(argv, message, capsys):
    from chainer_cifar.errors import run_main
    assert run_main(bench.main, ['--batch', '2', '--repeats', '1', '--warmup', '0', '--no-torch',
                                 '--no-data', '--no-memory'] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_gpu_flag_without_a_usable_gpu_is_one_error_line(capsys):
    from helpers import gpu_is_usable
    if gpu_is_usable(0):
        pytest.skip('GPU 0 is usable here')
    from chainer_cifar.errors import run_main
    assert run_main(bench.main, ['-g', '0', '--models', 'cnn', '--no-torch']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'use -g -1' in err[0], err


def test_cpu_run_times_the_pytorch_twins_in_float32_and_prints_paired_ratios(tmp_path, capsys):
    try:
        import torch  # noqa: F401
    except Exception:
        pytest.skip('PyTorch is not importable here')
    out = tmp_path / 't.json'
    assert bench.main(['--models', 'cnn,resnet20,residual:res_depth=1', '--batch', '2', '--repeats', '1',
                       '--warmup', '0', '--dtype', 'float32,mixed16', '--no-data', '--no-memory',
                       '--json', str(out)]) == 0
    rows = json.loads(out.read_text())['results']
    for r in rows:
        if r['dtype'] == 'mixed16':  # no PyTorch mixed precision on the CPU
            assert 'torch' not in r and 'torch_cl' not in r
            continue
        assert r['torch_params'] == r['params'], r['model']  # the twin is the same network
        for kind in ('train', 'infer'):
            assert r['torch'][kind]['median'] > 0 and r['torch_cl'][kind]['median'] > 0
            assert r['fast'][kind]['paired_ratio_torch'] > 0
            assert 'paired_ratio_torch' not in r['stock'][kind]
    table = [line.split('|')[1:-1] for line in capsys.readouterr().out.splitlines()
             if line.startswith('| resnet20 |') or line.startswith('| residual:res_depth=1 mixed16 |')]
    assert 'fast / PyTorch' in bench.format_table(rows)
    for cells in table:
        paired = cells[-1].strip()
        assert (paired == 'n/a') == ('mixed16' in cells[0]), cells


def test_table_compares_stock_with_pytorch_when_no_row_has_fast():
    # a GPU run: stock Chainer is the only Chainer backend, and carries the paired ratio
    row = {'model': 'cnn', 'dtype': 'mixed16'}
    for backend, rate in (('stock', 300.0), ('torch', 600.0)):
        row[backend] = {kind: {'median': rate} for kind in ('train', 'infer')}
    row['stock']['train']['paired_ratio_torch'] = 0.45
    lines = bench.format_table([row]).splitlines()
    assert 'stock / PyTorch' in lines[0] and 'fast / PyTorch' not in lines[0]
    cells = [c.strip() for c in lines[2].split('|')[1:-1]]
    assert cells == ['cnn mixed16', 'train', '300', 'n/a', '600', 'n/a', 'n/a', '0.50', '0.45']


def test_an_interrupted_run_keeps_the_rows_it_measured(tmp_path, monkeypatch, capsys):
    # the GPU session runs each stage under `timeout -s INT`: what was measured must survive
    real, calls = bench.bench_model, []

    def second_row_interrupted(name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)
    monkeypatch.setattr(bench, 'bench_model', second_row_interrupted)
    out = tmp_path / 'i.json'
    assert bench.main(['--models', 'cnn,resnet20', '--batch', '2', '--repeats', '1', '--warmup', '0',
                       '--no-torch', '--no-memory', '--json', str(out)]) == 130
    data = json.loads(out.read_text())
    assert [r['model'] for r in data['results']] == ['cnn']
    assert data['interrupted'] == 'after 1 of 2 rows' and 'partial' not in data
    assert data['data_pipeline'] is None
    text = capsys.readouterr().out
    assert '# interrupted after 1 of 2 rows' in text and '| cnn | train |' in text
