"""PyTorch twins of the registry models that the benchmark times, for its PyTorch columns.

Each twin has the registry model's layers, shapes and parameter count, so
the "fast / PyTorch" ratio compares the same network (tests/test_torch_models.py
checks the counts and shapes, and for ``cnn``, ``cnnbn``, ``vgg`` and
``residual`` the logits with copied weights):

* ``cnn``, ``cnnbn``: :class:`chainer_cifar.models.article.CNN` / ``CNNBN`` --
  three 5x5 convolutions (with bias; ``cnnbn``: + BatchNormalization), ReLU,
  3x3/2 max pooling with Chainer's ``cover_all=True`` (``ceil_mode=True``:
  32 -> 16 -> 8 -> 4), dropout, fc 1000, ReLU, dropout, fc 10;
* ``vgg``: ``article.VGG`` -- 2 + 2 + 4 conv3x3 (with bias) + BN + ReLU, each
  stage ending in 2x2 max pooling and dropout 0.25; then dropout, fc 1024,
  ReLU, dropout, fc 1024, ReLU, fc 10;
* ``residual``: ``article.ResidualNet`` -- 6*res_depth+2 layers, every
  convolution with a bias, option-A shortcuts (stride subsampling, the zero
  channels in front), and with ``skip_depth`` stochastic depth with the same
  per-block probabilities (:func:`chainer_cifar.models.blocks.linear_skip_ratios`,
  drawn on the host) and the same test-time scaling;
* ``resnet20`` / ``32`` / ``44`` / ``56`` / ``110`` / ``1202``: the He et al.
  ResNet of ``tools/torch_control.py`` (the independent PyTorch training
  control), ``ResNet(n)``.

Submodules carry the Chainer links' names (``conv1``, ``bconv1.conv``,
``res3.bn2``, ``fc8`` ...), so a Chainer parameter ``/bconv1/bn/gamma`` is the
twin's ``bconv1.bn.weight`` (:func:`torch_name`). BatchNormalization uses
Chainer's eps (2e-5) and momentum (decay 0.9). Initialization is PyTorch's
default: the twins are for timing and for weight-copy checks, not training.
"""
import contextlib

import numpy
import torch
import torch.nn as nn
import torch.nn.functional as TF

from chainer_cifar.models.blocks import linear_skip_ratios, three_stage_plan
from chainer_cifar.models.resnet_paper import DEPTHS

BN_EPS = 2e-5  # chainer.links.BatchNormalization's default
BN_MOMENTUM = 0.1  # Chainer's decay 0.9


def _bn(channels):
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBN(nn.Module):
    """``links.ConvBN``: conv (with bias) -> BN -> ReLU."""

    def __init__(self, cin, cout, ksize, pad):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ksize, 1, pad)
        self.bn = _bn(cout)

    def forward(self, x):
        return TF.relu(self.bn(self.conv(x)))


class ConvPoolNet(nn.Module):
    """``article.CNN`` (``bn=False``: links conv1..3) or ``article.CNNBN`` (``bn=True``: bconv1..3)."""

    def __init__(self, bn=False):
        super().__init__()
        self._names = []
        for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128)], 1):
            name = ('bconv{}' if bn else 'conv{}').format(i)
            self.add_module(name, ConvBN(cin, cout, 5, 2) if bn else nn.Conv2d(cin, cout, 5, 1, 2))
            self._names.append(name)
        self.l1 = nn.Linear(4 * 4 * 128, 1000)
        self.l2 = nn.Linear(1000, 10)

    def forward(self, x):
        for name in self._names:
            x = TF.max_pool2d(TF.relu(getattr(self, name)(x)), 3, 2, ceil_mode=True)
        x = torch.flatten(x, 1)
        x = TF.relu(self.l1(TF.dropout(x, 0.5, self.training)))
        return self.l2(TF.dropout(x, 0.5, self.training))


class VGG(nn.Module):
    """``article.VGG()`` (widths 64/128/256, the fc head)."""

    def __init__(self, widths=(64, 128, 256)):
        super().__init__()
        self._stages = []
        cin = 3
        for stage, (width, n) in enumerate(zip(widths, (2, 2, 4)), 1):
            names = []
            for i in range(1, n + 1):
                name = 'bconv{}_{}'.format(stage, i)
                self.add_module(name, ConvBN(cin, width, 3, 1))
                names.append(name)
                cin = width
            self._stages.append(names)
        self.fc4 = nn.Linear(4 * 4 * cin, 1024)
        self.fc5 = nn.Linear(1024, 1024)
        self.fc6 = nn.Linear(1024, 10)

    def forward(self, x):
        for names in self._stages:
            for name in names:
                x = getattr(self, name)(x)
            x = TF.dropout(TF.max_pool2d(x, 2, 2, ceil_mode=True), 0.25, self.training)
        x = torch.flatten(x, 1)
        x = TF.relu(self.fc4(TF.dropout(x, 0.5, self.training)))
        x = TF.relu(self.fc5(TF.dropout(x, 0.5, self.training)))
        return self.fc6(x)


