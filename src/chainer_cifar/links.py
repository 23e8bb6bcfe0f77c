"""The links every model is built from: fast drop-ins for Chainer's, and the fused layers.

**Drop-ins.** ``Convolution2D`` and ``BatchNormalization`` subclass Chainer's
links: the same constructor signatures, parameter and persistent names
(``W``, ``b``; ``gamma``, ``beta``, ``avg_mean``, ``avg_var``, ``N``), so saved
models load either way. ``forward`` takes the fast path for NumPy arrays while
``chainer.config.use_fast_kernels`` is on (the default) and calls Chainer's
own implementation otherwise (CuPy, ChainerX, options not handled, mixed
dtypes, or the switch off): the body of Chainer's ``forward`` with Chainer's
functions captured at import, so routing ``chainer.functions``' names to this
package's functions cannot make a fallback call itself.

**Fused layers.** A model says what the paper says (conv-BN-ReLU, BN-ReLU,
ReLU then max pooling, ``relu(F(x) + x)``) and the layer picks how to run it:

* :class:`ConvBN` (children ``conv`` and ``bn``, the original's ``BatchConv2D``),
  and :func:`conv_bn` / :func:`conv_bn_relu` over a convolution and a
  BatchNormalization a Chain already holds under its own names. Training: the
  ReLU inside the BatchNormalization's node. Inference without a graph: the
  BatchNormalization folded into the convolution, and a residual block's merge
  (:meth:`ConvBNLayer.add_relu`) done as the convolution writes its output.
* :func:`bn_relu`: BatchNormalization with the ReLU in the same node.
* :func:`relu_max_pooling_2d`: max pooling of ``relu(x)`` in one pass, no ReLU node.

Model code imports this module in place of Chainer's::

    from chainer_cifar import links as L        # instead of: import chainer.links as L

Every other name (``L.Linear``, ``L.Classifier`` ...) is re-exported from
``chainer.links`` so that line can replace Chainer's wholesale; the models
reach :mod:`chainer_cifar.functions` only through this module.
"""
import functools

import numpy

import chainer
import chainer.functions as F
import chainer.links as _L
from chainer import configuration
from chainer import memory_layouts
from chainer.links import *  # noqa: F401,F403  (re-export: L.Linear etc. keep working)
from chainer.utils import argument

from chainer_cifar.functions import batch_norm as _bn
from chainer_cifar.functions import convolution as _conv
from chainer_cifar.functions._config import use_fast
from chainer_cifar.functions import add_relu as _add_relu
from chainer_cifar.functions.pooling import average_pooling_2d, max_pooling_2d  # noqa: F401  (for the models)
from chainer_cifar.functions import convolution_2d, zero_pad_shortcut  # noqa: F401  (for the models)


class Convolution2D(_L.Convolution2D):
    """:class:`chainer.links.Convolution2D` with the fast NumPy convolution."""

    def forward(self, x):
        x = chainer.as_variable(x)
        assert x.layout == self.x_layout
        if self.W.raw_array is None:
            _, c, _, _ = memory_layouts.get_semantic_shape(x, assumed_layout=self.x_layout)
            self._initialize_params(c)
        W, b = self.W, self.b
        if (not self.cudnn_fast and x.layout is None
                and _conv.fast_path(x, W, b, dilate=self.dilate, groups=self.groups)):
            args = (x, W) if b is None else (x, W, b)
            y, = _conv.Convolution2DFast(self.stride, self.pad).apply(args)
            return y
        return _conv._chainer_convolution_2d(x, W, b, self.stride, self.pad, dilate=self.dilate,
                                             groups=self.groups, cudnn_fast=self.cudnn_fast)


