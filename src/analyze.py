#!/usr/bin/env python
"""Look inside a trained model: predict, confusion, mistakes, saliency, curves, frame.

    python src/analyze.py predict results/cnn.model cat.jpg dog.png
    python src/analyze.py predict results/cnn.model --index 0-9
    python src/analyze.py confusion results/cnn.model --out analysis/
    python src/analyze.py mistakes results/cnn.model --out analysis/
    python src/analyze.py saliency results/cnn.model --index 0,1,2 --out analysis/
    python src/analyze.py saliency results/cnn.model --class cat --out analysis/
    python src/analyze.py curves results/cnn_log.csv results/vgg_log.csv --out analysis/
    python src/analyze.py frame results/cnn_log.csv

The model's name and options are read from <prefix>_run.json beside the
.model file; -m and the model flags override them (needed for models trained
by the original chainer-cifar). The dataset pickle defaults to the one the
model was trained on.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer first)
import numpy  # noqa: E402

from chainer_cifar.data import pickles  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.results import analysis  # noqa: E402
from chainer_cifar.training.args import add_model_option_arguments, labels_beside, model_options  # noqa: E402

# A grid of more images than this is taller than a PNG figure can be.
MAX_COUNT = 200


def _whole_number(high=None):
    """An argparse type: a whole number from 1 to ``high`` (or any positive one)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError('expected a whole number, got {!r}'.format(text))
        if value < 1 or (high is not None and value > high):
            raise argparse.ArgumentTypeError('must be {}, got {}'.format(
                'positive' if high is None else '1-{}'.format(high), value))
        return value
    return parse


def _model_flags(p):
    p.add_argument('model_file', help='a <prefix>.model written by train.py')
    p.add_argument('-m', '--model', help='model name (default: from <prefix>_run.json)')
    add_model_option_arguments(p, count_type=_whole_number())
    p.add_argument('-g', '--gpu', type=int, default=-1, help='GPU id (negative: CPU)')
    p.add_argument('--out', default='analysis', help='folder for the PNG/CSV files')


def _data_flags(p):
    p.add_argument('-d', '--dataset', help='image pickle (default: the one in <prefix>_run.json, '
                                           'else dataset/image.pkl)')
    p.add_argument('-l', '--label', help='label pickle (default: beside the image pickle)')


def build_parser():
    p = Parser(description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter,
               epilog=__doc__.split('\n', 1)[1])
    sub = p.add_subparsers(dest='command', required=True)
    pr = sub.add_parser('predict', help='top-3 classes of image files (PNG/JPEG, any size) or of test images')
    _model_flags(pr)
    _data_flags(pr)
    pr.add_argument('images', nargs='*')
    pr.add_argument('--index', help='test images, beside their true class: comma-separated indices or ranges (0-9)')
    for name, text in (('confusion', '10x10 confusion matrix on the test set (PNG + CSV)'),
                       ('mistakes', 'grid of the most confidently misclassified test images')):
        q = sub.add_parser(name, help=text)
        _model_flags(q)
        _data_flags(q)
        if name == 'mistakes':
            q.add_argument('--count', type=_whole_number(MAX_COUNT), default=25,
                           help='images in the grid (1-{})'.format(MAX_COUNT))
    s = sub.add_parser('saliency', help='gradient saliency maps next to the images')
    _model_flags(s)
    _data_flags(s)
    s.add_argument('--index', help='comma-separated test-set indices or ranges (default 0-7)')
    s.add_argument('--class', dest='cls', choices=analysis.CLASSES,
                   help='the first --count test images of this class, saliency of that class')
    s.add_argument('--count', type=_whole_number(MAX_COUNT), default=8,
                   help='test images without --index (1-{})'.format(MAX_COUNT))
    s.add_argument('--image', nargs='*', default=[], help='image files instead of test images')
    c = sub.add_parser('curves', help='loss/error curves of several runs on one figure')
    c.add_argument('logs', nargs='+', help='<prefix>_log.csv files')
    c.add_argument('--out', default='analysis')
    f = sub.add_parser('frame', help='what a run\'s test error means: its data, chance, the published recipe')
    f.add_argument('log', help='a <prefix>_log.csv')
    return p


def _device(gpu):
    if gpu is None or gpu < 0:
        return None
    from chainer_cifar.training import get_device
    return get_device(gpu)


def _load(args):
    options = model_options(args)
    model = analysis.load_model(args.model_file, args.model, options, _device(args.gpu))
    info = analysis.run_info(args.model_file).get('args') or {}
    dataset = args.dataset or info.get('dataset') or 'dataset/image.pkl'
    label = args.label or labels_beside(dataset)
    return model, dataset, label


def _test_set(dataset, label):
    _, test_x = pickles.load_images(dataset)
    _, test_y = pickles.load_labels(label)
    if len(test_x) != len(test_y):
        raise UserError('{} has {} test images but {} has {} labels'.format(dataset, len(test_x), label, len(test_y)))
    return test_x, test_y