class ResidualBlock(nn.Module):
    """``blocks.ResidualBlock(nobias=False, shortcut='zero_pad')``, with stochastic depth."""

    def __init__(self, cin, cout, stride, skip_ratio=0.0):
        super().__init__()
        self.stride, self.missing, self.skip_ratio = stride, cout - cin, float(skip_ratio)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.bn2 = _bn(cout)

    def shortcut(self, x):
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.missing > 0:
            x = TF.pad(x, (0, 0, 0, 0, self.missing, 0))  # the zero channels in front, as Chainer's
        return x

    def forward(self, x):
        s = self.shortcut(x)
        # drawn on the host with NumPy's generator, as blocks.draw_skip (no device sync)
        if self.training and self.skip_ratio > 0 and numpy.random.random_sample() < self.skip_ratio:
            return s
        h = self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x)))))
        if self.skip_ratio > 0 and not self.training:
            h = h * (1.0 - self.skip_ratio)
        return TF.relu(h + s)


class ResidualNet(nn.Module):
    """``article.ResidualNet(res_depth, skip_depth=skip_depth)``: bconv1, res1..res{3n}, fc{3n+2}."""

    def __init__(self, res_depth=18, skip_depth=False):
        super().__init__()
        if res_depth < 1:
            raise ValueError('res_depth must be >= 1')
        plan = three_stage_plan(res_depth)
        ratios = linear_skip_ratios([s for _, _, s in plan]) if skip_depth else [0.0] * len(plan)
        self.bconv1 = ConvBN(3, 16, 3, 1)
        self._blocks = []
        for i, ((cin, cout, stride), p) in enumerate(zip(plan, ratios), 1):
            self.add_module('res{}'.format(i), ResidualBlock(cin, cout, stride, p))
            self._blocks.append('res{}'.format(i))
        self._fc = 'fc{}'.format(len(plan) + 2)
        self.add_module(self._fc, nn.Linear(64, 10))

    def forward(self, x):
        x = self.bconv1(x)
        for name in self._blocks:
            x = getattr(self, name)(x)
        return getattr(self, self._fc)(x.mean(dim=(2, 3)))


def _he_resnet(n):
    from torch_control import ResNet  # tools/torch_control.py, the independent training control
    return ResNet(n)


def build(name, options=None):
    """The twin of registry model ``name`` with registry ``options``, or ``None`` when there is none."""
    options = {k: v for k, v in (options or {}).items() if v is not None and v is not False}
    if name in ('cnn', 'cnnbn', 'vgg') and not options:
        return ConvPoolNet() if name == 'cnn' else ConvPoolNet(bn=True) if name == 'cnnbn' else VGG()
    if name == 'residual' and set(options) <= {'res_depth', 'skip_depth'}:
        return ResidualNet(**options)
    if name.startswith("resnet") and name[6:].isdigit() and int(name[6:]) in DEPTHS and not options:
        return _he_resnet(DEPTHS[int(name[6:])])
    return None


def train_steps(model, x, t, mixed16=False):
    """``(train, infer)`` closures of ``model`` on the batch ``x``, ``t``, as the benchmark's Chainer steps.

    A training step is forward, cross-entropy, backward and SGD (momentum
    0.9, weight decay 5e-4); inference runs under ``inference_mode``.

    ``mixed16`` (CUDA only): the forward pass under ``torch.autocast`` in
    float16, float32 weights, and a ``GradScaler`` for dynamic loss scaling,
    PyTorch's counterpart of ``chainer.mixed16`` with ``loss_scaling()``.
    """
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    lossf = torch.nn.CrossEntropyLoss()
    if mixed16:
        scaler = torch.amp.GradScaler('cuda')

        def autocast():
            return torch.autocast(device_type='cuda', dtype=torch.float16)
    else:
        scaler, autocast = None, contextlib.nullcontext

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = lossf(model(x), t)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    def infer():
        model.eval()
        with torch.inference_mode(), autocast():
            model(x)
    return train, infer


_SUFFIX = {'W': 'weight', 'b': 'bias', 'gamma': 'weight', 'beta': 'bias',
           'avg_mean': 'running_mean', 'avg_var': 'running_var'}


def torch_name(chainer_name):
    """The twin's name of a Chainer parameter or persistent: ``/bconv1/bn/gamma`` -> ``bconv1.bn.weight``."""
    *path, leaf = chainer_name.strip('/').split('/')
    return '.'.join(path + [_SUFFIX.get(leaf, leaf)])
