"""Every registered model: shapes, gradients, train/test behaviour, parameter counts, legacy files."""
import re

import chainer
import numpy
import pytest

from chainer_cifar.errors import UserError
from chainer_cifar.models import create_model, list_models, model_info, register_model
from chainer_cifar.models.registry import model_options
from chainer_cifar.models.summary import count_layers, count_params

# Too deep to run a forward pass on a 2-core CPU in a unit test; counted only.
COUNT_ONLY = {'resnet110', 'resnet1202'}
# Default depth is 110 layers; a forward is cheap enough, a backward is not needed at that depth.
SMALL_OPTIONS = {'residual': {'res_depth': 2}, 'identity_mapping': {'res_depth': 2},
                 'pyramid': {'res_depth': 2}, 'shake_residual': {'res_depth': 1}}
# Models that tests register (source 'tests', e.g. the tiny CNN of helpers.py, with
# dropout) depend on which modules were collected first; only the built-in models are checked here.
RUNNABLE = [n for n in list_models() if n not in COUNT_ONLY and model_info(n).source != 'tests']
# Models whose training forward is random (dropout or Shake-Shake); the rest only use BN.
STOCHASTIC_IN_TRAINING = {'cnn', 'cnnbn', 'cnnwn', 'vgg', 'vgg_no_fc', 'vgg_wide', 'shake_residual',
                          'keras_simple_cnn', 'keras_deep_cnn', 'resnet20_v1_dropout', 'resnet50_v1_dropout', 'ablation_dropout'}


def batch(n=2, seed=0):
    return numpy.random.RandomState(seed).randn(n, 3, 32, 32).astype(numpy.float32)


def small(name):
    numpy.random.seed(0)
    return create_model(name, **SMALL_OPTIONS.get(name, {}))


def test_every_issue_model_is_registered_under_a_cli_name():
    expected = {'cnn', 'cnnbn', 'vgg', 'residual', 'identity_mapping', 'pyramid', 'shake_residual',
                'vgg_no_fc', 'vgg_wide', 'cnnwn', 'resnet20', 'resnet32', 'resnet44', 'resnet56',
                'resnet110', 'resnet1202', 'plain20', 'plain32', 'plain44', 'plain56',
                'keras_simple_cnn', 'keras_deep_cnn', 'resnet20_v1_dropout', 'resnet50_v1_dropout', 'ablation_base',
                'ablation_bn', 'ablation_resblock', 'ablation_gap', 'ablation_dropout'}
    assert expected <= set(list_models())
    for name in list_models():
        assert re.match(r'^[a-z][a-z0-9_]*$', name), name
        assert model_info(name).source and model_info(name).description


def test_options_follow_each_models_signature():
    assert model_info('residual').options == ('res_depth', 'skip_depth', 'swapout')
    assert model_info('shake_residual').options == ('res_depth', 'res_width')
    assert model_info('cnn').options == ()
    assert model_info('resnet20').options == ()


def test_model_options_are_the_factories_parameters_and_every_front_end_offers_them():
    options = model_options()
    assert set(options) == {p for name in list_models() for p in model_info(name).options}
    assert options['res_depth'].kind == 'count' and options['res_depth'].defaults['shake_residual'] == 4
    assert options['skip_depth'].kind == 'flag' and 'residual' in options['skip_depth'].defaults
    import analyze
    import evaluate
    import net
    from chainer_cifar.training.args import build_parser
    confusion = analyze.build_parser().parse_args(['confusion', 'x.model'])
    for args in (build_parser().parse_args([]), evaluate.build_parser().parse_args(['x.model']),
                 net.build_parser().parse_args([]), confusion):
        assert {name: getattr(args, name) for name in options} == {
            name: False if option.kind == 'flag' else None for name, option in options.items()}


def test_an_option_needs_a_flag_or_a_whole_number_default():
    with pytest.raises(ValueError, match='bool or int default'):
        register_model('test_bad_option', source='tests')(lambda width=0.5: None)


