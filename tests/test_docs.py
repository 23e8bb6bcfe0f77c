"""The docs state the facts that live in the code: published numbers, the registry's models."""
import os
import re

from chainer_cifar.models import list_models
from chainer_cifar.results import presets, published

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs')


def model_rows(path):
    """``{model: last cell}`` of every table row of ``path`` that starts with a registered `-m` name."""
    models = set(list_models())
    rows = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            m = re.match(r'\| `([a-z0-9_]+)` \|.*\| ([^|]*) \|$', line.strip())
            if m and m.group(1) in models:
                rows[m.group(1)] = m.group(2)
    return rows


def reported_for(model):
    """Every number published.py holds for ``model``: errors, accuracies (100 - error), numbers in notes."""
    numbers = set()
    for p in published.PUBLISHED:
        args = presets.get_preset(p.preset).args
        if args[args.index('-m') + 1] != model:
            continue
        numbers |= {round(p.error, 2), round(100 - p.error, 2)}
        numbers |= {round(float(x), 2) for x in re.findall(r'\d+\.\d+', p.note)}
        if p.std is not None:
            numbers.add(round(p.std, 2))
    if model in published.REPORTED_ONLY:
        numbers.add(published.REPORTED_ONLY[model][1])
    return numbers


def test_every_reported_number_in_models_md_is_the_one_published_py_holds():
    rows = model_rows(os.path.join(DOCS, 'models.md'))
    assert {'cnn', 'vgg', 'residual', 'resnet20', 'resnet1202', 'keras_deep_cnn', 'ablation_gap'} <= set(rows)
    checked = 0
    for model, cell in rows.items():
        for number in re.findall(r'(\d+(?:\.\d+)?) %', cell):
            assert round(float(number), 2) in reported_for(model), (model, number, cell)
            checked += 1
    assert checked >= 20


def test_results_md_shows_the_published_table_generated_from_published_py():
    from chainer_cifar.results.report import published_table
    assert published_table() in open(os.path.join(DOCS, 'results.md'), encoding='utf-8').read()


def _slug(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def test_every_relative_link_in_the_readme_and_docs_names_a_file_and_heading_that_exist():
    root = os.path.dirname(DOCS)
    pages = [os.path.join(root, 'README.md')] + sorted(
        os.path.join(d, n) for d, _, names in os.walk(DOCS) for n in names if n.endswith('.md'))
    broken = []
    for page in pages:
        with open(page, encoding='utf-8') as f:
            text = f.read()
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target):
                continue  # a URL
            path, _, anchor = target.partition('#')
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full):
                broken.append('{} -> {}'.format(os.path.relpath(page, root), target))
            elif anchor and full.endswith('.md'):
                with open(full, encoding='utf-8') as f:
                    slugs = {_slug(line.lstrip('#')) for line in f if line.startswith('#')}
                if anchor not in slugs:
                    broken.append('{} -> {} (no such heading)'.format(os.path.relpath(page, root), target))
    assert broken == []


def _protocol_groups():
    import compare  # src/compare.py
    from chainer_cifar.results import report, runs
    logs = compare.find_logs([os.path.join(DOCS, 'results', 'partial')])
    return report.group_runs([runs.load_run(p) for p in logs])


def test_results_md_shows_the_measured_table_its_committed_logs_give():
    from chainer_cifar.results import report
    rows = [line for line in report.protocol_table(_protocol_groups()) if line.startswith('| ')]
    text = open(os.path.join(DOCS, 'results.md'), encoding='utf-8').read()
    assert len(rows) > 2 and [row for row in rows if row not in text] == []


def test_every_number_in_the_readme_results_table_comes_from_the_committed_logs():
    from chainer_cifar.results import report
    groups = _protocol_groups()
    known = set(re.findall(r'\d+\.\d\d', '\n'.join(report.protocol_table(groups))))
    known |= {'{:.2f}'.format(s.test_at_best) for g in groups for s in g.summaries}  # one seed's number
    readme = open(os.path.join(os.path.dirname(DOCS), 'README.md'), encoding='utf-8').read()
    shown = readme[readme.index('## What has been shown'):readme.index('## Quick start')]
    rows = [line for line in shown.splitlines() if line.startswith('| ')][2:]  # below the header and its rule
    numbers = [n for row in rows for n in re.findall(r'\d+\.\d\d', row.split(' | ')[1] + row.split(' | ')[2])]
    assert rows and numbers and [n for n in numbers if n not in known] == []


def test_the_readme_epoch_costs_are_the_benchmark_rates_of_the_model_each_row_names():
    import json
    readme = open(os.path.join(os.path.dirname(DOCS), 'README.md'), encoding='utf-8').read()
    table = readme[readme.index('What an epoch costs'):readme.index('## Compare with the published numbers')]
    runs = {}
    for path, backend in (('results/gpu/bench_gpu_h200_2026-11-26.json', 'stock'),
                          ('results/bench_cpu_models_2026-11-26.json', 'fast')):
        with open(os.path.join(DOCS, path)) as f:
            runs[path] = {r['model']: r[backend]['train']['median']
                          for r in json.load(f)['results'] if r.get('dtype', 'float32') == 'float32'}
    rows = re.findall(r'^\| `([a-z0-9_]+)((?: --[a-z_]+ \S+)*)` \| ([\d,]+) img/s, ([\d.]+) (s|min) \| '
                      r'([\d,]+) img/s, ([\d.]+) (s|min) \|$', table, re.M)
    assert len(rows) == len([line for line in table.splitlines() if line.startswith('| `')]) > 0
    for model, flags, *cells in rows:
        options = re.findall(r'--([a-z_]+) (\S+)', flags)  # `residual --res_depth 12`: residual:res_depth=12
        spec = model + (':' + ','.join('{}={}'.format(k, v) for k, v in options) if options else '')
        for run, (rate, time, unit) in zip(runs.values(), (cells[:3], cells[3:])):
            assert spec in run, '{}: not in the benchmark run the table cites'.format(spec)
            assert int(rate.replace(',', '')) == round(run[spec]), spec
            unit = 60 if unit == 'min' else 1
            digits = len(time.partition('.')[2])  # an epoch of 45,000 images, rounded as shown
            assert abs(float(time) - 45000 / run[spec] / unit) <= 0.5 * 10 ** -digits + 1e-9, spec
