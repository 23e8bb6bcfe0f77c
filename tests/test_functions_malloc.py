"""Keeping freed buffers (glibc's mallopt thresholds): the front ends ask for it, importing never does."""
import platform
import subprocess
import sys
import types

import pytest

from chainer_cifar.functions import _malloc
from conftest import SRC


def test_keep_freed_memory_takes_effect_on_glibc():
    if platform.libc_ver()[0] != 'glibc':
        pytest.skip('glibc only')
    assert _malloc.keep_freed_memory() is True


def test_keep_freed_memory_can_be_turned_off_by_environment(monkeypatch):
    monkeypatch.setenv('CHAINER_CIFAR_KEEP_MEMORY', '0')
    assert not _malloc.enabled_by_environment()
    monkeypatch.delenv('CHAINER_CIFAR_KEEP_MEMORY')
    assert _malloc.enabled_by_environment()


def test_keep_memory_does_nothing_when_the_environment_says_0(monkeypatch):
    calls = []
    monkeypatch.setattr(_malloc, 'keep_freed_memory', lambda: calls.append('mallopt') or True)
    monkeypatch.setenv('CHAINER_CIFAR_KEEP_MEMORY', '0')
    assert _malloc.keep_memory() is False
    assert calls == []


def test_importing_the_package_leaves_malloc_untouched():
    # A fresh interpreter: this one may have applied it already (the test above does).
    code = ('import sys; sys.path.insert(0, {!r}); import train, evaluate, compare, analyze, net; '
            'import chainer_cifar.functions, chainer_cifar.links, chainer_cifar.models, chainer_cifar.training, '
            'chainer_cifar.results; from chainer_cifar.functions import _malloc; print(_malloc._applied)').format(SRC)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'None'


def test_train_keeps_freed_memory(monkeypatch):
    import train
    calls = []
    monkeypatch.setattr(_malloc, 'keep_freed_memory', lambda: calls.append('mallopt') or True)
    monkeypatch.setattr(train, 'train', lambda args, recipe: types.SimpleNamespace(files=[]))
    monkeypatch.delenv('CHAINER_CIFAR_KEEP_MEMORY', raising=False)
    assert train.main(['-m', 'cnn', '--iter', '1']) == 0
    assert calls == ['mallopt']
