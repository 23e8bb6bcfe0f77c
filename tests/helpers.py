"""What several test modules share (no tests here): kernels, devices, error lines, tiny models and data.

Importing it registers the tiny models (once per process); they have
BatchNorm and dropout so that train/test mode and the saved random state matter.
"""
import contextlib
import csv
import json
import os
import subprocess
import sys

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as L
from chainer import gradient_check

import chainer_cifar.functions as CF
from chainer_cifar.data.pickles import save_pickle
from chainer_cifar.functions import _native
from chainer_cifar.models import registry


# ---------------------------------------------------------------- where the suite runs

def native_available():
    """Whether the kernel runs here; a failure instead of False when CI requires it."""
    ok = _native.library() is not None
    if not ok and os.environ.get('CHAINER_CIFAR_REQUIRE_NATIVE') == '1':
        pytest.fail('CHAINER_CIFAR_REQUIRE_NATIVE=1 but ' + _native.status())
    return ok


def gpu_is_usable(gpu=0):
    """Whether ``-g gpu`` would run here: the tests of its one-line errors skip only then."""
    from chainer_cifar.errors import UserError
    from chainer_cifar.training import get_device
    try:
        get_device(gpu)
    except UserError:
        return False
    return True


def one_error_line(capsys):
    """The one ``error:`` line a front end printed on stderr (and nothing else)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: '), err
    return err[0]


# ---------------------------------------------------------------- crafted pickles

class Reduced(object):
    """Pickles as the given ``__reduce__`` tuple: unpickling calls ``function(*args)``, as a crafted file does."""

    def __init__(self, *reduce):
        self.reduce = reduce

    def __reduce__(self):
        return self.reduce


def payloads(marker):
    """Ways a pickle can run code; each would create ``marker``."""
    return {
        'os.system': Reduced(os.system, ('touch {}'.format(marker),)),
        'builtins.exec': Reduced(exec, ('open({!r}, "w").close()'.format(str(marker)),)),
        'subprocess.call': Reduced(subprocess.call, (['touch', str(marker)],)),
    }


# ---------------------------------------------------------------- tiny models and data for training

TINY = 'tiny_test_cnn'
TINY_NAN = 'tiny_test_nan'
TINY_NAN_AT_7 = 'tiny_test_nan_at_7'


class TinyCNN(chainer.Chain):
    def __init__(self, nan_after=None):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, stride=2, pad=1)
            self.bn = L.BatchNormalization(4)
            self.fc = L.Linear(4 * 16 * 16, 10)
        self.nan_after = nan_after
        self.calls = 0

    def forward(self, x):
        y = self.fc(F.dropout(F.relu(self.bn(self.conv(x))), 0.3))
        if self.nan_after is not None and chainer.config.train:
            self.calls += 1
            if self.calls > self.nan_after:
                y = y * float('nan')
        return y


@registry.register_model(TINY, source='tests')
def tiny_test_cnn():
    """One conv + BN + dropout + linear: for the training tests."""
    return TinyCNN()


@registry.register_model(TINY_NAN, source='tests')
def tiny_test_nan():
    """TinyCNN whose output becomes NaN after 10 training batches."""
    return TinyCNN(nan_after=10)


@registry.register_model(TINY_NAN_AT_7, source='tests')
def tiny_test_nan_at_7():
    """TinyCNN whose output becomes NaN from the 7th training batch (the last of 54 images by 8)."""
    return TinyCNN(nan_after=6)


def write_pickles(folder, n_train=60, n_test=20, seed=0, info=None):
    """image.pkl / label.pkl of random data; returns (image path, label path)."""
    rng = numpy.random.RandomState(seed)
    os.makedirs(str(folder), exist_ok=True)
    image, label = os.path.join(str(folder), 'image.pkl'), os.path.join(str(folder), 'label.pkl')
    save_pickle({'train': rng.randn(n_train, 3072).astype(numpy.float32),
                 'test': rng.randn(n_test, 3072).astype(numpy.float32)}, image)
    save_pickle({'train': rng.randint(0, 10, n_train).astype(numpy.int32),
                 'test': rng.randint(0, 10, n_test).astype(numpy.int32)}, label)
    if info is not None:
        with open(os.path.join(str(folder), 'dataset_info.json'), 'w') as f:
            json.dump(info, f)
    return image, label


def tiny_argv(data, out, *extra, prefix='run'):
    image, label = data
    return ['-m', TINY, '-b', '8', '--iter', '2', '-d', image, '-l', label, '--out', str(out),
            '-p', prefix, '--quiet'] + list(extra)


def read_log(path, drop=('elapsed',)):
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def load_params(path):
    with numpy.load(path) as npz:
        return {k: npz[k] for k in npz.files}


# ---------------------------------------------------------------- a saved model for analyze.py (conftest's `trained`)

class TinyAnalysisNet(chainer.Chain):
    def __init__(self, res_depth=1):
        super().__init__()
        with self.init_scope():
            self.conv = L.Convolution2D(3, 4, 3, stride=2, pad=1)
            self.fc = L.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(F.tanh(self.conv(x)))


TINY_ANALYSIS = 'tiny_analysis_test'


@registry.register_model(TINY_ANALYSIS, source='tests')
def tiny_analysis_test(res_depth=1):
    """a tiny conv+linear net for the analysis tests"""
    return TinyAnalysisNet(res_depth)


def save_trained(tmp_path):
    """A saved tiny model with its _run.json, test pickles and preprocessing statistics."""
    rng = numpy.random.RandomState(0)
    data = tmp_path / 'dataset'
    data.mkdir()
    n_test = 40
    images = {'train': rng.randn(8, 3072).astype(numpy.float32),
              'test': rng.randn(n_test, 3072).astype(numpy.float32)}
    labels = {'train': rng.randint(0, 10, 8).astype(numpy.int32),
              'test': rng.randint(0, 10, n_test).astype(numpy.int32)}
    save_pickle(images, str(data / 'image.pkl'))
    save_pickle(labels, str(data / 'label.pkl'))
    numpy.savez(str(data / 'preprocess_stats.npz'), mean=numpy.array([120.0, 120.0, 110.0]),
                std=numpy.array([60.0, 60.0, 65.0]))
    model = TinyAnalysisNet()
    model_path = tmp_path / 'tiny.model'
    chainer.serializers.save_npz(str(model_path), model)
    (tmp_path / 'tiny_run.json').write_text(json.dumps(
        {'args': {'model': TINY_ANALYSIS, 'dataset': str(data / 'image.pkl')}}))
    return model_path, model, images, labels


# ---------------------------------------------------------------- batch normalization and pooling

BN_SHAPES = [(4, 3, 5, 6), (1, 2, 3, 3), (6, 4), (3, 5, 1, 1), (2, 3, 7, 9)]


def pooling_window_in_padding(shape, ksize, stride, pad, cover_all):
    """Whether some window of this max pooling lies wholly in the padding (its output is -inf, as in Chainer's)."""
    from chainer.utils import conv
    stride = ksize if stride is None else stride
    pairs = [v if isinstance(v, tuple) else (v, v) for v in (ksize, stride, pad)]
    for size, k, s, p in zip(shape[2:], *pairs):
        starts = [i * s - p for i in range(conv.get_conv_outsize(size, k, s, p, cover_all))]
        if any(start + k <= 0 or start >= size for start in starts):
            return True
    return False


# ---------------------------------------------------------------- convolutions against Chainer

CONV_CASES = [
    # (N, C, H, W, O, k, stride, pad, bias)
    (2, 3, 7, 9, 4, 3, 1, 1, True),
    (1, 2, 5, 5, 3, 1, 1, 0, False),
    (2, 3, 6, 6, 3, 1, 2, 0, True),
    (2, 3, 8, 8, 5, 5, 2, 2, True),
    (3, 2, 6, 7, 2, 3, 2, 0, False),
    (1, 4, 9, 7, 3, 3, 2, 1, True),
    (2, 2, 7, 9, 3, 5, 1, 2, False),
    (2, 2, 6, 6, 2, 3, 1, 0, True),
    (1, 1, 4, 5, 2, (3, 2), (1, 2), (2, 1), True),
    (2, 3, 5, 5, 2, 3, 1, 2, True),  # pad 2 > k - 1 - pad: the col2im path at stride 1
]


def conv_args(case, dtype, rng):
    """``(x, W, b, stride, pad)`` of a :data:`CONV_CASES` case, drawn from ``rng``."""
    n, c, h, w, o, k, s, p, bias = case
    kh, kw = k if isinstance(k, tuple) else (k, k)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((o, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    return x, W, b, s, p


def merged_reference(ref, merge, rng):
    """``(relu?(ref + residual), residual or None, relu)`` for a ``merge`` name like ``'residual_relu'``."""
    residual = rng.standard_normal(ref.shape).astype(numpy.float32) if 'residual' in merge else None
    relu = 'relu' in merge
    if residual is not None:
        ref = ref + residual
    if relu:
        ref = numpy.maximum(ref, 0)
    return ref, residual, relu


def grads(fn, inputs, gy):
    """``fn(*inputs)``'s output and the gradients of the inputs (None for a None input) for upstream ``gy``."""
    vs = [chainer.Variable(a) if a is not None else None for a in inputs]
    y = fn(*vs)
    y.grad = gy
    y.backward()
    return y.array, [v.grad if v is not None else None for v in vs]


def assert_convolution_matches_chainer(case):
    """float32 output and every gradient of the fast convolution equal Chainer's within tolerance."""
    rng = numpy.random.RandomState(0)
    x, W, b, s, p = conv_args(case, numpy.float32, rng)
    y_ref = F.convolution_2d(x, W, b, s, p).array
    gy = rng.standard_normal(y_ref.shape).astype(numpy.float32)
    y, g = grads(lambda x, W, b: CF.convolution_2d(x, W, b, s, p), (x, W, b), gy)
    y2, g2 = grads(lambda x, W, b: F.convolution_2d(x, W, b, s, p), (x, W, b), gy)
    assert y.dtype == numpy.float32 and y.shape == y2.shape and y.flags.c_contiguous
    numpy.testing.assert_allclose(y, y2, rtol=1e-4, atol=1e-4)
    for a, r in zip(g, g2):
        if r is not None:
            assert a.dtype == numpy.float32 and a.shape == r.shape
            numpy.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-4)


def _conv64(case, seed):
    """float64 inputs, an upstream gradient and the fast convolution as a function of them."""
    rng = numpy.random.RandomState(seed)
    x, W, b, s, p = conv_args(case, numpy.float64, rng)
    args = (x, W) if b is None else (x, W, b)
    gy = rng.standard_normal(F.convolution_2d(x, W, b, s, p).shape)

    def f(*a):
        return CF.convolution_2d(a[0], a[1], a[2] if len(a) == 3 else None, s, p)
    return f, args, gy, rng


def check_convolution_backward(case):
    f, args, gy, _ = _conv64(case, 1)
    gradient_check.check_backward(f, args, gy, dtype=numpy.float64, atol=1e-6, rtol=1e-6)


def check_convolution_double_backward(case):
    f, args, gy, rng = _conv64(case, 2)
    ggs = [rng.standard_normal(a.shape) for a in args]
    gradient_check.check_double_backward(f, args, gy, ggs, dtype=numpy.float64, atol=1e-5, rtol=1e-5)


@contextlib.contextmanager
def lock_held_elsewhere(base):
    """The output lock of ``base`` held by another process (within one it is re-entrant); yields that pid."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'src')
    code = ('import sys; sys.path.insert(0, {!r}); from chainer_cifar.training.lock import OutputLock; '
            'lock = OutputLock({!r}).acquire(); print("held", flush=True); sys.stdin.read(); lock.release()'
            ).format(src, base)
    holder = subprocess.Popen([sys.executable, '-c', code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == 'held\n'
        yield holder.pid
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


# The scripts that import PyTorch at start (measurement tools; requirements-dev.txt): without it they say so in
# one line (tests/test_missing_stack.py), and their other command-line tests skip.
TORCH_FRONT_ENDS = ('tools/torch_control.py', 'tools/lockstep.py')
