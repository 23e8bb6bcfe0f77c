"""Group runs, compute statistics over seeds, write the Markdown tables and the curves plot.

Three tables, never mixed:

* runs comparable with a published number: the full CIFAR-10 and the preset's
  recipe unchanged;
* the partial-set protocol (``compare.py run PRESET --scale partial`` on the
  partial archive, unchanged): each preset's Chainer runs beside the runs of
  the independent PyTorch control (``tools/torch_control.py``), with no
  published number;
* everything else (``--subset``, a changed recipe, an unknown dataset), shown
  for what it is.
"""
import collections
import math

from chainer_cifar import plots
from chainer_cifar.errors import UserError
from chainer_cifar.results import runs as runs_
from chainer_cifar.results.published import published_for

Group = collections.namedtuple('Group', 'key label preset modified summaries dataset comparable scale framework '
                                         'protocol')
FRAMEWORKS = {'chainer': 'Chainer', 'pytorch': 'PyTorch control'}

_IGNORED_ARGS = {'seed', 'prefix', 'out', 'resume', 'gpu', 'communicator'}


def group_key(run):
    """Runs of one preset (with the same changes), or else of the same flags but the seed."""
    if run.preset.get('preset'):
        return ('preset', run.preset['preset'], run.preset.get('scale', 'full'),
                run.preset.get('framework', 'chainer'), tuple(run.preset.get('overrides') or ()))
    args = run.meta.get('args') or {}
    return ('args',) + tuple(sorted((k, repr(v)) for k, v in args.items() if k not in _IGNORED_ARGS))


def group_runs(runs):
    grouped = collections.OrderedDict()
    for run in runs:
        grouped.setdefault(group_key(run), []).append(run)
    groups = []
    for key, members in grouped.items():
        datasets = {runs_.dataset_of(r) for r in members}
        if len(datasets) > 1:
            raise UserError('runs {} belong together but used different datasets ({}); compare them '
                            'separately'.format(', '.join(r.path for r in members),
                                                '; '.join(sorted(d for d, _ in datasets))))
        dataset, comparable = datasets.pop()
        preset = members[0].preset.get('preset')
        overrides = list(members[0].preset.get('overrides') or [])
        scale = members[0].preset.get('scale', 'full')
        framework = members[0].preset.get('framework', 'chainer')
        if preset:
            label = preset
            if scale != 'full':
                label += ' [{} scale]'.format(scale)
            if framework != 'chainer':
                label += ' ({})'.format(FRAMEWORKS.get(framework, framework))
            if overrides:
                label += ' (modified: {})'.format(' '.join(overrides))
        else:
            args = members[0].meta.get('args') or {}
            label = args.get('model') or members[0].prefix
        unfinished = ['{} ({})'.format(r.prefix, runs_.status_of(r)) for r in members
                      if runs_.status_of(r) not in (None, 'finished')]
        if unfinished:
            label += ' [not finished: {}]'.format(', '.join(unfinished))
        summaries = sorted((runs_.summarize(r) for r in members), key=lambda s: s.run.path)
        unchanged = bool(preset) and not overrides and not unfinished
        # The partial-set protocol is defined on the whole partial archive: no --subset.
        protocol = unchanged and scale == 'partial' and dataset.startswith('PARTIAL') and 'used)' not in dataset
        groups.append(Group(key, label, preset, bool(overrides), summaries, dataset,
                            comparable and unchanged and scale == 'full', scale, framework, protocol))
    return groups


def mean_std(values):
    """Mean and sample standard deviation (n - 1); std is None for one value."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _pm(mean, std, digits=2):
    if mean is None:
        return '-'
    return '{:.{d}f} ± {:.{d}f}'.format(mean, std, d=digits) if std is not None else '{:.{d}f}'.format(mean, d=digits)


def _params(group):
    meta = group.summaries[0].run.meta or {}
    p = meta.get('parameters', meta.get('params'))  # train.py writes 'parameters'
    return '{:.2f}M'.format(p / 1e6) if p else '-'


def _device(group):
    """Every device that trained the group's runs; a resumed run's record names each of its segments'."""
    devices = []
    for s in group.summaries:
        meta = s.run.meta or {}
        for part in meta.get('segments') or [meta]:
            d = str(part.get('device') or '-')
            d = {'@numpy': 'CPU (@numpy)', 'cpu': 'CPU'}.get(
                d, 'GPU ({})'.format(d) if d.startswith(('@cupy', 'cuda')) else d)
            if part.get('device_name'):
                d = '{} {}'.format(part['device_name'], d)
            if d not in devices:
                devices.append(d)
    return ', '.join(devices)


def _epochs(group):
    epochs = sorted({s.epochs for s in group.summaries})
    return str(epochs[0]) if len(epochs) == 1 else '{}–{}'.format(epochs[0], epochs[-1])


def _wall(group):
    walls = [s.wall_seconds for s in group.summaries if s.wall_seconds is not None]
    if not walls:
        return '-'
    m = sum(walls) / len(walls)
    return '{:.1f} h'.format(m / 3600) if m >= 3600 else '{:.0f} s'.format(m)


def _errors(group):
    """Cells: runs, test error at best valid (mean ± std), the best run's, final epoch's (mean ± std)."""
    m, s = mean_std([x.test_at_best for x in group.summaries])
    fm, fs = mean_std([x.final_test_error for x in group.summaries])
    best = min(x.test_at_best for x in group.summaries)
    return len(group.summaries), _pm(m, s), '{:.2f}'.format(best), _pm(fm, fs)


