"""analyze.py: predictions, confusion matrix, mistakes, saliency and curves of a saved model."""
import csv
import json

import chainer
import chainer.functions as F
import chainer.links as L
import numpy
import pytest
from PIL import Image

from chainer_cifar.results import analysis
from chainer_cifar.data import pickles
from helpers import TinyAnalysisNet

import analyze  # src/analyze.py


def test_confusion_matrix_sums_to_the_number_of_test_images(trained, tmp_path):
    model_path, model, images, labels = trained
    out = tmp_path / 'out'
    analyze.main(['confusion', str(model_path), '--out', str(out)])
    rows = list(csv.reader(open(str(out / 'confusion.csv'))))
    matrix = numpy.array([[int(v) for v in r[1:11]] for r in rows[1:]])
    assert matrix.shape == (10, 10) and matrix.sum() == len(labels['test'])
    assert (matrix.sum(axis=1) == numpy.bincount(labels['test'], minlength=10)).all()
    errors = [float(r[11]) for r in rows[1:]]
    assert all(0 <= e <= 1 for e in errors)
    assert Image.open(str(out / 'confusion.png')).size[0] > 300


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    m = analysis.confusion_matrix(numpy.array([0, 0, 1, 2]), numpy.array([0, 1, 1, 1]))
    assert m[0, 0] == 1 and m[0, 1] == 1 and m[1, 1] == 1 and m[2, 1] == 1 and m.sum() == 4


def test_mistakes_are_the_most_confident_wrong_predictions():
    probs = numpy.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    labels = numpy.array([0, 0, 0, 1])  # rows 1, 2, 3 are wrong, with confidence .6, .8, .7
    assert analysis.most_confident_mistakes(probs, labels, k=2).tolist() == [2, 3]


def test_mistakes_command_writes_a_grid(trained, tmp_path):
    model_path = trained[0]
    out = tmp_path / 'out'
    analyze.main(['mistakes', str(model_path), '--out', str(out), '--count', '6'])
    im = Image.open(str(out / 'mistakes.png'))
    assert im.size[0] > 200 and im.size[1] > 200


def test_saliency_matches_finite_differences():
    with chainer.using_config('dtype', numpy.float64):
        model = TinyAnalysisNet()
    rng = numpy.random.RandomState(3)
    x = rng.randn(2, 3, 32, 32)
    maps, targets = analysis.saliency(model, x)
    assert maps.shape == (2, 32, 32) and (maps >= 0).all()
    eps = 1e-6
    for n in range(2):
        for (c, i, j) in [(0, 5, 7), (2, 16, 16), (1, 31, 0)]:
            def score(delta):
                xx = x.copy()
                xx[n, c, i, j] += delta
                with chainer.using_config('train', False):
                    return model(xx).array[n, targets[n]]
            numeric = (score(eps) - score(-eps)) / (2 * eps)
            assert maps[n, i, j] >= abs(numeric) - 1e-6  # max over channels
        v = chainer.Variable(x[n:n + 1].copy())
        F.sum(model(v)[:, targets[n]]).backward()
        numpy.testing.assert_allclose(maps[n], numpy.abs(v.grad[0]).max(axis=0), rtol=1e-10)


def test_saliency_command_on_test_indices_and_a_class(trained, tmp_path):
    model_path = trained[0]
    analyze.main(['saliency', str(model_path), '--index', '0,3', '--out', str(tmp_path / 'a')])
    analyze.main(['saliency', str(model_path), '--class', 'cat', '--count', '2', '--out', str(tmp_path / 'b')])
    assert (tmp_path / 'a' / 'saliency.png').exists() and (tmp_path / 'b' / 'saliency.png').exists()


def test_predict_prints_top3_for_images_of_any_size(trained, tmp_path, capsys):
    model_path = trained[0]
    paths = []
    for k, size in enumerate([(32, 32), (100, 60), (7, 300)]):
        p = tmp_path / 'img{}.{}'.format(k, 'png' if k % 2 == 0 else 'jpg')
        Image.fromarray(numpy.random.RandomState(k).randint(0, 255, size[::-1] + (3,)).astype(numpy.uint8)).save(str(p))
        paths.append(str(p))
    analyze.main(['predict', str(model_path)] + paths + ['--out', str(tmp_path / 'o')])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        probs = [float(part.rsplit(' ', 1)[1].rstrip('%')) for part in line.split(': ', 1)[1].split(', ')]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 100.01


