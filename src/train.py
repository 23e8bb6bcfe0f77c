#!/usr/bin/env python
"""Train a CIFAR-10 model: the chainer-cifar article's train.py, on Chainer's Trainer, resumable.

    python src/train.py -g 0 -m cnn -b 128 -p cnn --optimizer adam --iter 300 --lr_decay_iter 100

Writes results/cnn/cnn.model (best validation error), .state, _log.csv, _loss.png,
_error.png, .snapshot (for --resume) and _run.json; `-p runs/cnn` writes runs/cnn.*,
`--out DIR -p cnn` DIR/cnn.*. See docs/training.md.
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer before chainer)
from chainer_cifar.errors import run_main  # noqa: E402
from chainer_cifar.functions import keep_memory  # noqa: E402
from chainer_cifar.training import TrainingInterrupted, get_device, parse_args, train  # noqa: E402
from chainer_cifar.training.args import build_parser, labels_beside, model_options  # noqa: E402
from chainer_cifar.training.evaluate import test_saved_model  # noqa: E402
from chainer_cifar.training.extensions import sigterm_as_ctrl_c  # noqa: E402


def optimizer_settings(args):
    """The flags that make the optimizer, as far as it uses them (Adam has no --lr)."""
    rate = '--lr' if args.optimizer in ('sgd', 'nesterov') else '--alpha'
    settings = {'--optimizer': args.optimizer, rate: getattr(args, rate[2:]), '--warmup_epochs': args.warmup_epochs}
    if args.warmup_epochs > 0:
        settings['--warmup_lr'] = args.warmup_lr
    return settings


def published_recipe(args):
    """``(preset, its optimizer flags)`` for ``args.model``, unless this command already uses them.

    The article's preset (``article-<model>``) first, else the first preset of
    that model; None for a model without one. The flags are the preset's own
    optimizer flags, plus any of its defaults this command overrides.
    """
    from chainer_cifar.results import presets
    for name in ['article-' + args.model] + list(presets.PRESETS):
        preset = presets.PRESETS.get(name)
        if preset is None or preset.args[preset.args.index('-m') + 1] != args.model:
            continue
        theirs, ours = optimizer_settings(parse_args(preset.args)), optimizer_settings(args)
        if theirs == ours:
            return None  # it is the published optimizer that diverged: suggesting it would not help
        flags = [a for i, a in enumerate(preset.args) if a in theirs or (i and preset.args[i - 1] in theirs)]
        for flag, value in theirs.items():
            if flag not in preset.args and getattr(args, flag[2:]) != value:
                flags += [flag, '{:g}'.format(value)]
        return name, flags
    return None


def main(argv=None):
    return run(parse_args(argv))


def run(args):
    """Train (or with ``--test_only`` evaluate) as the checked ``args`` say; returns the exit code.

    ``compare.py`` calls it once per seed with ``parse_args(recipe + flags)``.
    """
    keep_memory()  # every step frees and reallocates the same large buffers: keep them (functions._malloc)
    if args.test_only:
        path = os.path.join(args.out, args.prefix + '.model')
        loss, error, n = test_saved_model(path, args.model, model_options(args), args.dataset, args.label,
                                          get_device(args.gpu), args.batch_size, args.subset)
        print('{}: test error {:.2f}% (loss {:.4f}) on {} images'.format(path, 100 * error, loss, n))
        return 0
    try:
        # SIGTERM (kill, a job scheduler) stops the run as Ctrl-C does: inside the
        # training loop at an iteration boundary with a snapshot, elsewhere at once.
        with sigterm_as_ctrl_c():
            summary = train(args, published_recipe(args))
    except TrainingInterrupted as e:
        hint = 'continue with --resume {}'.format(e.snapshot) if e.snapshot else 'start the run again'
        print('{}; {}'.format(e, hint), file=sys.stderr)
        return 130
    if summary.files:  # a data-parallel worker other than rank 0 writes and says nothing
        print('\n'.join(summary_lines(summary, args)))
        sys.stdout.flush()
    return 0


def summary_lines(summary, args):
    """The closing lines: the protocol's numbers, every file written, and what to run next."""
    if summary.best_valid_error is not None:
        lines = ['best validation error {:.2f}% at epoch {}; test error at that epoch {:.2f}% '
                 '(final test error {:.2f}%)'.format(100 * summary.best_valid_error, summary.best_epoch,
                                                    100 * summary.test_error_at_best,
                                                    100 * summary.final_test_error)]
    elif summary.final_test_error is not None:
        lines = ['no validation set: test error of the last epoch ({}) {:.2f}%'.format(
            summary.epochs, 100 * summary.final_test_error)]
    else:
        lines = []
    paths = summary.paths
    lines.append('wrote {}: {}'.format(os.path.join(args.out, ''),
                                       ', '.join(os.path.basename(f) for f in summary.files)))
    q = shlex.quote  # commands to retype, whatever the paths hold
    data = ''
    if args.dataset != build_parser().get_default('dataset'):
        data += ' -d {}'.format(q(args.dataset))
    if args.label != labels_beside(args.dataset):  # evaluate.py takes the same default
        data += ' -l {}'.format(q(args.label))
    gpu = ' -g {}'.format(args.gpu) if args.gpu >= 0 else ''
    steps = ['python src/analyze.py curves {}'.format(q(paths['log'])),
             'python src/evaluate.py {}{}{}'.format(q(paths['model']), gpu, data),
             'python src/compare.py report {}'.format(q(args.out))]
    lines.append('next: ' + steps[0])
    lines += ['      ' + step for step in steps[1:]]
    return lines


if __name__ == '__main__':
    sys.exit(run_main(main))
