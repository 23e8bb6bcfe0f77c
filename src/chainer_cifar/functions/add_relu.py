"""``relu(a + b)`` in one node: the residual merge of a ResNet basic block.

Chainer's ``F.relu(h + s)`` is two nodes and two output arrays; here one pass
writes the sum and clamps it in place, and backward masks ``gy`` in one pass
(:class:`MaskedGrad`, which reads the mask off the output ``y > 0``) and
hands the same gradient to both inputs. Both passes are split along the
batch across the threads; in float32 they are compiled loops
(``elementwise.c``) where the compiled kernels run. ``MaskedGrad`` is linear
in ``gy`` with a constant mask, so double backpropagation works. CuPy /
ChainerX arrays and ``use_fast_kernels=False`` use ``F.relu(a + b)``.
"""
import numpy

import chainer
import chainer.functions as F
from chainer import function_node
from chainer.utils import type_check

from chainer_cifar.functions import _native, _parallel
from chainer_cifar.functions._elementwise import relu_
from chainer_cifar.functions._config import use_fast


class AddReLU(function_node.FunctionNode):

    def check_type_forward(self, in_types):
        type_check.expect(in_types.size() == 2)
        a, b = in_types
        type_check.expect(a.dtype.kind == 'f', a.dtype == b.dtype, a.shape == b.shape)

    def forward_cpu(self, inputs):
        a, b = inputs
        y = numpy.empty(a.shape, dtype=a.dtype)
        if _compiled(a, b):
            _run_compiled('cc_add_relu_f32', a, b, y)
        else:
            a1, b1, y1 = _batched(a, b, y)

            def work(i, j):
                numpy.add(a1[i:j], b1[i:j], out=y1[i:j])
                relu_(y1[i:j])
            _parallel.run_chunks(work, len(y1), y.size)
        self.retain_outputs((0,))
        return y,

    def backward(self, indexes, grad_outputs):
        y, = self.get_retained_outputs()
        g, = MaskedGrad(y.array).apply(grad_outputs)
        return tuple(g for _ in indexes)


class MaskedGrad(function_node.FunctionNode):
    """``gy`` where ``y > 0``, else 0 (the ReLU's gradient), in one pass; its own adjoint."""

    def __init__(self, y):
        self.y = y

    def forward_cpu(self, inputs):
        gy, = inputs
        g = numpy.empty(gy.shape, dtype=gy.dtype)
        if _compiled(gy, self.y):
            _run_compiled('cc_masked_grad_f32', gy, self.y, g)
        else:
            gy1, y1, g1 = _batched(gy, self.y, g)

            def work(i, j):
                numpy.multiply(gy1[i:j], y1[i:j] > 0, out=g1[i:j])
            _parallel.run_chunks(work, len(g1), g.size)
        return g,

    def backward(self, indexes, grad_outputs):
        return MaskedGrad(self.y).apply(grad_outputs)


def _compiled(*arrays):
    """Whether the compiled loops take these arrays (float32, contiguous, non-empty)."""
    return (all(a.dtype == numpy.float32 and a.flags.c_contiguous for a in arrays)
            and arrays[0].size > 0 and _native.library() is not None)


def _run_compiled(name, x1, x2, out):
    """``out = f(x1, x2)`` elementwise with the compiled ``name``, split along the batch."""
    fn = getattr(_native.library(), name)
    rows = out.shape[0] if out.ndim else 1
    per = out.size // rows
    step = per * out.itemsize

    def work(i, j):
        if fn(x1.ctypes.data + i * step, x2.ctypes.data + i * step, out.ctypes.data + i * step,
              (j - i) * per) != 0:
            raise RuntimeError('{} failed'.format(name))
    _parallel.run_chunks(work, rows, out.size)


def _batched(*arrays):
    """Views with a leading axis to split across the threads (0-d arrays get one of length 1)."""
    return [a if a.ndim else a[None] for a in arrays]


def add_relu(a, b):
    """``F.relu(a + b)`` with a fused NumPy path."""
    if use_fast(a, b) and chainer.as_variable(a).shape == chainer.as_variable(b).shape:
        y, = AddReLU().apply((a, b))
        return y
    return F.relu(a + b)
