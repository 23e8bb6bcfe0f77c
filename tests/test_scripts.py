"""Smoke tests of the measurement scripts in scripts/: they run, on tiny sizes, and print their tables.

The timings themselves mean nothing here; what is pinned down is that the
scripts the docs cite still run against the current code and print one row
per layer (or per ``--accumulate`` value) with positive numbers.
"""
import importlib.util
import os
import re

import pytest

from test_functions_direct_conv import native_available

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts')


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text):
    """The data rows of the markdown tables in ``text``: ``[[cell, ...], ...]``."""
    rows = []
    for line in text.splitlines():
        if line.startswith('|') and not line.startswith('|---') and not line.startswith('| layer') \
                and 'speed-up |' not in line:
            rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def test_native_layers_prints_every_layer_with_positive_times(capsys):
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    script = _load('native_layers')
    script.main(['--batch', '4', '--repeats', '1'])
    rows = _rows(capsys.readouterr().out)
    names = [r[0] for r in rows]
    expected = [name for name, *_ in script.LAYERS] + [name for name, *_ in script.PADS]
    for name in expected:
        assert name in names, name
    assert sum('gx' in n or 'gW' in n for n in names) == 4  # both halves of both stride-2 layers
    for row in rows:
        for cell in row[1:]:
            for number in re.findall(r'[0-9.]+', cell):
                assert float(number) > 0, row


def test_accumulate_memory_prints_a_peak_per_part(capsys, monkeypatch):
    import chainer
    # main() sets the global switch; keep it from leaking into other tests.
    monkeypatch.setattr(chainer.global_config, 'use_fast_kernels', chainer.global_config.use_fast_kernels)
    script = _load('accumulate_memory')
    script.main(['resnet20', '--parts', '1,2', '--batch', '4'])
    found = re.findall(r'--accumulate (\d+) \(fast kernels\): peak (\d+) MiB, step ([0-9.]+) s',
                       capsys.readouterr().out)
    assert [int(p) for p, _, _ in found] == [1, 2]
    assert all(int(peak) > 0 and float(seconds) > 0 for _, peak, seconds in found)
