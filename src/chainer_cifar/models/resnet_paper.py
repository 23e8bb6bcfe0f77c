"""He et al. 2015, "Deep Residual Learning for Image Recognition", §4.2 (CIFAR-10).

6n+2 weighted layers: conv3x3(16), then 3 stages of n basic blocks (2n layers
each) at 16/32/64 channels on 32x32/16x16/8x8 maps, stride 2 at the first conv
of stages 2 and 3, global average pooling, fc 10. BN after every convolution
(so the convolutions carry no bias), option-A (parameter-free, zero-padded)
shortcuts, He initialization.

==========  ===  ======  ===================================
model       n    layers  parameters (paper, Table 6)
==========  ===  ======  ===================================
resnet20    3    20      0.27M
resnet32    5    32      0.46M
resnet44    7    44      0.66M
resnet56    9    56      0.85M
resnet110   18   110     1.7M
resnet1202  200  1202    19.4M
==========  ===  ======  ===================================

The test errors the paper reports are in :mod:`chainer_cifar.results.published`;
``tests/test_models.py`` checks the parameter counts against this table.
``plain20`` ... ``plain56`` are the same networks without shortcuts (Fig. 6,
left: the degradation experiment).
"""

from chainer_cifar import links as L  # ConvBN: conv-BN-ReLU
from chainer_cifar.models.blocks import ResidualBlock, ResidualNetBase, he_normal, three_stage_plan
from chainer_cifar.models.registry import register_model

PAPER = 'He et al. 2015, §4.2 / Table 6'
FIG6 = 'He et al. 2015, Fig. 6'
# depth -> n, for tools that build the same networks elsewhere (the PyTorch twins).
DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18, 1202: 200}


class ResNet(ResidualNetBase):
    """CIFAR ResNet of depth 6n+2; ``plain=True`` drops the shortcuts."""

    def __init__(self, n, plain=False):
        blocks = [ResidualBlock(cin, cout, stride, shortcut=None if plain else 'zero_pad', nobias=True)
                  for cin, cout, stride in three_stage_plan(n)]
        stem = L.ConvBN(3, 16, 3, pad=1, nobias=True, initialW=he_normal())
        super().__init__(stem, blocks)
        self.n = n
        self.plain = plain


@register_model('resnet20', source=PAPER)
def resnet20():
    """ResNet-20, n=3 (the paper: 0.27M parameters)"""
    return ResNet(3)


@register_model('resnet32', source=PAPER)
def resnet32():
    """ResNet-32, n=5 (the paper: 0.46M parameters)"""
    return ResNet(5)


@register_model('resnet44', source=PAPER)
def resnet44():
    """ResNet-44, n=7 (the paper: 0.66M parameters)"""
    return ResNet(7)


@register_model('resnet56', source=PAPER)
def resnet56():
    """ResNet-56, n=9 (the paper: 0.85M parameters)"""
    return ResNet(9)


@register_model('resnet110', source=PAPER)
def resnet110():
    """ResNet-110, n=18 (the paper: 1.7M parameters)"""
    return ResNet(18)


@register_model('resnet1202', source=PAPER)
def resnet1202():
    """ResNet-1202, n=200 (the paper: 19.4M parameters)"""
    return ResNet(200)


@register_model('plain20', source=FIG6)
def plain20():
    """plain 20-layer net (no shortcuts), Fig. 6"""
    return ResNet(3, plain=True)


@register_model('plain32', source=FIG6)
def plain32():
    """plain 32-layer net (no shortcuts), Fig. 6"""
    return ResNet(5, plain=True)


@register_model('plain44', source=FIG6)
def plain44():
    """plain 44-layer net (no shortcuts), Fig. 6"""
    return ResNet(7, plain=True)


@register_model('plain56', source=FIG6)
def plain56():
    """plain 56-layer net (no shortcuts), Fig. 6"""
    return ResNet(9, plain=True)
