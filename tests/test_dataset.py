"""dataset.py: the original's files, correct statistics, legacy pickles, clear errors."""
import json
import os
import pickle
import shutil

import numpy
import pytest
from PIL import Image

from chainer_cifar.data import archive, build, pickles, preprocess
from chainer_cifar.errors import UserError
from conftest import write_official_batches

import dataset  # src/dataset.py

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    # Module-scoped: fitting two 3072x3072 ZCA matrices takes seconds.
    tmp = tmp_path_factory.mktemp('built')
    folder = tmp / 'dataset' / archive.BATCHES_DIR
    raw = write_official_batches(str(folder))
    out = tmp / 'dataset'
    dataset.main(['--input', str(folder), '--output', str(out)])
    return out, raw


def test_writes_every_file_of_the_original_layout(built):
    out, (train_x, train_y, test_x, test_y) = built
    labels = pickles.load_pickle(str(out / 'label.pkl'))
    assert labels['train'].dtype == numpy.int32 and (labels['train'] == train_y).all()
    assert (labels['test'] == test_y).all()
    for name in build.VARIANTS:
        obj = pickle.load(open(str(out / (name + '.pkl')), 'rb'))  # a plain reader
        assert set(obj) == {'train', 'test'}
        assert obj['train'].shape == (100, 3072) and obj['train'].dtype == numpy.float32
        assert obj['test'].shape == (30, 3072) and obj['test'].dtype == numpy.float32
        png = Image.open(str(out / (name.replace('image', 'sample') + '.png')))
        assert png.size == (360, 360) and png.mode == 'RGB'
    assert (out / 'mean.txt').read_text().startswith('[')
    info = json.load(open(str(out / build.INFO_NAME)))
    assert info['n_train'] == 100 and info['n_test'] == 30 and info['partial'] is True
    assert info['variants'] == info['built'] == list(build.VARIANTS)
    assert not [n for n in os.listdir(str(out)) if n.startswith('.')]


def _written(folder):
    return sorted(n for n in os.listdir(str(folder)) if n != archive.BATCHES_DIR)


def test_only_builds_the_named_variant_and_the_files_every_run_needs(official_batches, tmp_path):
    folder, (_, train_y, _, _) = official_batches
    out = tmp_path / 'out'
    dataset.main(['--input', str(folder), '--output', str(out), '--only', 'image_norm'])
    assert _written(out) == ['dataset_info.json', 'image_norm.pkl', 'label.pkl', 'mean.txt',
                             'preprocess_stats.npz', 'sample_norm.png']
    assert (pickles.load_pickle(str(out / 'label.pkl'))['train'] == train_y).all()
    with numpy.load(str(out / build.STATS_NAME)) as npz:
        assert sorted(npz.files) == ['mean', 'std', 'zca_eps']
    info = json.load(open(str(out / build.INFO_NAME)))
    assert info['variants'] == info['built'] == ['image_norm']


def test_a_variant_not_asked_for_is_not_computed(official_batches, tmp_path, monkeypatch):
    def no_zca(*args, **kwargs):
        raise AssertionError('fitted a ZCA although no ZCA variant was asked for')
    monkeypatch.setattr(preprocess.ZCA, 'fit', no_zca)
    folder, _ = official_batches
    dataset.main(['--input', str(folder), '--output', str(tmp_path / 'out'), '--only', 'image,image_norm.pkl'])
    assert (tmp_path / 'out' / 'image.pkl').exists() and (tmp_path / 'out' / 'image_norm.pkl').exists()


@pytest.mark.parametrize('only', ['image_norm,imgae', ',', 'all'])
def test_unknown_variant_is_one_error_line_naming_the_choices(official_batches, tmp_path, capsys, only):
    folder, _ = official_batches
    rc = dataset.run_main(dataset.main, ['--input', str(folder), '--output', str(tmp_path / 'out'), '--only', only])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and ', '.join(build.VARIANTS) in err, err
    assert not (tmp_path / 'out').exists()


def test_only_keeps_the_variants_an_earlier_build_made_of_the_same_data(built, tmp_path):
    out = tmp_path / 'dataset'
    shutil.copytree(str(built[0]), str(out))
    before = (out / 'image_zca.pkl').read_bytes()
    dataset.main(['--input', str(out / archive.BATCHES_DIR), '--output', str(out), '--only', 'image_norm'])
    assert (out / 'image_zca.pkl').read_bytes() == before and (out / 'sample_norm_zca.png').exists()
    with numpy.load(str(out / build.STATS_NAME)) as npz, numpy.load(str(built[0] / build.STATS_NAME)) as old:
        assert sorted(npz.files) == sorted(old.files)
        numpy.testing.assert_array_equal(npz['zca_matrix'], old['zca_matrix'])
    info = json.load(open(str(out / build.INFO_NAME)))
    assert info['variants'] == list(build.VARIANTS) and info['built'] == ['image_norm']


