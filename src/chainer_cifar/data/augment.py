"""Batch-wise data augmentation for (N, C, H, W) image batches, NumPy or CuPy.

Every transform works on a whole batch with array operations (masks,
``where`` and fancy indexing), never a Python loop per image, so it runs on
the GPU when the batch is a CuPy array.

The random *parameters* (offsets, flips, rectangles, mixup weights) are drawn
on the host from one ``numpy.random.RandomState`` owned by :class:`Augmenter`
and sent to the batch's device. They are a few numbers per image, so this
costs nothing; in exchange the generator's state is an ordinary NumPy state
that a snapshot saves and restores exactly, and a seed gives the same
augmentation on CPU and GPU.

========  ===================================================================
name      transform
========  ===================================================================
crop      random translation by up to +-4 px with zero fill (= pad 4 with
          zeros, take a random 32x32 window); every offset in [-4, 4] equally
          likely
mirror    horizontal flip of each image with probability 0.5
erase     random erasing (Zhong et al. 2017): with probability 0.5 a rectangle
          of 2-40% of the image area, aspect ratio in [0.3, 1/0.3], is filled
          with uniform noise spanning the batch's value range
cutout    cutout (DeVries & Taylor 2017): a 16x16 square centred anywhere in
          the image (clipped at the border) is set to 0, the dataset mean of
          mean-subtracted data
mixup     mixup (Zhang et al. 2018): the batch is mixed with a shuffled copy of
          itself, ``x = lam*x + (1-lam)*x[perm]``, lam ~ Beta(1, 1); the labels
          come back as ``(t, t[perm], lam)`` and the loss is
          ``lam*CE(y, t) + (1-lam)*CE(y, t[perm])``
none      nothing
========  ===================================================================

Whatever the order in ``--augment``, the transforms run in the order of this
table (crop, mirror, erase, cutout, mixup), so mixup always mixes augmented
images.
"""
import numpy

from chainer_cifar.errors import UserError

ORDER = ('crop', 'mirror', 'erase', 'cutout', 'mixup')
NAMES = ORDER + ('none',)
DEFAULT = 'crop,mirror'


def parse_augment(value):
    """``'crop,mirror'`` -> ``('crop', 'mirror')``; ``'none'`` -> ``()``.

    Unknown names, repeats and ``none`` mixed with others are refused with the valid names.
    """
    names = [n.strip() for n in str(value).split(',')]
    unknown = [n for n in names if n not in NAMES]
    if unknown or not names:
        raise UserError('unknown augmentation {} in --augment {!r}; valid names: {} '
                        '(comma-separated, e.g. crop,mirror)'.format(
                            ', '.join(repr(n) for n in unknown), value, ', '.join(NAMES)))
    if len(set(names)) != len(names):
        raise UserError('--augment {!r} names a transform twice'.format(value))
    if 'none' in names:
        if len(names) > 1:
            raise UserError("--augment {!r}: 'none' cannot be combined with other transforms".format(value))
        return ()
    return tuple(n for n in ORDER if n in names)


def _xp(x):
    import chainer
    return chainer.backend.get_array_module(x)


