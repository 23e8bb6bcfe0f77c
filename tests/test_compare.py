"""compare.py: published numbers, grouping over seeds, the best-validation protocol, the partial guard."""
import json
import math

import pytest

from chainer_cifar.errors import UserError
from chainer_cifar.results import presets, published, report, runs

import compare  # src/compare.py

HEADER = 'epoch,train_loss,train_error,valid_loss,valid_error,test_loss,test_error,lr,elapsed\n'
FULL = {'n_train': 50000, 'n_test': 10000, 'partial': False,
        'archive': {'md5': 'c58f30108f718f92721af3b95e74349a', 'official': True}}
MINI = {'n_train': 8336, 'n_test': 1017, 'partial': True,
        'archive': {'md5': 'c1366a7aca9f64f5a55aeab36eb1bc98', 'official': False}}


def write_run(folder, prefix, rows, dataset=FULL, preset='resnet20-paper', overrides=(), params=272474,
              status='finished', device='@numpy'):
    """rows: (valid_error, test_error) per epoch, as fractions; the files as train.py/compare.py write them."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [HEADER] + ['{},1,0.5,1,{},1,{},0.1,{}\n'.format(i + 1, v if v is not None else '', t, 10 * (i + 1))
                        for i, (v, t) in enumerate(rows)]
    (folder / (prefix + '_log.csv')).write_text(''.join(lines))
    (folder / (prefix + '_run.json')).write_text(json.dumps(
        {'args': {'model': 'resnet20', 'seed': 1}, 'parameters': params, 'device': device, 'dataset': dataset,
         'status': status}))
    if preset:
        (folder / (prefix + '_preset.json')).write_text(json.dumps(
            {'preset': preset, 'overrides': list(overrides)}))
    return str(folder / (prefix + '_log.csv'))


def test_published_numbers_are_shipped_with_sources():
    assert {p.source for p in published.PUBLISHED} <= set(published.SOURCES)
    he = {p.preset: p.error for p in published.PUBLISHED if p.source == 'he2016'}
    assert he == {'resnet20-paper': 8.75, 'resnet32-paper': 7.51, 'resnet44-paper': 7.17,
                  'resnet56-paper': 6.97, 'resnet110-paper': 6.61, 'resnet1202-paper': 7.93}
    assert published.published_for('resnet110-sd-paper')[0].error == 5.25
    assert published.published_for('article-residual-skip')[0].error == 7.42
    for p in published.PUBLISHED:
        assert p.preset in presets.PRESETS, p


def test_every_preset_uses_a_registered_model():
    from chainer_cifar.models import list_models
    models = set(list_models())
    for p in presets.PRESETS.values():
        assert p.args[p.args.index('-m') + 1] in models, p.name


def test_paper_preset_encodes_the_iteration_schedule_in_epochs():
    args = presets.get_preset('resnet20-paper').args
    # 32k/48k/64k iterations of batch 128 over 45k images = 91/137/182 epochs.
    assert args[args.index('--lr_decay_iter') + 1] == '91,137'
    assert args[args.index('--iter') + 1] == '182'
    assert math.isclose(32000 * 128 / 45000, 91, abs_tol=0.1)


def test_test_error_is_taken_at_best_validation_epoch_not_best_test(tmp_path):
    path = write_run(tmp_path, 'a', [(0.30, 0.31), (0.20, 0.25), (0.22, 0.18), (0.21, 0.19)])
    s = runs.summarize(runs.load_run(path))
    assert s.best_epoch == 2 and s.test_at_best == pytest.approx(25.0)
    assert s.final_test_error == pytest.approx(19.0)
    assert s.best_valid_error == pytest.approx(20.0)


def test_ties_in_validation_error_pick_the_earlier_epoch(tmp_path):
    path = write_run(tmp_path, 'a', [(0.2, 0.3), (0.2, 0.1)])
    assert runs.summarize(runs.load_run(path)).best_epoch == 1


def test_without_validation_set_the_last_epoch_counts(tmp_path):
    path = write_run(tmp_path, 'a', [(None, 0.3), (None, 0.2), (None, 0.25)])
    s = runs.summarize(runs.load_run(path))
    assert s.best_epoch == 3 and s.test_at_best == pytest.approx(25.0) and s.best_valid_error is None


def test_seeds_of_one_preset_group_with_mean_and_sample_std(tmp_path):
    logs = [write_run(tmp_path, 's{}'.format(i), [(0.1, t)]) for i, t in enumerate([0.08, 0.09, 0.10])]
    (group,) = report.group_runs([runs.load_run(p) for p in logs])
    mean, std = report.mean_std([s.test_at_best for s in group.summaries])
    assert mean == pytest.approx(9.0) and std == pytest.approx(1.0)  # n - 1 in the denominator
    text = report.table([group])
    assert '| resnet20-paper | 3 | 9.00 ± 1.00 | 8.00 |' in text
    assert '8.75 (he2016, n=1); 8.59 ± 0.12 (pytorch, n=5) | +0.25 |' in text
    assert '0.27M' in text


def test_different_presets_form_different_groups(tmp_path):
    a = write_run(tmp_path, 'a', [(0.1, 0.1)], preset='resnet20-paper')
    b = write_run(tmp_path, 'b', [(0.1, 0.1)], preset='resnet32-paper')
    c = write_run(tmp_path, 'c', [(0.1, 0.1)], preset='resnet20-paper', overrides=['--iter', '1'])
    groups = report.group_runs([runs.load_run(p) for p in (a, b, c)])
    assert [g.label for g in groups] == ['resnet20-paper', 'resnet32-paper',
                                        'resnet20-paper (modified: --iter 1)']
    assert [g.comparable for g in groups] == [True, True, False]


def test_partial_dataset_runs_are_never_set_beside_published_numbers(tmp_path):
    path = write_run(tmp_path, 'a', [(0.4, 0.45)], dataset=MINI)
    (group,) = report.group_runs([runs.load_run(path)])
    assert not group.comparable
    text = report.table([group])
    assert 'Not comparable with published numbers' in text
    assert 'PARTIAL 8,336 train / 1,017 test images, archive MD5 c1366a7aca9f64f5a55aeab36eb1bc98' in text
    assert '8.75' not in text and 'he2016' not in text


def test_runs_without_dataset_record_are_not_comparable(tmp_path):
    path = write_run(tmp_path, 'a', [(0.1, 0.1)], dataset=None)
    (group,) = report.group_runs([runs.load_run(path)])
    assert not group.comparable and 'unknown dataset' in group.dataset


def test_runs_on_different_datasets_are_not_averaged(tmp_path):
    a = write_run(tmp_path, 'a', [(0.1, 0.1)], dataset=FULL)
    b = write_run(tmp_path, 'b', [(0.1, 0.1)], dataset=MINI)
    with pytest.raises(UserError, match='different datasets'):
        report.group_runs([runs.load_run(p) for p in (a, b)])


def test_report_command_writes_table_and_plot(tmp_path):
    logs = [write_run(tmp_path / 'runs', 's{}'.format(i), [(0.3, 0.3), (0.2, 0.2 + i / 100)])
            for i in range(3)]
    compare.main(['report', str(tmp_path / 'runs'), '--out', str(tmp_path / 'r.md'),
                  '--plot', str(tmp_path / 'c.png')])
    assert '| resnet20-paper | 3 |' in (tmp_path / 'r.md').read_text()
    assert (tmp_path / 'c.png').stat().st_size > 5000
    assert len(logs) == 3


def test_bad_log_gives_one_clear_error(tmp_path, capsys):
    (tmp_path / 'x_log.csv').write_text('a,b\n1,2\n')
    rc = compare.run_main(compare.main, ['report', str(tmp_path / 'x_log.csv')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'lacks the column' in err


def test_run_passes_the_preset_recipe_to_train_and_records_changes(tmp_path):
    seen = []

    def fake_train(args):  # train.run: the parsed flags of train.py
        seen.append(args)
        write_run(__import__('pathlib').Path(args.out), args.prefix, [(0.5, 0.5)], preset=None)

    logs = compare.run_preset('article-cnn', [1, 2], str(tmp_path), ['-g', '0', '--iter', '1'],
                              run_training=fake_train)
    assert len(seen) == 2 and seen[0].model == 'cnn' and seen[0].optimizer == 'adam'
    assert [(a.seed, a.gpu, a.iter) for a in seen] == [(1, 0, 1), (2, 0, 1)]
    assert seen[1].out == str(tmp_path / 'article-cnn') and seen[1].prefix == 'article-cnn_s2'
    sidecar = json.loads((tmp_path / 'article-cnn' / 'article-cnn_s1_preset.json').read_text())
    assert sidecar['overrides'] == ['--iter', '1']  # -g is not part of the recipe
    # The command line to retype, as compare.py printed it.
    assert sidecar['argv'] == presets.recipe('article-cnn') + [
        '-p', 'article-cnn_s1', '--out', str(tmp_path / 'article-cnn'), '--seed', '1', '-g', '0', '--iter', '1']
    (group,) = report.group_runs([runs.load_run(p) for p in logs])
    assert group.label == 'article-cnn (modified: --iter 1)' and not group.comparable


def test_full_counts_from_an_unofficial_archive_are_not_comparable(tmp_path):
    other = dict(FULL, archive={'md5': '0123456789abcdef0123456789abcdef', 'official': False})
    path = write_run(tmp_path, 'a', [(0.1, 0.1)], dataset=other)
    (group,) = report.group_runs([runs.load_run(path)])
    assert not group.comparable and group.dataset.startswith('UNVERIFIED')
    assert 'he2016' not in report.table([group])


def test_unfinished_runs_are_flagged_and_not_comparable(tmp_path):
    a = write_run(tmp_path, 'a', [(0.1, 0.1)])
    b = write_run(tmp_path, 'b', [(0.1, 0.1)], status='interrupted')
    (group,) = report.group_runs([runs.load_run(p) for p in (a, b)])
    assert not group.comparable and 'not finished: b (interrupted)' in group.label


def test_table_reports_params_device_epochs_and_wall_time(tmp_path):
    logs = [write_run(tmp_path, 's{}'.format(i), [(0.3, 0.3), (0.2, 0.2)], dataset=MINI) for i in range(2)]
    text = report.table(report.group_runs([runs.load_run(p) for p in logs]))
    assert '| resnet20-paper | 2 | 20.00 ± 0.00 | 20.00 | 20.00 ± 0.00 | 0.27M | 2 | 20 s | CPU (@numpy) |' in text


def test_quiet_and_gpu_are_not_recipe_changes():
    assert compare._recipe_changes(['-g', '0', '--quiet', '--iter', '4', '--gpu=1', '--resume', 'a.snapshot']) == [
        '--iter', '4']


def test_a_stopped_seed_stops_the_series(tmp_path):
    seen = []

    def interrupted(args):
        seen.append(args)
        return 130

    with pytest.raises(UserError, match='seed 1 stopped'):
        compare.run_preset('article-cnn', [1, 2], str(tmp_path), ['--iter', '1'], run_training=interrupted)
    assert len(seen) == 1


def _fake_train(seen, status='finished'):
    def train(args):  # writes what train.py leaves: log and record (the preset sidecar is compare.py's)
        seen.append(args)
        write_run(__import__('pathlib').Path(args.out), args.prefix, [(0.5, 0.5)], preset=None, status=status)
    return train


def test_the_same_command_again_skips_the_seeds_it_finished(tmp_path, capsys):
    seen = []
    first = compare.run_preset('article-cnn', [1, 2], str(tmp_path), ['--iter', '1'], run_training=_fake_train(seen))
    log = tmp_path / 'article-cnn' / 'article-cnn_s1_log.csv'
    before = log.read_bytes()
    again = compare.run_preset('article-cnn', [1, 2], str(tmp_path), ['-g', '-1', '--iter', '1'],
                               run_training=_fake_train(seen))
    assert len(seen) == 2 and again == first and log.read_bytes() == before  # -g is no change to the recipe
    assert 'article-cnn seed 1: finished earlier ({}); skipped'.format(log) in capsys.readouterr().out


def test_another_recipe_trains_a_finished_seed_anew(tmp_path):
    seen = []
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '1'], run_training=_fake_train(seen))
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen))
    assert [(a.iter, a.resume) for a in seen] == [(1, None), (2, None)]


@pytest.mark.parametrize('status', ['interrupted', 'running'])  # running: a killed process
def test_the_same_command_again_resumes_a_stopped_seed_from_its_snapshot(tmp_path, status):
    seen = []
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen, status))
    snapshot = tmp_path / 'article-cnn' / 'article-cnn_s1.snapshot'
    snapshot.write_bytes(b'')
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen))
    assert [a.resume for a in seen] == [None, str(snapshot)]
    sidecar = json.loads((tmp_path / 'article-cnn' / 'article-cnn_s1_preset.json').read_text())
    assert sidecar['argv'][-2:] == ['--resume', str(snapshot)] and sidecar['overrides'] == ['--iter', '2']


def test_a_diverged_seed_is_trained_anew_not_resumed_into_the_same_divergence(tmp_path):
    seen = []
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen, 'diverged'))
    (tmp_path / 'article-cnn' / 'article-cnn_s1.snapshot').write_bytes(b'')
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen))
    assert [a.resume for a in seen] == [None, None]


@pytest.mark.parametrize('form', ['two words', 'one word'])
def test_a_resume_given_on_the_command_line_is_the_one_used(tmp_path, form):
    seen = []
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'], run_training=_fake_train(seen, 'running'))
    (tmp_path / 'article-cnn' / 'article-cnn_s1.snapshot').write_bytes(b'')
    other = tmp_path / 'elsewhere.snapshot'
    other.write_bytes(b'')
    resume = ['--resume', str(other)] if form == 'two words' else ['--resume={}'.format(other)]
    compare.run_preset('article-cnn', [1], str(tmp_path), ['--iter', '2'] + resume, run_training=_fake_train(seen))
    assert seen[1].resume == str(other)


# Every preset, through compare.py and the real train.py, for one epoch on 8 images of the real partial archive
# (``--subset 8``: 7 training images and 1 validation image, 8 test images): 1-5 s each on the 2-core dev
# machine. The three 1202-layer presets took 17-20 s each there (35-48 s with the cores shared), building and
# running 1,202 layers whatever the number of images, so they are marked slow (pytest -m slow runs them); their
# flags are still checked by test_every_preset_command_line_is_accepted_by_train below.
SHORT = ['-g', '-1', '--iter', '1', '--subset', '8', '--quiet']
SLOW_PRESETS = {'resnet1202-paper', 'resnet1202-constant-depth', 'resnet1202-sd-paper'}
# One step at lr 0.1 on 7 images sends a 1202-layer net's validation loss to NaN, which train.py (rightly)
# stops as diverged; these presets take a smaller rate here, recorded as a change like the others.
GENTLE = ['--lr', '0.001']


@pytest.mark.parametrize('name', list(presets.PRESETS))
def test_every_preset_command_line_is_accepted_by_train(name, tmp_path):
    seen = []
    compare.run_preset(name, [3], str(tmp_path), ['-g', '-1'], run_training=seen.append)
    args = seen[0]
    preset_args = presets.get_preset(name).args
    assert args.model == preset_args[preset_args.index('-m') + 1] and args.seed == 3
    assert args.iter == int(preset_args[preset_args.index('--iter') + 1])


@pytest.mark.parametrize('name', [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_PRESETS else name
                                  for name in presets.PRESETS])
def test_every_preset_runs_a_short_schedule_on_the_real_partial_archive(name, mini_dataset, tmp_path,
                                                                       monkeypatch):
    monkeypatch.chdir(str(mini_dataset.parent))  # the presets' dataset/... paths are relative to the checkout
    changes = SHORT + (GENTLE if name in SLOW_PRESETS else [])
    logs = compare.run_preset(name, [1], str(tmp_path), changes)
    prefix = tmp_path / name / (name + '_s1')
    record = json.loads(open(str(prefix) + '_run.json').read())
    preset_args = presets.get_preset(name).args
    assert record['status'] == 'finished' and record['model'] == preset_args[preset_args.index('-m') + 1]
    assert (record['n_train'], record['n_valid'], record['n_test']) == (7, 1, 8)
    for flag in ('--optimizer', '-d', '--augment'):
        if flag in preset_args:
            value = preset_args[len(preset_args) - 1 - preset_args[::-1].index(flag) + 1]  # the last one wins
            key = {'-d': 'dataset'}.get(flag, flag.lstrip('-'))
            recorded = record['args'][key]
            recorded = ','.join(recorded) or 'none' if isinstance(recorded, list) else recorded
            assert recorded == value, flag
    (group,) = report.group_runs([runs.load_run(p) for p in logs])
    assert group.preset == name and group.label == name + ' (modified: {})'.format(
        ' '.join(a for a in changes if a not in ('-g', '-1', '--quiet')))
    assert not group.comparable
    assert group.dataset == ('PARTIAL 8,336 train / 1,017 test images, archive MD5 '
                             'c1366a7aca9f64f5a55aeab36eb1bc98 (first 8 images used)')
    (summary,) = group.summaries
    assert summary.epochs == summary.best_epoch == 1 and 0 <= summary.test_at_best <= 100
    text = report.table([group])
    assert 'Not comparable' in text and '## Full CIFAR-10' not in text
    for p in published.published_for(name):
        assert '({}'.format(p.source) not in text


# The partial-set protocol

def test_partial_scale_keeps_each_sources_schedule_fractions():
    full_schedules = {'he2016': (182, [91, 137]), 'huang2016': (500, [250, 375]), 'article': (300, [100, 200]),
                      'keras': (200, [80, 120, 160])}
    for name, preset in presets.PRESETS.items():
        full, partial = presets.recipe(name, 'full'), presets.recipe(name, 'partial')
        epochs = int(partial[partial.index('--iter') + 1])
        decay = [int(e) for e in partial[partial.index('--lr_decay_iter') + 1].split(',')]
        if len(decay) == 1:  # the article's "every N epochs"
            decay = list(range(decay[0], epochs, decay[0]))
        full_epochs, full_decay = full_schedules[preset.source]
        assert int(full[full.index('--iter') + 1]) == full_epochs, name
        # The same fractions of the run, to the nearest epoch (137/182 of 40 epochs is 30.1).
        assert decay == [round(d * epochs / full_epochs) for d in full_decay], name
        assert epochs >= 30, name
        # Only the schedule changes.
        strip = lambda a: [v for i, v in enumerate(a) if v not in ('--iter', '--lr_decay_iter')  # noqa: E731
                           and (i == 0 or a[i - 1] not in ('--iter', '--lr_decay_iter'))]
        assert strip(full) == strip(partial), name


def test_unknown_scale_is_one_error():
    with pytest.raises(UserError, match='unknown scale'):
        presets.recipe('resnet20-paper', 'tiny')


def test_run_at_partial_scale_writes_to_the_partial_folder_and_records_the_scale(tmp_path):
    seen = []
    compare.run_preset('resnet20-paper', [1], str(tmp_path), ['-g', '-1'], scale='partial',
                       run_training=seen.append)
    args = seen[0]
    assert args.iter == 40 and args.lr_decay_iter == [20, 30]
    assert args.out == str(tmp_path / 'partial' / 'resnet20-paper')
    sidecar = json.loads((tmp_path / 'partial' / 'resnet20-paper' / 'resnet20-paper_s1_preset.json').read_text())
    assert (sidecar['scale'], sidecar['framework'], sidecar['overrides']) == ('partial', 'chainer', [])


def write_protocol_run(folder, prefix, rows, framework='chainer', overrides=(), dataset=MINI, device='@cupy:0'):
    path = write_run(folder, prefix, rows, dataset=dataset, overrides=overrides, device=device)
    sidecar = json.loads((folder / (prefix + '_preset.json')).read_text())
    sidecar.update(scale='partial', framework=framework)
    (folder / (prefix + '_preset.json')).write_text(json.dumps(sidecar))
    return path


def test_partial_protocol_runs_get_their_own_table_with_the_control_beside_them(tmp_path):
    logs = [write_protocol_run(tmp_path, 'c{}'.format(i), [(0.3, 0.3), (0.2, 0.2 + i / 100)]) for i in range(3)]
    logs += [write_protocol_run(tmp_path, 't{}'.format(i), [(0.3, 0.3), (0.2, 0.21 + i / 100)],
                                framework='pytorch', device='cuda:0') for i in range(3)]
    groups = report.group_runs([runs.load_run(p) for p in logs])
    assert [g.protocol for g in groups] == [True, True] and not any(g.comparable for g in groups)
    text = report.table(groups)
    assert '## Partial CIFAR-10, the partial-set protocol' in text and 'Not comparable with published' not in text
    assert '| resnet20-paper | Chainer | 3 | 21.00 ± 1.00 | 20.00 |' in text
    assert '| resnet20-paper | PyTorch control | 3 | 22.00 ± 1.00 | 21.00 |' in text
    assert '| 10.0 | 0.3 | GPU (@cupy:0) |' in text and 'GPU (cuda:0)' in text  # s / epoch, min / run
    assert 'he2016' not in text and '8.75' not in text


def test_partial_scale_with_a_subset_or_changes_is_not_the_protocol(tmp_path):
    a = write_protocol_run(tmp_path / 'a', 'a', [(0.3, 0.3)], overrides=['--iter', '1'])
    b = write_protocol_run(tmp_path / 'b', 'b', [(0.3, 0.3)])
    run_b = runs.load_run(b)
    run_b.meta['args']['subset'] = 8
    groups = report.group_runs([runs.load_run(a)]) + report.group_runs([run_b])
    assert [g.protocol for g in groups] == [False, False]
    assert 'Not comparable with published numbers' in report.table(groups)


def test_list_has_a_header_and_keeps_its_columns_whatever_the_description(capsys):
    compare.main(['list'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['preset', 'published', 'test', 'error', '(source)', 'recipe']
    assert [line.split()[0] for line in lines[1:]] == list(presets.PRESETS)
    recipe_column = lines[0].index('recipe')
    for line, (name, description, _) in zip(lines[1:], presets.describe()):
        assert line[recipe_column:] == description, name


def test_run_help_says_that_other_flags_go_to_train(capsys):
    with pytest.raises(SystemExit):
        compare.main(['run', '--help'])
    assert 'passed on to train.py' in ' '.join(capsys.readouterr().out.split())