def test_only_removes_the_variants_an_earlier_build_made_of_other_data(built, tmp_path):
    # Left there, image_zca.pkl of the old images would be trained on with the new label.pkl.
    out = tmp_path / 'dataset'
    shutil.copytree(str(built[0]), str(out))
    other = tmp_path / 'other'
    write_official_batches(str(other), seed=1)
    dataset.main(['--input', str(other), '--output', str(out), '--only', 'image_norm'])
    assert _written(out) == ['dataset_info.json', 'image_norm.pkl', 'label.pkl', 'mean.txt',
                             'preprocess_stats.npz', 'sample_norm.png']
    assert json.load(open(str(out / build.INFO_NAME)))['variants'] == ['image_norm']


def test_mean_image_subtracts_training_channel_means_from_both_splits(built):
    out, (train_x, _, test_x, _) = built
    images = pickles.load_pickle(str(out / 'image.pkl'))
    mean = train_x.reshape(-1, 3, 1024).astype(numpy.float64).mean(axis=(0, 2))
    expect_test = test_x.reshape(-1, 3, 1024) - mean[None, :, None]
    numpy.testing.assert_allclose(images['test'].reshape(-1, 3, 1024), expect_test, atol=1e-4)
    train_means = images['train'].reshape(-1, 3, 1024).mean(axis=(0, 2))
    numpy.testing.assert_allclose(train_means, 0, atol=1e-3)
    written = [float(v) for v in (out / 'mean.txt').read_text().strip('[]\n ').split()]
    numpy.testing.assert_allclose(written, mean, rtol=1e-6)


def test_norm_image_has_unit_channel_std_on_train(built):
    out, _ = built
    x = pickles.load_pickle(str(out / 'image_norm.pkl'))['train'].reshape(-1, 3, 1024)
    numpy.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=1e-4)
    numpy.testing.assert_allclose(x.std(axis=(0, 2)), 1, atol=1e-4)


def test_zca_whitens_training_data_to_identity_covariance():
    rng = numpy.random.RandomState(0)
    # Correlated data: 2000 samples of 48 dims mixed by a random matrix.
    x = (rng.randn(2000, 48) @ rng.randn(48, 48) * 30 + 100).astype(numpy.float32)
    zca = preprocess.ZCA.fit(x, eps=1e-7)
    y = zca.apply(x).astype(numpy.float64)
    numpy.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-3)
    cov = y.T @ y / len(y)
    numpy.testing.assert_allclose(cov, numpy.eye(48), atol=2e-3)
    # ZCA (unlike PCA whitening) is the symmetric solution: closest to the input.
    numpy.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-6)


def test_zca_transforms_test_data_with_training_statistics():
    rng = numpy.random.RandomState(1)
    mix = rng.randn(16, 16)
    train = (rng.randn(500, 16) @ mix).astype(numpy.float32)
    test = (rng.randn(50, 16) @ mix + 5).astype(numpy.float32)  # shifted: its own mean differs
    zca = preprocess.ZCA.fit(train, eps=0)
    expected = (test.astype(numpy.float64) - train.mean(axis=0, dtype=numpy.float64)) @ zca.matrix
    numpy.testing.assert_allclose(zca.apply(test), expected, rtol=1e-4, atol=1e-4)
    assert abs(zca.apply(test).mean()) > 0.1  # not re-centred on the test split


def test_zca_eps_damps_low_variance_directions():
    rng = numpy.random.RandomState(2)
    x = rng.randn(1000, 8) * numpy.array([100, 100, 100, 100, 100, 100, 100, 0.01])
    y_exact = preprocess.ZCA.fit(x, eps=0).apply(x).astype(numpy.float64)
    y_damped = preprocess.ZCA.fit(x, eps=1e-2).apply(x).astype(numpy.float64)
    assert y_exact[:, 7].std() == pytest.approx(1, rel=1e-2)
    assert y_damped[:, 7].std() < 0.01


def test_whitened_pickle_has_identity_covariance(built):
    # 100 samples of 3072 dims are rank deficient: only the data's own span is whitened.
    out, _ = built
    x = pickles.load_pickle(str(out / 'image_zca.pkl'))['train'].astype(numpy.float64)
    s = numpy.linalg.svd(x / numpy.sqrt(len(x)), compute_uv=False)
    nonzero = s[s > 1e-3]
    assert len(nonzero) == 99  # n - 1 after centring
    numpy.testing.assert_allclose(nonzero, 1, atol=0.02)


