"""The article's six train.py commands, unchanged but for -g (CPU here), --iter 1 and a small --subset,
on the real partial CIFAR-10 archive built by download.py + dataset.py (conftest's ``mini_dataset``)."""
import json
import os
import shlex

import pytest

import train as train_cli
from chainer_cifar.errors import run_main
from chainer_cifar.models import list_models
from helpers import read_log

ARTICLE_COMMANDS = [
    'python src/train.py -g 0 -m cnn -b 128 -p cnn --optimizer adam --iter 300 --lr_decay_iter 100',
    'python src/train.py -g 0 -m cnn -b 128 -p cnn_zca --optimizer adam --iter 300 --lr_decay_iter 100 '
    '-d dataset/image_norm_zca.pkl',
    'python src/train.py -g 0 -m cnnbn -b 128 -p cnnbn --optimizer adam --iter 300 --lr_decay_iter 100',
    'python src/train.py -g 0 -m vgg -b 128 -p vgg_adam --optimizer adam --iter 300 --lr_decay_iter 100',
    'python src/train.py -g 0 -m residual -b 128 -p residual --res_depth 12 --optimizer sgd --lr 0.1 --iter 300 '
    '--lr_decay_iter 100',
    'python src/train.py -g 0 -m residual -b 128 -p residual_skip --skip_depth --res_depth 12 --optimizer sgd '
    '--lr 0.1 --iter 300 --lr_decay_iter 100',
]


def shortened(command, dataset_dir, out):
    """The command's own flags; -g 0 -> -g -1, --iter 1, --subset 24, files under the test's folders."""
    argv = shlex.split(command)[2:]
    argv[argv.index('-g') + 1] = '-1'
    argv[argv.index('--iter') + 1] = '1'
    if '-d' in argv:
        i = argv.index('-d') + 1
        argv[i] = os.path.join(str(dataset_dir), os.path.basename(argv[i]))
    else:
        argv += ['-d', os.path.join(str(dataset_dir), 'image.pkl')]
    return argv + ['-l', os.path.join(str(dataset_dir), 'label.pkl'), '--subset', '24', '--out', str(out),
                   '--quiet']


@pytest.mark.parametrize('command', ARTICLE_COMMANDS, ids=lambda c: shlex.split(c)[shlex.split(c).index('-p') + 1])
def test_article_command_runs_and_writes_its_outputs(command, mini_dataset, tmp_path):
    if 'cnn' not in list_models():
        pytest.skip('the article models are not registered')
    argv = shortened(command, mini_dataset, tmp_path)
    assert run_main(train_cli.main, argv) == 0
    prefix = argv[argv.index('-p') + 1]
    for suffix in ('.model', '.state', '_log.csv', '_loss.png', '_error.png', '.snapshot', '_run.json'):
        assert (tmp_path / (prefix + suffix)).is_file(), prefix + suffix
    rows = read_log(str(tmp_path / (prefix + '_log.csv')))
    assert [r['epoch'] for r in rows] == ['1']
    record = json.loads((tmp_path / (prefix + '_run.json')).read_text())
    assert (record['n_train'], record['n_valid'], record['n_test']) == (22, 2, 24)
    assert record['dataset']['partial'] is True  # dataset_info.json of dataset.py, copied
