#!/usr/bin/env python
"""Look inside a trained model: predict, confusion, mistakes, saliency, curves.

    python src/analyze.py predict results/cnn.model cat.jpg dog.png
    python src/analyze.py confusion results/cnn.model --out analysis/
    python src/analyze.py mistakes results/cnn.model --out analysis/
    python src/analyze.py saliency results/cnn.model --index 0,1,2 --out analysis/
    python src/analyze.py saliency results/cnn.model --class cat --out analysis/
    python src/analyze.py curves results/cnn_log.csv results/vgg_log.csv --out analysis/

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
from chainer_cifar.errors import UserError, run_main  # noqa: E402
from chainer_cifar.results import analysis  # noqa: E402


def _model_flags(p):
    p.add_argument('model_file', help='a <prefix>.model written by train.py')
    p.add_argument('-m', '--model', help='model name (default: from <prefix>_run.json)')
    p.add_argument('--res_depth', type=int)
    p.add_argument('--res_width', type=int)
    p.add_argument('--skip_depth', action='store_true')
    p.add_argument('--swapout', action='store_true')
    p.add_argument('-g', '--gpu', type=int, default=-1, help='GPU id (negative: CPU)')
    p.add_argument('--out', default='analysis', help='folder for the PNG/CSV files')


def _data_flags(p):
    p.add_argument('-d', '--dataset', help='image pickle (default: the one in <prefix>_run.json, '
                                           'else dataset/image.pkl)')
    p.add_argument('-l', '--label', help='label pickle (default: beside the image pickle)')


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = p.add_subparsers(dest='command', required=True)
    pr = sub.add_parser('predict', help='top-3 classes of image files (PNG/JPEG, any size)')
    _model_flags(pr)
    _data_flags(pr)
    pr.add_argument('images', nargs='+')
    for name, text in (('confusion', '10x10 confusion matrix on the test set (PNG + CSV)'),
                       ('mistakes', 'grid of the most confidently misclassified test images')):
        q = sub.add_parser(name, help=text)
        _model_flags(q)
        _data_flags(q)
        if name == 'mistakes':
            q.add_argument('--count', type=int, default=25)
    s = sub.add_parser('saliency', help='gradient saliency maps next to the images')
    _model_flags(s)
    _data_flags(s)
    s.add_argument('--index', help='comma-separated test-set indices (default 0..7)')
    s.add_argument('--class', dest='cls', choices=analysis.CLASSES,
                   help='the first --count test images of this class, saliency of that class')
    s.add_argument('--count', type=int, default=8)
    s.add_argument('--image', nargs='*', default=[], help='image files instead of test images')
    c = sub.add_parser('curves', help='loss/error curves of several runs on one figure')
    c.add_argument('logs', nargs='+', help='<prefix>_log.csv files')
    c.add_argument('--out', default='analysis')
    return p


def _device(gpu):
    if gpu is None or gpu < 0:
        return None
    from chainer_cifar.training import get_device
    return get_device(gpu)


def _load(args):
    options = {k: getattr(args, k) for k in analysis.MODEL_OPTIONS}
    model = analysis.load_model(args.model_file, args.model, options, _device(args.gpu))
    info = analysis.run_info(args.model_file).get('args') or {}
    dataset = args.dataset or info.get('dataset') or 'dataset/image.pkl'
    label = args.label or os.path.join(os.path.dirname(dataset), 'label.pkl')
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


def main(argv=None):
    args = build_parser().parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.command == 'curves':
        print('wrote', analysis.write_curves(args.logs, os.path.join(args.out, 'curves.png')))
        return
    model, dataset, label = _load(args)
    variant = os.path.splitext(os.path.basename(dataset))[0]
    if args.command == 'predict':
        prep = analysis.Preprocessor(analysis.stats_path_for(dataset), variant)
        rows = numpy.stack([analysis.read_image(p) for p in args.images])
        probs = analysis.predict_batches(model, prep(rows))
        for path, top in zip(args.images, analysis.top_k(probs)):
            print('{}: {}'.format(path, ', '.join('{} {:.1%}'.format(c, p) for c, p in top)))
        return
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
                target = numpy.full(len(idx), c, numpy.int32)
            else:
                try:
                    idx = [int(i) for i in args.index.split(',')] if args.index else list(range(args.count))
                except ValueError:
                    raise UserError('--index must be comma-separated integers, got {!r}'.format(args.index))
                bad = [i for i in idx if not 0 <= i < len(test_x)]
                if bad:
                    raise UserError('--index {} out of range: the test set has {} images'.format(bad, len(test_x)))
            x, shown, labels = test_x[idx], raw[idx], test_y[idx]
        maps, targets = analysis.saliency(model, x, target)
        path = analysis.write_saliency(shown, maps, labels, targets, os.path.join(args.out, 'saliency.png'))
        print('wrote', path)


if __name__ == '__main__':
    sys.exit(run_main(main))
