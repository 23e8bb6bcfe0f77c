"""He et al. 2015, "Deep Residual Learning for Image Recognition", §4.2 (CIFAR-10).

6n+2 weighted layers: conv3x3(16), then 3 stages of n basic blocks
(2n layers each) at 16/32/64 channels on 32x32/16x16/8x8 maps, stride 2 at
the first conv of stages 2 and 3, global average pooling, fc 10. BN after
every convolution (so the convolutions carry no bias), option-A
(parameter-free) shortcuts, He initialization. Table 6 reports the
parameter counts 0.27M/0.46M/0.66M/0.85M/1.7M/19.4M and test errors
8.75/7.51/7.17/6.97/6.43 (best of 5; mean 6.61)/7.93 % for n = 3/5/7/9/18/200.

``plainN`` are the same networks without shortcuts (Fig. 6 left:
the degradation experiment).
"""

from chainer_cifar.models.blocks import (ConvBN, ResidualBlock, ResidualNetBase, he_normal,
                                         three_stage_plan)
from chainer_cifar.models.registry import register_model

PAPER = 'He et al. 2015, §4.2 / Table 6'


class ResNet(ResidualNetBase):
    """CIFAR ResNet of depth 6n+2; ``plain=True`` drops the shortcuts."""

    def __init__(self, n, plain=False):
        blocks = [ResidualBlock(cin, cout, stride, shortcut=None if plain else 'zero_pad', nobias=True)
                  for cin, cout, stride in three_stage_plan(n)]
        stem = ConvBN(3, 16, 3, pad=1, nobias=True, initialW=he_normal())
        super().__init__(stem, blocks)
        self.n = n
        self.plain = plain


# depth -> (n, Table 6 parameters, Table 6 error %); the numbers are the paper's, not ours
TABLE6 = {20: (3, '0.27M', 8.75), 32: (5, '0.46M', 7.51), 44: (7, '0.66M', 7.17),
          56: (9, '0.85M', 6.97), 110: (18, '1.7M', 6.43), 1202: (200, '19.4M', 7.93)}
PLAIN_DEPTHS = (20, 32, 44, 56)  # Fig. 6 (left)


def _register(depth, plain):
    n = TABLE6[depth][0]
    name = '{}{}'.format('plain' if plain else 'resnet', depth)
    if plain:
        doc = 'plain {}-layer net (no shortcuts), Fig. 6'.format(depth)
    else:
        doc = 'ResNet-{}, n={} (reported {} params, {}% error)'.format(depth, n, *TABLE6[depth][1:])

    def factory():
        return ResNet(n, plain=plain)
    factory.__name__ = name
    factory.__doc__ = doc
    register_model(name, source=PAPER if not plain else 'He et al. 2015, Fig. 6')(factory)
    return factory


for _depth in TABLE6:
    globals()['resnet{}'.format(_depth)] = _register(_depth, plain=False)
for _depth in PLAIN_DEPTHS:
    globals()['plain{}'.format(_depth)] = _register(_depth, plain=True)
