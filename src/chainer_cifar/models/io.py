"""Saved models: ``<prefix>.model`` (Chainer's npz of the weights) and the ``_run.json`` beside it.

The weights are read with ``numpy.load(..., allow_pickle=False)``: an npz can
hold pickled objects, and unpickling one can run any code, which Chainer's own
``load_npz`` allows. A model file holds only numeric arrays, so a pickle in one
is refused, and a damaged file (truncated, a flipped bit) is one error naming it.
"""
import json
import os

import numpy
from chainer import serializers

from chainer_cifar.errors import UserError
from chainer_cifar.models.registry import create_model, model_options
TRAIN_HINT = 'train one with `python src/train.py -p PREFIX`'
DAMAGED_HINT = 'retrain it or use another file'


def run_info(model_path):
    """The ``_run.json`` written beside ``<prefix>.model`` (or ``<prefix>_<epoch>.model``), or {}."""
    base = model_path[:-len('.model')] if model_path.endswith('.model') else model_path
    base = base.rsplit('_', 1)[0] if not os.path.exists(base + '_run.json') else base  # <prefix>_<epoch>.model
    path = base + '_run.json'
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not UTF-8
        raise UserError('{} is damaged ({}: {}); delete it and give the model with -m NAME and its '
                        'options'.format(path, type(e).__name__, e))
    if not _is_run_record(info):
        raise UserError('{} is not a run record of train.py; delete it and give the model with -m NAME and '
                        'its options'.format(path))
    return info


def _is_run_record(info):
    args = (info.get('args') or {}) if isinstance(info, dict) else None
    if not isinstance(args, dict) or not isinstance(args.get('model') or '', str):
        return False
    # The options become constructor arguments: flags or positive integers, as train.py writes them.
    return all(v is None or isinstance(v, bool) or (isinstance(v, int) and v > 0)
               for v in (args.get(k) for k in model_options()))


def read_weights(model_path):
    """Every array of a ``.model`` file, as ``{name: ndarray}``, without unpickling anything."""
    if not os.path.isfile(model_path):
        raise UserError('model file {} not found; {}'.format(model_path, TRAIN_HINT))
    try:
        with open(model_path, 'rb') as f:
            if f.read(4) != b'PK\x03\x04':
                raise ValueError('not an npz (zip) file')
        with numpy.load(model_path, allow_pickle=False) as npz:
            # Reading every member to its end makes zipfile check each CRC.
            return {k: npz[k] for k in npz.files}
    except Exception as e:  # a damaged zip fails in many ways: BadZipFile, zlib.error, EOFError, ...
        if isinstance(e, ValueError) and 'allow_pickle' in str(e):
            raise UserError('{} holds a pickled Python object, which a model file of train.py never does; '
                            'refusing to load it (unpickling can run code); {}'.format(model_path, DAMAGED_HINT))
        raise UserError('{} is damaged or not a model file ({}: {}); {}'.format(
            model_path, type(e).__name__, e, DAMAGED_HINT))


def load_model(model_path, name=None, options=None, device=None):
    """Build the model (options from the run record unless given) and load its weights.

    Files saved with or without the ``Classifier`` wrapper (``predictor/``) both load.
    """
    if not os.path.isfile(model_path):
        raise UserError('model file {} not found; {}'.format(model_path, TRAIN_HINT))
    args = run_info(model_path).get('args') or {}
    name = name or args.get('model')
    if not name:
        raise UserError('{} has no _run.json beside it; give the model with -m NAME (and its '
                        'options)'.format(model_path))
    opts = {k: args.get(k) for k in model_options()}
    opts.update({k: v for k, v in (options or {}).items() if v is not None and v is not False})
    model = create_model(name, **opts)
    weights = read_weights(model_path)
    errors = []
    for prefix in ('', 'predictor/'):
        try:
            serializers.NpzDeserializer(weights, path=prefix).load(model)
            break
        except (KeyError, ValueError, TypeError) as e:
            errors.append(e)
    else:
        raise UserError('{} does not fit model {} with options {} ({}); pass the -m and options it '
                        'was trained with'.format(model_path, name, describe(opts), errors[0]))
    if device is not None:
        model.to_device(device)
    return model


def describe(opts):
    return ' '.join('--{} {}'.format(k, v) for k, v in sorted(opts.items()) if v not in (None, False)) or '(defaults)'