class BatchNormalization(_L.BatchNormalization):
    """:class:`chainer.links.BatchNormalization` with the fused NumPy kernels.

    Train mode uses the batch statistics and updates ``avg_mean``/``avg_var``
    exactly as Chainer does; test mode uses the running averages. ``finetune``,
    non-default ``axis``, recomputation and non-NumPy arrays take Chainer's path.
    ``bn(x, relu=True)`` is ``F.relu(bn(x))``, with the ReLU fused into the
    train-mode node on the fast path (one pass less each way, no separate node);
    model code says :func:`bn_relu` (or :class:`ConvBN`) instead.
    """

    def forward(self, x, **kwargs):
        """``relu=True`` returns ``relu(bn(x))``, fused into one node in train mode on NumPy."""
        finetune, relu = argument.parse_kwargs(
            kwargs, ('finetune', False), ('relu', False),
            test='test argument is not supported anymore. Use chainer.using_config')
        if (finetune or self.avg_mean is None or self.axis is not None
                or getattr(chainer.config, 'in_recomputing', False)
                or x.ndim not in (2, 4) or self.avg_mean.ndim != 1
                or getattr(x, 'layout', None) is not None):
            return self._stock(x, finetune, relu)
        gamma, beta = self._gamma_beta()
        if not use_fast(x, gamma, beta, self.avg_mean, self.avg_var):
            return self._stock(x, finetune, relu)
        if configuration.config.train:
            y, = _bn.BatchNormalizationFast(self.eps, self.avg_mean, self.avg_var,
                                            self.decay, relu=relu).apply((x, gamma, beta))
            return y
        if relu and not configuration.config.enable_backprop:
            # inference without a graph: the ReLU in the same pass
            y, = _bn.FixedBatchNormalizationFast(self.eps, relu=True).apply(
                (x, gamma, beta, self.avg_mean, self.avg_var))
            return y
        y, = _bn.FixedBatchNormalizationFast(self.eps).apply(
            (x, gamma, beta, self.avg_mean, self.avg_var))
        return F.relu(y) if relu else y

    def _gamma_beta(self):
        """The scale and shift, or constants of 1 and 0 where the link was built without them."""
        gamma = self.gamma
        if gamma is None:
            gamma, = self._get_gamma()
        beta = self.beta
        if beta is None:
            beta, = self._get_beta()
        return gamma, beta

    def _stock(self, x, finetune, relu):
        """Chainer's ``forward`` (7.8.1) with its functions captured at import, then the ReLU."""
        if self.avg_mean is None:
            self._initialize_params(tuple(d for i, d in enumerate(x.shape) if i not in self.axis))
        gamma, beta = self._gamma_beta()
        if configuration.config.train:
            if finetune:
                self.N += 1
                decay = 1. - 1. / self.N
            else:
                decay = self.decay
            avg_mean, avg_var = self.avg_mean, self.avg_var
            if chainer.config.in_recomputing:
                # Do not update statistics when extra forward computation is called.
                if finetune:
                    self.N -= 1
                avg_mean = avg_var = None
            y = _bn._chainer_batch_normalization(
                x, gamma, beta, eps=self.eps, running_mean=avg_mean, running_var=avg_var,
                decay=decay, axis=self.axis)
        else:
            y = _bn._chainer_fixed_batch_normalization(
                x, gamma, beta, self.avg_mean, self.avg_var, self.eps, axis=self.axis)
        return F.relu(y) if relu else y


class ConvBN(chainer.Chain):
    """conv -> BN -> ReLU, each of BN and ReLU optional: the original's ``BatchConv2D``.

    Children ``conv`` and ``bn`` (only ``conv`` with ``bn=False``, which lets the
    ablation ladder switch BatchNorm on and off with one layer class).
    """

    def __init__(self, in_channels, out_channels, ksize=3, stride=1, pad=None, relu=True, bn=True,
                 nobias=False, initialW=None):
        super().__init__()
        pad = ksize // 2 if pad is None else pad
        with self.init_scope():
            self.conv = Convolution2D(in_channels, out_channels, ksize, stride, pad, nobias=nobias,
                                      initialW=initialW)
            if bn:
                self.bn = BatchNormalization(out_channels)
        self.relu = relu

    def forward(self, x):
        if hasattr(self, 'bn'):
            return ConvBNLayer(self.conv, self.bn, self.relu)(x)
        h = self.conv(x)
        return F.relu(h) if self.relu else h


class ConvBNLayer(object):
    """``bn(conv(x))`` (``relu=True``: then ReLU) over two links, run the fastest way the mode allows."""

    def __init__(self, conv, bn, relu=False):
        self.conv, self.bn, self.relu = conv, bn, relu

    def __call__(self, x):
        return _conv_bn(self.conv, self.bn, x, relu=self.relu)

    def add_relu(self, x, residual, scale=1.0):
        """``relu(scale * bn(conv(x)) + residual)``: a residual block's merge after its last layer.

        ``scale`` is stochastic depth's test-time weight of the branch. Inference
        without a graph: inside the folded convolution, as it writes each chunk.
        Otherwise: the merge as one node (:func:`chainer_cifar.functions.add_relu`).
        """
        if self.relu:
            raise ValueError('add_relu follows a conv-BN layer, not a conv-BN-ReLU one')
        if _inference_without_graph():
            return _conv_bn(self.conv, self.bn, x, relu=True, residual=residual, scale_all=scale)
        h = self(x)
        if scale != 1.0:
            h = h * scale
        return _add_relu(h, residual)


