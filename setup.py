"""chainer-cifar: the classic CIFAR-10 experiments, reproduced with Chainer 7.8.1.

Use ``bash scripts/install.sh`` (it handles Chainer's rotted build); a plain
``pip install -e . --no-build-isolation`` works in an environment that already
has ``setuptools<70``.
"""
from setuptools import find_packages, setup

setup(
    name='chainer-cifar',
    version='0.1.0',
    description='The classic CIFAR-10 experiments (CNN, VGG, ResNet, stochastic depth) with Chainer',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    package_data={'chainer_cifar.functions': ['direct_conv.c', 'batch_norm.c', 'elementwise.c', 'pooling.c']},  # compiled on first use (_native.py)
    python_requires='>=3.10',
    install_requires=['chainer==7.8.1', 'numpy>=1.20', 'six', 'pillow', 'matplotlib'],
    extras_require={'test': ['pytest'], 'mpi': ['mpi4py>=3.1']},
    license='MIT',
)
