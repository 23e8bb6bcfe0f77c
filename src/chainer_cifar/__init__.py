"""chainer-cifar: the classic CIFAR-10 experiments, reproduced with Chainer.

Importing this package applies :mod:`chainer_cifar.compat` first, so
``import chainer`` works afterwards on Python 3.11-3.13, NumPy 1.26 or 2.x.
"""
from chainer_cifar import compat  # noqa: F401  (must run before chainer is imported)

__version__ = '0.1.0'
