"""The chainer-cifar article's models and the original repository's later additions.

``cnn``, ``cnnbn``, ``vgg`` and ``residual`` keep the original ``net.py``'s
link names and shapes, so ``.model`` files it wrote load here with
``serializers.load_npz``. The original built them with the Chainer 1 API
(``wscale=sqrt(2)``, i.e. He initialization, for the residual blocks; the
Chainer default LeCun normal elsewhere); the same initializers are used here.
"""
import chainer
import chainer.functions as F

from chainer_cifar import links as L  # fast Convolution2D / BatchNormalization / ConvBN / pooling
from chainer_cifar.errors import UserError
from chainer_cifar.models import blocks
from chainer_cifar.models.blocks import (PreActBlock, PyramidBlock, ResidualBase, ResidualBlock,
                                         ResidualNetBase, WeightNormConvolution2D, WeightNormLinear,
                                         he_normal, linear_skip_ratios, three_stage_plan)
from chainer_cifar.models.registry import describe_options, register_model

ARTICLE = 'chainer-cifar article (dsanno/chainer-cifar)'
LATER = 'chainer-cifar repository, later addition'


class _ConvPoolNet(chainer.Chain):
    """Three 5x5 conv stages with 3x3/2 max pooling, then a 1000-unit hidden layer.

    ``kind`` picks the convolution: ``'plain'`` (links conv1..3), ``'bn'``
    (bconv1..3, each conv + BN) or ``'wn'`` (weight-normalized conv1..3, l1, l2).
    Max pooling uses Chainer's default ``cover_all=True``: 32 -> 16 -> 8 -> 4,
    hence the 4*4*128 inputs of ``l1``.
    """

    def __init__(self, kind='plain'):
        super().__init__()
        channels = [(3, 64), (64, 64), (64, 128)]
        self._convs = []
        with self.init_scope():
            for i, (cin, cout) in enumerate(channels, 1):
                if kind == 'bn':
                    name, link = 'bconv{}'.format(i), L.ConvBN(cin, cout, 5, pad=2)
                elif kind == 'wn':
                    name, link = 'conv{}'.format(i), WeightNormConvolution2D(cin, cout, 5, pad=2)
                else:
                    name, link = 'conv{}'.format(i), L.Convolution2D(cin, cout, 5, pad=2)
                setattr(self, name, link)
                self._convs.append(name)
            linear = WeightNormLinear if kind == 'wn' else L.Linear
            self.l1 = linear(4 * 4 * 128, 1000)
            self.l2 = linear(1000, 10)
        # ConvBN ends in its ReLU; after a plain or weight-normalized conv the ReLU goes into the pooling's pass
        self._pool = L.max_pooling_2d if kind == 'bn' else L.relu_max_pooling_2d

    def forward(self, x):
        h = x
        for name in self._convs:
            h = self._pool(self[name](h), 3, 2)
        h = F.relu(self.l1(F.dropout(h)))
        return self.l2(F.dropout(h))


class CNN(_ConvPoolNet):
    """The article's CNN: 3 x (conv5x5 + ReLU + maxpool 3/2), dropout, fc 1000, dropout, fc 10."""

    def __init__(self):
        super().__init__('plain')


class CNNBN(_ConvPoolNet):
    """:class:`CNN` with BatchNormalization after each convolution (before ReLU)."""

    def __init__(self):
        super().__init__('bn')


CNNWithBatch = CNNBN  # the original's first name for it


class CNNWN(_ConvPoolNet):
    """:class:`CNN` with weight normalization (Salimans & Kingma 2016) on every conv and linear."""

    def __init__(self):
        super().__init__('wn')


