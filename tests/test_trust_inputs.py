"""Untrusted model files, images and flags of analyze.py / evaluate.py / dataset.py / download.py."""
import ast
import errno
import glob
import os
import struct
import zlib

import chainer
import numpy
import pytest
from PIL import ImageFile

from chainer_cifar.results import analysis
from helpers import one_error_line, payloads

import analyze  # src/analyze.py
import dataset  # src/dataset.py
import download  # src/download.py
import evaluate as evaluate_cli  # src/evaluate.py

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src')


def run(main, argv):
    return analyze.run_main(main, [str(a) for a in argv])


def evaluate_argv(model_path, tmp_path):
    data = tmp_path / 'dataset'
    return [model_path, '-d', data / 'image.pkl', '-l', data / 'label.pkl']


# ---------------------------------------------------------------- model files

def test_a_model_file_holding_a_pickle_runs_nothing(trained, tmp_path, capsys):
    model_path = trained[0]
    marker = tmp_path / 'ran'
    with numpy.load(str(model_path)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays['conv/b'] = numpy.array([payloads(marker)['os.system']], dtype=object)
    with open(str(model_path), 'wb') as f:
        numpy.savez(f, **arrays)  # numpy pickles the object array into the npz
    for main, argv in ((analyze.main, ['confusion', model_path, '--out', tmp_path / 'o']),
                       (evaluate_cli.main, evaluate_argv(model_path, tmp_path))):
        assert run(main, argv) == 2
        line = one_error_line(capsys)
        assert 'holds a pickled Python object, which a model file of train.py never does' in line
        assert not marker.exists()


@pytest.mark.parametrize('damage', ['truncated_half', 'truncated_100', 'empty', 'flipped_middle', 'flipped_first'])
def test_a_damaged_model_file_is_one_line_naming_it(trained, tmp_path, capsys, damage):
    model_path = str(trained[0])
    data = bytearray(open(model_path, 'rb').read())
    if damage.startswith('truncated'):
        data = data[:len(data) // 2] if damage == 'truncated_half' else data[:100]
    elif damage == 'empty':
        data = b''
    else:
        data[len(data) // 2 if damage == 'flipped_middle' else 0] ^= 0x01
    with open(model_path, 'wb') as f:
        f.write(data)
    for main, argv in ((analyze.main, ['mistakes', model_path, '--out', tmp_path / 'o']),
                       (evaluate_cli.main, evaluate_argv(model_path, tmp_path))):
        assert run(main, argv) == 2
        line = one_error_line(capsys)
        assert '{} is damaged or not a model file'.format(model_path) in line, line
        assert line.endswith('retrain it or use another file')
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('text', ['{"args": ', '[1, 2]', '{"args": {"model": "cnn", "res_depth": "x"}}'])
def test_a_damaged_run_record_is_one_line_naming_it(trained, tmp_path, capsys, text):
    (tmp_path / 'tiny_run.json').write_text(text)
    assert run(analyze.main, ['confusion', trained[0], '--out', tmp_path / 'o']) == 2
    assert str(tmp_path / 'tiny_run.json') in one_error_line(capsys)


def test_training_code_never_imports_results():
    # docs/architecture.md: results reads models and logs; training must not depend on it.
    for path in glob.glob(os.path.join(SRC, 'chainer_cifar', 'training', '*.py')):
        for node in ast.walk(ast.parse(open(path).read())):
            names = [node.module or ''] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith('chainer_cifar.results') for n in names), path


def test_load_model_reads_files_saved_with_the_classifier_wrapper(trained, tmp_path):
    model_path, model, _, _ = trained
    wrapped = chainer.Chain()
    with wrapped.init_scope():
        wrapped.predictor = model
    chainer.serializers.save_npz(str(model_path), wrapped)
    loaded = analysis.load_model(str(model_path))
    numpy.testing.assert_array_equal(loaded.fc.W.array, model.fc.W.array)


# ---------------------------------------------------------------- images

def png_header(width, height):
    """A PNG that declares its size and has no pixel data: what PIL reads before decoding."""
    def chunk(kind, body):
        return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IEND', b''))


def test_an_image_over_50_megapixels_is_refused_before_it_is_decoded(tmp_path, monkeypatch):
    path = tmp_path / 'huge.png'
    path.write_bytes(png_header(8000, 8000))  # 64 MP: 192 MB as RGB

    def no_decoding(self):
        raise AssertionError('the pixels were decoded')
    monkeypatch.setattr(ImageFile.ImageFile, 'load', no_decoding)
    with pytest.raises(analysis.UserError, match=r'huge.png is too large \(8000x8000\); images over 50 '
                                                 r'megapixels are refused'):
        analysis.read_image(str(path))


@pytest.mark.parametrize('size', [(12000, 12000), (20000, 20000)], ids=['pil_warns', 'pil_raises'])
def test_a_decompression_bomb_is_one_line(trained, tmp_path, capsys, size):
    # PIL warns above 89 MP (a second stderr line) and raises its own error above 179 MP.
    path = tmp_path / 'bomb.png'
    path.write_bytes(png_header(*size))
    assert run(analyze.main, ['predict', trained[0], path]) == 2
    assert 'bomb.png is too large' in one_error_line(capsys)


# ---------------------------------------------------------------- flags

@pytest.mark.parametrize('argv, message', [
    (['mistakes', '{model}', '--count', '-5'], 'argument --count: must be 1-200, got -5'),
    (['mistakes', '{model}', '--count', '0'], 'must be 1-200, got 0'),
    (['mistakes', '{model}', '--count', '100000'], 'must be 1-200, got 100000'),
    (['mistakes', '{model}', '--count', 'many'], "expected a whole number, got 'many'"),
    (['saliency', '{model}', '--count', '-1'], 'must be 1-200'),
    (['saliency', '{model}', '--index', ','.join(['0'] * 201)], '--index names 201 images; give at most 200'),
    (['confusion', '{model}', '--res_depth', '0'], 'argument --res_depth: must be positive, got 0'),
    (['confusion', '{model}', '--res_width', '-2'], 'must be positive, got -2'),
], ids=['count_negative', 'count_zero', 'count_huge', 'count_word', 'saliency_count', 'index_many',
        'res_depth', 'res_width'])
def test_analyze_flags_out_of_range_are_one_line_and_write_nothing(trained, tmp_path, capsys, argv, message):
    out = tmp_path / 'o'
    argv = [a.format(model=trained[0]) for a in argv] + ['--out', str(out)]
    assert run(analyze.main, argv) == 2
    assert message in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize('extra, message', [
    (['--subset', '-5'], '--subset must be positive, got -5'),
    (['-b', '0'], '--batch_size must be positive, got 0'),
    (['--res_depth', '-1'], '--res_depth must be positive, got -1'),
])
def test_evaluate_flags_out_of_range_are_one_line(trained, tmp_path, capsys, extra, message):
    assert run(evaluate_cli.main, evaluate_argv(trained[0], tmp_path) + extra) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize('value', ['nan', 'inf', '-1', 'x'])
def test_dataset_zca_eps_must_be_a_finite_number_at_least_0(tmp_path, capsys, value):
    assert run(dataset.main, ['--zca_eps', value, '--output', tmp_path / 'out']) == 2
    assert '--zca_eps' in one_error_line(capsys)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('md5', ['xyz', 'c1366a7aca9f64f5a55aeab36eb1bc9', 'nan'])
def test_download_md5_must_be_32_hex_digits(tmp_path, capsys, md5):
    assert run(download.main, ['--archive', tmp_path / 'a.tar.gz', '--md5', md5, '--out', tmp_path / 'out']) == 2
    assert 'is not an MD5 sum (32 hexadecimal digits)' in one_error_line(capsys)


# ---------------------------------------------------------------- writes

def test_a_full_disk_while_analyze_writes_is_one_line_and_leaves_nothing(trained, tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fsync', full)
    out = tmp_path / 'o'
    assert run(analyze.main, ['confusion', trained[0], '--out', out]) == 2
    assert one_error_line(capsys) == ('error: cannot write {}: No space left on device; free some space and run '
                                      'again'.format(out / 'confusion.csv'))
    assert os.listdir(str(out)) == []
