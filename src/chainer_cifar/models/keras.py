"""The Keras CIFAR-10 experiments: their CNNs, ResNet v1 with dropout, the ablation ladder.

Keras defaults are kept where they shape the network: Glorot-uniform
initialization and biases on every layer, 'valid' padding for the simple
CNN, 1x1 projection shortcuts (no BN) in ResNet v1. Every accuracy quoted
below is the one the experiments *report*; we have not reproduced it.
"""
import chainer
import chainer.functions as F
from chainer import initializers

from chainer_cifar import links as L  # fast Convolution2D / BatchNormalization / ConvBN / pooling
from chainer_cifar.models.blocks import ResidualBlock, ResidualNetBase, he_normal, three_stage_plan
from chainer_cifar.models.registry import register_model

KERAS = 'Keras CIFAR-10 experiments'


def _glorot():
    return initializers.GlorotUniform()


class KerasSimpleCNN(chainer.Chain):
    """conv3x3(32)+ReLU, conv3x3(64)+ReLU ('valid'), maxpool 2, dropout 0.25,
    dense 128+ReLU, dropout 0.5, dense 10 (reported: 71.6% accuracy, no augmentation)."""

    def __init__(self):
        super().__init__()
        with self.init_scope():
            self.conv1 = L.Convolution2D(3, 32, 3, initialW=_glorot())
            self.conv2 = L.Convolution2D(32, 64, 3, initialW=_glorot())
            self.fc1 = L.Linear(14 * 14 * 64, 128, initialW=_glorot())
            self.fc2 = L.Linear(128, 10, initialW=_glorot())

    def forward(self, x):
        h = self.conv2(F.relu(self.conv1(x)))             # 32 -> 30 -> 28
        h = F.dropout(L.relu_max_pooling_2d(h, 2), 0.25)  # ReLU + pool -> 14
        h = F.dropout(F.relu(self.fc1(h)), 0.5)
        return self.fc2(h)


class KerasDeepCNN(chainer.Chain):
    """Three stages of 3 x (conv3x3 'same' + BN + ReLU) at 32/64/128 channels, each
    followed by maxpool 2 and dropout 0.2/0.3/0.4; flatten; dense 10
    (reported: 90.5% accuracy with Adam and step decay, with augmentation)."""

    def __init__(self, widths=(32, 64, 128), dropouts=(0.2, 0.3, 0.4)):
        super().__init__()
        self._stages = []
        self._dropouts = dropouts
        cin = 3
        with self.init_scope():
            for s, width in enumerate(widths, 1):
                names = []
                for i in range(1, 4):
                    name = 'bconv{}_{}'.format(s, i)
                    setattr(self, name, L.ConvBN(cin, width, 3, initialW=_glorot()))
                    names.append(name)
                    cin = width
                self._stages.append(names)
            self.fc = L.Linear(4 * 4 * cin, 10, initialW=_glorot())

    def forward(self, x):
        h = x
        for names, ratio in zip(self._stages, self._dropouts):
            for name in names:
                h = self[name](h)
            h = F.dropout(L.max_pooling_2d(h, 2), ratio)
        return self.fc(h)


class KerasResNetV1(ResidualNetBase):
    """Keras example ResNet v1 (n blocks per stage, depth 6n+2), here with dropout.

    conv3x3(16)+BN+ReLU; basic blocks with biases and a 1x1 projection
    shortcut (no BN) where the shape changes; dropout ``block_dropout``
    between the two convs of each block; global average pooling;
    dropout ``head_dropout``; dense 10.
    """

    def __init__(self, n=3, block_dropout=0.3, head_dropout=0.4):
        blocks = [ResidualBlock(cin, cout, stride, shortcut='projection', nobias=False,
                                dropout=block_dropout)
                  for cin, cout, stride in three_stage_plan(n)]
        stem = L.ConvBN(3, 16, 3, initialW=he_normal())
        super().__init__(stem, blocks, head_dropout=head_dropout)