def crop(x, rng, pad=4):
    """Translate each image by (dy, dx) in [-pad, pad]^2, filling with zeros."""
    xp = _xp(x)
    n, c, h, w = x.shape
    offsets = rng.randint(0, 2 * pad + 1, size=(2, n))
    oy, ox = xp.asarray(offsets[0]), xp.asarray(offsets[1])
    padded = xp.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = oy[:, None] + xp.arange(h)[None, :]          # (n, h)
    cols = ox[:, None] + xp.arange(w)[None, :]          # (n, w)
    return padded[xp.arange(n)[:, None, None, None], xp.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def mirror(x, rng, p=0.5):
    """Flip each image left-right with probability ``p``."""
    xp = _xp(x)
    flip = xp.asarray(rng.random_sample(len(x)) < p)
    return xp.where(flip[:, None, None, None], x[:, :, :, ::-1], x)


def _box_mask(xp, n, h, w, top, left, height, width):
    """(n, 1, h, w) bool mask of the rectangles [top, top+height) x [left, left+width)."""
    top, left = xp.asarray(top)[:, None], xp.asarray(left)[:, None]
    bottom, right = top + xp.asarray(height)[:, None], left + xp.asarray(width)[:, None]
    r, c = xp.arange(h)[None, :], xp.arange(w)[None, :]
    in_rows = (r >= top) & (r < bottom)                  # (n, h)
    in_cols = (c >= left) & (c < right)                  # (n, w)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def erase_boxes(rng, n, h, w, p=0.5, area=(0.02, 0.4), ratio=0.3):
    """Rectangles of random erasing: ``(apply, top, left, height, width)`` host arrays.

    Zhong et al. redraw until the rectangle fits; here height and width are
    clipped to the image instead, so one draw per image always suffices.
    """
    apply = rng.random_sample(n) < p
    s = rng.uniform(area[0], area[1], n) * h * w
    r = numpy.exp(rng.uniform(numpy.log(ratio), numpy.log(1.0 / ratio), n))
    height = numpy.clip(numpy.round(numpy.sqrt(s * r)), 1, h).astype(numpy.int64)
    width = numpy.clip(numpy.round(numpy.sqrt(s / r)), 1, w).astype(numpy.int64)
    top = (rng.random_sample(n) * (h - height + 1)).astype(numpy.int64)
    left = (rng.random_sample(n) * (w - width + 1)).astype(numpy.int64)
    height = numpy.where(apply, height, 0)
    return apply, top, left, height, width


def erase(x, rng, p=0.5, area=(0.02, 0.4), ratio=0.3):
    """Random erasing: fill one random rectangle per chosen image with uniform noise."""
    xp = _xp(x)
    n, c, h, w = x.shape
    _, top, left, height, width = erase_boxes(rng, n, h, w, p, area, ratio)
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    noise = xp.asarray(rng.uniform(lo, hi, size=x.shape).astype(x.dtype))
    return xp.where(_box_mask(xp, n, h, w, top, left, height, width), noise, x)


def cutout(x, rng, size=16):
    """Zero a ``size`` x ``size`` square centred at a uniform pixel, clipped at the border."""
    xp = _xp(x)
    n, c, h, w = x.shape
    cy, cx = rng.randint(0, h, n), rng.randint(0, w, n)
    top, left = cy - size // 2, cx - size // 2
    mask = _box_mask(xp, n, h, w, top, left, numpy.full(n, size), numpy.full(n, size))
    return xp.where(mask, xp.zeros((), dtype=x.dtype), x)


def mixup(x, t, rng, alpha=1.0):
    """``(x_mixed, t, t[perm], lam)`` with one lam ~ Beta(alpha, alpha) for the batch (Zhang et al.)."""
    xp = _xp(x)
    lam = float(rng.beta(alpha, alpha))
    perm = xp.asarray(rng.permutation(len(x)))
    mixed = (x * x.dtype.type(lam) + x[perm] * x.dtype.type(1.0 - lam)).astype(x.dtype, copy=False)
    return mixed, t, t[perm], lam


class Augmenter(object):
    """Applies the chosen transforms to a batch; owns the generator they draw from.

    ``__call__(x, t)`` returns ``(x, t)``, or ``(x, t_a, t_b, lam)`` when mixup is on.
    ``get_state``/``set_state`` save and restore the generator for resuming.
    """

    def __init__(self, names=(), seed=None, cutout_size=16, mixup_alpha=1.0):
        self.names = tuple(n for n in ORDER if n in names)
        self.rng = numpy.random.RandomState(seed)
        self.cutout_size = cutout_size
        self.mixup_alpha = mixup_alpha

    @property
    def mixes_labels(self):
        return 'mixup' in self.names

    def __call__(self, x, t):
        for name in self.names:
            if name == 'crop':
                x = crop(x, self.rng)
            elif name == 'mirror':
                x = mirror(x, self.rng)
            elif name == 'erase':
                x = erase(x, self.rng)
            elif name == 'cutout':
                x = cutout(x, self.rng, self.cutout_size)
            elif name == 'mixup':
                return mixup(x, t, self.rng, self.mixup_alpha)
        return x, t

    def get_state(self):
        return self.rng.get_state()

    def set_state(self, state):
        self.rng.set_state(state)