class VGG(chainer.Chain):
    """The article's VGG-like net: stages of 2, 2, 4 conv3x3+BN+ReLU, each followed by
    maxpool 2 and dropout 0.25; then dropout, fc 1024, ReLU, dropout, fc 1024, ReLU, fc 10.

    ``widths`` scales the stages (``vgg_wide``); ``head='gap'`` replaces the
    three fully connected layers (``vgg_no_fc``, see there).
    """

    def __init__(self, widths=(64, 128, 256), head='fc'):
        super().__init__()
        self._stages = []
        self._head = head
        cin = 3
        with self.init_scope():
            for stage, (width, n) in enumerate(zip(widths, (2, 2, 4)), 1):
                names = []
                for i in range(1, n + 1):
                    name = 'bconv{}_{}'.format(stage, i)
                    setattr(self, name, L.ConvBN(cin, width, 3, pad=1))
                    names.append(name)
                    cin = width
                self._stages.append(names)
            if head == 'fc':
                self.fc4 = L.Linear(4 * 4 * cin, 1024)
                self.fc5 = L.Linear(1024, 1024)
                self.fc6 = L.Linear(1024, 10)
            else:
                self.conv4 = L.Convolution2D(cin, 10, 1)

    def forward(self, x):
        h = x
        for names in self._stages:
            for name in names:
                h = self[name](h)
            h = F.dropout(L.max_pooling_2d(h, 2), 0.25)
        if self._head != 'fc':
            return F.average(self.conv4(h), axis=(2, 3))
        h = F.relu(self.fc4(F.dropout(h)))
        h = F.relu(self.fc5(F.dropout(h)))
        return self.fc6(h)


class ResidualNet(ResidualNetBase):
    """The article's ResidualNet: 6*res_depth+2 layers (res_depth 12 = 74 layers).

    conv3x3(3->16)+BN+ReLU; ``res_depth`` blocks at 16 channels, a stride-2
    block to 32 and res_depth-1 blocks, a stride-2 block to 64 and res_depth-1
    blocks; global average pooling; linear(64->10). Blocks are He et al.'s
    basic block with option-A shortcuts; unlike the paper's ResNets, every
    convolution has a bias, as in the original.

    ``skip_depth``: stochastic depth; the two transition blocks are never
    skipped, the others get 0.5*k/(3*res_depth-3) in order (the original's
    rule), and at test time their branch is scaled by 1 - that probability.
    ``swapout``: dropout on both the branch and the shortcut (the article's
    experiment).
    """

    def __init__(self, res_depth=18, swapout=False, skip_depth=False):
        if res_depth < 1:
            raise ValueError('res_depth must be >= 1')
        plan = three_stage_plan(res_depth)
        ratios = linear_skip_ratios([s for _, _, s in plan]) if skip_depth else [0.0] * len(plan)
        res = [ResidualBlock(cin, cout, stride, shortcut='zero_pad', nobias=False,
                             skip_ratio=p, swapout=swapout)
               for (cin, cout, stride), p in zip(plan, ratios)]
        super().__init__(L.ConvBN(3, 16, 3, pad=1), res)
        self.res_depth = res_depth


class IdentityMapping(ResidualNetBase):
    """Pre-activation ResNet, He et al. 2016 "Identity Mappings in Deep Residual Networks".

    CIFAR structure of their §5 / Table 3: conv3x3(16) (no BN/ReLU), 3 stages
    of ``res_depth`` full pre-activation blocks (BN-ReLU-conv-BN-ReLU-conv)
    at 16/32/64 channels, a final BN-ReLU, global average pooling, fc. Option-A
    shortcuts. Default res_depth 18 = ResNet-110 (reported: 1.7M parameters,
    6.37% error). The original repository used ELU instead of ReLU and no final
    BN-ReLU; this follows the paper.
    """

    def __init__(self, res_depth=18, swapout=False, skip_depth=False):
        plan = three_stage_plan(res_depth)
        ratios = linear_skip_ratios([s for _, _, s in plan]) if skip_depth else [0.0] * len(plan)
        res = [PreActBlock(cin, cout, stride, skip_ratio=p, swapout=swapout)
               for (cin, cout, stride), p in zip(plan, ratios)]
        stem = L.Convolution2D(3, 16, 3, 1, 1, nobias=True, initialW=he_normal())
        super().__init__(stem, res, final='bn_relu', stem_name='conv1')


