"""src/net.py front end and the model summary (layer/parameter table, activation memory)."""
import os
import subprocess
import sys

import pytest

from chainer_cifar.errors import run_main
from chainer_cifar.models import list_models, summary

import net  # src/net.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_original_class_names_import_from_net():
    from net import CNN, CNNBN, VGG, ResidualNet  # noqa: F401
    assert net.create_model and net.list_models() == list_models()
    assert len(ResidualNet(2).blocks) == 6


def test_net_prints_every_model_with_layers_parameters_and_source(capsys):
    assert net.main([]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ['model', 'layers', 'parameters', 'source']
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert set(rows) == set(list_models())
    assert rows['resnet20'][1:3] == ['20', '269,722']
    assert rows['resnet1202'][1:3] == ['1202', '19,421,274']


def test_net_applies_options_to_the_named_models(capsys):
    assert net.main(['-m', 'residual', '--res_depth', '12']) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[1] == '74'


def test_net_refuses_an_option_the_named_model_does_not_take(capsys):
    assert run_main(net.main, ['-m', 'cnn', '--res_depth', '3']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1


def test_net_runs_as_a_script_from_the_repository_root():
    out = subprocess.run([sys.executable, 'src/net.py', '-m', 'resnet20', 'cnn'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'resnet20' in out.stdout and 'cnn' in out.stdout


def test_layer_count_skips_projection_shortcuts_and_counts_shake_depth_along_one_path():
    from chainer_cifar.models import create_model
    assert summary.count_layers(create_model('shake_residual')) == 26
    assert summary.count_layers(create_model('ablation_resblock')) == 8
    assert summary.count_layers(create_model('vgg')) == 11


def test_activation_memory_scales_with_the_batch_and_excludes_parameters():
    one, scaled_from_one = summary.activation_memory('resnet20', batch=1, scale_to=4)
    two, scaled_from_two = summary.activation_memory('resnet20', batch=2, scale_to=4)
    assert one > 0 and two == pytest.approx(2 * one, rel=0.02)
    assert scaled_from_two == pytest.approx(scaled_from_one, rel=0.02)
    # resnet20: at least one 16x32x32 float32 map per conv in stage 1 per image
    assert one > 7 * 16 * 32 * 32 * 4
    # parameters (1 MB for resnet20) are not in it: the plain net without
    # shortcuts retains about the same
    plain, _ = summary.activation_memory('plain20', batch=1)
    assert plain == pytest.approx(one, rel=0.1)


def test_activation_memory_of_a_tiny_batch_predicts_a_large_one():
    # The fast NumPy convolution keeps its columns only for a batch that fits one
    # chunk; the measurement must not see that, or batch 2 would overstate batch 128.
    _, from_two = summary.activation_memory('resnet20', batch=2, scale_to=64)
    at_64, _ = summary.activation_memory('resnet20', batch=64, scale_to=64)
    assert from_two == pytest.approx(at_64, rel=0.03)


def test_memory_report_names_the_machine_and_the_batches(capsys):
    assert net.main(['--memory', 'resnet20', '--batch', '1', '--scale_to', '128']) == 0
    out = capsys.readouterr().out
    assert 'batch 1' in out and 'batch 128' in out and 'resnet20' in out and 'Chainer' in out
