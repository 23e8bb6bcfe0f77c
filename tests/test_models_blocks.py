"""Shared blocks: option-A shortcut, stochastic depth, swapout, Shake-Shake, weight normalization."""
import chainer
import chainer.functions as F
import numpy
import pytest

from chainer_cifar.models import blocks, create_model


def feature(c=16, hw=8, n=2, seed=0):
    return numpy.random.RandomState(seed).randn(n, c, hw, hw).astype(numpy.float32)


def test_option_a_shortcut_subsamples_and_prepends_zero_channels():
    x = feature(16, 8)
    s = blocks.zero_pad_shortcut(x, 32, 2).array
    assert s.shape == (2, 32, 4, 4)
    assert not s[:, :16].any()
    numpy.testing.assert_array_equal(s[:, 16:], x[:, :, ::2, ::2])
    numpy.testing.assert_array_equal(chainer.as_array(blocks.zero_pad_shortcut(x, 16, 1)), x)


def test_option_a_shortcut_has_no_parameters():
    block = blocks.ResidualBlock(16, 32, 2)
    assert sorted(name for name, _ in block.namedlinks(skipself=True)) == [
        '/bn1', '/bn2', '/conv1', '/conv2']


def test_skip_ratios_follow_the_originals_linear_rule_and_spare_transitions():
    model = create_model('residual', res_depth=3, skip_depth=True)
    ratios = [b.skip_ratio for b in model.blocks]
    strides = [b.stride for b in model.blocks]
    assert [r for r, s in zip(ratios, strides) if s == 2] == [0.0, 0.0]
    others = [r for r, s in zip(ratios, strides) if s == 1]
    assert len(others) == 3 * 3 - 2
    numpy.testing.assert_allclose(others, [0.5 * k / (3 * 3 - 3) for k in range(7)])
    assert ratios[3] == 0.0 and ratios[6] == 0.0  # res4 and res7 are the transitions
    assert all(b.skip_ratio == 0 for b in create_model('residual', res_depth=3).blocks)


def test_a_single_skippable_block_is_never_skipped():
    assert blocks.linear_skip_ratios([1, 2, 2]) == [0.0, 0.0, 0.0]


def _count_residual_sums(block):
    """Records each pass that computes the block's sum F(x) + shortcut (a skipped block computes none)."""
    calls = []
    original = block.residual

    def counting(x, s):
        calls.append(1)
        return original(x, s)
    block.residual = counting
    return calls


def test_blocks_are_skipped_in_training_with_their_probability_and_never_at_test_time():
    numpy.random.seed(0)
    model = create_model('residual', res_depth=2, skip_depth=True)
    calls = [_count_residual_sums(b) for b in model.blocks]
    x = numpy.random.randn(1, 3, 8, 8).astype(numpy.float32)  # GAP: any size >= 4 works
    passes = 300
    with chainer.no_backprop_mode():
        for _ in range(passes):
            model(x)
    for block, c in zip(model.blocks, calls):
        skipped = 1 - len(c) / passes
        # binomial standard deviation <= 0.029 for 300 draws; 4 sigma
        assert abs(skipped - block.skip_ratio) < 0.12, (block.name, skipped, block.skip_ratio)
    assert 1 - len(calls[-1]) / passes > 0.35  # the deepest block (p = 0.5) really is skipped
    for c in calls:
        del c[:]
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for _ in range(20):
            model(x)
    assert all(len(c) == 20 for c in calls)


class _Always:
    def random_sample(self):
        return 0.0


def test_a_skipped_block_returns_its_shortcut():
    block = blocks.ResidualBlock(16, 16, skip_ratio=0.3, nobias=False)
    block.rng = _Always()
    x = feature()
    numpy.testing.assert_array_equal(block(x).array, x)


def test_test_time_scales_the_branch_by_its_survival_probability():
    block = blocks.ResidualBlock(16, 16, skip_ratio=0.3)
    x = feature()
    with chainer.using_config('train', False):
        expected = F.relu(0.7 * block.branch(x) + x).array
        numpy.testing.assert_allclose(block(x).array, expected, rtol=1e-5, atol=1e-6)
        block.skip_ratio = 0.0
        numpy.testing.assert_allclose(block(x).array, F.relu(block.branch(x) + x).array, rtol=1e-5, atol=1e-6)


