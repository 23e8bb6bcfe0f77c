"""Preprocessing fitted on the training split and applied to any split.

* ``mean``: per-channel mean subtracted (``image.pkl``).
* ``norm``: per-channel mean subtracted and divided by the per-channel
  standard deviation (``image_norm.pkl``, the article's "contrast
  normalization").
* ``zca``: ZCA whitening, ``W = U diag(1 / sqrt(lambda + eps)) U^T`` from the
  eigendecomposition of the training covariance ``C = X^T X / n`` of the
  centred data, applied as ``(x - mean) W`` (``image_zca.pkl``,
  ``image_norm_zca.pkl``).

The original tool computed per-channel statistics on an interleaved view of
the planar rows (mixing channels) and whitened with ``X^T X`` (no ``1/n``),
which leaves whitened data with covariance ``I/n``; here channels are the
planes of the official layout and whitened training data has covariance ``I``.

ZCA's ``eps`` is relative: ``eps * mean eigenvalue`` (the mean per-pixel
variance) is added to every eigenvalue, so one value suits raw pixels and
normalized data alike. The original used 0; the default ``1e-5`` damps only
directions with under 1e-5 of the average variance (sensor noise), which keeps
the whitening numerically safe when the covariance is near singular.

Large arrays are processed in row chunks, so the full set (60,000 x 3072)
needs about one float32 copy of the data at a time.
"""
import numpy

from chainer_cifar.errors import UserError

CHUNK = 4096
DEFAULT_ZCA_EPS = 1e-5


def channel_mean(x):
    """Per-channel mean (3,) of rows in the official planar layout (float64)."""
    return _per_channel(x, lambda v: v.mean(axis=(0, 2)))


def channel_std(x, mean=None):
    mean = channel_mean(x) if mean is None else mean
    sq = _per_channel(x, lambda v: ((v - mean[None, :, None]) ** 2).mean(axis=(0, 2)))
    return numpy.sqrt(sq)


def _per_channel(x, stat):
    # Averages of chunk statistics weighted by chunk size, in float64, so the
    # full uint8 training set is never converted to float all at once.
    total = numpy.zeros(3)
    for i in range(0, len(x), CHUNK):
        chunk = x[i:i + CHUNK].reshape(-1, 3, 1024).astype(numpy.float64)
        total += stat(chunk) * len(chunk)
    return total / len(x)


def normalize(x, mean, std=None, out=None):
    """``(x - mean[c]) / std[c]`` per channel, as float32 rows (N, 3072)."""
    out = numpy.empty(x.shape, numpy.float32) if out is None else out
    scale = 1.0 / (numpy.ones(3) if std is None else std)
    for i in range(0, len(x), CHUNK):
        v = x[i:i + CHUNK].reshape(-1, 3, 1024).astype(numpy.float64)
        v = (v - mean[None, :, None]) * scale[None, :, None]
        out[i:i + CHUNK] = v.reshape(len(v), -1)
    return out


class ZCA(object):
    """ZCA whitening fitted on training rows; ``apply`` works on any split."""

    def __init__(self, mean, matrix, eps):
        self.mean, self.matrix, self.eps = mean, matrix, eps

    @classmethod
    def fit(cls, x, eps=DEFAULT_ZCA_EPS):
        n, d = x.shape
        mean = numpy.zeros(d)
        for i in range(0, n, CHUNK):
            mean += x[i:i + CHUNK].sum(axis=0, dtype=numpy.float64)
        mean /= n
        cov = numpy.zeros((d, d))
        for i in range(0, n, CHUNK):
            c = x[i:i + CHUNK].astype(numpy.float64) - mean
            cov += c.T @ c
        cov /= n
        lam, u = numpy.linalg.eigh(cov)
        lam = numpy.clip(lam, 0, None)
        shift = eps * lam.mean()
        if shift <= 0 and lam.min() <= 0:
            raise UserError('the training covariance is singular; use a positive ZCA epsilon (--zca_eps)')
        if not numpy.isfinite(shift):
            raise UserError('ZCA epsilon {} times the mean eigenvalue {} overflows; use a smaller '
                            '--zca_eps'.format(eps, lam.mean()))
        matrix = (u / numpy.sqrt(lam + shift)) @ u.T
        return cls(mean, matrix.astype(numpy.float32), eps)

    def apply(self, x, out=None):
        out = numpy.empty(x.shape, numpy.float32) if out is None else out
        mean = self.mean.astype(numpy.float32)
        for i in range(0, len(x), CHUNK):
            out[i:i + CHUNK] = (x[i:i + CHUNK].astype(numpy.float32) - mean) @ self.matrix
        return out


def sample_grid(x, rows=10, cols=10, pad=2, normalize=True):
    """A uint8 RGB tile image of the first ``rows * cols`` rows, as the article shows.

    With ``normalize`` each image is scaled by its largest absolute value, as the
    original did, so centred and whitened data are visible around mid-grey.
    """
    n = rows * cols
    x = numpy.asarray(x[:n], numpy.float64)
    if len(x) < n:
        x = numpy.concatenate([x, numpy.zeros((n - len(x), x.shape[1]))])
    if normalize:
        peak = numpy.abs(x).max(axis=1, keepdims=True)
        x = x / numpy.where(peak > 0, peak, 1) * 127
    image = (x + 128).clip(0, 255).astype(numpy.uint8).reshape(rows, cols, 3, 32, 32)
    image = numpy.pad(image, ((0, 0), (0, 0), (0, 0), (pad, pad), (pad, pad)))
    size = 32 + 2 * pad
    return image.transpose(0, 3, 1, 4, 2).reshape(rows * size, cols * size, 3)
