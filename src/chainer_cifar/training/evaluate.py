"""Test error of a saved model (``evaluate.py`` and ``train.py --test_only``)."""
import numpy

import chainer
import chainer.functions as F

from chainer_cifar.data.pickles import load_dataset
from chainer_cifar.models.io import load_model


def evaluate(model, x, t, batch_size=256):
    """``(mean loss, error fraction)`` of ``model`` (a predictor) on ``x, t`` in test mode."""
    xp = model.xp
    total_loss, wrong = 0.0, 0
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for i in range(0, len(x), batch_size):
            xb = xp.asarray(x[i:i + batch_size])
            tb = xp.asarray(t[i:i + batch_size])
            y = model(xb)
            total_loss += float(F.softmax_cross_entropy(F.cast(y, numpy.float32), tb, reduce='no').array.sum())
            wrong += int((y.array.argmax(axis=1) != tb).sum())
    n = max(len(x), 1)
    return total_loss / n, wrong / n


def test_saved_model(model_path, name, options, image_path, label_path, device, batch_size=256, subset=None):
    """``(loss, error, n_images)`` of the model in ``model_path`` on the test split of the pickles.

    Options not given (None) come from the ``_run.json`` beside the model.
    """
    # One loader for saved models, shared with analyze.py: it reads the run record,
    # accepts files saved with or without the Classifier wrapper and unpickles nothing.
    model = load_model(model_path, name, options, device=device)
    _, _, test_x, test_y = load_dataset(image_path, label_path)
    if subset:
        test_x, test_y = test_x[:subset], test_y[:subset]
    loss, error = evaluate(model, test_x, test_y, batch_size)
    return loss, error, len(test_x)
