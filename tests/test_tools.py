"""Smoke tests of the measurement tools in tools/: they run, on tiny sizes, and print their tables.

The timings themselves mean nothing here; what is pinned down is that the
scripts the docs cite still run against the current code and print one row
per layer (or per ``--accumulate`` value) with positive numbers.
"""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers import native_available

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools')


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(TOOLS, name + '.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(text):
    """The data rows of the markdown tables in ``text``: ``[[cell, ...], ...]``."""
    rows = []
    for line in text.splitlines():
        if line.startswith('|') and not line.startswith('|---') and not line.startswith('| layer') \
                and 'speed-up |' not in line:
            rows.append([c.strip() for c in line.strip('|').split('|')])
    return rows


def test_native_layers_prints_every_layer_with_positive_times(capsys):
    if not native_available():
        pytest.skip('the compiled kernels cannot be built here')
    script = _load('native_layers')
    script.main(['--batch', '4', '--repeats', '1'])
    rows = _rows(capsys.readouterr().out)
    names = [r[0] for r in rows]
    expected = ([name for name, *_ in script.LAYERS] + [name for name, *_ in script.PADS]
                + [name + ' gW' for name, *_ in script.GW_LAYERS])
    for name in expected:
        assert name in names, name
    # both halves of both stride-2 layers, kernel against GEMM
    assert sum(n.startswith('conv3x3/2') and (n.endswith('gx') or n.endswith('gW')) for n in names) == 4
    picked = {r[0]: r[3] for r in rows if r[0].endswith(' gW') and not r[0].startswith('conv')}
    assert picked['3x3 16->16 at 32x32 gW'] == 'plane' and picked['3x3 64->64 at 8x8 gW'] == 'channels-last'
    for row in rows:
        for cell in row[1:]:
            for number in re.findall(r'[0-9.]+', cell):
                assert float(number) > 0, row


def test_accumulate_memory_prints_a_peak_per_part(capsys, monkeypatch):
    import chainer
    # main() sets the global switch; keep it from leaking into other tests.
    monkeypatch.setattr(chainer.global_config, 'use_fast_kernels', chainer.global_config.use_fast_kernels)
    script = _load('accumulate_memory')
    script.main(['resnet20', '--parts', '1,2', '--batch', '4'])
    found = re.findall(r'--accumulate (\d+) \(fast kernels\): peak (\d+) MiB, step ([0-9.]+) s',
                       capsys.readouterr().out)
    assert [int(p) for p, _, _ in found] == [1, 2]
    assert all(int(peak) > 0 and float(seconds) > 0 for _, peak, seconds in found)


def test_gpu_check_on_the_cpu_passes_and_reports_each_mode(capsys):
    script = _load('gpu_check')
    assert script.main(['-g', '-1', '--models', 'cnn,resnet20', '--batch', '4']) == 0
    rows = {(r[0], r[1]): r for r in _rows(capsys.readouterr().out)}
    assert rows[('resnet20', 'train')][-1] == 'ok'  # deterministic: BatchNorm with batch statistics
    assert rows[('resnet20', 'test')][-1] == 'ok'
    assert rows[('cnn', 'test')][-1] == 'ok'
    assert rows[('cnn', 'train')][-1].startswith('skipped: random layers')  # dropout


def test_gpu_check_fails_when_the_device_gradient_is_off(capsys, monkeypatch):
    script = _load('gpu_check')
    real = script.pass_once

    def off_by_a_little(model, x, t, train, fast=True):
        loss, grads = real(model, x, t, train, fast)
        if not fast:  # the device side
            name = sorted(grads)[0]
            grads[name] = grads[name] * (1 + 1e-4)
        return loss, grads
    monkeypatch.setattr(script, 'pass_once', off_by_a_little)
    assert script.main(['-g', '-1', '--models', 'resnet20', '--batch', '4']) == 1
    out = capsys.readouterr().out
    assert 'FAIL' in out and '2 check(s) above --rtol' in out


def test_gpu_check_without_a_usable_gpu_is_one_error_line():
    from helpers import gpu_is_usable
    if gpu_is_usable(0):
        pytest.skip('GPU 0 is usable here')
    script = _load('gpu_check')
    with pytest.raises(SystemExit) as e:
        script.main(['-g', '0', '--models', 'cnn'])
    message = str(e.value)
    assert message.startswith('error: -g 0 asks for a GPU, but ') and 'use -g -1' in message and '\n' not in message


def test_gpu_check_with_an_unknown_model_is_one_error_line(capsys):
    script = _load('gpu_check')
    with pytest.raises(SystemExit) as e:
        script.main(['-g', '-1', '--models', 'no_such_model'])
    assert str(e.value).startswith("error: unknown model 'no_such_model'") and '\n' not in str(e.value)
    assert capsys.readouterr().out == ''  # no table header before the error


def test_cupy_audit_finds_dotted_cupy_names_with_where_they_are_used(tmp_path):
    script = _load('cupy_audit')
    pkg = tmp_path / 'pkg'
    pkg.mkdir()
    (pkg / 'a.py').write_text('import cupy\nx = cuda.cupy.cuda.cudnn.foo(cupyx.scipy.special)\n')
    (pkg / 'b.txt').write_text('cupy.not_python\n')
    found = script.uses([str(pkg)])
    assert dict(found) == {'cupy.cuda.cudnn.foo': ['pkg/a.py:2'], 'cupyx.scipy.special': ['pkg/a.py:2']}


def test_cupy_audit_resolves_attributes_and_submodules_and_names_the_first_missing_part():
    script = _load('cupy_audit')
    assert script.resolve('numpy.linalg.norm') is None
    assert script.resolve('os.path.join') is None
    assert script.resolve('numpy.linalg.no_such_name').startswith('numpy.linalg.no_such_name: ModuleNotFoundError')


def test_cupy_audit_without_cupy_is_one_error_line():
    try:
        import cupy  # noqa: F401
        pytest.skip('CuPy is importable here')
    except Exception:
        pass
    with pytest.raises(SystemExit) as e:
        _load('cupy_audit').main([])
    message = str(e.value)
    assert message.startswith('error: CuPy cannot be imported here (') and '\n' not in message


def test_gpu_check_reports_a_model_that_breaks_and_checks_the_others(capsys, monkeypatch):
    script = _load('gpu_check')
    real = script.check_model

    def broken_cnn(spec, *args):
        if spec == 'cnn':
            raise TypeError('Expect: lhs.dtype == rhs.dtype\nActual: float64 != float32')
        return real(spec, *args)
    monkeypatch.setattr(script, 'check_model', broken_cnn)
    assert script.main(['-g', '-1', '--models', 'cnn,resnet20', '--batch', '4']) == 1
    rows = {(r[0], r[1]): r for r in _rows(capsys.readouterr().out)}
    assert rows[('cnn', '-')][-1] == 'FAIL: TypeError: Expect: lhs.dtype == rhs.dtype Actual: float64 != float32'
    assert rows[('resnet20', 'train')][-1] == 'ok'


def test_evidence_resumes_a_stopped_control_from_its_checkpoint_and_leaves_chainer_runs_to_compare(tmp_path):
    evidence = _load('evidence')
    chainer_run = evidence.Run('resnet56-paper', 1, 'chainer', str(tmp_path), -1)
    control = evidence.Run('resnet56-paper', 1, 'pytorch', str(tmp_path), -1)
    assert '--resume' not in control.argv()  # nothing there yet
    os.makedirs(chainer_run.folder)
    for run in (chainer_run, control):
        with open(run.record, 'w') as f:
            f.write('{"status": "interrupted"}')
    open(chainer_run.snapshot, 'w').close()
    open(control.checkpoint, 'w').close()
    assert control.argv()[-1] == '--resume' and control.argv()[:-1] == control.command
    # `compare.py run` finds the stopped run itself (test_compare pins that): the command stays the user's.
    assert chainer_run.argv() == chainer_run.command
    assert chainer_run.command[1:4] == ['src/compare.py', 'run', 'resnet56-paper']
    assert chainer_run.status() == 'interrupted'


def test_evidence_runs_jobs_at_a_time_skips_finished_runs_and_stops_the_rest_at_the_deadline(tmp_path):
    evidence = _load('evidence')
    # Stand-ins for the training commands: each records "running", then "finished" after `seconds`,
    # or "interrupted" when the deadline's SIGINT arrives first (as train.py and the control do).
    script = ('import json, sys, time\n'
              'path, seconds = sys.argv[1], float(sys.argv[2])\n'
              'json.dump({"status": "running"}, open(path, "w"))\n'
              'try:\n'
              '    time.sleep(seconds)\n'
              '    json.dump({"status": "finished"}, open(path, "w"))\n'
              'except KeyboardInterrupt:\n'
              '    json.dump({"status": "interrupted"}, open(path, "w"))\n')
    runs = evidence.plan(str(tmp_path), -1, evidence.parse_only('resnet20-paper:chainer'))
    assert [r.name for r in runs] == ['resnet20-paper_s1', 'resnet20-paper_s2', 'resnet20-paper_s3']
    os.makedirs(runs[0].folder)
    with open(runs[0].record, 'w') as f:
        f.write('{"status": "finished"}')
    for r, seconds in zip(runs, (0, 0.2, 60)):
        r.command = [sys.executable, '-c', script, r.record, str(seconds)]
    said = []
    evidence.execute(runs, jobs=1, deadline=3, log_dir=str(tmp_path / 'logs'), say=said.append)
    assert said[0] == 'skip resnet20-paper_s1 (finished)'
    assert [r.status() for r in runs] == ['finished', 'finished', 'interrupted']
    assert runs[0].process is None and runs[2].process.returncode is not None
    assert runs[2].started >= runs[1].ended  # one job at a time
    assert any('deadline: stopping 1 run(s)' in line for line in said)


def test_evidence_stopped_by_sigterm_stops_its_runs_at_their_snapshot_and_says_so_in_one_line(tmp_path):
    # The runs live in sessions of their own, where a signal to the tool does not reach them: the tool must
    # pass it on, or they go on training, orphaned. A subprocess drives execute() with a stand-in run.
    driver = (
        'import importlib.util, os, sys\n'
        'spec = importlib.util.spec_from_file_location("evidence", sys.argv[1])\n'
        'evidence = importlib.util.module_from_spec(spec); spec.loader.exec_module(evidence)\n'
        'runs = evidence.plan(sys.argv[2], -1, evidence.parse_only("resnet20-paper:chainer:s1"))\n'
        'runs[0].command = [sys.executable, "-c", sys.argv[3], runs[0].record]\n'
        'os.makedirs(runs[0].folder); print(runs[0].record, flush=True)\n'
        'sys.exit(evidence.run_main(lambda argv: evidence.execute(runs, 1, None, sys.argv[2], lambda s: None) and 0))\n')
    stand_in = ('import json, os, sys, time\n'
                'json.dump({"status": "running", "pid": os.getpid()}, open(sys.argv[1], "w"))\n'
                'try:\n'
                '    time.sleep(60)\n'
                'except KeyboardInterrupt:\n'
                '    json.dump({"status": "interrupted", "pid": os.getpid()}, open(sys.argv[1], "w"))\n')
    tool = subprocess.Popen([sys.executable, '-c', driver, os.path.join(TOOLS, 'evidence.py'), str(tmp_path),
                             stand_in], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    record = tool.stdout.readline().strip()
    deadline = time.time() + 30
    while not os.path.isfile(record) and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)  # the stand-in has written its record; let it reach its sleep
    tool.send_signal(signal.SIGTERM)
    _, err = tool.communicate(timeout=60)
    with open(record) as f:
        stopped = json.load(f)
    assert tool.returncode == 130
    assert err.strip() == ('error: interrupted: resnet20-paper_s1 stopped at its snapshot; run the same command '
                           'again to resume')
    assert stopped['status'] == 'interrupted'
    with pytest.raises(ProcessLookupError):
        os.kill(stopped['pid'], 0)


def test_evidence_names_why_a_run_failed_not_the_status_an_earlier_process_left(tmp_path):
    evidence = _load('evidence')
    run = _stopped_run(evidence, tmp_path)  # its record says 'interrupted'
    message = 'error: image file dataset/image.pkl not found; run `python src/download.py` and then ...'
    run.command = [sys.executable, '-c', 'import sys; print("== the command"); sys.exit({!r})'.format(message)]
    said = []
    evidence.execute([run], jobs=1, deadline=None, log_dir=str(tmp_path / 'logs'), say=said.append)
    assert said[-1].endswith(' s, interrupted): ' + message) and '(exit 1, ' in said[-1]


def _stopped_run(evidence, runs_dir, preset='resnet56-paper', seed=1, epochs=5, snapshot=b'state', sidecar=True):
    run = evidence.Run(preset, seed, 'chainer', str(runs_dir), -1)
    os.makedirs(run.folder, exist_ok=True)
    with open(run.record, 'w') as f:
        json.dump({'status': 'interrupted', 'epochs': epochs}, f)
    with open(run.snapshot, 'wb') as f:
        f.write(snapshot)
    with open(os.path.join(run.folder, run.name + '_log.csv'), 'w') as f:
        f.write('epoch\n' + ''.join('{}\n'.format(e) for e in range(1, epochs + 1)))
    if sidecar:
        with open(os.path.join(run.folder, run.name + '_preset.json'), 'w') as f:
            json.dump(_sidecar(preset, seed), f)
    return run


def _sidecar(preset, seed):
    """What `compare.py run PRESET --scale partial --seeds SEED` records of its recipe."""
    return {'preset': preset, 'seed': seed, 'scale': 'partial', 'framework': 'chainer', 'overrides': []}


@pytest.mark.parametrize('epochs', [0, 5])  # 0: stopped within its first epoch
def test_evidence_packs_a_stopped_run_so_another_machine_resumes_it_and_skips_finished_ones(tmp_path, epochs):
    evidence = _load('evidence')
    gpu, here, out = tmp_path / 'gpu', tmp_path / 'here', tmp_path / 'out'
    out.mkdir()
    stopped = _stopped_run(evidence, gpu, seed=1, epochs=epochs, snapshot=b'\x00state')
    finished = _stopped_run(evidence, gpu, seed=2)
    with open(finished.record, 'w') as f:
        json.dump({'status': 'finished', 'epochs': 40}, f)
    said = []
    evidence.pack(evidence.plan(str(gpu), 0), str(gpu), str(out), say=said.append)
    assert sorted(os.listdir(str(out))) == ['resume_resnet56-paper_s1.tar']
    assert os.path.getsize(str(out / 'resume_resnet56-paper_s1.tar')) == evidence.tar_size(stopped.files())
    evidence.unpack(str(out), str(here), say=said.append)
    moved = evidence.Run('resnet56-paper', 1, 'chainer', str(here), -1)
    assert moved.status() == 'interrupted' and moved.epochs() == epochs
    import compare  # `compare.py run` resumes what earlier_run calls stopped
    assert compare.earlier_run(os.path.join(moved.folder, moved.name), _sidecar('resnet56-paper', 1)) == 'stopped'
    for a, b in zip(stopped.files(), moved.files()):
        assert open(a, 'rb').read() == open(b, 'rb').read()
    assert [os.path.basename(f) for f in moved.files()] == [os.path.basename(f) for f in stopped.files()]
    assert not os.path.exists(os.path.join(str(here), 'partial', 'resnet56-paper', 'resnet56-paper_s2_run.json'))


def test_evidence_unpack_leaves_a_run_that_got_as_far_here_alone(tmp_path):
    evidence = _load('evidence')
    out = tmp_path / 'out'
    out.mkdir()
    old = _stopped_run(evidence, tmp_path / 'then', epochs=5, snapshot=b'old')
    evidence.pack([old], str(tmp_path / 'then'), str(out), say=lambda s: None)
    here = _stopped_run(evidence, tmp_path / 'here', epochs=7, snapshot=b'new')
    said = []
    evidence.unpack(str(out), str(tmp_path / 'here'), say=said.append)
    assert open(here.snapshot, 'rb').read() == b'new' and here.epochs() == 7
    assert said[0].startswith('not unpacked:') and 'at epoch 7, the tar\'s at 5' in said[0]


def test_evidence_leaves_out_a_run_too_large_to_come_back_and_leaves_no_partial_tar(tmp_path, monkeypatch):
    evidence = _load('evidence')
    run = _stopped_run(evidence, tmp_path / 'gpu', snapshot=b'x' * 2048)
    monkeypatch.setattr(evidence, 'PACK_TOTAL_MIB', 0)
    said = []
    evidence.pack([run], str(tmp_path / 'gpu'), str(tmp_path), say=said.append)
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith('resume_')] == []
    assert said == ['not packed: resnet56-paper_s1 (0.0 MiB; this call returns 4 such files of at most 16 '
                    'MiB, 0 MiB in all)']
    evidence.pack([run], str(tmp_path / 'gpu'), str(tmp_path), files=0, say=said.append)  # no room left
    monkeypatch.setattr(evidence, 'PACK_TOTAL_MIB', 60)
    evidence.pack([run], str(tmp_path / 'gpu'), str(tmp_path), files=0, say=said.append)
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith('resume_')] == [] and len(said) == 3


