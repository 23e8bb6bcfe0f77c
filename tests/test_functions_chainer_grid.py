"""Chainer 7.8.1's own test grid for the functions and links this package replaces.

Chainer's tests of ``convolution_2d``, ``batch_normalization`` /
``fixed_batch_normalization``, ``max_pooling_2d``, ``average_pooling_2d`` and
of the ``Convolution2D`` and ``BatchNormalization`` links run over dtypes
(float16, float32, float64, and mixed: ``x`` against ``W``, mixed16
BatchNormalization with float32 parameters), non-contiguous inputs,
``cover_all``, ``dilate``, ``groups``, ``nobias``, batches of one, first and
second order gradients (``gradient_check`` in float64, with Chainer's
tolerances for float16). The same grid runs here with this package's
functions and links, against Chainer's own (captured before anything can
reroute ``chainer.functions``' names): whatever the fast path does not take
must reach Chainer's function silently and give its result, and whatever it
takes must give Chainer's result.

The last tests route ``chainer.functions``' names to this package's functions,
as some users do, and check that no fallback calls itself.
"""
import warnings

import numpy
import pytest

import chainer
import chainer.functions as F
import chainer.links as CL
from chainer import gradient_check
from chainer.functions.connection import convolution_2d as chainer_conv_module
from chainer.functions.normalization import batch_normalization as chainer_bn_module
from chainer.functions.pooling import average_pooling_2d as chainer_avg_module
from chainer.functions.pooling import max_pooling_nd as chainer_max_module
from chainer.testing.array import _as_noncontiguous_array

import chainer_cifar.functions as CF
from chainer_cifar import links as FL

# Chainer's functions, as Chainer defines them.
REF_CONV = chainer_conv_module.convolution_2d
REF_BN = chainer_bn_module.batch_normalization
REF_FIXED_BN = chainer_bn_module.fixed_batch_normalization
REF_MAX = chainer_max_module.max_pooling_2d
REF_AVG = chainer_avg_module.average_pooling_2d

f16, f32, f64 = numpy.float16, numpy.float32, numpy.float64


def _tolerances(*dtypes):
    """Chainer's tolerances: forward, backward and double backward (float16 loosest)."""
    if f16 in dtypes:
        return ({'atol': 5e-3, 'rtol': 5e-3}, {'atol': 5e-3, 'rtol': 5e-2},
                {'atol': 5e-2, 'rtol': 5e-2})
    if f32 in dtypes:
        return ({'atol': 1e-5, 'rtol': 1e-4}, {'atol': 1e-4, 'rtol': 1e-3},
                {'atol': 1e-3, 'rtol': 1e-2})
    return ({'atol': 1e-7, 'rtol': 1e-7}, {'atol': 1e-6, 'rtol': 1e-5}, {'atol': 1e-5, 'rtol': 1e-4})


def _vars(arrays):
    return [None if a is None else chainer.Variable(a) for a in arrays]


def _first_order(fn, arrays, gy):
    """``fn``'s output and the gradients of every input; ``gy`` an array, or a RandomState to draw it."""
    vs = _vars(arrays)
    y = fn(*vs)
    if isinstance(gy, numpy.random.RandomState):
        gy = gy.uniform(-1, 1, y.shape).astype(y.dtype)
    y.grad = gy
    y.backward()
    return y, gy, [None if v is None else v.grad for v in vs]


def _assert_like(actual, expected, tol, what):
    assert actual.dtype == expected.dtype, '{}: dtype {} != Chainer\'s {}'.format(what, actual.dtype,
                                                                                  expected.dtype)
    assert actual.shape == expected.shape, what
    numpy.testing.assert_allclose(actual.astype(f64), expected.astype(f64), err_msg=what, **tol)