def test_read_image_crops_the_centre_square_to_32x32(tmp_path):
    a = numpy.zeros((40, 80, 3), numpy.uint8)
    a[:, 20:60] = 200  # the centre square is uniformly bright
    Image.fromarray(a).save(str(tmp_path / 'x.png'))
    row = analysis.read_image(str(tmp_path / 'x.png'))
    assert row.shape == (3072,) and row.min() >= 190


@pytest.mark.parametrize('mode', ['I;16', 'I;16B'])
def test_a_16_bit_grey_image_reads_as_its_top_byte_not_clipped_to_white(tmp_path, mode):
    grey = numpy.random.RandomState(0).randint(0, 256, (32, 32)).astype(numpy.uint8)
    Image.fromarray(grey).save(str(tmp_path / 'eight.png'))
    values = (grey.astype(numpy.uint16) * 256 + 255).astype('<u2' if mode == 'I;16' else '>u2')
    Image.frombytes(mode, (32, 32), values.tobytes()).save(str(tmp_path / 'sixteen.tiff'))
    sixteen = analysis.read_image(str(tmp_path / 'sixteen.tiff'))
    assert numpy.array_equal(sixteen, analysis.read_image(str(tmp_path / 'eight.png')))


@pytest.mark.parametrize('mode, words', [('F', 'float'), ('I', '32-bit integer')])
def test_an_image_of_unknown_range_is_refused_in_one_line(tmp_path, mode, words):
    Image.new(mode, (32, 32)).save(str(tmp_path / 'x.tiff'))
    with pytest.raises(analysis.UserError, match=r'x.tiff has {} pixels \(PIL mode {}\), whose range is unknown; '
                                                 r'save it with 8 bits per channel'.format(words, mode)):
        analysis.read_image(str(tmp_path / 'x.tiff'))


def test_preprocessing_of_new_images_matches_dataset_statistics(tmp_path):
    rng = numpy.random.RandomState(1)
    stats = {'mean': numpy.array([100.0, 110.0, 120.0]), 'std': numpy.array([50.0, 60.0, 70.0]),
             'zca_mean': rng.rand(3072), 'zca_matrix': numpy.eye(3072) * 2,
             'norm_zca_mean': numpy.zeros(3072), 'norm_zca_matrix': numpy.eye(3072)}
    numpy.savez(str(tmp_path / 's.npz'), **stats)
    rows = rng.randint(0, 256, (2, 3072)).astype(numpy.uint8)
    planes = rows.reshape(2, 3, 1024).astype(numpy.float64)
    mean = analysis.Preprocessor(str(tmp_path / 's.npz'), 'image')(rows).reshape(2, 3, 1024)
    numpy.testing.assert_allclose(mean, planes - stats['mean'][None, :, None], rtol=1e-6)
    norm = analysis.Preprocessor(str(tmp_path / 's.npz'), 'image_norm')(rows).reshape(2, 3, 1024)
    numpy.testing.assert_allclose(norm, (planes - stats['mean'][None, :, None]) / stats['std'][None, :, None],
                                  rtol=1e-5)
    zca = analysis.Preprocessor(str(tmp_path / 's.npz'), 'image_zca')(rows).reshape(2, -1)
    numpy.testing.assert_allclose(zca, (rows - stats['zca_mean']) * 2, rtol=1e-5)


