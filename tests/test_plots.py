"""The one plotter: curves against the epoch as a PNG, used by training, the report and analyze.py curves."""
import numpy
import pytest
from PIL import Image

from chainer_cifar import plots
from chainer_cifar.results import analysis, report, runs
from chainer_cifar.training import extensions


def test_panels_are_drawn_side_by_side_and_a_none_is_a_gap(tmp_path):
    path = tmp_path / 'new' / 'curves.png'  # the folder is made
    loss = plots.Panel('loss', [plots.Line([1, 2, 3], [2.0, None, 1.0], 'train', '.-'),
                                plots.Line([1, 2, 3], [2.5, 2.0, 1.5], 'test', ':', 'C3')])
    error = plots.Panel('error (%)', [plots.Line([2], [40.0], None, 'o')])
    assert plots.plot_curves(str(path), [loss, error], size=(3, 2)) == str(path)
    width, height = Image.open(path).size
    assert (width, height) == (600, 200)  # two panels of 3 x 2 inches at 100 dpi
    assert [p.name for p in tmp_path.joinpath('new').iterdir()] == ['curves.png']  # no temporary file left


@pytest.fixture
def calls(monkeypatch):
    """The panels each caller hands the plotter (nothing is drawn)."""
    seen = []
    monkeypatch.setattr(plots, 'plot_curves', lambda path, panels, **kw: seen.append((path, panels)) or path)
    return seen


ROWS = [{'epoch': e, 'train_loss': 2.0 / e, 'train_error': 0.5 / e, 'valid_loss': None, 'valid_error': None,
         'test_loss': 2.2 / e, 'test_error': 0.6 / e, 'lr': 0.1, 'elapsed': e} for e in (1, 2)]


def test_training_plots_loss_and_error_of_the_splits_it_has(calls):
    extensions.plot_curves(ROWS, 'loss.png', 'error.png')
    (loss_path, (loss,)), (error_path, (error,)) = calls
    assert (loss_path, loss.ylabel, [line.label for line in loss.lines]) == ('loss.png', 'loss', ['train', 'test'])
    assert error.ylabel == 'error (%)' and error.lines[1].values == pytest.approx([60.0, 30.0])


def _run(tmp_path, prefix):
    header = 'epoch,train_loss,train_error,valid_loss,valid_error,test_loss,test_error,lr,elapsed\n'
    rows = ''.join('{},2,0.8,2,0.5,2,{},0.1,{}\n'.format(e, 0.6 / e, e) for e in (1, 2))
    log = tmp_path / (prefix + '_log.csv')
    log.write_text(header + rows)
    return str(log)


def test_analyze_curves_give_a_run_s_split_one_colour_in_both_panels(tmp_path, calls):
    analysis.write_curves([_run(tmp_path, 'a'), _run(tmp_path, 'b')], 'curves.png')
    (_, (loss, error)), = calls
    assert [line.label for line in loss.lines] == ['a train', 'a valid', 'a test', 'b train', 'b valid', 'b test']
    assert [line.color for line in loss.lines] == [line.color for line in error.lines] == [
        'C0', 'C1', 'C2', 'C3', 'C4', 'C5']


def test_the_report_draws_every_seed_and_its_best_epoch(tmp_path, calls):
    summaries = [runs.summarize(runs.load_run(_run(tmp_path, name))) for name in ('x_s1', 'x_s2')]
    group = report.Group(*([None] * len(report.Group._fields)))._replace(label='x', summaries=summaries)
    report.plot([group], 'report.png')
    (_, (panel,)), = calls
    curves = [line for line in panel.lines if line.style == '-']
    assert [line.label for line in curves] == ['x', None]  # one legend entry per group
    assert numpy.allclose(curves[0].values, [60.0, 30.0])
    assert {line.color for line in panel.lines} == {'C0'}
