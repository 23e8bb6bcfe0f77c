"""Every code path of the fast convolution against Chainer's: batch chunking, wide-row columns.

``Convolution2DFast`` processes the batch in chunks (``_CHUNK_ELEMENTS``) and
uses wide-row im2col for stride-1 layers whose padded width is close to the
output width (``_WIDE_EXTRA``); stride-1 float32 layers use the compiled
direct kernel instead where it is available. Here the knobs are forced on and off so
that each combination runs on the small shapes of ``CONV_CASES`` (and a few
more): float32 outputs and gradients equal to Chainer's within tolerance,
``gradient_check`` in float64, and the columns kept from forward (one chunk)
against rebuilt in backward (several chunks) giving the same gradients.
"""
import numpy
import pytest

import chainer
import chainer.functions as F

import chainer_cifar.functions as CF
from chainer_cifar.functions import _native, convolution as conv
from helpers import (CONV_CASES, assert_convolution_matches_chainer, check_convolution_backward,
                     check_convolution_double_backward, conv_args, grads, merged_reference, native_available)

EXTRA_CASES = [
    # (N, C, H, W, O, k, stride, pad, bias): ResNet-like 3x3 pad 1 and the CNN's 5x5 pad 2
    (5, 3, 8, 8, 4, 3, 1, 1, False),
    (3, 2, 12, 12, 3, 5, 1, 2, True),
    (4, 2, 6, 10, 3, (3, 1), 1, (1, 0), True),
    (3, 2, 7, 7, 2, 3, 1, 0, True),
]
CASES = CONV_CASES + EXTRA_CASES

MODES = {
    # name: (_CHUNK_ELEMENTS, _WIDE_EXTRA, the compiled direct kernel for stride 1 in float32)
    'one_chunk_narrow': (1 << 30, 0.0, False),
    'one_chunk_wide': (1 << 30, 100.0, False),
    'per_image_narrow': (1, 0.0, False),
    'per_image_wide': (1, 100.0, False),
    'chunks_of_2_wide': (None, 100.0, False),
    'direct_one_chunk': (1 << 30, 100.0, True),
    'direct_per_image': (1, 0.0, True),
}


@pytest.fixture(params=sorted(MODES))
def mode(request, monkeypatch):
    chunk, ratio, direct = MODES[request.param]
    if direct and not native_available():
        pytest.skip('the direct convolution kernel cannot be built here: ' + _native.status())
    if chunk is None:
        chunk = 2  # images per chunk, set per case below through _chunk_for
    monkeypatch.setattr(conv, '_CHUNK_ELEMENTS', chunk)
    monkeypatch.setattr(conv, '_WIDE_EXTRA', ratio)
    with chainer.using_config('use_native_kernels', direct):
        yield request.param


def _set_two_images_per_chunk(monkeypatch, case):
    n, c, h, w, o, k, s, p, _ = case
    kh, kw = k if isinstance(k, tuple) else (k, k)
    ph, pw = p if isinstance(p, tuple) else (p, p)
    sy, sx = s if isinstance(s, tuple) else (s, s)
    ho, wo = conv.out_size(h, kh, sy, ph), conv.out_size(w, kw, sx, pw)
    per_image = c * kh * kw * ho * max(wo, w + pw)
    monkeypatch.setattr(conv, '_CHUNK_ELEMENTS', 2 * per_image)


@pytest.mark.parametrize('case', CASES)
def test_float32_matches_chainer_in_every_mode(case, mode, threads, monkeypatch):
    if mode == 'chunks_of_2_wide':
        _set_two_images_per_chunk(monkeypatch, case)
    assert_convolution_matches_chainer(case)


@pytest.mark.parametrize('case', CASES)
def test_gradient_check_float64_in_every_mode(case, mode, monkeypatch):
    if mode == 'chunks_of_2_wide':
        _set_two_images_per_chunk(monkeypatch, case)
    check_convolution_backward(case)


@pytest.mark.parametrize('case', [CONV_CASES[0], EXTRA_CASES[0], EXTRA_CASES[1]])
def test_double_backward_float64_wide_and_chunked(case, monkeypatch):
    monkeypatch.setattr(conv, '_CHUNK_ELEMENTS', 1)
    monkeypatch.setattr(conv, '_WIDE_EXTRA', 100.0)
    check_convolution_double_backward(case)


@pytest.mark.parametrize('wide', [False, True])
def test_kept_and_rebuilt_columns_give_identical_gradients(wide, monkeypatch):
    monkeypatch.setattr(conv, '_WIDE_EXTRA', 100.0 if wide else 0.0)
    monkeypatch.setattr(chainer.config, 'use_native_kernels', False)  # the im2col forward keeps columns
    rng = numpy.random.RandomState(3)
    x, W, b, s, p = conv_args(EXTRA_CASES[0], numpy.float32, rng)
    gy = rng.standard_normal((5, 4, 8, 8)).astype(numpy.float32)
    f = lambda x, W, b: CF.convolution_2d(x, W, b, s, p)  # noqa: E731
    monkeypatch.setattr(conv, '_CHUNK_ELEMENTS', 1 << 30)
    y1, g1 = grads(f, (x, W, b), gy)  # one chunk: columns kept from forward
    with chainer.using_config('fast_conv_recompute', True):
        y2, g2 = grads(f, (x, W, b), gy)  # rebuilt in backward
    numpy.testing.assert_array_equal(y1, y2)
    for a, r in zip(g1, g2):
        if r is not None:
            numpy.testing.assert_array_equal(a, r)