def test_none_and_false_options_mean_the_model_default():
    m = create_model('cnn', res_depth=None, res_width=None, skip_depth=False, swapout=False)
    assert m.__class__.__name__ == 'CNN'
    assert len(create_model('residual', res_depth=None, skip_depth=False).blocks) == 3 * 18


def test_an_option_the_model_does_not_take_is_a_one_line_user_error():
    with pytest.raises(UserError, match='--skip_depth') as e:
        create_model('cnn', skip_depth=True)
    assert '\n' not in str(e.value)
    with pytest.raises(UserError, match='res_depth'):
        create_model('residual', res_depth=0)


@pytest.mark.parametrize('name', RUNNABLE)
def test_forward_maps_a_float32_batch_to_ten_logits_in_both_modes(name):
    model = small(name)
    x = batch()
    y = model(x)
    assert y.shape == (2, 10) and y.dtype == numpy.float32
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        y = model(x)
    assert y.shape == (2, 10) and y.dtype == numpy.float32
    assert numpy.isfinite(y.array).all()


@pytest.mark.parametrize('dtype', [numpy.float64, numpy.float16])
@pytest.mark.parametrize('name', RUNNABLE)
def test_every_parameter_takes_the_configured_dtype(name, dtype):
    # tools/gpu_check.py runs every model in float64 and train.py --dtype mixed16 in float16: a parameter
    # left in float32 (the weight-norm scale once was) breaks the first forward pass.
    with chainer.using_config('dtype', dtype):
        model = small(name)
    assert {path: p.dtype for path, p in model.namedparams() if p.dtype != dtype} == {}


@pytest.mark.parametrize('name', RUNNABLE)
def test_backward_gives_a_finite_gradient_to_every_parameter(name):
    model = small(name)
    loss = chainer.functions.softmax_cross_entropy(model(batch()), numpy.array([1, 7], numpy.int32))
    model.cleargrads()
    loss.backward()
    for path, param in model.namedparams():
        assert param.grad is not None, path
        assert param.grad.dtype == numpy.float32, path
        assert numpy.isfinite(param.grad).all(), path
    assert any(numpy.abs(p.grad).sum() > 0 for p in model.params())


