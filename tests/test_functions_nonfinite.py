"""NaN and inf go through the fast kernels exactly as through Chainer's functions.

Each kernel (the direct convolution forward, gx and gW and its GEMM
fallbacks, BatchNormalization forward and backward with and without the fused
ReLU, the test-mode BatchNormalization, the residual merge, max pooling with
and without ``relu=True``, average pooling, the option-A shortcut) gets inputs
and upstream gradients with NaN, +inf and -inf at chosen positions. Its
outputs and gradients must have NaN, +inf and -inf where Chainer's function
(``use_fast_kernels=False``) has them and equal finite values elsewhere:
``compiled`` runs the C kernels, ``numpy`` their NumPy fallbacks
(``use_native_kernels=False``).

Why it matters: an image of NaNs once trained to "finished" with NaN weights,
because the compiled max pooling returned -inf for an all-NaN window and the
NaN never reached the loss.
"""
import numpy
import pytest

import chainer
import chainer.functions as F

import chainer_cifar.functions as CF
from chainer_cifar import links as FL
from chainer_cifar.functions import convolution as conv
from chainer_cifar.functions.convolution import Convolution2DFast
from helpers import native_available

# NumPy warns of the NaN and inf these tests feed in on purpose.
pytestmark = pytest.mark.filterwarnings('ignore::RuntimeWarning')

NAN, INF = numpy.nan, numpy.inf


@pytest.fixture(params=['compiled', 'numpy'])
def path(request):
    native = request.param == 'compiled'
    if native and not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    with chainer.using_config('use_native_kernels', native):
        yield request.param


def assert_same(actual, expected, rtol=1e-4, atol=1e-4, what=''):
    """NaN, +inf and -inf at the same positions, the finite values close."""
    a, e = numpy.asarray(actual), numpy.asarray(expected)
    assert a.shape == e.shape, what
    for test in (numpy.isnan, numpy.isposinf, numpy.isneginf):
        wrong = numpy.argwhere(test(a) != test(e))
        assert wrong.size == 0, '{}: {} differs at {} (first of {}): got {}, Chainer {}'.format(
            what, test.__name__, tuple(wrong[0]), len(wrong), a[tuple(wrong[0])], e[tuple(wrong[0])])
    finite = numpy.isfinite(e)
    numpy.testing.assert_allclose(a[finite], e[finite], rtol=rtol, atol=atol, err_msg=what)


def _run(fn, arrays, gy, fast):
    """Output and input gradients of ``fn`` with the fast kernels on or off."""
    vs = [None if a is None else chainer.Variable(a.copy()) for a in arrays]
    with chainer.using_config('use_fast_kernels', fast):
        y = fn(*vs)
        y.grad = gy.copy()
        y.backward()
    return y, [None if v is None else v.grad for v in vs]


def assert_matches_chainer(fn, arrays, gy, rtol=1e-4, atol=1e-4, node=None):
    y, gs = _run(fn, arrays, gy, True)
    if node is not None:
        assert type(y.creator).__name__ == node
    y_ref, gs_ref = _run(fn, arrays, gy, False)
    assert y_ref.creator is None or type(y_ref.creator).__name__ != node
    assert_same(y.array, y_ref.array, rtol, atol, 'output')
    for i, (g, r) in enumerate(zip(gs, gs_ref)):
        if r is not None:
            assert_same(g, r, rtol, atol, 'gradient of input {}'.format(i))


def _poke(a, *items):
    """``a`` with ``a[index] = value`` for each ``(index, value)``."""
    a = a.copy()
    for index, value in items:
        a[index] = value
    return a


# --- convolution --------------------------------------------------------------------------

