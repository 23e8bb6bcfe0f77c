"""Named experiment presets: each published recipe as ``train.py`` flags.

A preset is the exact command line a source describes, so ``compare.py run
resnet20-paper --seeds 1,2,3`` is the paper's experiment and nothing else.
Iteration counts are converted to epochs of the 45,000-image training split
(352 iterations of batch 128): 32k/48k/64k iterations -> epochs 91/137/182.
Flags appended on the command line (``--iter 1 --subset 256`` for a smoke
test) override the preset's, and the report then marks the run as modified.
"""
import collections

from chainer_cifar.errors import UserError
from chainer_cifar.results.published import published_for

Preset = collections.namedtuple('Preset', 'name args description')

_PAPER = ['-b', '128', '--optimizer', 'sgd', '--lr', '0.1', '--weight_decay', '1e-4',
          '--iter', '182', '--lr_decay_iter', '91,137', '--augment', 'crop,mirror']
_SD = ['-b', '128', '--optimizer', 'nesterov', '--lr', '0.1', '--weight_decay', '1e-4',
       '--iter', '500', '--lr_decay_iter', '250,375', '--augment', 'crop,mirror']
_ARTICLE_ADAM = ['-b', '128', '--optimizer', 'adam', '--iter', '300', '--lr_decay_iter', '100']
_ARTICLE_SGD = ['-b', '128', '--optimizer', 'sgd', '--lr', '0.1', '--iter', '300', '--lr_decay_iter', '100']
# The Keras experiments as quoted give no schedule; Adam for 200 epochs with a
# step decay is our choice, stated in every report row that uses it.
_KERAS = ['-b', '128', '--optimizer', 'adam', '--iter', '200', '--lr_decay_iter', '80,120,160']

PRESETS = collections.OrderedDict((p.name, p) for p in [
    Preset('resnet20-paper', ['-m', 'resnet20'] + _PAPER, 'ResNet-20, He et al. recipe'),
    Preset('resnet32-paper', ['-m', 'resnet32'] + _PAPER, 'ResNet-32, He et al. recipe'),
    Preset('resnet44-paper', ['-m', 'resnet44'] + _PAPER, 'ResNet-44, He et al. recipe'),
    Preset('resnet56-paper', ['-m', 'resnet56'] + _PAPER, 'ResNet-56, He et al. recipe'),
    Preset('resnet110-paper', ['-m', 'resnet110'] + _PAPER + ['--warmup_epochs', '1', '--warmup_lr', '0.01'],
           'ResNet-110, He et al. recipe with the lr 0.01 warm-up (~400 iterations = 1 epoch)'),
    Preset('resnet1202-paper', ['-m', 'resnet1202'] + _PAPER, 'ResNet-1202, He et al. recipe'),
    Preset('resnet110-constant-depth', ['-m', 'residual', '--res_depth', '18'] + _SD,
           '110-layer ResNet, Huang et al. recipe without stochastic depth'),
    Preset('resnet110-sd-paper', ['-m', 'residual', '--res_depth', '18', '--skip_depth'] + _SD,
           '110-layer ResNet with stochastic depth (linear decay to 0.5), Huang et al. recipe'),
    Preset('resnet1202-constant-depth', ['-m', 'residual', '--res_depth', '200'] + _SD,
           '1202-layer ResNet, Huang et al. recipe without stochastic depth'),
    Preset('resnet1202-sd-paper', ['-m', 'residual', '--res_depth', '200', '--skip_depth'] + _SD,
           '1202-layer ResNet with stochastic depth, Huang et al. recipe'),
    Preset('article-cnn', ['-m', 'cnn'] + _ARTICLE_ADAM, 'the article\'s CNN'),
    Preset('article-cnn-norm-zca', ['-m', 'cnn', '-d', 'dataset/image_norm_zca.pkl'] + _ARTICLE_ADAM,
           'the article\'s CNN on contrast-normalized, ZCA-whitened data'),
    Preset('article-cnnbn', ['-m', 'cnnbn'] + _ARTICLE_ADAM, 'the article\'s CNN with BatchNorm'),
    Preset('article-cnnbn-norm-zca', ['-m', 'cnnbn', '-d', 'dataset/image_norm_zca.pkl'] + _ARTICLE_ADAM,
           'the article\'s CNN with BatchNorm on contrast-normalized, ZCA-whitened data'),
    Preset('article-vgg', ['-m', 'vgg'] + _ARTICLE_ADAM, 'the article\'s VGG-like network'),
    Preset('article-residual', ['-m', 'residual', '--res_depth', '12'] + _ARTICLE_SGD,
           'the article\'s ResidualNet, 74 layers'),
    Preset('article-residual-skip', ['-m', 'residual', '--res_depth', '12', '--skip_depth'] + _ARTICLE_SGD,
           'the article\'s ResidualNet, 74 layers, stochastic depth'),
    Preset('keras-simple-cnn', ['-m', 'keras_simple_cnn', '--augment', 'none'] + _KERAS,
           'Keras simple CNN, no augmentation'),
    Preset('keras-deep-cnn', ['-m', 'keras_deep_cnn'] + _KERAS, 'Keras deep CNN (9 conv + BN)'),
    Preset('keras-resnet20-v1-noaug', ['-m', 'resnet20', '--augment', 'none'] + _KERAS,
           'ResNet-20 v1 without augmentation'),
    Preset('keras-resnet20-v1-dropout', ['-m', 'resnet20_v1_dropout', '--augment', 'none'] + _KERAS,
           'ResNet-20 v1 with dropout, no augmentation'),
    Preset('keras-resnet-n8-dropout', ['-m', 'resnet50_v1_dropout', '--augment', 'none'] + _KERAS,
           'ResNet v1 n=8 (50 layers) with dropout, no augmentation as for its n=3 sibling'),
    Preset('keras-ablation-base', ['-m', 'ablation_base', '--augment', 'none'] + _KERAS,
           'ablation ladder: base network, no augmentation'),
    Preset('keras-ablation-aug', ['-m', 'ablation_base'] + _KERAS, 'ablation ladder: + augmentation'),
    Preset('keras-ablation-bn', ['-m', 'ablation_bn'] + _KERAS, 'ablation ladder: + BatchNorm'),
    Preset('keras-ablation-resblock', ['-m', 'ablation_resblock'] + _KERAS, 'ablation ladder: + residual blocks'),
    Preset('keras-ablation-gap', ['-m', 'ablation_gap'] + _KERAS, 'ablation ladder: + global average pooling'),
    Preset('keras-ablation-dropout', ['-m', 'ablation_dropout'] + _KERAS, 'ablation ladder: + dropout'),
    Preset('keras-ablation-mixup', ['-m', 'ablation_dropout', '--augment', 'crop,mirror,mixup'] + _KERAS,
           'ablation ladder: + mixup'),
    Preset('keras-ablation-amsgrad',
           ['-m', 'ablation_dropout', '--augment', 'crop,mirror,mixup'] + _KERAS + ['--optimizer', 'amsgrad'],
           'ablation ladder: + AMSGrad'),
])


def get_preset(name):
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError('unknown preset {!r}; choose one of: {}'.format(name, ', '.join(PRESETS)))


def describe():
    """Rows of (preset, description, published numbers) for listings."""
    rows = []
    for p in PRESETS.values():
        numbers = ', '.join('{}% ({})'.format(n.error, n.source) for n in published_for(p.name))
        rows.append((p.name, p.description, numbers or '-'))
    return rows