def check_like_chainer(fn, ref, arrays, seed, node=None, double=True, numerical=True, fwd_tol=None):
    """``fn`` against Chainer's ``ref``: output, first-order gradients, and ``gradient_check``
    of first and (with ``double``) second order in float64, Chainer's tolerances.

    ``ref`` is called once, ``fn`` once before the gradient checks (the
    running statistics of BatchNormalization move with every call).
    """
    dtypes = [a.dtype.type for a in arrays if a is not None]
    tol_f, tol_b, tol_bb = _tolerances(*dtypes)
    rng = numpy.random.RandomState(seed)
    present = [a for a in arrays if a is not None]

    def call(f):
        def g(*args):
            it = iter(args)
            return f(*[None if a is None else next(it) for a in arrays])
        return g
    y_ref, gy, g_ref = _first_order(call(ref), present, rng)
    y, _, g = _first_order(call(fn), present, gy)
    if node is not None:
        assert (type(y.creator).__name__ == node), type(y.creator).__name__
    _assert_like(y.array, y_ref.array, tol_f if fwd_tol is None else fwd_tol, 'output')
    for i, (a, r) in enumerate(zip(g, g_ref)):
        _assert_like(a, r, tol_b if a.dtype == f16 else tol_f, 'gradient {}'.format(i))
    if numerical:
        gradient_check.check_backward(call(fn), tuple(present), gy, dtype=f64, **tol_b)
    if double:
        ggs = tuple(rng.uniform(-1, 1, a.shape).astype(a.dtype) for a in present)
        gradient_check.check_double_backward(call(fn), tuple(present), gy, ggs, dtype=f64, **tol_bb)


def _maybe_noncontiguous(arrays, contiguous):
    return arrays if contiguous else [_as_noncontiguous_array(a) for a in arrays]


# --- convolution_2d (functions_tests/connection_tests/test_convolution_2d.py) ---------------

CONV_GRID = (
    # (contiguous, cover_all, x_dtype, W_dtype, dilate, groups, nobias)
    [(c, ca, f32, f32, 1, g, nb) for c in (True, False) for ca in (True, False) for g in (1, 2)
     for nb in (True, False)]
    + [(True, False, xd, wd, 1, g, nb) for xd in (f16, f32, f64) for wd in (f16, f32, f64) for g in (1, 2)
       for nb in (True, False)]
    + [(True, False, f32, f32, 2, g, nb) for g in (1, 2) for nb in (True, False)]
)


def _conv_case_id(case):
    c, ca, xd, wd, d, g, nb = case
    return '{}-{}cover-x{}-W{}-dil{}-g{}-{}'.format(
        'C' if c else 'noncontig', '' if ca else 'no', numpy.dtype(xd).itemsize * 8,
        numpy.dtype(wd).itemsize * 8, d, g, 'nobias' if nb else 'bias')