class AblationNet(chainer.Chain):
    """The ablation ladder's network; each flag adds one rung (the ladder is cumulative).

    base: conv1x1(64)+ReLU, then three stages (64, 128, 256 channels) of two
    conv3x3+ReLU, the first conv of stages 2 and 3 with stride 2 instead of
    pooling; flatten (8*8*256); dense 10.

    * ``bn``: BatchNorm after every conv (before ReLU).
    * ``resblock``: each stage becomes one basic residual block (conv-BN-ReLU-
      conv-BN + shortcut, ReLU) with a 1x1 projection shortcut on a shape change.
    * ``gap``: global average pooling instead of flatten.
    * ``dropout``: dropout 0.3 between the two convs of each stage and 0.4
      before the classifier.
    """

    widths = (64, 128, 256)

    def __init__(self, bn=False, resblock=False, gap=False, dropout=False):
        super().__init__()
        if resblock and not bn:
            raise ValueError('residual blocks carry BatchNorm; the ladder adds resblock after bn')
        self.gap, self.dropout = gap, dropout
        self._stages = []
        with self.init_scope():
            self.stem = L.ConvBN(3, 64, 1, bn=bn, initialW=_glorot())
            cin = 64
            for s, width in enumerate(self.widths, 1):
                stride = 1 if s == 1 else 2
                if resblock:
                    name = 'res{}'.format(s)
                    setattr(self, name, ResidualBlock(cin, width, stride, shortcut='projection',
                                                      nobias=False, dropout=0.3 if dropout else 0.0))
                    self._stages.append((name,))
                else:
                    names = ('bconv{}_1'.format(s), 'bconv{}_2'.format(s))
                    setattr(self, names[0], L.ConvBN(cin, width, 3, stride, bn=bn, initialW=_glorot()))
                    setattr(self, names[1], L.ConvBN(width, width, 3, bn=bn, initialW=_glorot()))
                    self._stages.append(names)
                cin = width
            self.fc = L.Linear(cin if gap else 8 * 8 * cin, 10, initialW=_glorot())

    def forward(self, x):
        h = self.stem(x)
        for names in self._stages:
            for i, name in enumerate(names):
                if i and self.dropout:
                    h = F.dropout(h, 0.3)
                h = self[name](h)
        if self.gap:
            h = F.average(h, axis=(2, 3))
        if self.dropout:
            h = F.dropout(h, 0.4)
        return self.fc(h)


@register_model('keras_simple_cnn', source=KERAS)
def keras_simple_cnn():
    """2 conv + maxpool + dropout + dense 128 (reported 71.6%, no augmentation)"""
    return KerasSimpleCNN()


@register_model('keras_deep_cnn', source=KERAS)
def keras_deep_cnn():
    """9 conv+BN in 3 stages (reported 90.5%, Adam + step decay)"""
    return KerasDeepCNN()


@register_model('resnet20_v1_dropout', source=KERAS)
def resnet20_v1_dropout():
    """Keras ResNet20 v1 + dropout 0.3/0.4 (reported 86.1%, no augmentation)"""
    return KerasResNetV1(3)


@register_model('resnet50_v1_dropout', source=KERAS)
def resnet50_v1_dropout():
    """Keras ResNet v1 n=8 (50 layers) + dropout 0.3/0.4 (reported 87.4%)"""
    return KerasResNetV1(8)


@register_model('ablation_base', source=KERAS + ', ablation ladder')
def ablation_base():
    """1x1 conv + 3 stages of 3x3 convs, strided (reported 72.88% no aug, 86.09% aug)"""
    return AblationNet()


@register_model('ablation_bn', source=KERAS + ', ablation ladder')
def ablation_bn():
    """ablation_base + BatchNorm (reported 91.24%)"""
    return AblationNet(bn=True)


@register_model('ablation_resblock', source=KERAS + ', ablation ladder')
def ablation_resblock():
    """ablation_bn + residual blocks (reported 89.71%)"""
    return AblationNet(bn=True, resblock=True)


@register_model('ablation_gap', source=KERAS + ', ablation ladder')
def ablation_gap():
    """ablation_resblock + global average pooling (reported 90.44%)"""
    return AblationNet(bn=True, resblock=True, gap=True)


@register_model('ablation_dropout', source=KERAS + ', ablation ladder')
def ablation_dropout():
    """ablation_gap + dropout (reported 90.46%)"""
    return AblationNet(bn=True, resblock=True, gap=True, dropout=True)