CONV_GEOMETRIES = [
    # (N, C, H, W, O, (kh, kw), stride, pad)
    (2, 3, 7, 9, 4, (3, 3), 1, 1),      # rows of 9: vector tails in the kernels
    (2, 3, 8, 8, 16, (3, 3), 1, 1),     # gW's channels-last kernel (16 channels, 8 wide)
    (2, 2, 9, 11, 3, (3, 3), 2, 1),     # stride 2: gx over the stacked phases
    (1, 2, 8, 10, 3, (5, 5), 1, 2),     # the CNN's 5x5 pad 2
    (2, 3, 6, 7, 2, (3, 3), 1, 0),      # no padding: the row tail holds real inputs
    (2, 3, 5, 6, 4, (1, 1), 1, 0),      # 1x1: GEMM only
    (1, 2, 7, 7, 2, (3, 2), (2, 1), (2, 1)),  # uneven strides, padding beyond the reach
]

CONV_MODES = {
    # name: (_CHUNK_ELEMENTS, _WIDE_EXTRA)
    'default': (None, None),
    'per_image_wide': (1, 100.0),
    'narrow': (1 << 30, 0.0),
}


def _conv_inputs(geometry, seed):
    n, c, h, w, o, (kh, kw), s, p = geometry
    rng = numpy.random.RandomState(seed)
    x = rng.standard_normal((n, c, h, w)).astype(numpy.float32)
    W = rng.standard_normal((o, c, kh, kw)).astype(numpy.float32)
    b = rng.standard_normal(o).astype(numpy.float32)
    ho = len(range(0, h + 2 * (p if isinstance(p, int) else p[0]) - kh + 1, s if isinstance(s, int) else s[0]))
    wo = len(range(0, w + 2 * (p if isinstance(p, int) else p[1]) - kw + 1, s if isinstance(s, int) else s[1]))
    gy = rng.standard_normal((n, o, ho, wo)).astype(numpy.float32)
    return x, W, b, gy