def _raw_test_images(dataset, fallback):
    """The unprocessed test images for display, when download.py's batches are beside the pickle."""
    path = os.path.join(os.path.dirname(os.path.abspath(dataset)), 'cifar-10-batches-py', 'test_batch')
    if os.path.exists(path):
        from chainer_cifar.data.archive import read_batch
        raw, _ = read_batch(path)
        if len(raw) == len(fallback):
            return raw.reshape(-1, 3, 32, 32)
    return fallback


def _indices(text, n):
    """'0-3,7' -> [0, 1, 2, 3, 7], each a test image of the ``n``."""
    idx = []
    try:
        for part in text.split(','):
            low, _, high = part.strip().partition('-')
            idx += range(int(low), int(high) + 1) if high else [int(low)]
    except ValueError:
        raise UserError('--index must be comma-separated integers or ranges like 0-9, got {!r}'.format(text))
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise UserError('--index {} out of range: the test set has {} images (0-{})'.format(bad, n, n - 1))
    if not idx:
        raise UserError('--index {!r} names no image (a range is low-high, e.g. 0-9)'.format(text))
    if len(idx) > MAX_COUNT:
        raise UserError('--index names {} images; give at most {}'.format(len(idx), MAX_COUNT))
    return idx


def _top(top):
    return ', '.join('{} {:.1%}'.format(c, p) for c, p in top)


def _predict(args, model, dataset, label, variant):
    if not args.images and not args.index:
        raise UserError('predict needs image files or --index (test images, e.g. --index 0-9)')
    if args.images:
        prep = analysis.Preprocessor(analysis.stats_path_for(dataset), variant)
        rows = numpy.stack([analysis.read_image(p) for p in args.images])
        for path, top in zip(args.images, analysis.top_k(analysis.predict_batches(model, prep(rows)))):
            print('{}: {}'.format(path, _top(top)))
    if args.index:
        test_x, test_y = _test_set(dataset, label)
        idx = _indices(args.index, len(test_x))
        probs = analysis.predict_batches(model, test_x[idx])
        right = probs.argmax(axis=1) == test_y[idx]
        for i, ok, top in zip(idx, right, analysis.top_k(probs)):
            print('test image {} (true: {}): {}  {}'.format(i, analysis.CLASSES[test_y[i]], _top(top),
                                                             'right' if ok else 'WRONG'))
        print('{} of {} right'.format(int(right.sum()), len(idx)))
    note = analysis.model_note(args.model_file)
    if note:
        print(note)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command == 'curves':
        print('wrote', analysis.write_curves(args.logs, os.path.join(args.out, 'curves.png')))
        return
    if args.command == 'frame':
        print('\n'.join(analysis.frame(args.log)))
        return
    model, dataset, label = _load(args)
    variant = os.path.splitext(os.path.basename(dataset))[0]
    if args.command == 'predict':
        return _predict(args, model, dataset, label, variant)
    if args.command == 'saliency' and len(args.image) > MAX_COUNT:
        raise UserError('--image names {} files; give at most {}'.format(len(args.image), MAX_COUNT))
    if args.command == 'saliency' and args.image:
        prep = analysis.Preprocessor(analysis.stats_path_for(dataset), variant)
        rows = numpy.stack([analysis.read_image(p) for p in args.image])
        x, shown, labels = prep(rows), rows.reshape(-1, 3, 32, 32), None
    else:
        test_x, test_y = _test_set(dataset, label)
        raw = _raw_test_images(dataset, test_x)
    if args.command == 'confusion':
        probs = analysis.predict_batches(model, test_x)
        matrix = analysis.confusion_matrix(test_y, probs.argmax(axis=1))
        csv_path, png_path, _ = analysis.write_confusion(matrix, args.out, os.path.basename(args.model_file))
        print('test error {:.2%} on {} images; wrote {} and {}'.format(
            1 - numpy.trace(matrix) / matrix.sum(), matrix.sum(), csv_path, png_path))
    elif args.command == 'mistakes':
        probs = analysis.predict_batches(model, test_x)
        idx = analysis.most_confident_mistakes(probs, test_y, args.count)
        path = analysis.write_mistakes(raw, probs, test_y, idx, os.path.join(args.out, 'mistakes.png'))
        print('{} misclassified of {}; wrote the {} most confident to {}'.format(
            int((probs.argmax(axis=1) != test_y).sum()), len(test_y), len(idx), path))
    elif args.command == 'saliency':
        target = None
        if not args.image:
            if args.cls:
                c = analysis.CLASSES.index(args.cls)
                idx = numpy.nonzero(test_y == c)[0][:args.count]
                if not len(idx):
                    raise UserError('the test set of {} has no {} images'.format(label, args.cls))
                target = numpy.full(len(idx), c, numpy.int32)
            else:
                idx = _indices(args.index, len(test_x)) if args.index else list(range(min(args.count, len(test_x))))
            x, shown, labels = test_x[idx], raw[idx], test_y[idx]
        maps, targets = analysis.saliency(model, x, target)
        path = analysis.write_saliency(shown, maps, labels, targets, os.path.join(args.out, 'saliency.png'))
        print('wrote', path)


if __name__ == '__main__':
    sys.exit(run_main(main))
