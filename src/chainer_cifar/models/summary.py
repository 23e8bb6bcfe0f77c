"""Layer and parameter counts, and activation memory, of the registered models."""
import collections
import datetime
import platform

import numpy

import chainer
import chainer.links as L

from chainer_cifar.models import blocks
from chainer_cifar.models.registry import create_model, list_models, model_info

_WEIGHTED = (L.Convolution2D, L.Linear, blocks.WeightNormConvolution2D, blocks.WeightNormLinear)
_SHORTCUT_LINKS = ('projection', 'short1', 'short2')

Row = collections.namedtuple('Row', 'name layers params source')


def count_layers(model):
    """Weighted layers (conv + linear) as papers count depth: resnet20 -> 20.

    Shortcut projections are not counted (the papers do not count them), and a
    block that declares ``n_layers`` (parallel Shake-Shake branches) counts as
    that many: depth along one path.
    """
    def walk(link, name):
        if name in _SHORTCUT_LINKS:
            return 0
        if isinstance(link, _WEIGHTED):
            return 1
        if hasattr(link, 'n_layers'):
            return link.n_layers
        if isinstance(link, chainer.Chain):
            return sum(walk(child, child.name) for child in link.children())
        return 0
    return walk(model, None)


def count_params(model):
    """Trainable parameters (BN's gamma and beta included; running statistics not)."""
    return sum(p.size for p in model.params())


def summarize(name, **options):
    model = create_model(name, **options)
    return Row(name, count_layers(model), count_params(model), model_info(name).source)


def table(names=None, strict=False, **options):
    """One :class:`Row` per model. ``options`` go only to the models that take
    them, unless ``strict``: then a model refusing one is a UserError."""
    rows = []
    for name in names or list_models():
        accepted = model_info(name).options
        rows.append(summarize(name, **{k: v for k, v in options.items() if strict or k in accepted}))
    return rows


def format_table(rows):
    lines = ['{:<20} {:>6} {:>12}  {}'.format('model', 'layers', 'parameters', 'source')]
    for r in rows:
        lines.append('{:<20} {:>6} {:>12,}  {}'.format(r.name, r.layers, r.params, r.source))
    return '\n'.join(lines)


def _arrays_of(obj):
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _arrays_of(item)
    elif isinstance(obj, chainer.get_array_types()):
        yield obj


def retained_bytes(y, exclude=()):
    """Bytes of the arrays the graph behind ``y`` keeps alive for backward.

    Walks every function node reachable from ``y`` and sums, each array
    once: retained inputs and outputs (inputs of conv, BN, ReLU outputs ...)
    and arrays the node stores itself (dropout masks, pooling indexes, BN
    statistics). Arrays in ``exclude`` (the parameters) are not counted.
    Transient workspaces (im2col buffers, cuDNN workspace) are not retained
    and so not counted.
    """
    skip = {id(a) for a in exclude}
    seen_arrays, seen_nodes, total = set(), set(), 0
    stack = [y.creator_node] if y.creator_node is not None else []
    while stack:
        func = stack.pop()
        if id(func) in seen_nodes:
            continue
        seen_nodes.add(id(func))
        candidates = [node.data for node in func.inputs if node.data is not None]
        candidates += list(_arrays_of(getattr(func, '_retained_output_data', None)))
        for value in vars(func).values():
            candidates += list(_arrays_of(value))
        for a in candidates:
            if id(a) not in skip and id(a) not in seen_arrays:
                seen_arrays.add(id(a))
                total += a.nbytes
        stack.extend(node.creator_node for node in func.inputs if node.creator_node is not None)
    return total


def _model_arrays(model):
    arrays = [p.array for p in model.params()]
    for link in model.links():
        arrays += [getattr(link, name) for name in link._persistent]
    return [a for a in arrays if isinstance(a, chainer.get_array_types())]


def activation_memory(name, batch=2, scale_to=128, seed=0, **options):
    """Measure :func:`retained_bytes` after one training-mode forward of ``batch``
    images and scale it linearly to ``scale_to`` images.

    Returns ``(bytes_at_batch, bytes_scaled)``. Linear scaling is exact up to
    the per-batch constants (BN statistics are per channel, not per image),
    which makes the scaled figure a slight overestimate.

    Measured with Chainer's own functions, the ones a GPU runs (the question
    is GPU memory): the fast NumPy convolution keeps its im2col columns for a
    batch that fits one cache-sized chunk, so at a tiny batch it would
    retain far more per image than at batch 128.
    """
    numpy.random.seed(seed)
    model = create_model(name, **options)
    x = numpy.random.randn(batch, 3, 32, 32).astype(numpy.float32)
    with chainer.using_config('train', True), chainer.using_config('enable_backprop', True), \
            chainer.using_config('use_fast_kernels', False):
        y = model(x)
        measured = retained_bytes(y, exclude=_model_arrays(model))
    return measured, measured * scale_to // batch


def memory_report(names, batch=2, scale_to=128, **options):
    lines = ['activation memory retained for backward, train mode, float32, Chainer\'s functions (as on a GPU); '
             'measured at batch {}, scaled linearly to batch {}'.format(batch, scale_to),
             'measured {} on {} (Python {}, NumPy {}, Chainer {})'.format(
                 datetime.date.today().isoformat(), platform.machine(), platform.python_version(),
                 numpy.__version__, chainer.__version__),
             '{:<20} {:>16} {:>16}'.format('model', 'batch {}'.format(batch), 'batch {}'.format(scale_to))]
    for name in names:  # named explicitly: an option a model does not take is an error
        measured, scaled = activation_memory(name, batch, scale_to, **options)
        lines.append('{:<20} {:>13.1f} MiB {:>12.2f} GiB'.format(name, measured / 2 ** 20, scaled / 2 ** 30))
    return '\n'.join(lines)
