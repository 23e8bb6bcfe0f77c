"""Look inside a trained model: predictions, confusion matrix, mistakes, saliency, curves.

Everything works on a saved ``<prefix>.model`` plus the options it was built
with (read from ``<prefix>_run.json`` when it is there) and the dataset
pickles, and writes PNG/CSV files. Images given by the user go through the
same preprocessing as the training data, with the statistics ``dataset.py``
saved in ``preprocess_stats.npz``.
"""
import csv
import json
import os

import chainer
import chainer.functions as F
import numpy
from PIL import Image, UnidentifiedImageError

from chainer_cifar.data.build import STATS_NAME
from chainer_cifar.errors import UserError
from chainer_cifar.models.registry import create_model

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
MODEL_OPTIONS = ('res_depth', 'res_width', 'skip_depth', 'swapout')
PREPROCESSING = {'image': 'mean', 'image_norm': 'norm', 'image_zca': 'zca', 'image_norm_zca': 'norm_zca'}


# ---------------------------------------------------------------- loading

def run_info(model_path):
    """The ``_run.json`` written beside ``<prefix>.model``, or {}."""
    base = model_path[:-len('.model')] if model_path.endswith('.model') else model_path
    base = base.rsplit('_', 1)[0] if not os.path.exists(base + '_run.json') else base  # <prefix>_<epoch>.model
    path = base + '_run.json'
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def load_model(model_path, name=None, options=None, device=None):
    """Build the model (options from the run record unless given) and load its weights."""
    if not os.path.isfile(model_path):
        raise UserError('model file {} not found; train one with `python src/train.py -p PREFIX`'.format(
            model_path))
    args = run_info(model_path).get('args') or {}
    name = name or args.get('model')
    if not name:
        raise UserError('{} has no _run.json beside it; give the model with -m NAME (and its '
                        'options)'.format(model_path))
    opts = {k: args.get(k) for k in MODEL_OPTIONS}
    opts.update({k: v for k, v in (options or {}).items() if v is not None and v is not False})
    model = create_model(name, **opts)
    errors = []
    for prefix in ('', 'predictor/'):
        try:
            chainer.serializers.load_npz(model_path, model, path=prefix)
            break
        except (KeyError, ValueError) as e:
            errors.append(e)
    else:
        raise UserError('{} does not fit model {} with options {} ({}); pass the -m and options it '
                        'was trained with'.format(model_path, name, _describe(opts), errors[0]))
    if device is not None:
        model.to_device(device)
    return model


def _describe(opts):
    return ' '.join('--{} {}'.format(k, v) for k, v in sorted(opts.items()) if v not in (None, False)) or '(defaults)'


def predict_batches(model, x, batch_size=256):
    """Softmax probabilities (N, 10) in test mode, as a NumPy array."""
    xp = model.xp
    out = []
    with chainer.using_config('train', False), chainer.no_backprop_mode():
        for i in range(0, len(x), batch_size):
            y = F.softmax(model(xp.asarray(x[i:i + batch_size])))
            out.append(chainer.backends.cuda.to_cpu(y.array))
    return numpy.concatenate(out)


# ---------------------------------------------------------------- predict

class Preprocessor(object):
    """Turns uint8 RGB images into the inputs of one of dataset.py's variants."""

    def __init__(self, stats_path, variant='image'):
        if variant not in PREPROCESSING:
            raise UserError('unknown preprocessing {!r}; choose one of {}'.format(variant, ', '.join(PREPROCESSING)))
        if not os.path.isfile(stats_path):
            raise UserError('{} not found; run `python src/dataset.py` (it saves the statistics '
                            'used to preprocess new images)'.format(stats_path))
        self.stats = dict(numpy.load(stats_path))
        self.kind = PREPROCESSING[variant]

    def __call__(self, rows):
        """rows: uint8/float (N, 3072) planar -> float32 (N, 3, 32, 32)."""
        s = self.stats
        x = rows.reshape(-1, 3, 1024).astype(numpy.float64) - s['mean'][None, :, None]
        if self.kind in ('norm', 'norm_zca'):
            x /= s['std'][None, :, None]
        x = x.reshape(len(rows), -1)
        if self.kind == 'zca':
            x = (rows.astype(numpy.float64) - s['zca_mean']) @ s['zca_matrix']
        elif self.kind == 'norm_zca':
            x = (x - s['norm_zca_mean']) @ s['norm_zca_matrix']
        return x.astype(numpy.float32).reshape(-1, 3, 32, 32)


def read_image(path):
    """An image file as a planar uint8 row (3072,): centre square crop, resized to 32x32."""
    try:
        with Image.open(path) as im:
            im = im.convert('RGB')
            w, h = im.size
            side = min(w, h)
            im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
            im = im.resize((32, 32), Image.BICUBIC)
            return numpy.asarray(im, numpy.uint8).transpose(2, 0, 1).reshape(-1)
    except FileNotFoundError:
        raise UserError('image {} not found'.format(path))
    except (UnidentifiedImageError, OSError) as e:
        raise UserError('{} is not an image PIL can read ({})'.format(path, e))


