#!/usr/bin/env python
"""Images/s of training and inference: fast Chainer, stock Chainer and PyTorch, in one run.

    python src/bench.py --models cnn,resnet20 --repeats 5 --json docs/results/bench.json

See ``chainer_cifar.bench`` and docs/performance.md.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chainer_cifar  # noqa: E402  (compatibility layer before chainer)
import chainer_cifar.errors  # noqa: E402


def main(argv=None):
    from chainer_cifar import bench
    return bench.main(argv)


if __name__ == '__main__':
    sys.exit(chainer_cifar.errors.run_main(main))