def test_wide_rows_are_used_for_resnet_and_cnn_layers_only_where_cheap():
    # rows of W + pw elements (the padding between two rows is shared)
    assert conv._use_wide(1, 1, 32, 33) and conv._use_wide(1, 1, 16, 17)
    assert conv._use_wide(1, 1, 8, 9)            # ResNet's last stage: 12.5 % more GEMM columns
    assert conv._use_wide(1, 1, 32, 34)          # the CNN's 5x5 pad 2 at 32x32
    assert not conv._use_wide(1, 1, 16, 18)      # ... and at 16x16: measured slower wide
    assert not conv._use_wide(1, 1, 4, 6)        # 50 % more GEMM work: narrow columns
    assert not conv._use_wide(1, 1, 6, 5)        # pad >= kernel: more outputs than a row holds
    assert not conv._use_wide(2, 2, 16, 17)      # strided: narrow columns


def test_chunks_cover_the_batch_in_order():
    assert conv._chunks(10, 1 << 30) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7),
                                         (7, 8), (8, 9), (9, 10)]
    assert conv._chunks(10, 1) == [(0, 10)]
    size = conv._CHUNK_ELEMENTS // 1000
    chunks = conv._chunks(128, 1000)
    assert chunks[0] == (0, min(128, size)) and chunks[-1][1] == 128


@pytest.mark.parametrize('merge', ['plain', 'relu', 'residual', 'residual_relu'])
@pytest.mark.parametrize('case', CASES)
def test_inference_bias_residual_and_relu_in_every_mode(case, merge, mode, threads, monkeypatch):
    # Without a graph the bias rides in the GEMM (a row of ones under the
    # columns) and the residual and ReLU are applied as each chunk is written.
    if mode == 'chunks_of_2_wide':
        _set_two_images_per_chunk(monkeypatch, case)
    rng = numpy.random.RandomState(5)
    x, W, b, s, p = conv_args(case, numpy.float32, rng)
    ref, residual, relu = merged_reference(F.convolution_2d(x, W, b, s, p).array, merge, rng)
    args = (x, W) if b is None else (x, W, b)
    with chainer.no_backprop_mode():
        y, = conv.Convolution2DFast(s, p, relu=relu, residual=residual).apply(args)
    assert y.dtype == numpy.float32 and y.array.flags.c_contiguous
    numpy.testing.assert_allclose(y.array, ref, rtol=1e-4, atol=1e-4)


def test_relu_and_residual_need_inference_and_a_matching_residual():
    rng = numpy.random.RandomState(0)
    x, W, b, s, p = conv_args(EXTRA_CASES[0], numpy.float32, rng)
    with pytest.raises(NotImplementedError, match='inference'):
        conv.Convolution2DFast(s, p, relu=True).apply((x, W))
    with chainer.no_backprop_mode(), pytest.raises(ValueError, match='residual'):
        conv.Convolution2DFast(s, p, residual=numpy.zeros((1, 1), numpy.float32)).apply((x, W))


@pytest.mark.parametrize('case', CASES)
def test_input_used_twice_accumulates_both_gradients_inside_the_convolution(case, mode, monkeypatch):
    # x feeds the convolution and a second path (as a ResNet block's input
    # feeds its shortcut): backward_accumulate adds the other path's gradient
    # while writing gx, and must give what Chainer's separate addition gives.
    if mode == 'chunks_of_2_wide':
        _set_two_images_per_chunk(monkeypatch, case)
    rng = numpy.random.RandomState(7)
    x, W, b, s, p = conv_args(case, numpy.float32, rng)
    gy = rng.standard_normal(F.convolution_2d(x, W, b, s, p).shape).astype(numpy.float32)
    twice = rng.standard_normal(x.shape).astype(numpy.float32)

    def grads(conv2d, other_path_first):
        xv, Wv = chainer.Variable(x), chainer.Variable(W)
        y = conv2d(xv, Wv, b, s, p)
        terms = [F.sum(y * gy), F.sum(xv * twice)]  # x's gradient: conv path + twice
        loss = terms[1] + terms[0] if other_path_first else terms[0] + terms[1]
        hook = _Applied()
        with hook:
            loss.backward()
        return (xv.grad, Wv.grad), hook.names
    stock, _ = grads(F.convolution_2d, False)
    for other_path_first in (False, True):  # Chainer's backward visits the two paths in this order
        fast, applied = grads(CF.convolution_2d, other_path_first)
        for a, r in zip(fast, stock):
            numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)
        if other_path_first:
            assert 'Add' not in applied  # added inside the convolution's backward


class _Applied(chainer.FunctionHook):
    def __init__(self):
        self.names = []

    def forward_preprocess(self, function, in_data):
        self.names.append(type(function).__name__)