def pyramid_widths(n, alpha=48, start=16):
    """PyramidNet's additive widening (their Eq. 2): block k of 3n has
    floor(start + alpha * k / (3n)) channels, so the last has start + alpha.

    Exact integer arithmetic: accumulating alpha/(3n) in floating point
    would floor the last width to start + alpha - 1.
    """
    return [start + (alpha * k) // (3 * n) for k in range(1, 3 * n + 1)]


class PyramidNet(ResidualNetBase):
    """PyramidNet, Han et al. 2017 "Deep Pyramidal Residual Networks" (additive, basic blocks).

    CIFAR structure: conv3x3(16)+BN, 3n blocks whose width grows by alpha/(3n)
    each (16 -> 16+alpha), stride 2 at the first block of stages 2 and 3,
    BN-conv-BN-ReLU-conv-BN blocks with zero-padded identity shortcuts
    (2x2 average pooling when downsampling), final BN-ReLU, global average
    pooling, fc. Default res_depth 18, alpha 48 = their 110-layer alpha=48
    model (reported: 1.7M parameters, 4.58% error on CIFAR-10).
    """

    def __init__(self, res_depth=18, alpha=48, skip_depth=False):
        widths = pyramid_widths(res_depth, alpha)
        strides = [2 if i in (res_depth, 2 * res_depth) else 1 for i in range(3 * res_depth)]
        ratios = linear_skip_ratios(strides) if skip_depth else [0.0] * len(strides)
        res, cin = [], 16
        for width, stride, p in zip(widths, strides, ratios):
            res.append(PyramidBlock(cin, width, stride, skip_ratio=p))
            cin = width
        stem = L.ConvBN(3, 16, 3, pad=1, relu=False, nobias=True, initialW=he_normal())
        super().__init__(stem, res, final='bn_relu', stem_name='bconv1')


class _ShakeBranch(chainer.Chain):
    """ReLU-conv-BN-ReLU-conv-BN."""

    bn_relu1 = L.bn_relu('bn1')

    def __init__(self, cin, cout, stride):
        super().__init__()
        w = he_normal()
        with self.init_scope():
            self.conv1 = L.Convolution2D(cin, cout, 3, stride, 1, nobias=True, initialW=w)
            self.bn1 = L.BatchNormalization(cout)
            self.conv2 = L.Convolution2D(cout, cout, 3, 1, 1, nobias=True, initialW=w)
            self.bn2 = L.BatchNormalization(cout)

    def forward(self, x):
        h = self.bn_relu1(self.conv1(F.relu(x)))
        return self.bn2(self.conv2(h))


class ShakeShakeBlock(ResidualBase):
    """``branches`` parallel ReLU-conv-BN-ReLU-conv-BN branches mixed by :func:`blocks.shake`.

    On a shape change the shortcut is Gastaldi's: ReLU, then two 1x1 convs of
    half the width, one on the strided input and one on the input shifted by
    one pixel, concatenated, BN.
    """

    n_layers = 2  # depth along one path, as the paper counts "26 layers"

    def __init__(self, cin, cout, stride=1, branches=2):
        super().__init__(cin, cout, stride)
        self._branch_names = ['branch{}'.format(i) for i in range(1, branches + 1)]
        w = he_normal()
        with self.init_scope():
            for name in self._branch_names:
                setattr(self, name, _ShakeBranch(cin, cout, stride))
            if stride != 1 or cin != cout:
                self.short1 = L.Convolution2D(cin, cout // 2, 1, nobias=True, initialW=w)
                self.short2 = L.Convolution2D(cin, cout - cout // 2, 1, nobias=True, initialW=w)
                self.short_bn = L.BatchNormalization(cout)

    def shortcut(self, x):
        if not hasattr(self, 'short1'):
            return x
        h = F.relu(x)
        s = self.stride
        a = self.short1(h[:, :, ::s, ::s])
        shifted = F.pad(h[:, :, 1:, 1:], ((0, 0), (0, 0), (0, 1), (0, 1)), 'constant')
        b = self.short2(shifted[:, :, ::s, ::s])
        return self.short_bn(F.concat((a, b), axis=1))

    def branch(self, x):
        return blocks.shake([self[name](x) for name in self._branch_names])


class ShakeShakeNet(ResidualNetBase):
    """Shake-Shake, Gastaldi 2017 "Shake-Shake regularization", CIFAR-10 model.

    conv3x3(16)+BN, 3 stages of ``res_depth`` Shake-Shake blocks at
    width, 2*width, 4*width channels with ``res_width`` branches each (the
    paper: 2), final ReLU, global average pooling, fc. The default
    (res_depth 4, 2 branches, width 32) is the paper's "26 2x32d"
    (reported: 2.9M parameters, 3.55% error with Shake-Shake-Image).
    """

    def __init__(self, res_depth=4, res_width=2, width=32):
        if res_width < 2:
            raise ValueError('Shake-Shake needs at least 2 branches (--res_width)')
        plan = three_stage_plan(res_depth, (width, 2 * width, 4 * width))
        res = [ShakeShakeBlock(cin, cout, stride, res_width) for cin, cout, stride in plan]
        stem = L.ConvBN(3, 16, 3, pad=1, relu=False, nobias=True, initialW=he_normal())
        super().__init__(stem, res, final='relu', stem_name='bconv1')


describe_options(
    res_depth='blocks per stage (6*res_depth+2 layers)',
    skip_depth='stochastic depth (randomly skip residual blocks in training)',
    swapout='swapout (dropout on the residual branch and on the shortcut)',
    res_width='branches per block (Shake-Shake)')


def _check_depth(res_depth):
    if res_depth is not None and res_depth < 1:
        raise UserError('--res_depth must be at least 1 (got {})'.format(res_depth))


@register_model('cnn', source=ARTICLE)
def cnn():
    """3 conv5x5 + maxpool, fc 1000, dropout"""
    return CNN()


@register_model('cnnbn', source=ARTICLE)
def cnnbn():
    """cnn with BatchNorm after each conv"""
    return CNNBN()


@register_model('vgg', source=ARTICLE)
def vgg():
    """VGG-like: 2+2+4 conv3x3+BN, 3 fc"""
    return VGG()


@register_model('residual', source=ARTICLE)
def residual(res_depth=18, skip_depth=False, swapout=False):
    """ResNet with 6*res_depth+2 layers, option-A shortcuts, stochastic depth/swapout"""
    _check_depth(res_depth)
    return ResidualNet(res_depth, swapout=swapout, skip_depth=skip_depth)


@register_model('identity_mapping', source=LATER + '; He et al. 2016 (pre-activation)')
def identity_mapping(res_depth=18, skip_depth=False, swapout=False):
    """pre-activation ResNet, 6*res_depth+2 layers"""
    _check_depth(res_depth)
    return IdentityMapping(res_depth, swapout=swapout, skip_depth=skip_depth)


@register_model('pyramid', source=LATER + '; Han et al. 2017 (PyramidNet)')
def pyramid(res_depth=18, skip_depth=False):
    """PyramidNet, additive widening alpha=48, 6*res_depth+2 layers"""
    _check_depth(res_depth)
    return PyramidNet(res_depth, skip_depth=skip_depth)


@register_model('shake_residual', source=LATER + '; Gastaldi 2017 (Shake-Shake)')
def shake_residual(res_depth=4, res_width=2):
    """Shake-Shake 26 2x32d; res_width = number of branches"""
    _check_depth(res_depth)
    if res_width is not None and res_width < 2:
        raise UserError('--res_width (Shake-Shake branches) must be at least 2')
    return ShakeShakeNet(res_depth, res_width)


@register_model('vgg_no_fc', source=LATER + '; head after Lin et al. 2014 (NIN)')
def vgg_no_fc():
    """vgg with conv1x1 + global average pooling instead of the 3 fc"""
    return VGG(head='gap')


@register_model('vgg_wide', source=LATER)
def vgg_wide():
    """vgg with twice the channels (128/256/512)"""
    return VGG(widths=(128, 256, 512))


@register_model('cnnwn', source=LATER + '; Salimans & Kingma 2016 (weight norm)')
def cnnwn():
    """cnn with weight normalization"""
    return CNNWN()