def test_py2_option_writes_protocol_2(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(build, 'build', lambda *a, **k: seen.update(k) or {
        'n_train': 1, 'n_test': 1, 'partial': True, 'seconds': {}, 'variants': ['image'], 'built': ['image']})
    dataset.main(['--py2'])
    assert seen['protocol'] == pickles.PY2_PROTOCOL == 2
    pickles.save_pickle({'train': numpy.zeros((2, 3072), numpy.float32)}, str(tmp_path / 'a.pkl'),
                        seen['protocol'])
    assert (tmp_path / 'a.pkl').read_bytes()[:2] == b'\x80\x02'
    assert pickles.load_pickle(str(tmp_path / 'a.pkl'))['train'].shape == (2, 3072)


def test_pickles_written_by_the_original_python2_tool_load():
    expected = numpy.load(os.path.join(DATA, 'legacy_py2_expected.npz'))
    train_x, train_y, test_x, test_y = pickles.load_dataset(
        os.path.join(DATA, 'legacy_py2_image.pkl'), os.path.join(DATA, 'legacy_py2_label.pkl'))
    assert train_x.shape == (3, 3, 32, 32) and train_x.dtype == numpy.float32
    numpy.testing.assert_array_equal(train_x.reshape(3, -1), expected['train'])
    numpy.testing.assert_array_equal(test_x.reshape(2, -1), expected['test'])
    assert train_y.tolist() == [3, 1, 4] and test_y.tolist() == [1, 5]


def test_missing_batches_folder_tells_which_command_to_run(tmp_path, capsys):
    rc = dataset.run_main(dataset.main, ['--input', str(tmp_path / 'nope'), '--output', str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'python src/download.py' in err


def test_corrupt_batch_names_the_file(official_batches, tmp_path):
    folder, _ = official_batches
    (folder / 'data_batch_3').write_bytes(b'not a pickle')
    with pytest.raises(UserError, match='data_batch_3 is corrupt'):
        archive.read_batches(str(folder))


def test_wrong_shape_batch_is_refused(official_batches):
    folder, _ = official_batches
    with open(str(folder / 'test_batch'), 'wb') as f:
        pickle.dump({b'data': numpy.zeros((4, 100), numpy.uint8), b'labels': [0] * 4}, f, 2)
    with pytest.raises(UserError, match=r'test_batch has data of shape \(4, 100\)'):
        archive.read_batches(str(folder))


def test_missing_dataset_pickle_tells_which_commands_to_run(tmp_path):
    with pytest.raises(UserError, match='python src/dataset.py'):
        pickles.load_dataset(str(tmp_path / 'image.pkl'), str(tmp_path / 'label.pkl'))


def test_corrupt_dataset_pickle_is_reported(tmp_path):
    (tmp_path / 'image.pkl').write_bytes(b'\x80\x04garbage')
    with pytest.raises(UserError, match='corrupt'):
        pickles.load_images(str(tmp_path / 'image.pkl'))


def test_image_pickle_of_wrong_width_is_refused(tmp_path):
    pickles.save_pickle({'train': numpy.zeros((2, 10), numpy.float32),
                         'test': numpy.zeros((1, 10), numpy.float32)}, str(tmp_path / 'image.pkl'))
    with pytest.raises(UserError, match=r'shape \(2, 10\)'):
        pickles.load_images(str(tmp_path / 'image.pkl'))


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    def boom(f):
        f.write(b'partial')
        raise RuntimeError('disk full')
    with pytest.raises(RuntimeError):
        pickles.atomic_write(str(tmp_path / 'x.pkl'), boom)
    assert os.listdir(str(tmp_path)) == []


def test_py2_pickles_reference_only_names_python2_numpy_has(tmp_path):
    # NumPy 2's own pickles name numpy._core, which Python 2's NumPy lacks.
    import pickletools
    path = str(tmp_path / 'a.pkl')
    data = {'train': numpy.arange(6, dtype=numpy.float32).reshape(2, 3),
            'test': numpy.arange(2, dtype=numpy.int32)}
    pickles.save_pickle(data, path, pickles.PY2_PROTOCOL)
    globals_ = {arg for op, arg, _ in pickletools.genops(open(path, 'rb').read())
                if op.name == 'GLOBAL'}
    assert globals_ <= {'numpy array', 'numpy ndarray', '_codecs encode'}
    loaded = pickles.load_pickle(path)
    numpy.testing.assert_array_equal(loaded['train'], data['train'])
    assert loaded['test'].dtype == numpy.int32 and loaded['train'].flags.writeable
