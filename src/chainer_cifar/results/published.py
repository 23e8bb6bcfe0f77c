"""Published CIFAR-10 test error rates (%), with their sources and recipes.

These are other people's numbers, kept as data so reports can set our runs
beside them. Nothing here was measured by this project. Where a source gives
accuracy, the error is ``100 - accuracy``. Each entry names the preset
(:mod:`chainer_cifar.results.presets`) that reproduces its recipe.
"""
import collections

Source = collections.namedtuple('Source', 'key citation url recipe')
Published = collections.namedtuple(
    'Published', 'preset source error std runs params note')

SOURCES = collections.OrderedDict((s.key, s) for s in [
    Source('he2016',
           'K. He, X. Zhang, S. Ren, J. Sun. Deep Residual Learning for Image Recognition. '
           'CVPR 2016 (arXiv:1512.03385), Table 6',
           'https://arxiv.org/abs/1512.03385',
           'batch 128, SGD momentum 0.9, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, '
           'weight decay 1e-4, 45k/5k train/val split, 4-pixel pad + random 32x32 crop + horizontal flip, '
           'single view of the original 32x32 image at test; ResNet-110 warms up at lr 0.01 for ~400 '
           'iterations'),
    Source('huang2016',
           'G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Weinberger. Deep Networks with Stochastic Depth. '
           'ECCV 2016 (arXiv:1603.09382)',
           'https://arxiv.org/abs/1603.09382',
           '500 epochs, lr 0.1 divided by 10 at epochs 250 and 375, Nesterov momentum 0.9, weight decay '
           '1e-4, batch 128, linear decay of survival probability to p_L = 0.5; test error at the epoch '
           'of best validation error'),
    Source('article',
           'The chainer-cifar article (dsanno/chainer-cifar), results as quoted in this project\'s '
           'issue "Compare against published error rates"',
           'https://github.com/dsanno/chainer-cifar',
           '300 epochs (--iter 300), learning rate divided by 10 every 100 epochs, batch 128, random '
           'crop + mirror; Adam for cnn/cnnbn/vgg, SGD lr 0.1 for residual'),
    Source('keras',
           'The Keras CIFAR-10 experiments (simple and deep CNNs, ResNet v1, an ablation ladder), '
           'accuracies as quoted in this project\'s issue "Compare against published error rates"',
           '',
           'as reported by each experiment; accuracy converted to error = 100 - accuracy'),
    Source('he2016b',
           'K. He, X. Zhang, S. Ren, J. Sun. Identity Mappings in Deep Residual Networks. ECCV 2016 '
           '(arXiv:1603.05027), Table 3',
           'https://arxiv.org/abs/1603.05027', 'the ResNet paper\'s recipe, pre-activation blocks'),
    Source('han2017',
           'D. Han, J. Kim, J. Kim. Deep Pyramidal Residual Networks. CVPR 2017 (arXiv:1610.02915), Table 4',
           'https://arxiv.org/abs/1610.02915', '300 epochs, lr 0.1 divided by 10 at epochs 150 and 225'),
    Source('gastaldi2017',
           'X. Gastaldi. Shake-Shake regularization. arXiv:1705.07485, Table 1',
           'https://arxiv.org/abs/1705.07485', '1800 epochs, cosine learning rate, Shake-Shake-Image'),
    Source('pytorch',
           'A PyTorch reproduction of the ResNet paper (mean +- std over 5 runs), as quoted in this '
           'project\'s issue "Compare against published error rates"',
           '',
           'the ResNet paper\'s recipe'),
])

