"""Model registry: ``create_model(name, **options)``, ``list_models()`` and ``model_options()``.

A model is one decorated factory::

    @register_model('resnet20', source='He et al. 2015, Table 6')
    def resnet20():
        return ResNet(BasicBlock, 3)

The factories' signatures are the one list of model options: ``create_model``
passes a factory only the options its signature names (an option given a value,
not ``None``, that the model does not take is an error, so ``--skip_depth`` on
``-m cnn`` is refused instead of ignored), and :func:`model_options` collects
them for every front end that offers them as flags. An option is a flag (its
default is a bool) or a positive whole number (an int default); what it means
is said once, with :func:`describe_options`, beside the factories that take it.
"""
import collections
import inspect

from chainer_cifar.errors import UserError

ModelInfo = collections.namedtuple('ModelInfo', 'name factory source description options')
# kind: 'flag' (a bool) or 'count' (a positive whole number); defaults: {model name: its default}.
ModelOption = collections.namedtuple('ModelOption', 'name kind meaning defaults')

_REGISTRY = collections.OrderedDict()
_MEANINGS = {}


def register_model(name, source='', description=''):
    def decorate(factory):
        if name in _REGISTRY:
            raise ValueError('model {!r} is registered twice'.format(name))
        params = inspect.signature(factory).parameters
        for p in params.values():
            if _kind(p.default) is None:
                raise ValueError('model {!r}: option {!r} needs a bool or int default (a flag or a positive '
                                 'whole number), not {!r}'.format(name, p.name, p.default))
        _REGISTRY[name] = ModelInfo(name, factory, source,
                                    description or (inspect.getdoc(factory) or '').split('\n')[0],
                                    tuple(params))
        return factory
    return decorate


def describe_options(**meanings):
    """Say what model options mean (``res_depth='blocks per stage'``): the help of their flags."""
    _MEANINGS.update(meanings)


def model_options():
    """Every option a registered model takes, by name: ``{name: ModelOption}``."""
    _load_builtin_models()
    options = {}
    for info in _REGISTRY.values():
        for param in inspect.signature(info.factory).parameters.values():
            if param.name not in options:
                if param.name not in _MEANINGS:
                    raise ValueError('model option {!r} of {!r} has no meaning: say it with '
                                     'describe_options'.format(param.name, info.name))
                options[param.name] = ModelOption(param.name, _kind(param.default), _MEANINGS[param.name], {})
            options[param.name].defaults[info.name] = param.default
    return collections.OrderedDict(sorted(options.items()))


def _kind(default):
    if isinstance(default, bool):
        return 'flag'
    if isinstance(default, int):
        return 'count'
    return None


def list_models():
    """Names of every registered model, in registration order."""
    _load_builtin_models()
    return list(_REGISTRY)


def model_info(name):
    _load_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError('unknown model {!r}; choose one of: {}'.format(
            name, ', '.join(_REGISTRY)))


def create_model(name, **options):
    """Build model ``name``; options set to ``None`` mean "the model's default"."""
    info = model_info(name)
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    unsupported = sorted(set(given) - set(info.options))
    if unsupported:
        raise UserError('model {!r} does not take {}; it takes: {}'.format(
            name, ', '.join('--' + k for k in unsupported),
            ', '.join('--' + k for k in info.options) or 'no options'))
    return info.factory(**{k: v for k, v in options.items() if k in info.options and v is not None})


def _load_builtin_models():
    # Importing the package registers the built-in models (they import us, not
    # the other way round, so this import is deferred).
    import chainer_cifar.models  # noqa: F401