def test_stochastic_depth_is_reproducible_under_a_seed():
    model = create_model('residual', res_depth=2, skip_depth=True)
    x = numpy.random.RandomState(3).randn(2, 3, 8, 8).astype(numpy.float32)
    runs = []
    for _ in range(2):
        numpy.random.seed(42)
        runs.append([model(x).array for _ in range(5)])
    for a, b in zip(*runs):
        numpy.testing.assert_array_equal(a, b)


def test_swapout_drops_branch_and_shortcut_in_training_only():
    block = blocks.ResidualBlock(16, 16, swapout=True)
    x = numpy.abs(feature())
    numpy.random.seed(0)
    y = block(x).array
    assert not numpy.allclose(y, block(x).array)
    with chainer.using_config('train', False):
        numpy.testing.assert_allclose(block(x).array, F.relu(block.branch(x) + x).array, rtol=1e-5, atol=1e-6)
    assert create_model('residual', res_depth=1, swapout=True).res1.swapout


def test_every_residual_family_model_takes_stochastic_depth_the_same_way():
    for name in ('identity_mapping', 'pyramid'):
        model = create_model(name, res_depth=2, skip_depth=True)
        assert [b.skip_ratio for b in model.blocks] == blocks.linear_skip_ratios([b.stride for b in model.blocks])


def test_shake_mixes_branches_with_random_convex_weights_and_different_backward_weights():
    numpy.random.seed(0)
    a = chainer.Variable(numpy.ones((4, 2, 3, 3), numpy.float32))
    b = chainer.Variable(numpy.zeros((4, 2, 3, 3), numpy.float32))
    y = blocks.shake([a, b])
    alpha = y.array[:, 0, 0, 0]  # = weight of a, per image
    assert ((alpha > 0) & (alpha < 1)).all() and len(set(alpha.tolist())) == 4
    assert (y.array == alpha[:, None, None, None]).all()  # one weight per image
    F.sum(y).backward()
    numpy.testing.assert_allclose(a.grad[:, 0, 0, 0] + b.grad[:, 0, 0, 0], 1, rtol=1e-6)
    assert not numpy.allclose(a.grad[:, 0, 0, 0], alpha)  # beta is drawn independently
    with chainer.using_config('train', False):
        assert (blocks.shake([a, b]).array == 0.5).all()


def test_shake_with_three_branches_averages_them_at_test_time():
    xs = [numpy.full((1, 1, 2, 2), v, numpy.float32) for v in (0., 3., 6.)]
    with chainer.using_config('train', False):
        assert (blocks.shake(xs).array == 3.).all()
    model = create_model('shake_residual', res_depth=1, res_width=3)
    assert len([n for n, _ in model.res1.namedlinks(skipself=True) if n.count('/') == 1
                and n.startswith('/branch')]) == 3


def test_weight_norm_starts_at_the_plain_weights_and_trains_direction_and_scale():
    link = blocks.WeightNormConvolution2D(3, 4, 3, pad=1)
    numpy.testing.assert_allclose(link.W.array, link.v.array, rtol=1e-5, atol=1e-6)
    link.g.array[:] *= 2
    numpy.testing.assert_allclose(link.W.array, 2 * link.v.array, rtol=1e-5, atol=1e-6)
    y = link(feature(3, 4))
    F.sum(y * y).backward()
    assert link.v.grad is not None and link.g.grad is not None and link.b.grad is not None


def test_pyramid_shortcut_averages_when_downsampling():
    block = blocks.PyramidBlock(16, 20, stride=2)
    x = feature(16, 8)
    s = block.shortcut(x).array
    assert s.shape == (2, 20, 4, 4) and not s[:, :4].any()
    numpy.testing.assert_allclose(s[:, 4:], F.average_pooling_2d(x, 2, 2).array, rtol=1e-6)


@pytest.mark.parametrize('cls', [blocks.PreActBlock, blocks.PyramidBlock])
def test_pre_activation_blocks_add_nothing_after_the_sum(cls):
    block = cls(16, 16)
    x = feature()
    with chainer.using_config('train', False):
        numpy.testing.assert_allclose(block(x).array, (block.branch(x) + x).array, rtol=1e-5, atol=1e-6)