@pytest.mark.parametrize('argv,message', [
    (['predict', '{model}', '{tmp}/missing.png'], 'not found'),
    (['predict', '{model}', '{tmp}/notimage.png'], 'not an image'),
    (['predict', '{model}'], 'needs image files or --index'),
    (['predict', '{model}', '--index', '38-40'], 'out of range'),
    (['predict', '{model}', '--index', 'first'], 'ranges like 0-9'),
    (['predict', '{model}', '--index', '5-2'], 'names no image'),
    (['saliency', '{model}', '--index', '0,x'], 'ranges like 0-9'),
    (['confusion', '{tmp}/nope.model'], 'not found'),
    (['confusion', '{model}', '-m', 'tiny_analysis_test', '--res_depth', '3', '-d', '{tmp}/x/image.pkl'],
     'not found'),
])
def test_bad_input_gives_one_clear_line(trained, tmp_path, capsys, argv, message):
    (tmp_path / 'notimage.png').write_text('hello')
    argv = [a.format(model=trained[0], tmp=tmp_path) for a in argv] + ['--out', str(tmp_path / 'o')]
    rc = analyze.run_main(analyze.main, argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err, err


def test_model_file_that_does_not_fit_the_options_is_refused(trained, tmp_path):
    class Other(chainer.Chain):
        def __init__(self):
            super().__init__()
            with self.init_scope():
                self.conv = L.Convolution2D(3, 8, 3)
    path = tmp_path / 'other.model'
    chainer.serializers.save_npz(str(path), Other())
    with pytest.raises(analysis.UserError, match='does not fit model tiny_analysis_test'):
        analysis.load_model(str(path), 'tiny_analysis_test')


def test_curves_overlay_several_logs(tmp_path):
    header = 'epoch,train_loss,train_error,valid_loss,valid_error,test_loss,test_error,lr,elapsed\n'
    for name in ('a', 'b'):
        (tmp_path / (name + '_log.csv')).write_text(header + '1,2,0.8,2,0.8,2,0.8,0.1,1\n2,1,0.5,1,0.5,1,0.5,0.1,2\n')
    analyze.main(['curves', str(tmp_path / 'a_log.csv'), str(tmp_path / 'b_log.csv'), '--out', str(tmp_path)])
    assert Image.open(str(tmp_path / 'curves.png')).size[0] >= 1000


def test_predicted_probabilities_have_the_right_shape_and_range(trained):
    _, model, images, _ = trained
    probs = analysis.predict_batches(model, images['test'].reshape(-1, 3, 32, 32), batch_size=16)
    assert probs.shape == (len(images['test']), 10) and probs.dtype == numpy.float32
    assert (probs >= 0).all() and (probs <= 1).all()
    numpy.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    top = analysis.top_k(probs)
    assert all(len(t) == 3 and t[0][1] >= t[1][1] >= t[2][1] for t in top)
    assert all(c in analysis.CLASSES for t in top for c, _ in t)


def test_saliency_equals_central_differences_in_every_channel():
    """The map is max over channels of |d logit / d x|: check it against central differences of all 3 channels."""
    with chainer.using_config('dtype', numpy.float64):
        model = TinyAnalysisNet()
    x = numpy.random.RandomState(5).randn(1, 3, 32, 32)
    target = numpy.array([7], numpy.int32)  # an explicit class, not the predicted one
    maps, targets = analysis.saliency(model, x, target)
    assert targets.tolist() == [7] and maps.shape == (1, 32, 32)
    eps = 1e-5
    for (i, j) in [(0, 0), (9, 20), (31, 31), (16, 3)]:
        numeric = []
        for c in range(3):
            hi, lo = x.copy(), x.copy()
            hi[0, c, i, j] += eps
            lo[0, c, i, j] -= eps
            with chainer.using_config('train', False):
                numeric.append((model(hi).array[0, 7] - model(lo).array[0, 7]) / (2 * eps))
        assert maps[0, i, j] == pytest.approx(max(abs(v) for v in numeric), rel=1e-6, abs=1e-9)


def test_dataset_of_the_wrong_image_size_gives_one_clear_line(trained, tmp_path, capsys):
    small = tmp_path / 'small'
    small.mkdir()
    pickles.save_pickle({'train': numpy.zeros((4, 768), numpy.float32), 'test': numpy.zeros((4, 768), numpy.float32)},
                        str(small / 'image.pkl'))
    pickles.save_pickle({'train': numpy.zeros(4, numpy.int32), 'test': numpy.zeros(4, numpy.int32)},
                        str(small / 'label.pkl'))
    rc = analyze.run_main(analyze.main, ['confusion', str(trained[0]), '-d', str(small / 'image.pkl'),
                                         '--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith('error:'), err


@pytest.mark.parametrize('flags', [['-m', 'cnn'], ['-m', 'resnet20']])
def test_model_that_does_not_match_the_options_gives_one_clear_line(trained, tmp_path, capsys, flags):
    rc = analyze.run_main(analyze.main, ['confusion', str(trained[0])] + flags + ['--out', str(tmp_path / 'o')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'does not fit model ' + flags[1] in err, err


def write_log(prefix, rows, meta):
    """A <prefix>_log.csv with ``rows`` of (valid_error, test_error) and its _run.json."""
    header = 'epoch,train_loss,train_error,valid_loss,valid_error,test_loss,test_error,lr,elapsed\n'
    lines = ['{},2,0.8,2,{},2,{},0.001,{}\n'.format(e + 1, v, t, 10 * (e + 1)) for e, (v, t) in enumerate(rows)]
    (prefix.parent / (prefix.name + '_log.csv')).write_text(header + ''.join(lines))
    (prefix.parent / (prefix.name + '_run.json')).write_text(json.dumps(meta))


def test_predict_on_test_images_prints_the_true_class_beside_the_prediction(trained, tmp_path, capsys):
    model_path, model, images, labels = trained
    analyze.main(['predict', str(model_path), '--index', '0-2,7', '--out', str(tmp_path / 'o')])
    lines = capsys.readouterr().out.strip().splitlines()
    idx = [0, 1, 2, 7]
    probs = analysis.predict_batches(model, images['test'].reshape(-1, 3, 32, 32)[idx])
    assert len(lines) == len(idx) + 1  # no log beside the model: no note
    for line, i, p in zip(lines, idx, probs):
        true, predicted = analysis.CLASSES[labels['test'][i]], analysis.CLASSES[p.argmax()]
        assert line.startswith('test image {} (true: {}): {} '.format(i, true, predicted)), line
        assert line.endswith('right' if true == predicted else 'WRONG')
    right = int((probs.argmax(axis=1) == labels['test'][idx]).sum())
    assert lines[-1] == '{} of 4 right'.format(right)


def test_predict_notes_the_models_test_error_from_its_log(trained, tmp_path, capsys):
    model_path = trained[0]
    meta = json.loads((model_path.parent / 'tiny_run.json').read_text())
    write_log(model_path.parent / 'tiny', [(0.8, 0.75), (0.7, 0.685)], dict(meta, n_train=3600, n_valid=400))
    image = tmp_path / 'cat.png'
    Image.fromarray(numpy.zeros((32, 32, 3), numpy.uint8)).save(str(image))
    analyze.main(['predict', str(model_path), str(image), '--out', str(tmp_path / 'o')])
    note = capsys.readouterr().out.strip().splitlines()[-1]
    assert note.startswith('note: this model (2 epochs on 4,000 images) has 68.5% test error'), note
    assert 'right about 32% of the time (chance: 10%)' in note


def test_frame_sets_the_test_error_beside_chance_and_the_published_recipe(tmp_path, capsys):
    from chainer_cifar.results.published import published_for
    meta = {'model': 'cnn', 'n_train': 3600, 'n_valid': 400, 'n_test': 1017,
            'args': {'model': 'cnn', 'dataset': 'dataset/image_norm.pkl', 'subset': 4000},
            'dataset': {'n_train': 8336, 'n_test': 1017, 'partial': True}}
    # The saved model is the best-validation epoch's (2), not the last one's.
    write_log(tmp_path / 'quickstart', [(0.8, 0.75), (0.7, 0.685), (0.72, 0.69)], meta)
    analyze.main(['frame', str(tmp_path / 'quickstart_log.csv')])
    text = capsys.readouterr().out
    assert '3 epochs on 4,000 training images (3,600 to train, 400 to validate) of the 8,336 in a PARTIAL' in text
    assert 'test error 68.5% on 1,017 test images (the saved model, epoch 2); chance is 90%' in text
    published = published_for('article-cnn')[0]
    assert 'article-cnn: 300 epochs on all 50,000 training images) reports {:.2f}%'.format(published.error) in text
    assert 'python src/compare.py list' in text


def test_frame_of_a_model_without_a_published_recipe_leaves_that_line_out(tmp_path):
    write_log(tmp_path / 'tiny', [(0.8, 0.75)], {'model': 'tiny_analysis_test', 'n_train': 90, 'n_valid': 10})
    lines = analysis.frame(str(tmp_path / 'tiny_log.csv'))
    assert not [line for line in lines if 'published recipe' in line]
    assert lines[0] == 'tiny: model tiny_analysis_test, 1 epoch on 100 training images (90 to train, 10 to validate)'


def test_published_recipe_prefers_a_preset_on_the_same_data_file():
    assert analysis.published_recipe('cnn', 'dataset/image_norm_zca.pkl')[0].name == 'article-cnn-norm-zca'
    assert analysis.published_recipe('cnn', '/tmp/x/image_norm.pkl')[0].name == 'article-cnn'
    assert analysis.published_recipe('cnn')[0].name == 'article-cnn'
    assert analysis.published_recipe('tiny_analysis_test') is None
