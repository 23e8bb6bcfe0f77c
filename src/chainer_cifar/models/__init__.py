"""Every CIFAR-10 model of the project, behind one registry.

Importing this package registers the built-in models (``article``,
``resnet_paper``, ``keras``); ``create_model(name, **options)`` builds one.
"""
from chainer_cifar.models.registry import create_model, list_models, model_info, register_model
from chainer_cifar.models import article, keras, resnet_paper  # noqa: F401  (registration)
from chainer_cifar.models.article import (CNN, CNNBN, CNNWN, VGG, CNNWithBatch, IdentityMapping,
                                          PyramidNet, ResidualNet, ShakeShakeNet)
from chainer_cifar.models.keras import AblationNet, KerasDeepCNN, KerasResNetV1, KerasSimpleCNN
from chainer_cifar.models.resnet_paper import ResNet

__all__ = ['create_model', 'list_models', 'model_info', 'register_model',
           'CNN', 'CNNBN', 'CNNWN', 'CNNWithBatch', 'VGG', 'ResidualNet', 'IdentityMapping',
           'PyramidNet', 'ShakeShakeNet', 'ResNet', 'KerasSimpleCNN', 'KerasDeepCNN',
           'KerasResNetV1', 'AblationNet']
