"""Each augmentation's behaviour, pinned on NumPy (the same code runs on CuPy)."""
import numpy
import pytest

from chainer_cifar.data import augment
from chainer_cifar.errors import UserError


def batch(n=64, dtype=numpy.float32, seed=0):
    # Strictly positive values, so a zero-filled pixel is always visible.
    return (numpy.random.RandomState(seed).rand(n, 3, 32, 32) + 1.0).astype(dtype)


# ---------------------------------------------------------------- parsing

def test_parse_augment_keeps_canonical_order_and_none_means_nothing():
    assert augment.parse_augment('crop,mirror') == ('crop', 'mirror')
    assert augment.parse_augment('mixup,mirror,crop') == ('crop', 'mirror', 'mixup')
    assert augment.parse_augment('none') == ()


@pytest.mark.parametrize('value', ['foo', 'crop,foo', '', 'crop,crop', 'none,crop'])
def test_parse_augment_rejects_bad_values_naming_the_valid_ones(value):
    with pytest.raises(UserError) as e:
        augment.parse_augment(value)
    if 'foo' in value or value == '':
        assert 'crop, mirror, erase, cutout, mixup, none' in str(e.value)


# ---------------------------------------------------------------- crop

def test_crop_is_a_zero_filled_translation_by_the_drawn_offset():
    x = batch(32)
    out = augment.crop(x, numpy.random.RandomState(5))
    offsets = numpy.random.RandomState(5).randint(0, 9, size=(2, 32))
    for i in range(len(x)):  # the reference may loop; the transform does not
        padded = numpy.pad(x[i], ((0, 0), (4, 4), (4, 4)))
        oy, ox = offsets[:, i]
        numpy.testing.assert_array_equal(out[i], padded[:, oy:oy + 32, ox:ox + 32])
    assert out.dtype == x.dtype and out.shape == x.shape


def test_crop_uses_every_offset_from_minus_4_to_4():
    offsets = numpy.random.RandomState(1).randint(0, 9, size=(2, 2000))
    x = numpy.zeros((2000, 1, 32, 32), numpy.float32)
    x[:, :, 16, 16] = 1  # a single pixel: its new place is the offset
    out = augment.crop(x, numpy.random.RandomState(1))
    _, _, rows, cols = numpy.nonzero(out)
    dy, dx = 16 - rows, 16 - cols
    assert set(dy) == set(range(-4, 5)) and set(dx) == set(range(-4, 5))
    numpy.testing.assert_array_equal(dy, offsets[0] - 4)
    numpy.testing.assert_array_equal(dx, offsets[1] - 4)


# ---------------------------------------------------------------- mirror

def test_mirror_flips_exactly_about_half_of_the_images():
    x = batch(400)
    out = augment.mirror(x, numpy.random.RandomState(0))
    flipped = numpy.array([numpy.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)])
    kept = numpy.array([numpy.array_equal(o, i) for o, i in zip(out, x)])
    assert numpy.all(flipped ^ kept)
    assert 0.4 < flipped.mean() < 0.6


# ---------------------------------------------------------------- erase and cutout

def _changed_boxes(x, out):
    """Per image: (changed, rows, cols) of the pixels that differ, checking they form one box."""
    result = []
    for o, i in zip(out, x):
        diff = (o != i)
        assert numpy.array_equal(diff[0], diff[1]) and numpy.array_equal(diff[0], diff[2])
        rows, cols = numpy.nonzero(diff[0].any(axis=1))[0], numpy.nonzero(diff[0].any(axis=0))[0]
        if len(rows):
            box = numpy.zeros_like(diff[0])
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            # random noise can equal the pixel by chance only with probability ~0
            assert numpy.array_equal(box, diff[0])
        result.append((len(rows) > 0, rows, cols))
    return result


def test_erase_fills_one_rectangle_of_2_to_40_percent_in_about_half_the_images():
    x = batch(400)
    out = augment.erase(x, numpy.random.RandomState(3))
    boxes = _changed_boxes(x, out)
    erased = [b for b in boxes if b[0]]
    assert 0.4 < len(erased) / len(boxes) < 0.6
    for _, rows, cols in erased:
        area = len(rows) * len(cols) / 1024.0
        assert 0.02 * 0.5 <= area <= 0.40 * 1.2  # rounding of the sides
        assert len(rows) / len(cols) < 1 / 0.3 + 0.5 and len(cols) / len(rows) < 1 / 0.3 + 0.5
    lo, hi = x.min(), x.max()
    assert out.min() >= lo and out.max() <= hi


def test_cutout_zeroes_a_square_of_at_most_16x16_clipped_at_the_border():
    x = batch(400)
    out = augment.cutout(x, numpy.random.RandomState(2))
    sizes = set()
    for changed, rows, cols in _changed_boxes(x, out):
        assert changed
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        sizes.add((len(rows), len(cols)))
    assert (16, 16) in sizes and len(sizes) > 1  # some squares are clipped
    assert numpy.all((out == 0) == (out != x))


# ---------------------------------------------------------------- mixup

def test_mixup_mixes_the_batch_with_a_permutation_of_itself():
    x, t = batch(16), numpy.arange(16, dtype=numpy.int32)
    mixed, ta, tb, lam = augment.mixup(x, t, numpy.random.RandomState(4))
    assert 0.0 <= lam <= 1.0 and isinstance(lam, float)
    numpy.testing.assert_array_equal(ta, t)
    assert sorted(tb) == list(t)
    numpy.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[tb], rtol=1e-6)
    assert mixed.dtype == numpy.float32


# ---------------------------------------------------------------- the augmenter

def test_augmenter_state_restores_the_same_augmentation():
    x, t = batch(8), numpy.zeros(8, numpy.int32)
    aug = augment.Augmenter(('crop', 'mirror', 'erase', 'cutout', 'mixup'), seed=7)
    aug(x, t)
    state = aug.get_state()
    first = aug(x, t)
    aug.set_state(state)
    again = aug(x, t)
    for a, b in zip(first, again):
        numpy.testing.assert_array_equal(a, b)
    assert len(first) == 4  # mixup: (x, t_a, t_b, lam)


@pytest.mark.parametrize('dtype', [numpy.float32, numpy.float16])
def test_augmenter_keeps_shape_and_dtype(dtype):
    x, t = batch(8, dtype), numpy.zeros(8, numpy.int32)
    out, t2 = augment.Augmenter(('crop', 'mirror', 'erase', 'cutout'), seed=0)(x, t)
    assert out.shape == x.shape and out.dtype == dtype and t2 is t
    assert augment.Augmenter((), seed=0)(x, t)[0] is x
