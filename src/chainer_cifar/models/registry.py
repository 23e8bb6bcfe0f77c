"""Model registry: ``create_model(name, **options)`` and ``list_models()``.

A model is one decorated factory::

    @register_model('resnet20', source='He et al. 2015, Table 6')
    def resnet20():
        return ResNet(BasicBlock, 3)

``create_model`` passes a factory only the options its signature names;
an option given a value (not ``None``) that the model does not take is an
error, so ``--skip_depth`` on ``-m cnn`` is refused instead of ignored.
"""
import collections
import inspect

from chainer_cifar.errors import UserError

ModelInfo = collections.namedtuple('ModelInfo', 'name factory source description options')

_REGISTRY = collections.OrderedDict()


def register_model(name, source='', description=''):
    def decorate(factory):
        if name in _REGISTRY:
            raise ValueError('model {!r} is registered twice'.format(name))
        params = inspect.signature(factory).parameters
        _REGISTRY[name] = ModelInfo(name, factory, source,
                                    description or (inspect.getdoc(factory) or '').split('\n')[0],
                                    tuple(params))
        return factory
    return decorate


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