def top_k(probs, k=3):
    order = numpy.argsort(-probs, axis=1)[:, :k]
    return [[(CLASSES[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


# ---------------------------------------------------------------- confusion

def confusion_matrix(labels, predicted, n=10):
    m = numpy.zeros((n, n), numpy.int64)
    numpy.add.at(m, (labels, predicted), 1)
    return m


def write_confusion(matrix, out_dir, title=''):
    per_class_error = 1 - numpy.diag(matrix) / numpy.maximum(matrix.sum(axis=1), 1)
    csv_path = os.path.join(out_dir, 'confusion.csv')
    with open(csv_path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['true \\ predicted'] + list(CLASSES) + ['error'])
        for c, row in enumerate(matrix):
            w.writerow([CLASSES[c]] + [int(v) for v in row] + ['{:.4f}'.format(per_class_error[c])])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(matrix, cmap='Blues')
    for i in range(10):
        for j in range(10):
            ax.text(j, i, int(matrix[i, j]), ha='center', va='center', fontsize=7,
                    color='white' if matrix[i, j] > matrix.max() / 2 else 'black')
    ax.set_xticks(range(10))
    ax.set_xticklabels(CLASSES, rotation=45, ha='right')
    ax.set_yticks(range(10))
    ax.set_yticklabels(['{} ({:.0%} err)'.format(c, e) for c, e in zip(CLASSES, per_class_error)])
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    total_error = 1 - numpy.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title('{}test error {:.2%} on {} images'.format(title + ': ' if title else '', total_error, matrix.sum()))
    fig.colorbar(im)
    fig.tight_layout()
    png_path = os.path.join(out_dir, 'confusion.png')
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path, per_class_error


# ---------------------------------------------------------------- mistakes

def most_confident_mistakes(probs, labels, k=25):
    """Indices of wrong predictions, most confident first."""
    predicted = probs.argmax(axis=1)
    wrong = numpy.nonzero(predicted != labels)[0]
    return wrong[numpy.argsort(-probs[wrong, predicted[wrong]], kind='stable')][:k]


def display_images(x):
    """(N, 3, 32, 32) images as uint8 (N, 32, 32, 3) for display, each scaled to its own range."""
    x = numpy.asarray(x, numpy.float64)
    if x.min() >= 0 and x.max() > 1:  # raw pixels
        return x.clip(0, 255).astype(numpy.uint8).transpose(0, 2, 3, 1)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    return ((x - lo) / numpy.maximum(hi - lo, 1e-12) * 255).astype(numpy.uint8).transpose(0, 2, 3, 1)


def write_mistakes(images, probs, labels, indices, path, cols=5):
    plt = _pyplot()
    rows = max(1, -(-len(indices) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.5), squeeze=False)
    pics = display_images(images[indices]) if len(indices) else []
    for ax in axes.ravel():
        ax.axis('off')
    for ax, i, pic in zip(axes.ravel(), indices, pics):
        order = numpy.argsort(-probs[i])
        ax.imshow(pic, interpolation='nearest')
        ax.set_title('true: {}\npred: {} {:.0%}\n2nd: {} {:.0%}'.format(
            CLASSES[labels[i]], CLASSES[order[0]], probs[i, order[0]], CLASSES[order[1]],
            probs[i, order[1]]), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- saliency

def saliency(model, x, target=None):
    """|d score / d input| maxed over channels, (N, 32, 32); score = logit of ``target`` (default: predicted)."""
    xp = model.xp
    v = chainer.Variable(xp.asarray(x))
    with chainer.using_config('train', False):
        logits = model(v)
    if target is None:
        target = logits.array.argmax(axis=1)
    target = xp.asarray(target)
    score = F.sum(F.select_item(logits, target))
    model.cleargrads()
    score.backward()
    grad = chainer.backends.cuda.to_cpu(v.grad)
    return numpy.abs(grad).max(axis=1), chainer.backends.cuda.to_cpu(target)


def write_saliency(images, maps, labels, targets, path):
    plt = _pyplot()
    n = len(maps)
    fig, axes = plt.subplots(n, 2, figsize=(5.2, 2.2 * n), squeeze=False)
    pics = display_images(images)
    for k in range(n):
        axes[k, 0].imshow(pics[k], interpolation='nearest')
        title = 'class: {}'.format(CLASSES[targets[k]])
        if labels is not None:
            title = 'true: {} / {}'.format(CLASSES[labels[k]], title)
        axes[k, 0].set_title(title, fontsize=7)
        im = axes[k, 1].imshow(maps[k], cmap='hot', interpolation='nearest', vmin=0)
        axes[k, 1].set_title('|d logit({}) / d pixel|, max over RGB'.format(CLASSES[targets[k]]), fontsize=7)
        for ax in axes[k]:
            ax.axis('off')
        bar = fig.colorbar(im, ax=axes[k, 1], fraction=0.046, pad=0.04)  # each map has its own scale
        bar.ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- curves

def write_curves(logs, path):
    """Loss and error curves of several ``_log.csv`` files on one figure."""
    from chainer_cifar.results.runs import load_run
    plt = _pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    for log in logs:
        run = load_run(log)
        epochs = [r['epoch'] for r in run.rows]
        scale = 100.0 if max(r['test_error'] for r in run.rows) <= 1.0 else 1.0
        for split, style in (('train', ':'), ('valid', '--'), ('test', '-')):
            if all(r.get(split + '_loss') is not None for r in run.rows):
                line, = ax_loss.plot(epochs, [r[split + '_loss'] for r in run.rows], style,
                                     label='{} {}'.format(run.prefix, split))
                ax_err.plot(epochs, [r[split + '_error'] * scale for r in run.rows], style,
                            color=line.get_color(), label='{} {}'.format(run.prefix, split))
    ax_loss.set_ylabel('loss')
    ax_err.set_ylabel('error (%)')
    for ax in (ax_loss, ax_err):
        ax.set_xlabel('epoch')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def stats_path_for(dataset_path):
    return os.path.join(os.path.dirname(os.path.abspath(dataset_path)), STATS_NAME)
