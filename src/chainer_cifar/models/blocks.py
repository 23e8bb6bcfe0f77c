"""Building blocks shared by every model family.

Everything here is ``xp``-generic: convolutions, BatchNormalization, their
fused layers (conv-BN-ReLU, BN-ReLU, a residual block's merge) and pooling come
from :mod:`chainer_cifar.links`, which run the fast NumPy kernels of
:mod:`chainer_cifar.functions` on the CPU and Chainer's own functions on CuPy
arrays (GPU) or under ``chainer.using_config('use_fast_kernels', False)``;
everything else is plain Chainer functions. Train/test behaviour comes from
``chainer.config.train``.

Link names inside the blocks (``conv``/``bn``, ``conv1``/``bn1``/``conv2``/
``bn2``) are the ones the original chainer-cifar used, so its ``.model``
files load into the models built from these blocks.
"""
import numpy

import chainer
import chainer.functions as F
from chainer import initializers

# Chainer's links with the fast Convolution2D / BatchNormalization, the fused layers, and the fast
# functions the blocks call (pooling, the option-A shortcut, convolution_2d): models reach
# chainer_cifar.functions only through links (docs/architecture.md).
from chainer_cifar import links as L


def he_normal():
    """He et al. 2015 initialization, N(0, 2/fan_in); the original's ``wscale=sqrt(2)``."""
    return initializers.HeNormal()


def zero_pad_shortcut(x, out_channels, stride=1, subsample='stride'):
    """Option-A shortcut (He et al. 2015 §3.3): subsample, then zero-pad new channels.

    ``subsample='stride'`` keeps every ``stride``-th pixel (the original's
    ``average_pooling_2d(x, 1, 2)``); ``'average'`` averages ``stride``x``stride``
    windows (PyramidNet). The zero channels go first, as in the original, so
    a legacy model computes the same outputs here.
    """
    if subsample != 'average':
        return L.zero_pad_shortcut(x, out_channels, stride)  # one fast node on NumPy
    if stride != 1:
        x = L.average_pooling_2d(x, stride, stride)
    missing = out_channels - x.shape[1]
    if missing > 0:
        x = F.pad(x, ((0, 0), (missing, 0), (0, 0), (0, 0)), 'constant')
    return x


def linear_skip_ratios(strides, last=0.5):
    """Stochastic-depth skip probabilities, exactly as the original assigns them.

    Blocks with stride != 1 (the stage transitions) are never skipped; the
    others, counted in order from 0, get ``last * k / (count - 1)``: 0 for the
    first, ``last`` for the deepest (Huang et al. 2016's linear decay rule).
    """
    count = sum(1 for s in strides if s == 1)
    ratios, k = [], 0
    for s in strides:
        if s != 1:
            ratios.append(0.0)
            continue
        ratios.append(last * k / (count - 1) if count > 1 else 0.0)
        k += 1
    return ratios


def draw_skip(skip_ratio, rng=None):
    """One Bernoulli draw: True when the block is skipped this forward pass.

    Drawn on the host (``numpy.random`` unless ``rng`` is given) so a seeded
    run is reproducible and a GPU run needs no device sync per block.
    """
    if skip_ratio <= 0:
        return False
    rng = numpy.random if rng is None else rng
    return bool(rng.random_sample() < skip_ratio)


