"""A diverging run: the NaN message names the right epoch, the fix that fits the model and dtype, and the
snapshot and the run record are left as the last good epoch and "diverged"."""
import json

import numpy
import pytest

import train as train_cli
from chainer_cifar.errors import run_main
from chainer_cifar.models import registry
from chainer_cifar.training import parse_args
from helpers import TINY, TINY_NAN, TINY_NAN_AT_7, read_log, tiny_argv, write_pickles

# NumPy (and Chainer's loss scaling under mixed16) warn of the overflow and NaN these runs provoke on purpose.
pytestmark = [pytest.mark.filterwarnings('ignore::RuntimeWarning'),
              pytest.mark.filterwarnings('ignore:Non finite number found:UserWarning')]


@pytest.fixture
def data(tmp_path):
    return write_pickles(tmp_path / 'dataset')  # 54 train images: 7 iterations of 8 per epoch


def diverge(argv, capsys, model=TINY_NAN):
    argv[argv.index(TINY)] = model
    assert run_main(train_cli.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: training loss became nan at epoch '), err
    return err[0]


def test_nan_in_an_epochs_last_iteration_names_that_epoch(data, tmp_path, capsys):
    line = diverge(tiny_argv(data, tmp_path, '--iter', '3'), capsys, TINY_NAN_AT_7)
    assert 'at epoch 1, iteration 7; stopped (no snapshot was written yet)' in line
    assert not (tmp_path / 'run.snapshot').exists() and not (tmp_path / 'run_log.csv').exists()
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'diverged'


def test_nan_in_the_middle_of_epoch_2_keeps_epoch_1s_snapshot_and_log(data, tmp_path, capsys):
    line = diverge(tiny_argv(data, tmp_path, '--iter', '3'), capsys)
    assert 'at epoch 2, iteration 11; stopped (the last good snapshot is {})'.format(tmp_path / 'run.snapshot') in line
    with numpy.load(str(tmp_path / 'run.snapshot')) as npz:
        assert int(npz['updater/iteration']) == 7
    assert len(read_log(str(tmp_path / 'run_log.csv'))) == 1
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'diverged'


def test_nan_message_suggests_float32_only_under_mixed16(data, tmp_path, capsys):
    assert '--dtype float32' not in diverge(tiny_argv(data, tmp_path / 'a'), capsys)
    assert '--dtype float32' in diverge(tiny_argv(data, tmp_path / 'b', '--dtype', 'mixed16'), capsys)


def test_nan_message_of_a_model_without_a_preset_suggests_a_lower_rate_or_a_warm_up(data, tmp_path, capsys):
    line = diverge(tiny_argv(data, tmp_path, '--optimizer', 'adam'), capsys)
    assert line.endswith('Try a lower --alpha or a warm-up (--warmup_epochs 1)')


@pytest.fixture
def article_model_diverges(monkeypatch):
    """-m cnn, cnnbn, vgg, residual built as the tiny model that diverges: the article's names, fast."""
    registry.list_models()  # the built-in models first
    for name in ('cnn', 'cnnbn', 'vgg', 'residual'):
        monkeypatch.setitem(registry._REGISTRY, name, registry._REGISTRY[TINY_NAN])


@pytest.mark.parametrize('model, flags', [('cnn', '--optimizer adam'), ('cnnbn', '--optimizer adam'),
                                          ('vgg', '--optimizer adam'), ('residual', '--optimizer sgd --lr 0.1')])
def test_nan_message_names_the_articles_recipe_for_the_model(data, tmp_path, capsys, article_model_diverges,
                                                             model, flags):
    # The defaults (sgd, lr 0.01) are the original's; the article trained these models otherwise.
    line = diverge(tiny_argv(data, tmp_path), capsys, model)
    assert line.endswith('. Preset article-{0} trains -m {0} with {1} (python src/compare.py run article-{0}); '
                         'or try a lower --lr or a warm-up (--warmup_epochs 1)'.format(model, flags)), line


def test_nan_message_does_not_suggest_the_recipe_that_diverged(data, tmp_path, capsys, article_model_diverges):
    line = diverge(tiny_argv(data, tmp_path, '--optimizer', 'adam'), capsys, 'cnn')
    assert 'compare.py' not in line and line.endswith('Try a lower --alpha or a warm-up (--warmup_epochs 1)')


@pytest.mark.parametrize('argv, expected', [
    (['-m', 'cnn', '--optimizer', 'adam', '--alpha', '0.01'], ('article-cnn', ['--optimizer', 'adam', '--alpha',
                                                                               '0.001'])),
    (['-m', 'resnet110'], ('resnet110-paper', ['--optimizer', 'sgd', '--lr', '0.1', '--warmup_epochs', '1',
                                               '--warmup_lr', '0.01'])),
    (['-m', 'residual', '--lr', '0.1'], None),
    (['-m', 'shake_residual'], None),
])
def test_the_suggested_recipe_comes_from_the_presets_and_names_what_this_command_overrides(argv, expected):
    assert train_cli.published_recipe(parse_args(argv)) == expected


def test_weights_that_overflow_in_an_epochs_last_update_stop_the_run_before_they_are_saved(data, tmp_path, capsys):
    # One update per epoch (-b 54): its loss is finite, the weights it leaves are not. The evaluators see it
    # first; the best model and the snapshot would have kept those weights.
    assert run_main(train_cli.main, tiny_argv(data, tmp_path, '-b', '54', '--lr', '1e38', '--iter', '3')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: validation loss became '), err
    assert 'at epoch 1, iteration 1; stopped (no snapshot was written yet)' in err[0]
    for name in ('run.snapshot', 'run.model', 'run_log.csv'):
        assert not (tmp_path / name).exists(), name
    assert json.loads((tmp_path / 'run_run.json').read_text())['status'] == 'diverged'