@pytest.mark.parametrize('name', RUNNABLE)
def test_test_mode_is_deterministic_and_uses_bn_running_statistics(name):
    model = small(name)
    x = batch(3)
    model(x)  # one training pass moves BN running statistics away from their init
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        a = model(x).array
        b = model(x).array
        # Running statistics make an image's logits independent of its batch mates.
        c = model(x[:1]).array
    numpy.testing.assert_array_equal(a, b)
    numpy.testing.assert_allclose(a[:1], c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name', sorted(STOCHASTIC_IN_TRAINING))
def test_training_forward_is_random_where_the_model_has_dropout_or_shake(name):
    model = small(name)
    x = batch()
    assert not numpy.allclose(model(x).array, model(x).array)


@pytest.mark.parametrize('name', sorted(set(RUNNABLE) - STOCHASTIC_IN_TRAINING))
def test_training_forward_is_deterministic_without_dropout(name):
    model = small(name)
    x = batch()
    numpy.testing.assert_allclose(model(x).array, model(x).array, rtol=1e-5, atol=1e-6)


def paper_table():
    """Rows of the parameter table in resnet_paper's docstring: name -> (n, layers, reported millions)."""
    from chainer_cifar.models import resnet_paper
    rows = re.findall(r'^(resnet\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)M$', resnet_paper.__doc__, re.M)
    return {name: (int(n), int(layers), float(m)) for name, n, layers, m in rows}


def test_the_paper_table_lists_every_paper_resnet():
    assert sorted(paper_table()) == sorted(n for n in list_models() if re.fullmatch(r'resnet\d+', n))


# Exact counts of the option-A CIFAR ResNets (no conv biases; BN gamma/beta counted).
EXACT_PARAMS = {'resnet20': 269722, 'resnet32': 464154, 'resnet44': 658586, 'resnet56': 853018,
                'resnet110': 1727962, 'resnet1202': 19421274}


@pytest.mark.parametrize('name', sorted(EXACT_PARAMS))
def test_paper_resnets_have_table6_parameter_and_layer_counts(name):
    n, layers, reported_millions = paper_table()[name]
    model = create_model(name)
    assert model.n == n and count_layers(model) == layers == 6 * n + 2
    assert count_params(model) == EXACT_PARAMS[name]
    digits = 2 if reported_millions < 1 else 1
    assert round(EXACT_PARAMS[name] / 1e6, digits) == reported_millions


def test_plain_nets_are_the_resnets_without_shortcuts():
    for depth in (20, 32, 44, 56):
        plain, res = create_model('plain{}'.format(depth)), create_model('resnet{}'.format(depth))
        assert count_params(plain) == count_params(res)
        assert count_layers(plain) == depth
        assert all(b.shortcut_kind is None for b in plain.blocks)
    # Without shortcuts a block is exactly relu(branch(x)).
    block = create_model('plain20').blocks[1]
    x = numpy.abs(batch()[:, :1].repeat(16, axis=1)[:, :, :8, :8])
    with chainer.using_config('train', False):
        numpy.testing.assert_allclose(block(x).array, chainer.functions.relu(block.branch(x)).array)


def test_paper_resnets_use_he_initialization_and_no_conv_bias():
    model = create_model('resnet56')
    w = model.res11.conv1.W.array  # 32 -> 32 channels, fan-in 288
    assert model.res11.conv1.b is None
    assert abs(w.std() - numpy.sqrt(2.0 / 288)) < 0.05 * numpy.sqrt(2.0 / 288)


@pytest.mark.parametrize('name,millions', [('identity_mapping', 1.7), ('pyramid', 1.7),
                                           ('shake_residual', 2.9)])
def test_later_additions_match_their_papers_parameter_counts(name, millions):
    # He et al. 2016 ResNet-110 pre-act, Han et al. 2017 alpha=48 110 layers, Gastaldi 26 2x32d
    model = create_model(name)
    assert round(count_params(model) / 1e6, 1) == millions
    assert count_layers(model) == (26 if name == 'shake_residual' else 110)


def test_pyramid_widens_by_alpha_over_the_blocks_to_16_plus_alpha():
    model = create_model('pyramid', res_depth=3)
    widths = [b.out_channels for b in model.blocks]
    assert widths[0] == 16 + 48 // 9 and widths[-1] == 64
    assert all(b >= a for a, b in zip(widths, widths[1:]))


def test_keras_resnet20_v1_has_the_keras_example_trainable_parameter_count():
    # Keras' summary for ResNet20 v1: 273,066 trainable (1x1 projection shortcuts, biases).
    assert count_params(create_model('resnet20_v1_dropout')) == 273066
    assert count_layers(create_model('resnet20_v1_dropout')) == 20
    assert count_layers(create_model('resnet50_v1_dropout')) == 50  # n = 8


def test_article_residual_has_6n_plus_2_layers():
    assert count_layers(create_model('residual', res_depth=12)) == 74
    assert count_layers(create_model('residual')) == 110


def test_ablation_ladder_adds_one_rung_at_a_time():
    names = ['ablation_base', 'ablation_bn', 'ablation_resblock', 'ablation_gap', 'ablation_dropout']
    models = [create_model(n) for n in names]
    has = [(hasattr(m.stem, 'bn'),
            hasattr(m, 'res1'), m.gap, m.dropout) for m in models]
    assert has == [(False, False, False, False), (True, False, False, False), (True, True, False, False),
                   (True, True, True, False), (True, True, True, True)]
    # stride-2 convolutions, not pooling: 32 -> 32 -> 16 -> 8
    assert models[0].fc.W.shape == (10, 8 * 8 * 256)
    assert models[3].fc.W.shape == (10, 256)


# The original net.py's link names and shapes; W/b of convolutions and linears,
# BN with gamma/beta and the avg_mean/avg_var/N persistents.
def _conv(name, cin, cout, k):
    return {name + '/W': (cout, cin, k, k), name + '/b': (cout,)}


def _linear(name, cin, cout):
    return {name + '/W': (cout, cin), name + '/b': (cout,)}


def _bn(name, c):
    return {name + '/gamma': (c,), name + '/beta': (c,), name + '/avg_mean': (c,),
            name + '/avg_var': (c,), name + '/N': ()}


def _bconv(name, cin, cout, k):
    return dict(_conv(name + '/conv', cin, cout, k), **_bn(name + '/bn', cout))


def legacy_layout(name, res_depth=None):
    spec = {}
    if name == 'cnn':
        for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128)], 1):
            spec.update(_conv('conv{}'.format(i), cin, cout, 5))
    elif name == 'cnnbn':
        for i, (cin, cout) in enumerate([(3, 64), (64, 64), (64, 128)], 1):
            spec.update(_bconv('bconv{}'.format(i), cin, cout, 5))
    if name in ('cnn', 'cnnbn'):
        spec.update(_linear('l1', 4 * 4 * 128, 1000))
        spec.update(_linear('l2', 1000, 10))
    elif name == 'vgg':
        layers = [('1_1', 3, 64), ('1_2', 64, 64), ('2_1', 64, 128), ('2_2', 128, 128),
                  ('3_1', 128, 256), ('3_2', 256, 256), ('3_3', 256, 256), ('3_4', 256, 256)]
        for suffix, cin, cout in layers:
            spec.update(_bconv('bconv' + suffix, cin, cout, 3))
        spec.update(_linear('fc4', 4 * 4 * 256, 1024))
        spec.update(_linear('fc5', 1024, 1024))
        spec.update(_linear('fc6', 1024, 10))
    elif name == 'residual':
        spec.update(_bconv('bconv1', 3, 16, 3))
        chans = [(16, 16)] * res_depth + [(16, 32)] + [(32, 32)] * (res_depth - 1) + \
            [(32, 64)] + [(64, 64)] * (res_depth - 1)
        for i, (cin, cout) in enumerate(chans, 1):
            spec.update(_conv('res{}/conv1'.format(i), cin, cout, 3))
            spec.update(_bn('res{}/bn1'.format(i), cout))
            spec.update(_conv('res{}/conv2'.format(i), cout, cout, 3))
            spec.update(_bn('res{}/bn2'.format(i), cout))
        spec.update(_linear('fc{}'.format(3 * res_depth + 2), 64, 10))
    return spec