class ResidualBase(chainer.Chain):
    """``merge(F(x) + shortcut(x))``, with stochastic depth and swapout.

    Subclasses build their layers and define :meth:`branch` (the residual
    function F(x)) and optionally :meth:`shortcut`, :meth:`merge` and
    :meth:`residual` (the whole sum, which a subclass may fuse).

    * stochastic depth (Huang et al. 2016): with probability ``skip_ratio``
      a training pass returns the shortcut alone; at test time the branch is
      scaled by ``1 - skip_ratio``, its expected contribution in training.
    * swapout (the article's variant): ``dropout(F(x)) + dropout(x)``.
    """

    def __init__(self, in_channels, out_channels, stride=1, skip_ratio=0.0, swapout=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.skip_ratio = float(skip_ratio)
        self.swapout = swapout
        self.rng = None  # numpy.random unless a test or caller sets a RandomState

    def shortcut(self, x):
        return zero_pad_shortcut(x, self.out_channels, self.stride)

    def branch(self, x):
        raise NotImplementedError

    def merge(self, h):
        """Applied after the addition (ReLU for the original ResNet)."""
        return h

    def survival(self):
        """The weight of F(x) in the sum: 1 in training; at test time, with stochastic depth, the
        probability that training kept the block (its expected contribution)."""
        return 1.0 if chainer.config.train else 1.0 - self.skip_ratio

    def residual(self, x, s):
        """``merge(survival * F(x) + s)``."""
        h, weight = self.branch(x), self.survival()
        if weight != 1.0:
            h = h * weight
        return self.merge(h + s)

    def forward(self, x):
        s = self.shortcut(x)
        if chainer.config.train and draw_skip(self.skip_ratio, self.rng):
            return chainer.as_variable(s)  # stochastic depth: this pass skips the block
        if self.swapout:
            return self.merge(F.dropout(self.branch(x)) + F.dropout(s))
        return self.residual(x, s)


class ResidualBlock(ResidualBase):
    """He et al. 2015 basic block: conv-BN-ReLU-conv-BN, + shortcut, ReLU.

    ``shortcut='zero_pad'`` is option A, ``'projection'`` a 1x1 convolution
    (with bias, no BN, as the Keras ResNet v1 example) on a shape change only,
    ``None`` a plain block (no shortcut: the paper's plain nets).
    ``dropout`` > 0 inserts dropout between the two convolutions.
    """

    # The branch's two layers over the links built in __init__ (their names are the saved files' keys).
    conv_bn_relu1 = L.conv_bn_relu('conv1', 'bn1')
    conv_bn2 = L.conv_bn('conv2', 'bn2')

    def __init__(self, in_channels, out_channels, stride=1, shortcut='zero_pad', nobias=True,
                 dropout=0.0, skip_ratio=0.0, swapout=False):
        super().__init__(in_channels, out_channels, stride, skip_ratio, swapout)
        if shortcut not in ('zero_pad', 'projection', None):
            raise ValueError('unknown shortcut {!r}'.format(shortcut))
        self.shortcut_kind = shortcut
        self.dropout = dropout
        w = he_normal()
        with self.init_scope():
            self.conv1 = L.Convolution2D(in_channels, out_channels, 3, stride, 1, nobias=nobias, initialW=w)
            self.bn1 = L.BatchNormalization(out_channels)
            self.conv2 = L.Convolution2D(out_channels, out_channels, 3, 1, 1, nobias=nobias, initialW=w)
            self.bn2 = L.BatchNormalization(out_channels)
            if shortcut == 'projection' and (stride != 1 or in_channels != out_channels):
                self.projection = L.Convolution2D(in_channels, out_channels, 1, stride, 0, initialW=w)

    def shortcut(self, x):
        if hasattr(self, 'projection'):
            return self.projection(x)
        return super().shortcut(x)

    def first_layer(self, x):
        """conv-BN-ReLU, then dropout where the Keras models put it."""
        h = self.conv_bn_relu1(x)
        return F.dropout(h, self.dropout) if self.dropout else h

    def branch(self, x):
        return self.conv_bn2(self.first_layer(x))

    def merge(self, h):
        return F.relu(h)  # after swapout's sum; the plain sum is residual()'s

    def residual(self, x, s):
        # relu(survival * F(x) + s), the sum and the ReLU done by the last layer (links.ConvBNLayer.add_relu)
        return self.conv_bn2.add_relu(self.first_layer(x), s, self.survival())

    def forward(self, x):
        if self.shortcut_kind is None:
            return F.relu(self.branch(x))  # a plain block: no sum
        return super().forward(x)


class PreActBlock(ResidualBase):
    """He et al. 2016 ("Identity Mappings") full pre-activation block.

    BN-ReLU-conv-BN-ReLU-conv + option-A shortcut, nothing after the addition.
    """

    bn_relu1 = L.bn_relu('bn1')
    bn_relu2 = L.bn_relu('bn2')

    def __init__(self, in_channels, out_channels, stride=1, skip_ratio=0.0, swapout=False):
        super().__init__(in_channels, out_channels, stride, skip_ratio, swapout)
        w = he_normal()
        with self.init_scope():
            self.bn1 = L.BatchNormalization(in_channels)
            self.conv1 = L.Convolution2D(in_channels, out_channels, 3, stride, 1, nobias=True, initialW=w)
            self.bn2 = L.BatchNormalization(out_channels)
            self.conv2 = L.Convolution2D(out_channels, out_channels, 3, 1, 1, nobias=True, initialW=w)

    def branch(self, x):
        h = self.conv1(self.bn_relu1(x))
        return self.conv2(self.bn_relu2(h))


class PyramidBlock(ResidualBase):
    """Han et al. 2017 PyramidNet basic block: BN-conv-BN-ReLU-conv-BN.

    No ReLU at the start or after the addition (their §3.2); the shortcut is
    a 2x2 average pooling on downsampling plus zero-padded channels.
    """

    bn_relu2 = L.bn_relu('bn2')

    def __init__(self, in_channels, out_channels, stride=1, skip_ratio=0.0):
        super().__init__(in_channels, out_channels, stride, skip_ratio)
        w = he_normal()
        with self.init_scope():
            self.bn1 = L.BatchNormalization(in_channels)
            self.conv1 = L.Convolution2D(in_channels, out_channels, 3, stride, 1, nobias=True, initialW=w)
            self.bn2 = L.BatchNormalization(out_channels)
            self.conv2 = L.Convolution2D(out_channels, out_channels, 3, 1, 1, nobias=True, initialW=w)
            self.bn3 = L.BatchNormalization(out_channels)

    def shortcut(self, x):
        return zero_pad_shortcut(x, self.out_channels, self.stride, subsample='average')

    def branch(self, x):
        h = self.conv1(self.bn1(x))
        h = self.conv2(self.bn_relu2(h))
        return self.bn3(h)


def three_stage_plan(n, widths=(16, 32, 64), in_channels=16):
    """``(in, out, stride)`` of the 3n blocks of a CIFAR ResNet (He et al. §4.2)."""
    plan = []
    for stage, width in enumerate(widths):
        for i in range(n):
            stride = 2 if stage > 0 and i == 0 else 1
            plan.append((in_channels, width, stride))
            in_channels = width
    return plan


class ResidualNetBase(chainer.Chain):
    """stem -> blocks -> [final] -> global average pooling -> linear(10).

    Links are named as the original's ResidualNet: the stem (``bconv1`` unless
    ``stem_name`` says otherwise), ``res1`` ... ``res{B}``, then ``fc{B+2}``.
    ``final`` is what pre-activation designs need before pooling: ``'bn_relu'``
    (a ``bn_final`` link), ``'relu'`` or ``None``. ``head_dropout`` > 0 puts
    dropout between the pooling and the classifier.
    """

    bn_relu_final = L.bn_relu('bn_final')

    def __init__(self, stem, blocks, final=None, stem_name='bconv1', head_dropout=0.0, n_classes=10):
        super().__init__()
        self.head_dropout = head_dropout
        head_channels = blocks[-1].out_channels
        self._stem_name = stem_name
        self._block_names = ['res{}'.format(i) for i in range(1, len(blocks) + 1)]
        self._fc_name = 'fc{}'.format(len(blocks) + 2)
        self._final = final
        with self.init_scope():
            setattr(self, stem_name, stem)
            for name, block in zip(self._block_names, blocks):
                setattr(self, name, block)
            if final == 'bn_relu':
                self.bn_final = L.BatchNormalization(head_channels)
            setattr(self, self._fc_name, L.Linear(head_channels, n_classes))

    @property
    def blocks(self):
        return [self[name] for name in self._block_names]

    def forward(self, x):
        h = self[self._stem_name](x)
        for name in self._block_names:
            h = self[name](h)
        if self._final == 'bn_relu':
            h = self.bn_relu_final(h)
        elif self._final == 'relu':
            h = F.relu(h)
        h = F.average(h, axis=(2, 3))
        if self.head_dropout:
            h = F.dropout(h, self.head_dropout)
        return self[self._fc_name](h)


class _ShakeCombine(chainer.FunctionNode):
    """sum_i alpha_i * x_i forward, sum of beta_i * gy backward (Gastaldi 2017)."""

    def __init__(self, alpha, beta):
        self.alpha = alpha  # (branches, N, 1, 1, 1)
        self.beta = beta

    def forward(self, inputs):
        y = inputs[0] * self.alpha[0]
        for a, x in zip(self.alpha[1:], inputs[1:]):
            y = y + a * x
        return y.astype(inputs[0].dtype, copy=False),

    def backward(self, indexes, grad_outputs):
        gy, = grad_outputs
        return tuple(gy * self.beta[i].astype(gy.dtype) for i in indexes)


def _shake_weights(xp, branches, n, dtype):
    w = xp.random.uniform(0.0, 1.0, (branches, n, 1, 1, 1)).astype(dtype)
    return w / w.sum(axis=0, keepdims=True)


def shake(xs):
    """Shake-Shake combination of branch outputs ``xs``.

    Training: per image, random convex weights forward and independent ones
    backward ("Shake-Shake-Image"); drawn with the array module's RNG, so on
    the GPU no host round trip is needed. Test: the expectation, 1/branches.
    """
    xs = [chainer.as_variable(x) for x in xs]
    if not chainer.config.train:
        return sum(xs[1:], xs[0]) * (1.0 / len(xs))
    xp = chainer.backend.get_array_module(xs[0])
    n, dtype = xs[0].shape[0], xs[0].dtype
    alpha = _shake_weights(xp, len(xs), n, dtype)
    beta = _shake_weights(xp, len(xs), n, dtype)
    return _ShakeCombine(alpha, beta).apply(xs)[0]


def _normalized_weight(v, g):
    flat = F.reshape(v, (v.shape[0], -1))
    w = F.normalize(flat, eps=1e-12, axis=1) * F.expand_dims(g, 1)
    return F.reshape(w, v.shape)


class _WeightNormLink(chainer.Link):
    """Salimans & Kingma 2016 reparametrization W = g * v / ||v|| (per output unit).

    ``g`` starts at ||v|| so the initial weights equal those of the plain
    link; the paper's data-dependent initialization is not done here.
    """

    def __init__(self, shape, initialW=None):
        super().__init__()
        with self.init_scope():
            self.v = chainer.Parameter(initialW or initializers.LeCunNormal(), shape)
            norm = numpy.sqrt((self.v.array.reshape(shape[0], -1) ** 2).sum(axis=1))
            self.g = chainer.Parameter(norm.astype(self.v.array.dtype))  # the configured dtype, as v
            self.b = chainer.Parameter(0, (shape[0],))

    @property
    def W(self):
        return _normalized_weight(self.v, self.g)


class WeightNormConvolution2D(_WeightNormLink):
    def __init__(self, in_channels, out_channels, ksize, stride=1, pad=0, initialW=None):
        super().__init__((out_channels, in_channels, ksize, ksize), initialW)
        self.stride, self.pad = stride, pad

    def forward(self, x):
        return L.convolution_2d(x, self.W, self.b, self.stride, self.pad)


class WeightNormLinear(_WeightNormLink):
    def __init__(self, in_size, out_size, initialW=None):
        super().__init__((out_size, in_size), initialW)

    def forward(self, x):
        return F.linear(F.reshape(x, (x.shape[0], -1)), self.W, self.b)