@pytest.mark.parametrize('member', ['../../evil.py', 'partial/resnet56-paper/resnet56-paper_s1_run.json@link'])
def test_evidence_refuses_a_tar_holding_anything_but_the_runs_own_files_and_writes_nothing(tmp_path, member):
    import tarfile
    evidence = _load('evidence')
    tar_path = tmp_path / 'resume_resnet56-paper_s1.tar'
    record = tmp_path / 'record.json'
    record.write_text('{"status": "interrupted", "epochs": 3}')
    with tarfile.open(str(tar_path), 'w') as tar:
        tar.add(str(record), arcname='partial/resnet56-paper/resnet56-paper_s1_run.json')
        if member.endswith('@link'):
            info = tarfile.TarInfo('partial/resnet56-paper/resnet56-paper_s1.snapshot')
            info.type, info.linkname = tarfile.SYMTYPE, '/etc/passwd'
            tar.addfile(info)
        else:
            tar.add(str(record), arcname=member)
    with pytest.raises(evidence.UserError, match='not unpacked'):
        evidence.unpack(str(tmp_path), str(tmp_path / 'runs'))
    assert not (tmp_path / 'runs').exists() and not (tmp_path.parent / 'evil.py').exists()


def test_evidence_names_a_tar_that_is_no_run_of_the_table_or_no_tar(tmp_path):
    evidence = _load('evidence')
    (tmp_path / 'resume_resnet99_s1.tar').write_bytes(b'')
    with pytest.raises(evidence.UserError, match='not a run of the evidence table'):
        evidence.unpack(str(tmp_path), str(tmp_path / 'runs'))
    os.remove(str(tmp_path / 'resume_resnet99_s1.tar'))
    (tmp_path / 'resume_resnet20-paper_s1.tar').write_bytes(b'not a tar at all')
    with pytest.raises(evidence.UserError, match='not a readable tar'):
        evidence.unpack(str(tmp_path), str(tmp_path / 'runs'))