PUBLISHED = [
    # He et al. 2016, Table 6
    Published('resnet20-paper', 'he2016', 8.75, None, 1, 0.27e6, ''),
    Published('resnet32-paper', 'he2016', 7.51, None, 1, 0.46e6, ''),
    Published('resnet44-paper', 'he2016', 7.17, None, 1, 0.66e6, ''),
    Published('resnet56-paper', 'he2016', 6.97, None, 1, 0.85e6, ''),
    Published('resnet110-paper', 'he2016', 6.61, 0.16, 5, 1.7e6, 'mean +- std of 5 runs; best 6.43'),
    Published('resnet1202-paper', 'he2016', 7.93, None, 1, 19.4e6, ''),
    # Huang et al. 2016
    Published('resnet110-constant-depth', 'huang2016', 6.41, None, None, 1.7e6, 'constant depth baseline'),
    Published('resnet110-sd-paper', 'huang2016', 5.25, None, None, 1.7e6, 'stochastic depth, p_L = 0.5'),
    Published('resnet1202-constant-depth', 'huang2016', 6.67, None, None, 19.4e6, 'constant depth baseline'),
    Published('resnet1202-sd-paper', 'huang2016', 4.91, None, None, 19.4e6, 'stochastic depth, p_L = 0.5'),
    # The chainer-cifar article
    Published('article-cnn', 'article', 18.94, None, 1, None, ''),
    Published('article-cnn-norm-zca', 'article', 18.76, None, 1, None, 'contrast normalization + ZCA'),
    Published('article-cnnbn', 'article', 12.40, None, 1, None, ''),
    Published('article-cnnbn-norm-zca', 'article', 12.27, None, 1, None, 'contrast normalization + ZCA'),
    Published('article-vgg', 'article', 7.65, None, 1, None, ''),
    Published('article-residual', 'article', 8.06, None, 1, None, 'res_depth 12 (74 layers)'),
    Published('article-residual-skip', 'article', 7.42, None, 1, None, 'res_depth 12 + stochastic depth'),
    # The Keras experiments (accuracy -> error)
    Published('keras-simple-cnn', 'keras', 28.4, None, 1, None, 'reported accuracy 71.6%, no augmentation'),
    Published('keras-deep-cnn', 'keras', 9.5, None, 1, None, 'reported accuracy 90.5%'),
    Published('keras-resnet20-v1-noaug', 'keras', 33.8, None, 1, None, 'reported accuracy 66.2%, no augmentation'),
    Published('keras-resnet20-v1-dropout', 'keras', 13.9, None, 1, None, 'reported accuracy 86.1%'),
    Published('keras-resnet-n8-dropout', 'keras', 12.6, None, 1, None, 'reported accuracy 87.4%'),
    Published('keras-ablation-base', 'keras', 27.12, None, 1, None, 'reported accuracy 72.88%'),
    Published('keras-ablation-aug', 'keras', 13.91, None, 1, None, 'reported accuracy 86.09%'),
    Published('keras-ablation-bn', 'keras', 8.76, None, 1, None, 'reported accuracy 91.24%'),
    Published('keras-ablation-resblock', 'keras', 10.29, None, 1, None, 'reported accuracy 89.71%'),
    Published('keras-ablation-gap', 'keras', 9.56, None, 1, None, 'reported accuracy 90.44%'),
    Published('keras-ablation-dropout', 'keras', 9.54, None, 1, None, 'reported accuracy 90.46%'),
    Published('keras-ablation-mixup', 'keras', 9.30, None, 1, None, 'reported accuracy 90.70%'),
    Published('keras-ablation-amsgrad', 'keras', 9.04, None, 1, None, 'reported accuracy 90.96%'),
    # The PyTorch reproduction
    Published('resnet20-paper', 'pytorch', 8.586, 0.120, 5, None, ''),
    Published('resnet32-paper', 'pytorch', 7.728, 0.318, 5, None, ''),
    Published('resnet44-paper', 'pytorch', 7.540, 0.475, 5, None, ''),
    Published('resnet56-paper', 'pytorch', 7.884, 0.523, 5, None, ''),
]


# What the papers of the repository's later additions report for the models as registered here;
# no preset reproduces their recipes yet: model -> (source, error %, parameters).
REPORTED_ONLY = {
    'identity_mapping': ('he2016b', 6.37, 1.7e6),
    'pyramid': ('han2017', 4.58, 1.7e6),
    'shake_residual': ('gastaldi2017', 3.55, 2.9e6),
}


def published_for(preset):
    """Every published number for ``preset``, primary source first."""
    return [p for p in PUBLISHED if p.preset == preset]
