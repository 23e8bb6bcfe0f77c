"""End to end on the real partial archive: download.py (offline) -> dataset.py."""
import json

import numpy

from chainer_cifar.data import archive, build, pickles
from conftest import MINI_ARCHIVE_MD5


def test_mini_archive_becomes_every_dataset_file(mini_dataset):
    labels = pickles.load_pickle(str(mini_dataset / 'label.pkl'))
    assert labels['train'].shape == (8336,) and labels['test'].shape == (1017,)
    # Real labels: all ten classes occur, roughly balanced.
    counts = numpy.bincount(labels['train'], minlength=10)
    assert counts.min() > 600 and counts.max() < 1100
    for name in build.VARIANTS:
        train_x, test_x = pickles.load_images(str(mini_dataset / (name + '.pkl')))
        assert train_x.shape == (8336, 3, 32, 32) and test_x.shape == (1017, 3, 32, 32)
        assert numpy.isfinite(train_x).all() and numpy.isfinite(test_x).all()
    for png in ('sample.png', 'sample_norm.png', 'sample_zca.png', 'sample_norm_zca.png'):
        assert (mini_dataset / png).stat().st_size > 10000
    info = json.load(open(str(mini_dataset / build.INFO_NAME)))
    assert info['partial'] is True and info['n_train'] == 8336 and info['n_test'] == 1017
    assert info['archive']['md5'] == 'c1366a7aca9f64f5a55aeab36eb1bc98'
    assert info['archive']['official'] is False


def test_real_images_have_plausible_channel_means(mini_dataset):
    # CIFAR-10's known channel means are about (125, 123, 114) on the 0-255 scale.
    info = json.load(open(str(mini_dataset / build.INFO_NAME)))
    numpy.testing.assert_allclose(info['channel_mean'], [125.3, 123.0, 113.9], atol=2.0)


def test_whitened_real_training_data_has_near_identity_covariance(mini_dataset):
    x = pickles.load_pickle(str(mini_dataset / 'image_norm_zca.pkl'))['train']
    x = x.reshape(len(x), -1)[:, :1024:8].astype(numpy.float64)  # a sample of 128 pixels
    cov = numpy.cov(x, rowvar=False, bias=True)
    # eps > 0 damps the weakest directions a little, so not exactly 1.
    assert abs(numpy.diag(cov).mean() - 1) < 0.05
    off = cov - numpy.diag(numpy.diag(cov))
    assert numpy.abs(off).max() < 0.1


def test_mini_archive_md5_matches_its_readme(mini_archive):
    assert archive.md5sum(mini_archive) == 'c1366a7aca9f64f5a55aeab36eb1bc98'


def test_partial_archive_without_its_md5_is_one_line_naming_the_command_that_takes_it(mini_archive, tmp_path,
                                                                                      capsys, monkeypatch):
    # CIFAR10_ARCHIVE=... bash quickstart.sh without CIFAR10_MD5, as a newcomer first tries it.
    import download
    monkeypatch.delenv('CIFAR10_MD5', raising=False)
    rc = download.run_main(download.main, ['--archive', mini_archive, '--out', str(tmp_path / 'd'), '--quiet'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert 'it is the partial copy this project keeps (8,336 train / 1,017 test images)' in err
    assert 'CIFAR10_ARCHIVE={} CIFAR10_MD5={} bash quickstart.sh'.format(mini_archive, MINI_ARCHIVE_MD5) in err