def test_evidence_knows_a_tars_size_before_writing_it_whatever_the_snapshots_size(tmp_path):
    evidence = _load('evidence')
    for n in range(0, 12288, 512 + 17):  # sizes that cross tarfile's 10 KiB records at every offset
        out = tmp_path / 'out{}'.format(n)
        out.mkdir()
        run = _stopped_run(evidence, tmp_path / 'gpu', snapshot=b'x' * n)
        evidence.pack([run], str(tmp_path / 'gpu'), str(out), say=lambda s: None)
        assert os.path.getsize(str(out / 'resume_resnet56-paper_s1.tar')) == evidence.tar_size(run.files()), n


def test_evidence_only_narrows_to_a_framework_and_a_seed():
    evidence = _load('evidence')

    def names(text):
        return [r.name for r in evidence.plan('results', -1, evidence.parse_only(text))]
    assert names('article-vgg:s2') == ['article-vgg_s2']
    assert names('resnet56-paper:pytorch:s1,article-cnn') == ['resnet56-paper_torch_s1', 'article-cnn_s1',
                                                              'article-cnn_s2']
    assert names('resnet20-paper:s3:chainer') == ['resnet20-paper_s3']
    for bad in ('article-vgg:s3', 'article-vgg:pytorch', 'article-vgg:2', 'article-vgg:chainer:chainer', 'vgg'):
        with pytest.raises(evidence.UserError, match='not a run of the table'):
            evidence.parse_only(bad)


