"""Element-wise steps of the fused kernels, written for NumPy's vectorised paths.

NumPy's SIMD loops are not taken by every spelling of the same operation:
``numpy.maximum(a, 0)`` with a scalar operand misses them, while a zero row
broadcast along the rows hits them, and sums of squares run faster as a
batched ``matmul`` of each row with itself than through ``einsum``. The
helpers here pick the spelling that hits the fast loop
(``tools/native_layers.py`` times the layers that use them).
"""
import numpy

_ROW = 1024  # a zero row this long broadcasts at full speed (short rows are much slower)
_constants = {}


def _constant_row(value, n, dtype):
    """A read-only row of ``n`` ``value``s, made once per (value, n, dtype)."""
    key = (value, n, numpy.dtype(dtype))
    row = _constants.get(key)
    if row is None:
        row = _constants[key] = numpy.full(n, value, dtype=dtype)
        row.flags.writeable = False
    return row


def relu_(a):
    """``a = max(a, 0)`` in place (contiguous arrays as rows of ``_ROW``, any remainder after)."""
    if not a.flags.c_contiguous or a.size < _ROW:
        numpy.maximum(a, 0, out=a)
        return
    flat = a.reshape(-1)
    n = _ROW
    head = flat.size - flat.size % n
    rows = flat[:head].reshape(-1, n)
    numpy.maximum(rows, _constant_row(0, n, a.dtype), out=rows)
    if head < flat.size:
        numpy.maximum(flat[head:], 0, out=flat[head:])


def channel_sums(d, e=None):
    """``(sum of d, sum of d * e)`` per channel of ``d`` (and ``e``), contiguous ``(n, c, r)``.

    ``e`` defaults to ``d`` (sums of squares). The per-row sums are BLAS dot
    products in ``d``'s precision; the caller adds groups in float64.
    """
    n, c, r = d.shape
    if e is None:
        e = d
    if r < 64:  # short rows: the batched products cost more in calls than they save
        return d.sum(axis=2).sum(axis=0), numpy.einsum('ncr,ncr->c', d, e)
    d2 = d.reshape(n * c, r)
    s1 = d2.dot(_constant_row(1, r, d.dtype)).reshape(n, c).sum(axis=0)
    s2 = numpy.matmul(d2[:, None, :], e.reshape(n * c, r, 1)).reshape(n, c).sum(axis=0)
    return s1, s2
