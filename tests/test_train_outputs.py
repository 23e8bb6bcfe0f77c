"""Where train.py writes (the output rule of -p and --out) and the summary it closes with."""
import os
import shlex
import types

import pytest

import analyze as analyze_cli
import compare as compare_cli
import evaluate as evaluate_cli
import train as train_cli
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.training import parse_args
from chainer_cifar.training.args import output_location
from helpers import TINY, read_log, write_pickles

FILES = ('{}.model', '{}.state', '{}_log.csv', '{}_loss.png', '{}_error.png', '{}.snapshot', '{}_run.json')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    return write_pickles(tmp_path_factory.mktemp('outputs') / 'dataset')


def argv(data, *extra):
    """A tiny run without --out or -p: the test adds what it checks."""
    image, label = data
    return ['-m', TINY, '-b', '8', '--iter', '1', '-d', image, '-l', label, '--quiet'] + list(extra)


# ---------------------------------------------------------------- the rule

@pytest.mark.parametrize('out, prefix, expected', [
    (None, None, ('results/cnn', 'cnn')),           # nothing given: results/<model>/<model>.*
    (None, 'mine', ('results/mine', 'mine')),       # -p NAME: results/NAME/NAME.*
    (None, 'runs/mine', ('runs', 'mine')),          # -p a path: exactly there, as the original's -p
    (None, 'runs/a/mine', ('runs/a', 'mine')),
    (None, './mine', ('.', 'mine')),                # the current folder, the original's default
    (None, '/tmp/x/mine', ('/tmp/x', 'mine')),
    ('out', None, ('out', 'cnn')),                  # --out DIR: DIR/<model>.*
    ('out', 'mine', ('out', 'mine')),               # --out DIR -p NAME: DIR/NAME.*
    ('out', 'a/mine', ('out/a', 'mine')),           # -p relative to --out
    ('.', 'mine', ('.', 'mine')),
])
def test_the_output_rule(out, prefix, expected):
    assert output_location(out, prefix, 'cnn') == expected


@pytest.mark.parametrize('prefix', ['', 'runs/', '.', '..', 'runs/..'])
def test_a_prefix_without_a_file_name_is_refused(prefix):
    with pytest.raises(UserError, match='must end in a file name'):
        parse_args(['-p', prefix])


def test_parse_args_leaves_the_folder_in_out_and_the_name_in_prefix():
    args = parse_args(['-m', 'vgg', '-p', 'runs/vgg_adam'])
    assert (args.out, args.prefix) == ('runs', 'vgg_adam')
    args = parse_args(['-m', 'vgg'])
    assert (args.out, args.prefix) == (os.path.join('results', 'vgg'), 'vgg')


def test_help_states_the_rule(capsys):
    with pytest.raises(SystemExit):
        train_cli.main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'results/NAME/NAME.*' in text and 'DIR/NAME.*' in text and '-p ./NAME' in text


# ---------------------------------------------------------------- the rule, end to end

def test_a_plain_prefix_writes_every_file_under_results_and_nothing_in_the_current_folder(
        data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(train_cli.main, argv(data, '-p', 'tiny')) == 0
    assert os.listdir(str(tmp_path)) == ['results']
    folder = tmp_path / 'results' / 'tiny'
    assert sorted(os.listdir(str(folder))) == sorted(f.format('tiny') for f in FILES)
    out = capsys.readouterr().out
    assert 'wrote results/tiny/: ' + ', '.join(f.format('tiny') for f in FILES) in out


def test_a_path_prefix_writes_there_and_resume_and_test_only_find_it_by_the_same_rule(
        data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(train_cli.main, argv(data, '-p', 'runs/tiny')) == 0
    assert sorted(os.listdir(str(tmp_path / 'runs'))) == sorted(f.format('tiny') for f in FILES)
    # --resume: the same -p, one more epoch.
    assert run_main(train_cli.main, argv(data, '-p', 'runs/tiny', '--iter', '2',
                                         '--resume', 'runs/tiny.snapshot')) == 0
    assert [r['epoch'] for r in read_log(str(tmp_path / 'runs' / 'tiny_log.csv'))] == ['1', '2']
    # A snapshot that is not this -p's is refused with the flags that name it.
    capsys.readouterr()
    assert run_main(train_cli.main, argv(data, '-p', 'tiny', '--iter', '3', '--resume', 'runs/tiny.snapshot')) == 2
    assert '--out runs -p tiny' in capsys.readouterr().err
    # --test_only reads runs/tiny.model.
    assert run_main(train_cli.main, argv(data, '-p', 'runs/tiny', '--test_only')) == 0
    assert capsys.readouterr().out.startswith(os.path.join('runs', 'tiny.model') + ': test error ')
    assert sorted(os.listdir(str(tmp_path))) == ['runs']


def test_out_and_a_relative_prefix_combine(data, tmp_path):
    assert run_main(train_cli.main, argv(data, '--out', str(tmp_path / 'o'), '-p', 'a/tiny')) == 0
    assert (tmp_path / 'o' / 'a' / 'tiny.model').is_file() and (tmp_path / 'o' / 'a' / 'tiny_run.json').is_file()


# ---------------------------------------------------------------- the summary

def test_the_summary_lists_every_file_and_next_steps_that_run(data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(train_cli.main, argv(data, '-p', 'tiny', '--save_iter', '1')) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    image, label = data
    assert lines[0].startswith('best validation error ') and lines[1:] == [
        'wrote results/tiny/: ' + ', '.join([f.format('tiny') for f in FILES] + ['tiny_1.model']),
        'next: python src/analyze.py curves results/tiny/tiny_log.csv',
        '      python src/evaluate.py results/tiny/tiny.model -d {}'.format(image),  # -l: beside the images
        '      python src/compare.py report results/tiny']  # --quiet: the summary alone
    assert os.path.dirname(label) == os.path.dirname(image)
    # Each next step runs as printed.
    mains = {'src/analyze.py': analyze_cli.main, 'src/evaluate.py': evaluate_cli.main,
             'src/compare.py': compare_cli.main}
    for line in lines[-3:]:
        command = shlex.split(line.replace('next:', '', 1))
        assert command[0] == 'python'
        extra = ['--out', str(tmp_path / 'analysis')] if command[1] == 'src/analyze.py' else []
        assert run_main(mains[command[1]], command[2:] + extra) == 0, line
    assert (tmp_path / 'analysis' / 'curves.png').is_file()


def test_the_summary_without_a_validation_set_and_on_a_gpu_says_so(data):
    args = parse_args(argv(data, '-p', 'tiny', '--no_valid_data', '-g', '-1'))
    summary = types.SimpleNamespace(best_valid_error=None, final_test_error=0.25, epochs=3, best_epoch=3,
                                    test_error_at_best=0.25, files=['results/tiny/tiny.model'],
                                    paths={'log': 'results/tiny/tiny_log.csv', 'model': 'results/tiny/tiny.model'})
    args.gpu, args.dataset, args.label = 0, 'dataset/image.pkl', 'dataset/label.pkl'
    lines = train_cli.summary_lines(summary, args)
    assert lines[0] == 'no validation set: test error of the last epoch (3) 25.00%'
    assert lines[1] == 'wrote results/tiny/: tiny.model'
    assert lines[3] == '      python src/evaluate.py results/tiny/tiny.model -g 0'