@pytest.mark.parametrize('case', CONV_GRID, ids=_conv_case_id)
def test_convolution_2d_grid(case):
    contiguous, cover_all, x_dtype, W_dtype, dilate, groups, nobias = case
    rng = numpy.random.RandomState(0)
    kh, kw = 3, 3
    cin, cout = 3 * groups, 2 * groups
    pad = (kh // 2 * dilate, kw // 2 * dilate)
    x = rng.uniform(-1, 1, (2, cin, 4, 3)).astype(x_dtype)
    W = rng.normal(0, numpy.sqrt(1. / (kh * kw * 3)), (cout, 3, kh, kw)).astype(W_dtype)
    b = None if nobias else rng.uniform(-1, 1, cout).astype(x_dtype)
    x, W, b = _maybe_noncontiguous([x, W, b], contiguous)
    kwargs = dict(stride=2, pad=pad, cover_all=cover_all, dilate=dilate, groups=groups)
    fast = not cover_all and dilate == 1 and groups == 1 and x_dtype == W_dtype
    check_like_chainer(lambda x, W, b: CF.convolution_2d(x, W, b, **kwargs),
                       lambda x, W, b: REF_CONV(x, W, b, **kwargs), [x, W, b], 1,
                       node='Convolution2DFast' if fast else 'Convolution2DFunction')


CONV_FAST_GEOMETRIES = [
    # (x shape, W shape, stride, pad): the fast path's own kernels (direct, GEMM, 1x1), batch 1
    ((1, 3, 5, 6), (4, 3, 3, 3), 1, 1),
    ((2, 2, 7, 5), (3, 2, 3, 2), (2, 1), (1, 0)),
    ((2, 3, 4, 5), (2, 3, 1, 1), 1, 0),
    ((1, 2, 6, 6), (2, 2, 1, 3), 1, 1),  # padding reaching past a 1-tall kernel
]


@pytest.mark.parametrize('dtype', [f16, f32, f64])
@pytest.mark.parametrize('geometry', CONV_FAST_GEOMETRIES)
def test_convolution_2d_fast_geometries(geometry, dtype):
    xs, ws, stride, pad = geometry
    rng = numpy.random.RandomState(2)
    x = rng.uniform(-1, 1, xs).astype(dtype)
    W = rng.normal(0, 0.3, ws).astype(dtype)
    b = rng.uniform(-1, 1, ws[0]).astype(dtype)
    check_like_chainer(lambda x, W, b: CF.convolution_2d(x, W, b, stride, pad),
                       lambda x, W, b: REF_CONV(x, W, b, stride, pad), [x, W, b], 3,
                       node='Convolution2DFast')


def test_convolution_2d_bias_of_another_dtype_is_chainers_error():
    x = numpy.zeros((1, 2, 4, 4), f32)
    W = numpy.zeros((3, 2, 3, 3), f32)
    b = numpy.zeros(3, f64)
    with pytest.raises(chainer.utils.type_check.InvalidType):
        REF_CONV(x, W, b)
    with pytest.raises(chainer.utils.type_check.InvalidType):
        CF.convolution_2d(x, W, b)


# --- batch_normalization (normalization_tests/test_batch_normalization.py) ----------------

BN_GRID = (
    # (x shape, param dtype, x dtype, eps, running statistics, contiguous)
    [(shape, d, d, eps, stats, True) for shape in ((5, 3), (5, 3, 2, 3)) for d in (f16, f32, f64)
     for eps in (2e-5, 0.5) for stats in (True, False)]
    + [(shape, f32, f16, 2e-5, True, True) for shape in ((5, 3), (5, 3, 2, 3))]  # mixed16
    + [((5, 3, 2, 3), f32, f32, 2e-5, True, False), ((5, 3), f64, f64, 2e-5, False, False)]
)


def _bn_id(case):
    shape, pd, xd, eps, stats, contiguous = case
    return '{}-x{}-p{}-eps{}-{}-{}'.format('x'.join(map(str, shape)), numpy.dtype(xd).itemsize * 8,
                                          numpy.dtype(pd).itemsize * 8, eps, 'stats' if stats else 'nostats',
                                          'C' if contiguous else 'noncontig')


def _bn_arrays(shape, param_dtype, x_dtype, seed):
    rng = numpy.random.RandomState(seed)
    c = shape[1]
    x = rng.uniform(-1, 1, shape).astype(x_dtype)
    gamma = rng.uniform(0.5, 1, c).astype(param_dtype)
    beta = rng.uniform(-1, 1, c).astype(param_dtype)
    return x, gamma, beta, rng


@pytest.mark.parametrize('case', BN_GRID, ids=_bn_id)
def test_batch_normalization_grid(case):
    shape, param_dtype, x_dtype, eps, stats, contiguous = case
    x, gamma, beta, rng = _bn_arrays(shape, param_dtype, x_dtype, 4)
    x, gamma, beta = _maybe_noncontiguous([x, gamma, beta], contiguous)
    c = shape[1]
    running = {}
    for who in ('fast', 'ref'):
        running[who] = ((rng.uniform(-1, 1, c).astype(param_dtype), rng.uniform(0.5, 1, c).astype(param_dtype))
                        if stats else (None, None))
    running['ref'] = tuple(None if a is None else a.copy() for a in running['fast'])

    def fast(x, g, b):
        m, v = running['fast']
        return CF.batch_normalization(x, g, b, eps=eps, running_mean=m, running_var=v)

    def ref(x, g, b):
        m, v = running['ref']
        return REF_BN(x, g, b, eps=eps, running_mean=m, running_var=v)
    check_like_chainer(fast, ref, [x, gamma, beta], 5, node='BatchNormalizationFast', numerical=False,
                       double=False)
    if stats:  # one forward each so far
        for a, r in zip(running['fast'], running['ref']):
            assert a.dtype == r.dtype
            numpy.testing.assert_allclose(a, r, **_tolerances(x_dtype)[0])
    # gradient_check's repeated forwards would move the statistics: checked without them
    check_like_chainer(lambda x, g, b: CF.batch_normalization(x, g, b, eps=eps),
                       lambda x, g, b: REF_BN(x, g, b, eps=eps), [x, gamma, beta], 6, double=True)


@pytest.mark.parametrize('case', [
    # (x shape, gamma shape, axis): Chainer's other layouts go to Chainer's function
    ((5, 3, 4), (3,), None),
    ((5, 3, 2), (3, 2), None),
    ((5, 3, 2, 2), (3,), (0, 2, 3)),
    ((5, 3, 2, 2), (5, 3, 2), 3),
])
def test_batch_normalization_other_axes_fall_back(case):
    xs, gs, axis = case
    rng = numpy.random.RandomState(7)
    x = rng.uniform(-1, 1, xs).astype(f32)
    gamma = rng.uniform(0.5, 1, gs).astype(f32)
    beta = rng.uniform(-1, 1, gs).astype(f32)
    fast = axis is None and len(xs) in (2, 4) and len(gs) == 1
    check_like_chainer(lambda x, g, b: CF.batch_normalization(x, g, b, axis=axis),
                       lambda x, g, b: REF_BN(x, g, b, axis=axis), [x, gamma, beta], 8,
                       node='BatchNormalizationFast' if fast else 'BatchNormalization')


FIXED_BN_GRID = [
    # (x shape, param dtype, x dtype, eps)
    ((5, 3), f16, f16, 2e-5), ((5, 3, 2, 3), f32, f32, 2e-5), ((5, 3, 2, 3), f64, f64, 0.5),
    ((5, 3), f32, f16, 2e-5), ((5, 3, 2, 3), f32, f16, 2e-5),  # mixed16
    ((1, 3, 2, 2), f32, f32, 2e-5),
]


@pytest.mark.parametrize('case', FIXED_BN_GRID, ids=lambda c: '{}-x{}-p{}-eps{}'.format(
    'x'.join(map(str, c[0])), numpy.dtype(c[2]).itemsize * 8, numpy.dtype(c[1]).itemsize * 8, c[3]))
def test_fixed_batch_normalization_grid(case):
    shape, param_dtype, x_dtype, eps = case
    x, gamma, beta, rng = _bn_arrays(shape, param_dtype, x_dtype, 9)
    mean = rng.uniform(-1, 1, shape[1]).astype(param_dtype)
    var = rng.uniform(0.5, 1, shape[1]).astype(param_dtype)
    mixed = x_dtype != param_dtype
    check_like_chainer(lambda *a: CF.fixed_batch_normalization(*a, eps=eps),
                       lambda *a: REF_FIXED_BN(*a, eps=eps), [x, gamma, beta, mean, var], 10,
                       node='FixedBatchNormalizationFast', double=not mixed)
    if mixed:
        # Chainer's own FixedBatchNormalizationGrad cannot be differentiated in mixed16 (its
        # second-order gradient of x comes out in the parameters' dtype): the same error here.
        args = (x, gamma, beta, mean, var)
        ggs = [numpy.ones_like(a) for a in args]
        gy = numpy.ones_like(x)
        for f in (CF.fixed_batch_normalization, REF_FIXED_BN):
            with pytest.raises(TypeError, match='Dtype of data and grad mismatch'):
                gradient_check.check_double_backward(f, args, gy, ggs, dtype=f64)


def _warned(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        fn()
    return [str(x.message) for x in w if issubclass(x.category, UserWarning)]


@pytest.mark.parametrize('shape', [(1, 3), (1, 3, 1, 1), (1, 3, 2, 2), (2, 3), (2, 3, 1, 1)])
def test_batch_normalization_warns_for_one_value_per_channel_as_chainer(shape):
    x, gamma, beta, _ = _bn_arrays(shape, f32, f32, 11)
    ours = _warned(lambda: CF.batch_normalization(x, gamma, beta))
    chainers = _warned(lambda: REF_BN(x, gamma, beta))
    assert ours == chainers
    assert bool(chainers) == (numpy.prod(shape) // shape[1] == 1)
    link_ours = _warned(lambda: FL.BatchNormalization(3)(x))
    link_chainers = _warned(lambda: CL.BatchNormalization(3)(x))
    assert link_ours == link_chainers == chainers


# --- pooling (pooling_tests/test_max_pooling_2d.py, test_average_pooling_2d.py) ------------

def _distinct(shape, dtype, seed):
    """Values without ties, spaced for float16 (Chainer's tests shuffle an arange)."""
    rng = numpy.random.RandomState(seed)
    x = rng.permutation(numpy.prod(shape)).reshape(shape)
    return ((x - x.size / 2.) / x.size * 2).astype(dtype)


MAX_POOL_GRID = [
    # (shape, ksize, stride, pad, cover_all, dtype, contiguous)
    (s, 3, 2, 1, ca, d, c) for s in ((2, 3, 4, 3),) for ca in (True, False) for d in (f16, f32, f64)
    for c in (True, False)
] + [((2, 3, 6, 5), 2, None, 0, True, d, True) for d in (f16, f32, f64)] + [
    ((1, 2, 5, 5), (3, 2), (1, 2), (1, 0), False, f32, True),
    ((1, 1, 1, 1), 1, 1, 0, True, f64, True),
]


@pytest.mark.parametrize('case', MAX_POOL_GRID, ids=lambda c: '{}-k{}-s{}-p{}-{}-{}-{}'.format(
    'x'.join(map(str, c[0])), c[1], c[2], c[3], 'cover' if c[4] else 'nocover',
    numpy.dtype(c[5]).itemsize * 8, 'C' if c[6] else 'noncontig'))
def test_max_pooling_2d_grid(case):
    shape, k, s, p, cover_all, dtype, contiguous = case
    x, = _maybe_noncontiguous([_distinct(shape, dtype, 12)], contiguous)
    tol = {'atol': 1e-3, 'rtol': 1e-2} if dtype == f16 else {'atol': 1e-4, 'rtol': 1e-3}
    check_like_chainer(lambda v: CF.max_pooling_2d(v, k, s, p, cover_all),
                       lambda v: REF_MAX(v, k, s, p, cover_all), [x], 13, node='MaxPooling2DFast',
                       fwd_tol={'atol': 0, 'rtol': 0})
    gy = numpy.random.RandomState(14).uniform(-1, 1, REF_MAX(x, k, s, p, cover_all).shape).astype(dtype)
    gradient_check.check_backward(lambda v: CF.max_pooling_2d(v, k, s, p, cover_all), (x,), gy,
                                  dtype=f64, eps=2e-3 if dtype != f16 else 1e-2, **tol)


def test_max_pooling_2d_return_indices_is_chainers():
    x = _distinct((2, 3, 4, 4), f32, 15)
    y, idx = CF.max_pooling_2d(x, 2, return_indices=True)
    y_ref, idx_ref = REF_MAX(x, 2, return_indices=True)
    numpy.testing.assert_array_equal(y.array, y_ref.array)
    numpy.testing.assert_array_equal(idx, idx_ref)


AVG_POOL_GRID = [
    # (shape, ksize, stride, pad, dtype, contiguous)
    ((2, 3, 4, 3), 3, 2, 1, d, c) for d in (f16, f32, f64) for c in (True, False)
] + [((2, 3, 6, 5), 2, None, 0, d, True) for d in (f16, f32, f64)] + [((1, 2, 5, 5), (3, 2), (1, 2), (1, 0), f32, True)]


@pytest.mark.parametrize('case', AVG_POOL_GRID, ids=lambda c: '{}-k{}-s{}-p{}-{}-{}'.format(
    'x'.join(map(str, c[0])), c[1], c[2], c[3], numpy.dtype(c[4]).itemsize * 8, 'C' if c[5] else 'noncontig'))
def test_average_pooling_2d_grid(case):
    shape, k, s, p, dtype, contiguous = case
    x, = _maybe_noncontiguous([numpy.random.RandomState(16).uniform(-1, 1, shape).astype(dtype)], contiguous)
    check_like_chainer(lambda v: CF.average_pooling_2d(v, k, s, p), lambda v: REF_AVG(v, k, s, p), [x], 17,
                       node='AveragePooling2DFast')


# --- links (links_tests/connection_tests/test_convolution_2d.py, normalization_tests/...) ---

def _link_run(link, x, gy, **kwargs):
    link.cleargrads()
    v = chainer.Variable(x)
    y = link(v, **kwargs)
    y.grad = gy
    y.backward()
    return y, v.grad, {n: p.grad for n, p in link.namedparams()}


def _copy_params(src, dst):
    for (n1, p1), (n2, p2) in zip(sorted(src.namedparams()), sorted(dst.namedparams())):
        assert n1 == n2
        p2.array[...] = p1.array


CONV_LINK_GRID = [
    # (x dtype, W and b dtype, nobias, groups, dilate, lazy in_channels)
    (xd, wd, True, 1, 1, False) for xd in (f16, f32, f64) for wd in (f16, f32, f64)
] + [(d, d, False, 1, 1, lazy) for d in (f16, f32, f64) for lazy in (False, True)] + [
    (f32, f32, False, 2, 1, False), (f32, f32, True, 1, 2, False), (f32, f32, False, 1, 1, True),
]


@pytest.mark.parametrize('case', CONV_LINK_GRID, ids=lambda c: 'x{}-W{}-{}-g{}-dil{}-{}'.format(
    numpy.dtype(c[0]).itemsize * 8, numpy.dtype(c[1]).itemsize * 8, 'nobias' if c[2] else 'bias', c[3], c[4],
    'lazy' if c[5] else 'sized'))
def test_convolution_2d_link_grid(case):
    x_dtype, W_dtype, nobias, groups, dilate, lazy = case
    rng = numpy.random.RandomState(18)
    cin = 3 * groups
    W0 = rng.normal(0, 0.3, (2 * groups, 3, 3, 3)).astype(W_dtype)
    b0 = None if nobias else rng.uniform(-1, 1, 2 * groups).astype(W_dtype)
    links = []
    for L in (FL, CL):
        with chainer.using_config('dtype', W_dtype):  # the parameters' dtype (initialW is only values)
            links.append(L.Convolution2D(None if lazy else cin, 2 * groups, 3, stride=2, pad=1, nobias=nobias,
                                         initialW=W0, initial_bias=b0, groups=groups, dilate=dilate))
    fast, ref = links
    x = rng.uniform(-1, 1, (2, cin, 5, 4)).astype(x_dtype)
    with chainer.no_backprop_mode():
        shape = ref(x).shape
    gy = numpy.random.RandomState(19).uniform(-1, 1, shape).astype(x_dtype)
    (y, gx, gp), (y_ref, gx_ref, gp_ref) = [_link_run(link, x, gy) for link in (fast, ref)]
    # (a lazy link makes W at the first call, in the dtype configured then: float32 here)
    takes_fast = (groups == 1 and dilate == 1 and fast.W.dtype == x_dtype
                  and (nobias or fast.b.dtype == x_dtype))
    assert (type(y.creator).__name__ == 'Convolution2DFast') == takes_fast
    tol_f, tol_b, _ = _tolerances(x_dtype, W_dtype)
    _assert_like(y.array, y_ref.array, tol_f, 'output')
    _assert_like(gx, gx_ref, tol_b, 'gx')
    for name in gp_ref:
        _assert_like(gp[name], gp_ref[name], tol_b, name)
    params = [p for _, p in sorted(fast.namedparams())]
    gradient_check.check_backward(fast, (x,), gy, params=params, dtype=f64, **tol_b)


def test_convolution_2d_link_with_bias_of_another_dtype_is_chainers_error():
    for L in (FL, CL):
        link = L.Convolution2D(3, 2, 3, initialW=numpy.ones((2, 3, 3, 3), f32),
                               initial_bias=numpy.zeros(2, f32))
        with pytest.raises(chainer.utils.type_check.InvalidType):
            link(numpy.zeros((1, 3, 4, 4), f16))


BN_LINK_GRID = [
    # (x shape, dtype ('mixed16': float16 x, float32 parameters), use_gamma, use_beta)
    (shape, d, True, True) for shape in ((5, 3), (4, 3, 2, 3)) for d in (f16, f32, f64, 'mixed16')
] + [((4, 3, 2, 3), f32, False, True), ((4, 3, 2, 3), f32, True, False), ((5, 3), f64, False, False)]


@pytest.mark.parametrize('train', [True, False], ids=['train', 'test'])
@pytest.mark.parametrize('case', BN_LINK_GRID, ids=lambda c: '{}-{}-{}{}'.format(
    'x'.join(map(str, c[0])), c[1] if isinstance(c[1], str) else numpy.dtype(c[1]).itemsize * 8,
    'gamma' if c[2] else 'nogamma', '-beta' if c[3] else '-nobeta'))
def test_batch_normalization_link_grid(case, train):
    shape, dtype, use_gamma, use_beta = case
    mixed = dtype == 'mixed16'
    x_dtype = f16 if mixed else dtype
    rng = numpy.random.RandomState(20)
    links = []
    for L in (FL, CL):
        with chainer.using_config('dtype', chainer.mixed16 if mixed else x_dtype):
            link = L.BatchNormalization(shape[1], use_gamma=use_gamma, use_beta=use_beta, decay=0.7)
        links.append(link)
    fast, ref = links
    if use_gamma:
        fast.gamma.array[...] = rng.uniform(0.5, 1, shape[1])
    if use_beta:
        fast.beta.array[...] = rng.uniform(-1, 1, shape[1])
    fast.avg_mean[...] = rng.uniform(-1, 1, shape[1])
    fast.avg_var[...] = rng.uniform(0.5, 1, shape[1])
    _copy_params(fast, ref)
    ref.avg_mean[...], ref.avg_var[...] = fast.avg_mean, fast.avg_var
    assert fast.avg_mean.dtype == ref.avg_mean.dtype == (f32 if mixed else dtype)
    tol_f, tol_b, tol_bb = _tolerances(x_dtype)
    with chainer.using_config('train', train):
        for step in range(2):
            x = rng.uniform(-1, 1, shape).astype(x_dtype)
            gy = rng.uniform(-1, 1, shape).astype(x_dtype)
            (y, gx, gp), (y_ref, gx_ref, gp_ref) = [_link_run(link, x, gy) for link in (fast, ref)]
            assert type(y.creator).__name__ == ('BatchNormalizationFast' if train else
                                                'FixedBatchNormalizationFast')
            _assert_like(y.array, y_ref.array, tol_f, 'output')
            _assert_like(gx, gx_ref, tol_b, 'gx')
            for name in gp_ref:
                _assert_like(gp[name], gp_ref[name], tol_b, name)
            for a, r in ((fast.avg_mean, ref.avg_mean), (fast.avg_var, ref.avg_var)):
                _assert_like(a, r, tol_f, 'running statistics')
        link = fast
        if not (train and use_gamma and use_beta):
            # gradient_check casts x and the parameters to float64, not the statistics nor a
            # missing gamma or beta (made in the link's dtype), which BatchNormalization (Chainer's
            # too) wants in the parameters' dtype: check a float64 copy of the link (with the same
            # fast path) against the numerical gradient
            with chainer.using_config('dtype', f64):
                link = FL.BatchNormalization(shape[1], use_gamma=use_gamma, use_beta=use_beta)
            _copy_params(fast, link)
            link.avg_mean[...], link.avg_var[...] = fast.avg_mean, fast.avg_var
            x, gy = x.astype(f64), gy.astype(f64)
        params = [p for _, p in sorted(link.namedparams())]
        gradient_check.check_backward(link, (x,), gy, params=params, dtype=f64, **tol_b)
        ggx = rng.uniform(-1, 1, shape).astype(x.dtype)
        gradient_check.check_double_backward(
            link, (x,), gy, (ggx,), params=params,
            params_grad_grad=[rng.uniform(-1, 1, p.shape).astype(p.dtype) for p in params],
            dtype=f64, **tol_bb)


@pytest.mark.parametrize('train', [True, False], ids=['train', 'test'])
def test_batch_normalization_link_finetune_and_axis_are_chainers(train):
    rng = numpy.random.RandomState(21)
    fast, ref = FL.BatchNormalization(3), CL.BatchNormalization(3)
    lazy_fast, lazy_ref = FL.BatchNormalization(axis=(0, 2, 3)), CL.BatchNormalization(axis=(0, 2, 3))
    with chainer.using_config('train', train):
        for _ in range(2):
            x = rng.uniform(-1, 1, (4, 3, 2, 2)).astype(f32)
            numpy.testing.assert_allclose(fast(x, finetune=True).array, ref(x, finetune=True).array, rtol=1e-5,
                                          atol=1e-6)
            numpy.testing.assert_allclose(lazy_fast(x).array, lazy_ref(x).array, rtol=1e-5, atol=1e-6)
    assert fast.N == ref.N
    numpy.testing.assert_allclose(fast.avg_var, ref.avg_var, rtol=1e-5)
    numpy.testing.assert_allclose(lazy_fast.avg_mean, lazy_ref.avg_mean, rtol=1e-5)


# --- routing chainer.functions' names to this package ---------------------------------------

@pytest.fixture
def routed(monkeypatch):
    """``chainer.functions``' names (and their modules') pointing at this package's functions."""
    for target, name, fn in (
            (F, 'convolution_2d', CF.convolution_2d), (chainer_conv_module, 'convolution_2d', CF.convolution_2d),
            (F, 'batch_normalization', CF.batch_normalization),
            (chainer_bn_module, 'batch_normalization', CF.batch_normalization),
            (F, 'fixed_batch_normalization', CF.fixed_batch_normalization),
            (chainer_bn_module, 'fixed_batch_normalization', CF.fixed_batch_normalization),
            (F, 'max_pooling_2d', CF.max_pooling_2d), (chainer_max_module, 'max_pooling_2d', CF.max_pooling_2d),
            (F, 'average_pooling_2d', CF.average_pooling_2d),
            (chainer_avg_module, 'average_pooling_2d', CF.average_pooling_2d)):
        monkeypatch.setattr(target, name, fn)


@pytest.mark.parametrize('fast', [True, False], ids=['fast_on', 'fast_off'])
def test_fallbacks_do_not_recurse_when_chainers_names_are_routed_here(routed, fast):
    rng = numpy.random.RandomState(22)
    x = rng.uniform(-1, 1, (2, 4, 5, 5)).astype(f32)
    W = rng.uniform(-1, 1, (4, 2, 3, 3)).astype(f32)
    gamma, beta = rng.uniform(0.5, 1, 4).astype(f32), rng.uniform(-1, 1, 4).astype(f32)
    cases = [
        (lambda: F.convolution_2d(x, W, groups=2), lambda: REF_CONV(x, W, groups=2)),
        (lambda: F.convolution_2d(x, W[:, :2].astype(f64).repeat(2, 1)[:, :4], cover_all=True),
         lambda: REF_CONV(x, W[:, :2].astype(f64).repeat(2, 1)[:, :4], cover_all=True)),
        (lambda: F.batch_normalization(x, gamma, beta, axis=(0, 2, 3)),
         lambda: REF_BN(x, gamma, beta, axis=(0, 2, 3))),
        (lambda: F.fixed_batch_normalization(x, gamma, beta, beta, gamma, axis=(0, 2, 3)),
         lambda: REF_FIXED_BN(x, gamma, beta, beta, gamma, axis=(0, 2, 3))),
        (lambda: F.max_pooling_2d(x, 2), lambda: REF_MAX(x, 2)),
        (lambda: F.average_pooling_2d(x, 2), lambda: REF_AVG(x, 2)),
    ]
    links = [(FL.Convolution2D(4, 3, 3, nobias=True), CL.Convolution2D(4, 3, 3, nobias=True)),
             (FL.BatchNormalization(4), CL.BatchNormalization(4))]
    for f, r in links:
        _copy_params(f, r)
    with chainer.using_config('use_fast_kernels', fast):
        for ours, chainers in cases:
            numpy.testing.assert_allclose(ours().array, chainers().array, rtol=1e-5, atol=1e-6)
        for f, r in links:
            for train in (True, False):
                with chainer.using_config('train', train):
                    numpy.testing.assert_allclose(f(x).array, r(x).array, rtol=1e-5, atol=1e-5)
            numpy.testing.assert_allclose(f(x, finetune=True).array if isinstance(f, FL.BatchNormalization)
                                          else f(x.astype(f64)).array,
                                          r(x, finetune=True).array if isinstance(r, CL.BatchNormalization)
                                          else r(x.astype(f64)).array, rtol=1e-5, atol=1e-5)
