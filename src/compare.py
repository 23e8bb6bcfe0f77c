#!/usr/bin/env python
"""Run published recipes over several seeds and compare the results with the published error rates.

    python src/compare.py list
    python src/compare.py run resnet20-paper --seeds 1,2,3,4,5 -g 0
    python src/compare.py run resnet20-paper --scale partial --seeds 1,2,3 -g 0
    python src/compare.py report results/resnet20-paper/*_log.csv --out report.md --plot curves.png

Run again, the same command goes on where it stopped: a seed that finished
under the same recipe is skipped, and one that was stopped resumes from its
snapshot (another recipe trains the seed anew).

``--scale partial`` runs the partial-set protocol (the recipe with its schedule
shortened for the 8,336-image partial archive; see
``chainer_cifar.results.presets``). Flags after the preset name that are not
compare.py's own are passed to train.py and recorded as changes to the recipe
(``--iter 1 --subset 256`` for a smoke test); such runs are reported apart from
the published numbers and from the partial-set protocol.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chainer_cifar  # noqa: E402,F401  (compat layer first)
from chainer_cifar.data.pickles import atomic_write  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.results import presets, report, runs  # noqa: E402

# Where the run happens and how much it prints are not part of the recipe.
_NOT_RECIPE = {'-g', '--gpu', '--resume'}  # flags with a value
_NOT_RECIPE_SWITCHES = {'--quiet'}        # flags without one


def build_parser():
    p = Parser(description=__doc__.split('\n')[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n', 1)[1])
    sub = p.add_subparsers(dest='command', required=True)
    sub.add_parser('list', help='list the presets and their published numbers')
    r = sub.add_parser('run', help='train a preset once per seed (extra flags go to train.py)',
                       description='Train PRESET once per seed through train.py. Any flag not listed here '
                                   '(-g 0, --quiet, or a change such as --iter 1 --subset 256) is passed on '
                                   'to train.py; a change to the recipe is recorded, and such runs are '
                                   'reported apart from the published numbers.')
    r.add_argument('preset', help='a preset name (see `compare.py list`)')
    r.add_argument('--seeds', default='1', help='comma-separated seeds, e.g. 1,2,3,4,5')
    r.add_argument('--scale', choices=presets.SCALES, default='full',
                   help='full = the published recipe; partial = the partial-set protocol (default: %(default)s)')
    r.add_argument('--runs_dir', default='results',
                   help='runs go to RUNS_DIR/PRESET/ (RUNS_DIR/partial/PRESET/ with --scale partial)')
    rep = sub.add_parser('report', help='table and plot from <prefix>_log.csv files')
    rep.add_argument('logs', nargs='+', help='<prefix>_log.csv files or folders holding them')
    rep.add_argument('--out', help='write the Markdown table here (default: print it)')
    rep.add_argument('--plot', help='write the test-error curves of every run to this PNG')
    return p


def _seeds(text):
    from chainer_cifar.training.args import SEED_RANGE  # training imports Chainer: only for `run`
    low, high = SEED_RANGE
    try:
        seeds = [int(s) for s in text.split(',') if s.strip()]
    except ValueError:
        seeds = []
    if not seeds or not all(low <= s <= high for s in seeds):
        raise UserError('--seeds must be a comma-separated list of integers from {} to {}, got {!r}'.format(
            low, high, text))
    return seeds


def _recipe_changes(extra):
    changes, skip = [], False
    for i, a in enumerate(extra):
        if skip:
            skip = False
            continue
        flag = a.split('=')[0]
        if flag in _NOT_RECIPE_SWITCHES:
            continue
        if flag in _NOT_RECIPE:
            skip = '=' not in a
            continue
        changes.append(a)
    return changes


def earlier_run(base, sidecar):
    """What an earlier run left at ``base``: ``'finished'``, ``'stopped'`` (it can resume) or None.

    Only a run of the same preset, scale, framework and recipe changes counts; anything else is trained anew.
    """
    try:
        with open(base + runs.PRESET_SUFFIX) as f:
            earlier = json.load(f)
        with open(base + runs.RUN_SUFFIX) as f:
            status = json.load(f).get('status')
    except (OSError, ValueError, AttributeError):
        return None
    keys = ('preset', 'seed', 'scale', 'framework', 'overrides')
    if not isinstance(earlier, dict) or any(earlier.get(k) != sidecar[k] for k in keys):
        return None
    if status == 'finished':
        return 'finished'
    if status in runs.RESUMABLE and os.path.isfile(base + '.snapshot'):
        return 'stopped'
    return None


def run_preset(name, seeds, runs_dir='results', extra=(), run_training=None, scale='full'):
    """Train preset ``name`` at ``scale`` once per seed; return the log paths.

    Each seed's recipe is ``train.py``'s parsed flags (``parse_args(recipe +
    extra)``), handed to ``run_training`` (default: ``train.run``, which
    returns the exit code). The command line is recorded in the sidecar, so
    the run can be retyped as ``python src/train.py ...``. A seed that an
    earlier run of the same recipe finished is skipped, and one it left
    stopped resumes from its snapshot (:func:`earlier_run`), unless ``extra``
    says ``--resume`` itself.
    """
    from chainer_cifar.training.args import parse_args
    from chainer_cifar.training.lock import OutputLock
    if run_training is None:
        import train
        run_training = train.run
    out = presets.run_dir(runs_dir, name, scale)
    recipe = presets.recipe(name, scale)
    argvs = [recipe + ['-p', '{}_s{}'.format(name, seed), '--out', out, '--seed', str(seed)] + list(extra)
             for seed in seeds]
    recipes = [parse_args(argv) for argv in argvs]  # every seed's flags checked before the first file is written
    logs = []
    for seed, argv, args in zip(seeds, argvs, recipes):
        base = os.path.join(args.out, args.prefix)  # where train.py writes this seed's files
        sidecar = {'preset': name, 'seed': seed, 'scale': scale, 'framework': 'chainer',
                   'overrides': _recipe_changes(extra), 'argv': argv}
        earlier = None if any(a.split('=')[0] == '--resume' for a in extra) else earlier_run(base, sidecar)
        if earlier == 'finished':
            print('== {} seed {}: finished earlier ({}); skipped (delete its files to train it again)'.format(
                name, seed, base + runs.LOG_SUFFIX), flush=True)
            logs.append(base + runs.LOG_SUFFIX)
            continue
        if earlier == 'stopped':
            argv = argv + ['--resume', base + '.snapshot']
            args = parse_args(argv)
            sidecar['argv'] = argv
        # Held from the sidecar on (train.py takes it again): a seed another run is writing is refused untouched.
        lock = OutputLock(base).acquire()
        try:
            atomic_write(base + runs.PRESET_SUFFIX, lambda f: f.write(json.dumps(sidecar, indent=1) + '\n'),
                         mode='w')
            print('== {} seed {}: python src/train.py {}'.format(name, seed, ' '.join(argv)), flush=True)
            rc = run_training(args)
        finally:
            lock.release()
        if rc:  # interrupted (130): the remaining seeds would not be the requested set
            raise UserError('{} seed {} stopped (exit code {}); run the same command again to resume it and '
                            'train the remaining seeds'.format(name, seed, rc))
        logs.append(base + runs.LOG_SUFFIX)
    return logs


def find_logs(paths):
    logs = []
    for p in paths:
        if os.path.isdir(p):
            logs += sorted(glob.glob(os.path.join(p, '**', '*' + runs.LOG_SUFFIX), recursive=True))
        else:
            logs.append(p)
    if not logs:
        raise UserError('no *{} files in {}'.format(runs.LOG_SUFFIX, ' '.join(paths)))
    return logs


def write_report(logs, out=None, plot=None):
    groups = report.group_runs([runs.load_run(p) for p in logs])
    text = report.table(groups)
    if out:
        atomic_write(out, lambda f: f.write(text), mode='w')
        print('wrote {}'.format(out))
    else:
        print(text)
    if plot:
        report.plot(groups, plot)
        print('wrote {}'.format(plot))
    return groups


def main(argv=None):
    args, extra = build_parser().parse_known_args(argv)
    if args.command != 'run' and extra:
        raise UserError('unknown arguments: {}'.format(' '.join(extra)))
    if args.command == 'list':
        rows = [('preset', 'recipe', 'published test error (source)')] + presets.describe()
        names, numbers = (max(len(r[i]) for r in rows) for i in (0, 2))
        for name, description, published in rows:  # the description last: a long one cannot shift columns
            print('{:<{}}  {:<{}}  {}'.format(name, names, published, numbers, description))
    elif args.command == 'run':
        logs = run_preset(args.preset, _seeds(args.seeds), args.runs_dir, extra, scale=args.scale)
        folder = presets.run_dir(args.runs_dir, args.preset, args.scale)
        write_report(logs, os.path.join(folder, 'report.md'), os.path.join(folder, 'test_error.png'))
    else:
        write_report(find_logs(args.logs), args.out, args.plot)


if __name__ == '__main__':
    sys.exit(run_main(main))