class _NamedLinks(object):
    """A layer over links its Chain already holds, looked up by name at each call.

    A class attribute, as ``property`` is: ``conv_bn_relu1 = conv_bn_relu('conv1', 'bn1')``
    in a Chain's class body makes ``self.conv_bn_relu1(x)`` run ``self.conv1`` and
    ``self.bn1`` as one layer. The links stay the Chain's children under their
    own names, so its parameters and saved files keep their layout, and a copy
    of the Chain (``copy``, ``deepcopy``, ``to_device``) calls its own links.
    """

    def __init__(self, make, *names):
        self._make, self._names = make, names

    def __get__(self, chain, owner=None):
        if chain is None:
            return self
        return self._make(*(getattr(chain, name) for name in self._names))


def conv_bn(conv, bn):
    """The layer ``bn(conv(x))`` over the Chain's links named ``conv`` and ``bn`` (a :class:`ConvBNLayer`)."""
    return _NamedLinks(lambda c, b: ConvBNLayer(c, b), conv, bn)


def conv_bn_relu(conv, bn):
    """The layer ``relu(bn(conv(x)))`` over the Chain's links named ``conv`` and ``bn``."""
    return _NamedLinks(lambda c, b: ConvBNLayer(c, b, relu=True), conv, bn)


def bn_relu(bn):
    """The layer ``relu(bn(x))`` over the Chain's BatchNormalization named ``bn``, the ReLU in its node."""
    return _NamedLinks(lambda b: functools.partial(b, relu=True), bn)


def relu_max_pooling_2d(x, ksize, stride=None, pad=0, cover_all=True):
    """``max_pooling_2d(relu(x), ...)``; on the fast path one pass, with no ReLU node."""
    return max_pooling_2d(x, ksize, stride, pad, cover_all, relu=True)


def _inference_without_graph():
    return not configuration.config.train and not configuration.config.enable_backprop


def _conv_bn(conv, bn, x, relu=False, residual=None, scale_all=1.0):
    """``bn(conv(x))``, or ``relu(bn(conv(x)))`` with ``relu=True``.

    ``residual`` (optional, the output's shape) and ``scale_all`` make it
    ``relu?(scale_all * bn(conv(x)) + residual)``: a ResNet block's merge.

    In inference without a graph (``train`` and ``enable_backprop`` both
    off) on the fast path, the BatchNormalization (and ``scale_all``) is folded
    into the convolution: ``W' = W * s`` and ``b' = (b - mean) * s + beta``
    with ``s = gamma / sqrt(var + eps)``, and the residual and the ReLU are
    applied to each chunk of the output as it is written, so the separate
    passes over the activations disappear. Everywhere else (and when a
    statistic or parameter of the BatchNormalization is NaN or infinite, where
    folding would move where NaN and inf appear) it is the composition of
    Chainer functions it describes.
    """
    if residual is not None:
        residual = chainer.as_variable(residual)
    if (_inference_without_graph() and _foldable(conv, bn, x)
            and (residual is None or (residual.shape[0] == x.shape[0]
                                      and use_fast(residual) and residual.dtype == conv.W.dtype))):
        W = conv.W.array
        dt = W.dtype
        scale = numpy.reciprocal(numpy.sqrt(bn.avg_var.astype(dt) + dt.type(bn.eps)))
        if bn.gamma is not None:
            scale *= bn.gamma.array
        shift = -bn.avg_mean.astype(dt) * scale
        if conv.b is not None:
            shift += conv.b.array * scale
        if bn.beta is not None:
            shift += bn.beta.array
        if scale_all != 1.0:
            scale *= dt.type(scale_all)
            shift *= dt.type(scale_all)
        if numpy.isfinite(scale).all() and numpy.isfinite(shift).all():
            W2 = W * scale.reshape(-1, 1, 1, 1)
            node = _conv.Convolution2DFast(conv.stride, conv.pad, relu=relu,
                                           residual=None if residual is None else residual.array)
            y, = node.apply((x, W2, shift))
            return y
    if residual is None and scale_all == 1.0:
        return bn(conv(x), relu=relu)
    h = bn(conv(x))
    if scale_all != 1.0:
        h = h * scale_all
    if residual is not None:
        h = h + residual
    return F.relu(h) if relu else h


def _foldable(conv, bn, x):
    return (isinstance(conv, Convolution2D) and isinstance(bn, BatchNormalization)
            and conv.W.raw_array is not None and conv.groups == 1
            and _conv._pair(conv.dilate) == (1, 1) and bn.axis is None
            and bn.avg_mean is not None and bn.avg_mean.ndim == 1
            and getattr(x, 'layout', None) is None
            and getattr(x, 'dtype', None) == conv.W.dtype
            and use_fast(x, conv.W, conv.b, bn.gamma, bn.beta, bn.avg_mean, bn.avg_var))