@pytest.mark.parametrize('name,res_depth', [('cnn', None), ('cnnbn', None), ('vgg', None),
                                            ('residual', 1), ('residual', 12)])
def test_npz_written_by_the_original_chainer_cifar_loads(tmp_path, name, res_depth):
    rng = numpy.random.RandomState(1)
    arrays = {key: (numpy.asarray(7, numpy.int64) if key.endswith('/N')
                    else rng.rand(*shape).astype(numpy.float32) + 0.5)
              for key, shape in legacy_layout(name, res_depth).items()}
    path = str(tmp_path / 'legacy.model')
    with open(path, 'wb') as f:  # a file object: savez would append .npz to a name
        numpy.savez(f, **arrays)
    model = create_model(name, res_depth=res_depth)
    ours = {path_.lstrip('/'): p.shape for path_, p in model.namedparams()}
    assert set(ours) == {k for k in arrays if not k.endswith(('avg_mean', 'avg_var', '/N'))}
    chainer.serializers.load_npz(path, model)  # strict: every key of ours must be in the file
    for key, param in model.namedparams():
        numpy.testing.assert_array_equal(param.array, arrays[key.lstrip('/')])


def test_a_model_trained_here_and_saved_reloads(tmp_path):
    model = create_model('residual', res_depth=1, skip_depth=True)
    opt = chainer.optimizers.MomentumSGD(0.1)
    opt.setup(model)
    x, t = batch(), numpy.array([3, 4], numpy.int32)
    opt.update(lambda: chainer.functions.softmax_cross_entropy(model(x), t))
    path = str(tmp_path / 'mine.model')
    chainer.serializers.save_npz(path, model)
    again = create_model('residual', res_depth=1, skip_depth=True)
    chainer.serializers.load_npz(path, again)
    with chainer.using_config('train', False):
        numpy.testing.assert_array_equal(model(x).array, again(x).array)