def _conv_poisons(geometry, x, W, b, gy):
    n, c, h, w = x.shape
    o, _, kh, kw = W.shape
    ho, wo = gy.shape[2:]
    return {
        'x': (_poke(x, ((0, 0, h // 2, w // 2), NAN), ((0, c - 1, 0, w - 1), INF), ((n - 1, 0, h - 1, 0), -INF)),
              W, b, gy),
        'x_row_end': (_poke(x, ((0, 0, 1, w - 1), NAN), ((n - 1, c - 1, h - 1, w - 1), INF)), W, b, gy),
        'W': (x, _poke(W, ((0, 0, 0, 0), NAN), ((o - 1, c - 1, kh - 1, kw - 1), INF), ((o - 1, 0, kh // 2, 0), -INF)),
              b, gy),
        'b': (x, W, _poke(b, ((0,), NAN), ((o - 1,), -INF)), gy),
        'gy': (x, W, b, _poke(gy, ((0, 0, 0, 0), NAN), ((0, o - 1, ho - 1, wo - 1), INF),
                               ((n - 1, 0, ho // 2, wo - 1), -INF))),
    }


@pytest.mark.parametrize('mode', sorted(CONV_MODES))
@pytest.mark.parametrize('poison', ['x', 'x_row_end', 'W', 'b', 'gy'])
@pytest.mark.parametrize('geometry', CONV_GEOMETRIES)
def test_convolution(geometry, poison, mode, path, monkeypatch):
    chunk, ratio = CONV_MODES[mode]
    if chunk is not None:
        monkeypatch.setattr(conv, '_CHUNK_ELEMENTS', chunk)
        monkeypatch.setattr(conv, '_WIDE_EXTRA', ratio)
    s, p = geometry[6:]
    x, W, b, gy = _conv_poisons(geometry, *_conv_inputs(geometry, 0))[poison]
    assert_matches_chainer(lambda x, W, b: CF.convolution_2d(x, W, b, s, p), (x, W, b), gy,
                           node='Convolution2DFast')


@pytest.mark.parametrize('poison', ['x', 'W', 'gy'])
def test_convolution_link_and_its_weight_gradient_alone(poison, path):
    # Input not requiring a gradient (the first layer): only gW and gb are computed.
    geometry = CONV_GEOMETRIES[2]
    x, W, b, gy = _conv_poisons(geometry, *_conv_inputs(geometry, 1))[poison]
    out = []
    for fast in (True, False):
        link = FL.Convolution2D(x.shape[1], W.shape[0], W.shape[2:], geometry[6], geometry[7])
        link.W.array[...] = W
        link.b.array[...] = b
        with chainer.using_config('use_fast_kernels', fast):
            y = link(x)
            y.grad = gy
            y.backward()
        assert (type(y.creator).__name__ == 'Convolution2DFast') == fast
        out.append((y.array, link.W.grad, link.b.grad))
    for a, r in zip(*out):
        assert_same(a, r)


@pytest.mark.parametrize('merge', ['relu', 'residual_relu'])
def test_convolution_inference_relu_passes_nan(merge, path):
    # Convolution2DFast(relu=True, residual=...) is inference only: relu(conv(x) + residual).
    geometry = CONV_GEOMETRIES[0]
    x, W, b, _ = _conv_inputs(geometry, 2)
    x = _poke(x, ((0, 0, 3, 3), NAN), ((1, 1, 0, 0), INF), ((1, 2, 6, 8), -INF))
    ref = F.convolution_2d(x, W, b, 1, 1).array
    residual = None
    if 'residual' in merge:
        residual = numpy.random.RandomState(3).standard_normal(ref.shape).astype(numpy.float32)
        residual[0, 1, 2, 2] = NAN
        ref = ref + residual
    ref = numpy.maximum(ref, 0)
    with chainer.no_backprop_mode():
        y, = Convolution2DFast(1, 1, relu=True, residual=residual).apply((x, W, b))
    assert_same(y.array, ref)


@pytest.mark.parametrize('poison', ['x', 'bn'])
def test_conv_bn_inference_folding(poison, path):
    layer = FL.ConvBNLayer(FL.Convolution2D(3, 4, 3, 1, 1), FL.BatchNormalization(4))
    rng = numpy.random.RandomState(4)
    layer.bn.avg_mean[...] = rng.standard_normal(4)
    layer.bn.avg_var[...] = rng.uniform(0.5, 2, 4)
    x = rng.standard_normal((2, 3, 7, 9)).astype(numpy.float32)
    if poison == 'x':
        x = _poke(x, ((0, 0, 3, 3), NAN), ((1, 1, 0, 0), INF))
    else:  # folding W * gamma / std would turn inf into NaN: the composition instead
        layer.bn.gamma.array[1] = INF
        layer.bn.avg_mean[2] = NAN
        layer.bn.gamma.array[3] = 0
        x = _poke(x, ((1, 1, 0, 0), INF))
    residual = rng.standard_normal((2, 4, 7, 9)).astype(numpy.float32)
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = layer.add_relu(x, residual)
        with chainer.using_config('use_fast_kernels', False):
            ref = layer.add_relu(x, residual)
    assert_same(y.array, ref.array)


# --- batch normalization ------------------------------------------------------------------

def _bn_inputs(shape, seed):
    rng = numpy.random.RandomState(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(numpy.float32)
    gamma = rng.uniform(0.5, 1.5, c).astype(numpy.float32)
    beta = rng.uniform(-0.5, 0.5, c).astype(numpy.float32)
    gy = rng.standard_normal(shape).astype(numpy.float32)
    return x, gamma, beta, gy


def _bn_poisons(shape, seed):
    x, gamma, beta, gy = _bn_inputs(shape, seed)
    last = (shape[0] - 1,) + tuple(d - 1 for d in shape[2:])
    first = (0,) * (len(shape) - 2)
    return {
        # channel 0: a NaN; 1: +inf in the first group of images; 2: -inf in the last image
        'x': (_poke(x, ((0, 0) + first, NAN), ((0, 1) + first, INF), ((last[0], 2) + last[1:], -INF)),
              gamma, beta, gy),
        'x_both_infs': (_poke(x, ((0, 1) + first, INF), ((last[0], 1) + last[1:], -INF)), gamma, beta, gy),
        'gamma_beta': (x, _poke(gamma, ((0,), NAN), ((1,), INF)), _poke(beta, ((2,), -INF)), gy),
        'gy': (x, gamma, beta, _poke(gy, ((0, 0) + first, NAN), ((last[0], 1) + last[1:], INF),
                                     ((0, 2) + last[1:], -INF))),
    }


BN_SHAPES = [(5, 4, 3, 3), (6, 4), (2, 4, 7, 9), (3, 4, 8, 8)]


@pytest.mark.parametrize('relu', [False, True], ids=['bn', 'bn_relu'])
@pytest.mark.parametrize('poison', ['x', 'x_both_infs', 'gamma_beta', 'gy'])
@pytest.mark.parametrize('shape', BN_SHAPES)
def test_batch_normalization_train(shape, poison, relu, path):
    x, gamma, beta, gy = _bn_poisons(shape, 0)[poison]
    c = shape[1]
    stats = {fast: (numpy.zeros(c, numpy.float32), numpy.ones(c, numpy.float32)) for fast in (True, False)}

    def fn(x, g, b):
        fast = chainer.config.use_fast_kernels
        mean, var = stats[fast]
        if fast:
            return CF.batch_normalization(x, g, b, running_mean=mean, running_var=var, relu=relu)
        y = F.batch_normalization(x, g, b, running_mean=mean, running_var=var)
        return F.relu(y) if relu else y
    assert_matches_chainer(fn, (x, gamma, beta), gy, node='BatchNormalizationFast')
    for a, r in zip(stats[True], stats[False]):
        assert_same(a, r, 1e-5, 1e-6, 'running statistics')


@pytest.mark.parametrize('poison', ['x', 'gamma_beta', 'mean', 'var', 'gy'])
@pytest.mark.parametrize('shape', BN_SHAPES[:2])
def test_batch_normalization_test_mode(shape, poison, path):
    x, gamma, beta, gy = _bn_inputs(shape, 1)
    c = shape[1]
    rng = numpy.random.RandomState(2)
    mean = rng.standard_normal(c).astype(numpy.float32)
    var = rng.uniform(0.5, 1.5, c).astype(numpy.float32)
    poisons = _bn_poisons(shape, 1)
    if poison in ('x', 'gamma_beta', 'gy'):
        x, gamma, beta, gy = poisons[poison]
    elif poison == 'mean':
        mean = _poke(mean, ((0,), NAN), ((1,), INF), ((2,), -INF))
    else:
        var = _poke(var, ((0,), NAN), ((1,), INF))

    def fn(x, g, b, m, v):
        return CF.fixed_batch_normalization(x, g, b, m, v)
    assert_matches_chainer(fn, (x, gamma, beta, mean, var), gy, node='FixedBatchNormalizationFast')


def test_batch_normalization_inference_relu(path):
    x, gamma, beta, _ = _bn_poisons((3, 4, 5, 5), 3)['x']
    fast, ref = FL.BatchNormalization(4), FL.BatchNormalization(4)
    for link in (fast, ref):
        link.gamma.array[...] = gamma
        link.beta.array[...] = beta
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = fast(x, relu=True)
        with chainer.using_config('use_fast_kernels', False):
            y_ref = ref(x, relu=True)
    assert_same(y.array, y_ref.array)


# --- residual merge, ReLU, shortcut ---------------------------------------------------------

@pytest.mark.parametrize('poison', ['a', 'gy'])
@pytest.mark.parametrize('shape', [(2, 3, 5, 5), (4, 16, 8, 8), (3, 7)])
def test_add_relu(shape, poison, path):
    rng = numpy.random.RandomState(5)
    a, b, gy = (rng.standard_normal(shape).astype(numpy.float32) for _ in range(3))
    if poison == 'a':
        a.flat[[0, 3, 7]] = [NAN, INF, -INF]
        b.flat[11] = INF
        a.flat[11] = -INF  # inf - inf: NaN
    else:
        # non-finite gradients where the ReLU is open and where it is closed (y = 0)
        a.flat[[0, 1]] = [5, -5]
        b.flat[[0, 1]] = 0
        gy.flat[[0, 1, 2, 3]] = [NAN, NAN, INF, -INF]
    assert_matches_chainer(CF.add_relu, (a, b), gy, node='AddReLU')


@pytest.mark.parametrize('stride,out_channels', [(2, 8), (1, 6), (2, 4)])
def test_zero_pad_shortcut(stride, out_channels, path):
    rng = numpy.random.RandomState(6)
    x = _poke(rng.standard_normal((2, 4, 6, 6)).astype(numpy.float32),
              ((0, 0, 0, 0), NAN), ((1, 3, 2, 4), INF), ((0, 1, 1, 1), -INF))
    shape = (2, out_channels, 6 // stride, 6 // stride)
    gy = _poke(rng.standard_normal(shape).astype(numpy.float32), ((0, 0, 0, 0), NAN), ((1, -1, 1, 1), INF))
    assert_matches_chainer(lambda v: CF.zero_pad_shortcut(v, out_channels, stride), (x,), gy,
                           node='ZeroPadShortcut')


# --- pooling ------------------------------------------------------------------------------

POOL_GEOMETRIES = [
    # (shape, ksize, stride, pad, cover_all)
    ((2, 3, 7, 9), 3, 2, 1, True),
    ((2, 2, 8, 8), 2, 2, 0, True),
    ((1, 2, 9, 20), 3, 1, 1, False),   # rows of 20: vector tails
    ((2, 2, 8, 7), (3, 2), (2, 3), (1, 0), True),
]


def _pool_poisons(shape, seed, ties=False):
    rng = numpy.random.RandomState(seed)
    if ties:
        x = rng.randint(-2, 3, size=shape).astype(numpy.float32)
    else:
        x = rng.standard_normal(shape).astype(numpy.float32)
    n, c, h, w = shape
    all_nan = x.copy()
    all_nan[0] = NAN  # an image of NaNs
    some = _poke(x, ((0, 0, 1, 1), NAN), ((0, 0, 1, 2), 100.0), ((0, 0, 2, 1), NAN), ((0, 1, 3, 3), INF),
                 ((n - 1, c - 1, h - 1, w - 1), -INF), ((n - 1, 0, 0, w - 2), NAN), ((n - 1, 0, 0, w - 1), INF))
    neg = -numpy.abs(x) - 1  # every window non-positive: the fused ReLU passes no gradient
    neg[0, 0, 2, 2] = NAN
    neg[0, 1, :3, :3] = -INF
    infs = x.copy()
    infs[0, 0] = -INF  # whole planes of -inf: every tap ties
    infs[n - 1, c - 1] = INF
    return {'all_nan': all_nan, 'some': some, 'non_positive': neg, 'infs': infs}


def _pool_gy(x, fn, seed, poison_gy):
    with chainer.using_config('use_fast_kernels', False):
        shape = fn(chainer.Variable(x)).shape
    gy = numpy.random.RandomState(seed).standard_normal(shape).astype(numpy.float32)
    if poison_gy:
        gy = _poke(gy, ((0, 0, 0, 0), NAN), ((0, 0, 0, 1), INF), ((0, 1, 1, 1), -INF),
                   ((shape[0] - 1, shape[1] - 1, shape[2] - 1, shape[3] - 1), NAN))
    return gy


@pytest.mark.parametrize('poison_gy', [False, True], ids=['gy', 'gy_nan'])
@pytest.mark.parametrize('relu', [False, True], ids=['pool', 'relu_pool'])
@pytest.mark.parametrize('poison', ['all_nan', 'some', 'non_positive', 'infs'])
@pytest.mark.parametrize('geometry', POOL_GEOMETRIES)
def test_max_pooling(geometry, poison, relu, poison_gy, path):
    shape, k, s, p, cover_all = geometry
    x = _pool_poisons(shape, 7, ties=True)[poison]

    def fn(v):
        if chainer.config.use_fast_kernels:
            return CF.max_pooling_2d(v, k, s, p, cover_all, relu=relu)
        return F.max_pooling_2d(F.relu(v) if relu else v, k, s, p, cover_all)
    gy = _pool_gy(x, fn, 8, poison_gy)
    assert_matches_chainer(fn, (x,), gy, rtol=1e-6, atol=1e-6, node='MaxPooling2DFast')


@pytest.mark.parametrize('relu', [False, True], ids=['pool', 'relu_pool'])
@pytest.mark.parametrize('poison', ['some', 'non_positive'])
def test_max_pooling_double_backward(poison, relu, path):
    shape, k, s, p, cover_all = POOL_GEOMETRIES[0]
    x = _pool_poisons(shape, 9)[poison]
    rng = numpy.random.RandomState(10)
    ggx = _poke(rng.standard_normal(shape).astype(numpy.float32), ((0, 0, 1, 1), NAN), ((0, 1, 3, 3), INF),
                ((0, 0, 2, 2), -INF), ((0, 1, 0, 0), NAN))
    out = []
    for fast in (True, False):
        with chainer.using_config('use_fast_kernels', fast):
            v = chainer.Variable(x)
            y = (CF.max_pooling_2d(v, k, s, p, cover_all, relu=relu) if fast
                 else F.max_pooling_2d(F.relu(v) if relu else v, k, s, p, cover_all))
            gy = chainer.Variable(_pool_gy(x, lambda v: F.max_pooling_2d(v, k, s, p, cover_all), 11, True))
            gx, = chainer.grad([y], [v], grad_outputs=[gy], enable_double_backprop=True)
            ggy, = chainer.grad([gx], [gy], grad_outputs=[ggx])
        out.append((gx.array, ggy.array))
    for a, r in zip(*out):
        assert_same(a, r, 1e-6, 1e-6)


@pytest.mark.parametrize('poison_gy', [False, True], ids=['gy', 'gy_nan'])
@pytest.mark.parametrize('poison', ['all_nan', 'some', 'infs'])
@pytest.mark.parametrize('geometry', [g for g in POOL_GEOMETRIES if not g[4] or g[0] == (2, 2, 8, 8)])
def test_average_pooling(geometry, poison, poison_gy, path):
    shape, k, s, p, _ = geometry
    x = _pool_poisons(shape, 12)[poison]

    def fn(v):
        return CF.average_pooling_2d(v, k, s, p)
    gy = _pool_gy(x, fn, 13, poison_gy)
    assert_matches_chainer(fn, (x,), gy, rtol=1e-5, atol=1e-6, node='AveragePooling2DFast')


@pytest.mark.parametrize('name', ['cnn', 'resnet20'])
def test_an_image_of_nans_reaches_the_loss(name, path, threads):
    """The issue's case: a training step on a batch with one NaN image gives a NaN loss and NaN gradients."""
    from chainer_cifar.models import create_model
    model = create_model(name)
    rng = numpy.random.RandomState(14)
    x = rng.standard_normal((2, 3, 32, 32)).astype(numpy.float32)
    x[0] = NAN
    t = numpy.array([1, 2], numpy.int32)
    with chainer.using_config('train', True):
        loss = F.softmax_cross_entropy(model(x), t)
    model.cleargrads()
    loss.backward()
    assert numpy.isnan(loss.array)
    for pname, p in model.namedparams():
        if p.grad is not None:
            assert numpy.isnan(p.grad).any(), pname