@pytest.mark.parametrize('argv, message', [(['--jobs', '0'], '--jobs must be at least 1'),
                                           (['--pack_files', '-1'], '--pack_files must be 0 or more')])
def test_evidence_refuses_a_count_out_of_range_in_one_line(tmp_path, argv, message):
    evidence = _load('evidence')
    with pytest.raises(evidence.UserError, match=message):
        evidence.main(argv + ['--runs_dir', str(tmp_path)])
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('extra', [[], ['--list']])
def test_evidence_checks_its_folders_before_it_unpacks_or_lists_anything(tmp_path, extra):
    evidence = _load('evidence')
    out = tmp_path / 'out'
    out.mkdir()
    evidence.pack([_stopped_run(evidence, tmp_path / 'then', epochs=5)], str(tmp_path / 'then'), str(out),
                  say=lambda s: None)
    here = tmp_path / 'here'
    with pytest.raises(evidence.UserError, match='--pack .*missing: no such folder'):
        evidence.main(['--unpack', str(out), '--pack', str(tmp_path / 'missing'), '--runs_dir', str(here)] + extra)
    with pytest.raises(evidence.UserError, match='--unpack .*missing: no such folder'):
        evidence.main(['--unpack', str(tmp_path / 'missing'), '--runs_dir', str(here)] + extra)
    assert not here.exists()