def _per_epoch(group):
    walls = [s.wall_seconds / s.epochs for s in group.summaries if s.wall_seconds and s.epochs]
    return '{:.1f}'.format(sum(walls) / len(walls)) if walls else '-'


def _minutes(group):
    walls = [s.wall_seconds for s in group.summaries if s.wall_seconds is not None]
    return '{:.1f}'.format(sum(walls) / len(walls) / 60) if walls else '-'


def protocol_table(groups):
    """Markdown lines of the partial-set protocol: per preset, Chainer then the PyTorch control."""
    from chainer_cifar.results.presets import PRESETS
    order = list(PRESETS)
    groups = sorted(groups, key=lambda g: (order.index(g.preset) if g.preset in order else len(order),
                                           g.framework != 'chainer', g.framework))
    out = ['## Partial CIFAR-10, the partial-set protocol', '',
           'Each preset\'s recipe with its schedule shortened for the partial archive (`compare.py run PRESET '
           '--scale partial`), beside the independent PyTorch control where one was run. Not comparable with '
           'the published numbers, which need the full CIFAR-10.', '',
           '| preset | framework | n | test error at best valid, % (mean ± std) | best run | final epoch, % | '
           'params | epochs | s / epoch | min / run | device |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for g in groups:
        out.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            g.preset, FRAMEWORKS.get(g.framework, g.framework), *_errors(g), _params(g), _epochs(g),
            _per_epoch(g), _minutes(g), _device(g)))
    datasets = sorted({g.dataset for g in groups})
    out += ['', 'Data: {}.'.format('; '.join(datasets)), '']
    return out


def table(groups):
    """The Markdown report: comparable runs against published numbers, the partial-set protocol, the rest."""
    out = []
    comparable = [g for g in groups if g.comparable]
    protocol = [g for g in groups if g.protocol]
    other = [g for g in groups if not g.comparable and not g.protocol]
    head = ('| model | n | test error at best valid, % (mean ± std) | best run | final epoch, % | '
            'published, % | difference | params | epochs | wall time / run | device |')
    rule = '|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|'
    if comparable:
        out += ['## Full CIFAR-10, preset recipe unchanged', '', head, rule]
        for g in comparable:
            m, _ = mean_std([x.test_at_best for x in g.summaries])
            pubs = published_for(g.preset)
            published = '; '.join('{} ({}{})'.format(_pm(p.error, p.std), p.source,
                                                     ', n={}'.format(p.runs) if p.runs else '')
                                  for p in pubs) or '-'
            diff = '{:+.2f}'.format(m - pubs[0].error) if pubs else '-'
            out.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                g.label, *_errors(g), published, diff, _params(g), _epochs(g), _wall(g), _device(g)))
        out.append('')
    if protocol:
        out += protocol_table(protocol)
    if other:
        out += ['## Not comparable with published numbers',
                '',
                'Partial data, `--subset`, a changed recipe or an unknown dataset: shown for what they '
                'are, with no published number beside them.', '',
                '| model | n | test error at best valid, % (mean ± std) | best run | final epoch, % | '
                'params | epochs | wall time / run | device | dataset |',
                '|---|---:|---:|---:|---:|---:|---:|---:|---|---|']
        for g in other:
            out.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
                g.label, *_errors(g), _params(g), _epochs(g), _wall(g), _device(g), g.dataset))
        out.append('')
    out += ['Test error is taken at the epoch of best validation error (the last epoch when a run has no '
            'validation set), never the best test error; "final epoch" is the last epoch\'s. Runs: ' +
            ', '.join('`{}`'.format(s.run.path) for g in groups for s in g.summaries) + '.']
    return '\n'.join(out) + '\n'


def published_table():
    """Markdown table of every published number in :mod:`.published` (docs/results.md shows it verbatim)."""
    from chainer_cifar.results.published import PUBLISHED

    def number(p):
        return _pm(p.error, p.std, 3 if p.source == 'pytorch' else 2)  # as each source gives them

    out = ['| preset | source | published test error, % | runs | params (source) | note |',
           '|---|---|---:|---:|---:|---|']
    for p in PUBLISHED:
        params = '–' if not p.params else ('{:.2f}M'.format(p.params / 1e6) if p.params < 1e7
                                            else '{:.1f}M'.format(p.params / 1e6))
        out.append('| `{}` | {} | {} | {} | {} | {} |'.format(
            p.preset, p.source, number(p), p.runs or '–', params, p.note.replace('+-', '±')))
    return '\n'.join(out) + '\n'


def plot(groups, path):
    """Overlay the test-error curves of every run, one colour per group."""
    lines = []
    for i, g in enumerate(groups):
        color = 'C{}'.format(i % 10)
        for j, s in enumerate(g.summaries):
            rows = s.run.rows
            scale = 100.0 if max(r['test_error'] for r in rows) <= 1.0 else 1.0
            lines.append(plots.Line([r['epoch'] for r in rows], [r['test_error'] * scale for r in rows],
                                    g.label if j == 0 else None, '-', color))
            lines.append(plots.Line([s.best_epoch], [s.test_at_best], None, 'o', color))
    plots.plot_curves(path, [plots.Panel('test error (%)', lines)], size=(8, 5),
                      title='test error per epoch, one line per seed; dot: epoch of best validation error')
