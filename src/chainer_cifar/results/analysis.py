"""Look inside a trained model: predictions, confusion matrix, mistakes, saliency, curves.

Everything works on a saved ``<prefix>.model`` plus the options it was built
with (read from ``<prefix>_run.json`` when it is there) and the dataset
pickles, and writes PNG/CSV files. Images given by the user go through the
same preprocessing as the training data, with the statistics ``dataset.py``
saved in ``preprocess_stats.npz``.
"""
import csv
import io
import os
import warnings

import chainer
import chainer.functions as F
import numpy
from PIL import Image

from chainer_cifar import plots
from chainer_cifar.data.build import STATS_NAME
from chainer_cifar.data.pickles import atomic_write
from chainer_cifar.errors import UserError
from chainer_cifar.models import io as model_io

CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck')
PREPROCESSING = {'image': 'mean', 'image_norm': 'norm', 'image_zca': 'zca', 'image_norm_zca': 'norm_zca'}


# ---------------------------------------------------------------- loading

# Saved models are read by chainer_cifar.models.io (shared with evaluate.py); the
# names stay here for the callers of this module.
run_info, load_model = model_io.run_info, model_io.load_model
# Images are decoded whole before they are cropped; beyond this many pixels
# (a 7000x7000 photo) decoding alone takes over 150 MB.
MAX_PIXELS = 50 * 1000 * 1000


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
        try:
            with numpy.load(stats_path, allow_pickle=False) as npz:
                self.stats = {k: npz[k] for k in npz.files}
        except Exception as e:  # a damaged zip fails in many ways
            raise UserError('{} is damaged ({}: {}); run `python src/dataset.py` again'.format(
                stats_path, type(e).__name__, e))
        needed = {'mean': ['mean'], 'norm': ['mean', 'std'], 'zca': ['zca_mean', 'zca_matrix'],
                  'norm_zca': ['mean', 'std', 'norm_zca_mean', 'norm_zca_matrix']}[PREPROCESSING[variant]]
        missing = [k for k in needed if k not in self.stats]
        if missing:
            raise UserError('{} lacks {}; run `python src/dataset.py` again'.format(stats_path, ', '.join(missing)))
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
    """An image file as a planar uint8 row (3072,): centre square crop, resized to 32x32.

    The size is read from the header first: an image over :data:`MAX_PIXELS` is
    refused before its pixels are decoded.
    """
    try:
        with warnings.catch_warnings():
            # PIL warns (and over twice its limit raises) for decompression bombs; either is our refusal.
            warnings.simplefilter('error', Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise Image.DecompressionBombError('{}x{}'.format(w, h))
                im = _eight_bits(im, path).convert('RGB')
                side = min(w, h)
                im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
                im = im.resize((32, 32), Image.BICUBIC)
                return numpy.asarray(im, numpy.uint8).transpose(2, 0, 1).reshape(-1)
    except FileNotFoundError:
        raise UserError('image {} not found'.format(path))
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError('{} is too large ({}); images over {} megapixels are refused: shrink it first'.format(
            path, e, MAX_PIXELS // 10 ** 6))
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, ... on bad files
        raise UserError('{} is not an image PIL can read ({}: {})'.format(path, type(e).__name__, e))


def _eight_bits(im, path):
    """``im`` with 8-bit values: PIL's ``convert('RGB')`` clips 16-bit grey to white and float to black.

    16-bit grey is scaled (the top byte); 32-bit integer and float pixels have no range to scale from.
    """
    if im.mode.startswith('I;16'):
        return Image.fromarray((numpy.asarray(im).astype(numpy.uint16) >> 8).astype(numpy.uint8), 'L')
    if im.mode in ('I', 'F'):
        raise UserError('{} has {} pixels (PIL mode {}), whose range is unknown; save it with 8 bits per channel '
                        '(PNG or JPEG) first'.format(path, '32-bit integer' if im.mode == 'I' else 'float', im.mode))
    return im


def top_k(probs, k=3):
    order = numpy.argsort(-probs, axis=1)[:, :k]
    return [[(CLASSES[c], float(p[c])) for c in row] for p, row in zip(probs, order)]


# ---------------------------------------------------------------- what a result means

CHANCE_ERROR = 90.0  # guessing among ten classes of equal size


def _flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def published_recipe(model, dataset=None):
    """``(preset, published error %)`` of the published recipe for ``model``, or None.

    A preset on the same data file as ``dataset`` is preferred, then one on
    the default image.pkl.
    """
    from chainer_cifar.results.presets import PRESETS
    from chainer_cifar.results.published import published_for
    found = [p for p in PRESETS.values() if _flag(p.args, '-m') == model and published_for(p.name)]
    variant = os.path.basename(dataset or 'image.pkl')
    found.sort(key=lambda p: [os.path.basename(_flag(p.args, '-d') or 'image.pkl') != variant,
                              _flag(p.args, '-d') is not None])
    return (found[0], published_for(found[0].name)[0].error) if found else None


def frame(log_path):
    """A few lines on what a run's result means: its data and length, its test error
    against chance and against what the published recipe for its model reaches."""
    from chainer_cifar.results import runs
    run = runs.load_run(log_path)
    summary = runs.summarize(run)
    meta, args = run.meta, run.meta.get('args') or {}
    data = meta.get('dataset') or {}
    model = meta.get('model') or args.get('model') or '?'
    used = (meta.get('n_train') or 0) + (meta.get('n_valid') or 0)
    of = ' of the {:,} in {}'.format(
        data['n_train'], 'a PARTIAL CIFAR-10 (the full set has 50,000)' if data.get('partial') else 'CIFAR-10') \
        if data.get('n_train') else ''
    lines = ['{}: model {}, {} epoch{} on {:,} training images ({:,} to train, {:,} to validate){}'.format(
        run.prefix, model, summary.epochs, '' if summary.epochs == 1 else 's', used,
        meta.get('n_train') or 0, meta.get('n_valid') or 0, of),
        'test error {:.1f}% on {:,} test images (the saved model, epoch {}); chance is {:.0f}%'.format(
            summary.test_at_best, meta.get('n_test') or 0, summary.best_epoch, CHANCE_ERROR)]
    recipe = published_recipe(model, args.get('dataset'))
    if recipe:
        preset, error = recipe
        lines.append('the published recipe for {} ({}: {} epochs on all 50,000 training images) reports '
                     '{:.2f}%'.format(model, preset.name, _flag(preset.args, '--iter'), error))
    lines.append('every preset and its published error: python src/compare.py list; '
                 'what was measured here: docs/results.md')
    return lines


def model_note(model_file):
    """'note: MODEL has X% test error (...)' from the log beside the model file, or None without one."""
    from chainer_cifar.results import runs
    log = os.path.splitext(model_file)[0] + runs.LOG_SUFFIX
    if not os.path.isfile(log):
        return None
    try:
        run = runs.load_run(log)
        summary = runs.summarize(run)
    except UserError:  # a note, not the answer: a broken log only loses it
        return None
    return 'note: this model ({} epoch{} on {:,} images) has {:.1f}% test error: its top guess is right about ' \
           '{:.0f}% of the time (chance: {:.0f}%)'.format(
               summary.epochs, '' if summary.epochs == 1 else 's',
               (run.meta.get('n_train') or 0) + (run.meta.get('n_valid') or 0), summary.test_at_best,
               100 - summary.test_at_best, 100 - CHANCE_ERROR)


# ---------------------------------------------------------------- confusion

def confusion_matrix(labels, predicted, n=10):
    m = numpy.zeros((n, n), numpy.int64)
    numpy.add.at(m, (labels, predicted), 1)
    return m


def write_confusion(matrix, out_dir, title=''):
    per_class_error = 1 - numpy.diag(matrix) / numpy.maximum(matrix.sum(axis=1), 1)
    csv_path = os.path.join(out_dir, 'confusion.csv')
    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(['true \\ predicted'] + list(CLASSES) + ['error'])
    for c, row in enumerate(matrix):
        w.writerow([CLASSES[c]] + [int(v) for v in row] + ['{:.4f}'.format(per_class_error[c])])
    atomic_write(csv_path, lambda f: f.write(text.getvalue().encode('utf-8')))
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
    _save(fig, png_path)
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
    _save(fig, path)
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
    _save(fig, path)
    return path


# ---------------------------------------------------------------- curves

def write_curves(logs, path):
    """Loss and error curves of several ``_log.csv`` files on one figure, a run's split one colour in both."""
    from chainer_cifar.results.runs import load_run
    loss, error = [], []
    for log in logs:
        run = load_run(log)
        epochs = [r['epoch'] for r in run.rows]
        scale = 100.0 if max(r['test_error'] for r in run.rows) <= 1.0 else 1.0
        for split, style in (('train', ':'), ('valid', '--'), ('test', '-')):
            if all(r.get(split + '_loss') is not None for r in run.rows):
                label, color = '{} {}'.format(run.prefix, split), 'C{}'.format(len(loss) % 10)
                loss.append(plots.Line(epochs, [r[split + '_loss'] for r in run.rows], label, style, color))
                error.append(plots.Line(epochs, [r[split + '_error'] * scale for r in run.rows], label, style, color))
    return plots.plot_curves(path, [plots.Panel('loss', loss), plots.Panel('error (%)', error)], size=(6, 4.5))


def _save(fig, path):
    """Write the figure as a PNG through a temporary file (never a half-written image), then close it."""
    try:
        atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=100))
    finally:
        _pyplot().close(fig)


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def stats_path_for(dataset_path):
    return os.path.join(os.path.dirname(os.path.abspath(dataset_path)), STATS_NAME)