def test_evidence_publishes_the_finished_runs_logs_and_records_and_rebuilds_the_table(tmp_path, capsys):
    from chainer_cifar.errors import run_main
    from helpers import write_pickles
    import compare
    evidence = _load('evidence')
    image, label = write_pickles(tmp_path / 'dataset', info={'n_train': 60, 'n_test': 20, 'partial': True})
    runs_dir, docs = tmp_path / 'results', tmp_path / 'docs'
    docs.mkdir()
    assert run_main(compare.main, ['run', 'article-cnn', '--scale', 'partial', '--seeds', '1', '--runs_dir',
                                   str(runs_dir), '--iter', '1', '--subset', '16', '-d', image, '-l', label,
                                   '--quiet']) == 0
    _stopped_run(evidence, runs_dir, preset='article-cnn', seed=2)
    capsys.readouterr()
    assert evidence.main(['--runs_dir', str(runs_dir), '--only', 'article-cnn', '--publish', str(docs)]) == 0
    said = capsys.readouterr().out
    assert sorted(os.listdir(str(docs))) == ['article-cnn', 'report.md', 'test_error.png']
    assert sorted(os.listdir(str(docs / 'article-cnn'))) == ['article-cnn_s1' + s for s in
                                                            ('_log.csv', '_preset.json', '_run.json')]
    for suffix in evidence.PUBLISHED_FILES:
        name = 'article-cnn_s1' + suffix
        assert (docs / 'article-cnn' / name).read_bytes() == (runs_dir / 'partial' / 'article-cnn' / name).read_bytes()
    assert 'not published: article-cnn_s2 (interrupted)' in said
    assert 'article-cnn' in (docs / 'report.md').read_text()


def test_evidence_publishes_nothing_when_a_finished_run_lacks_a_file(tmp_path):
    evidence = _load('evidence')
    run = _stopped_run(evidence, tmp_path / 'results', preset='article-cnn', seed=1, sidecar=False)
    with open(run.record, 'w') as f:
        json.dump({'status': 'finished', 'epochs': 5}, f)
    with pytest.raises(evidence.UserError, match='article-cnn_s1 is finished but has no article-cnn_s1_preset.json'):
        evidence.publish(evidence.plan(str(tmp_path / 'results'), -1), str(tmp_path / 'docs'))
    assert not (tmp_path / 'docs').exists()
