"""The numeric flags of train.py and compare.py: finite and in range, or one error line and nothing written."""
import json
import os

import pytest

import compare
import train as train_cli
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.training import parse_args
from helpers import read_log, tiny_argv, write_pickles

NON_FINITE = ['nan', 'inf', '-inf']
# flag -> values it must refuse. Floats: argparse's float() takes nan and inf.
BAD = {
    '--lr': NON_FINITE + ['0', '-0.1'],
    '--alpha': NON_FINITE + ['0', '-0.001'],
    '--warmup_lr': NON_FINITE + ['0', '-0.01'],
    '--weight_decay': NON_FINITE + ['-1e-4'],
    '--warmup_epochs': NON_FINITE + ['-1'],
    '--iter': ['0', '-1', 'nan'],
    '--batch_size': ['0', '-1', 'inf'],
    '--subset': ['0', '-5'],
    '--res_depth': ['0', '-1'],
    '--res_width': ['0', '-2'],
    '--save_iter': ['-1', 'nan'],
    '--valid_size': ['0', '-1'],
    '--accumulate': ['0', '-1', '9'],  # 9 > -b 8
    '--seed': ['-1', str(2 ** 32), 'nan'],
    '--lr_decay_iter': ['0', '-5', 'nan', 'inf', '1.5', '20,10', '10,-20'],
}
CASES = [(flag, value) for flag, values in BAD.items() for value in values]


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp('flags') / 'dataset')


@pytest.mark.parametrize('flag, value', CASES, ids=['{}={}'.format(f, v) for f, v in CASES])
def test_a_numeric_flag_out_of_its_range_is_one_error_line_naming_it_and_writes_nothing(
        data, tmp_path, capsys, flag, value):
    out = tmp_path / 'out'
    assert run_main(train_cli.main, tiny_argv(data, out) + ['{}={}'.format(flag, value)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: ') and flag in err[0], err
    assert not out.exists()


@pytest.mark.parametrize('flag, value', [('--weight_decay', '0'), ('--warmup_epochs', '0'), ('--save_iter', '0'),
                                         ('--seed', '0'), ('--seed', str(2 ** 32 - 1)), ('--lr', '1e-30')])
def test_the_edges_of_each_range_are_accepted(flag, value):
    parse_args(['{}={}'.format(flag, value)])


def test_the_largest_seed_trains_because_the_derived_streams_wrap_around(data, tmp_path):
    # The order and the augmentation draw from --seed + 1 and + 2: past 2**32 - 1 NumPy refused them.
    assert run_main(train_cli.main, tiny_argv(data, tmp_path, '--iter', '1', '--seed', str(2 ** 32 - 1))) == 0
    assert len(read_log(str(tmp_path / 'run_log.csv'))) == 1


def test_the_defaults_are_the_original_train_py():
    args = parse_args([])
    assert (args.model, args.batch_size, args.optimizer, args.lr, args.iter, args.lr_decay_iter, args.weight_decay,
            args.dataset) == ('cnn', 100, 'sgd', 0.01, 300, 100, 1e-4, 'dataset/image.pkl')


# ---------------------------------------------------------------- compare.py

@pytest.mark.parametrize('seeds', ['-1', '1,{}'.format(2 ** 32), 'x', ''])
def test_compare_refuses_a_seed_out_of_range_before_writing_anything(tmp_path, capsys, seeds):
    argv = ['run', 'article-cnn', '--seeds', seeds, '--runs_dir', str(tmp_path / 'runs')]
    assert run_main(compare.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: --seeds'), err
    assert not (tmp_path / 'runs').exists()


@pytest.mark.parametrize('extra', [['--weight_decay', 'nan'], ['--lr', 'inf'], ['-b', '0']])
def test_compare_checks_the_train_flags_of_every_seed_before_writing_anything(tmp_path, extra):
    seen = []
    with pytest.raises(UserError, match=extra[0]):
        compare.run_preset('article-cnn', [1, 2], str(tmp_path), extra, run_training=seen.append)
    assert seen == [] and os.listdir(str(tmp_path)) == []


def test_compare_still_records_a_valid_run_of_every_seed(tmp_path):
    seen = []
    compare.run_preset('article-cnn', [1, 2], str(tmp_path), ['--iter', '1'], run_training=seen.append)
    assert [args.seed for args in seen] == [1, 2]
    sidecar = json.loads((tmp_path / 'article-cnn' / 'article-cnn_s2_preset.json').read_text())
    assert sidecar['overrides'] == ['--iter', '1']


def test_labels_default_to_the_label_pkl_beside_the_images():
    # Labels from dataset/ beside images built elsewhere could be another set's: wrong labels, no error.
    from chainer_cifar.training import parse_args
    assert parse_args([]).label == os.path.join('dataset', 'label.pkl')
    assert parse_args(['-d', os.path.join('elsewhere', 'image_norm.pkl')]).label == os.path.join(
        'elsewhere', 'label.pkl')
    assert parse_args(['-d', 'elsewhere/image.pkl', '-l', 'mine.pkl']).label == 'mine.pkl'
    import evaluate  # src/evaluate.py
    args = evaluate.check_args(evaluate.build_parser().parse_args(['m.model', '-d', 'b/image.pkl']))
    assert args.label == os.path.join('b', 'label.pkl')
