#!/usr/bin/env python
"""Run the partial-set evidence table: each row's seeds, Chainer and the PyTorch control, in parallel.

    python tools/evidence.py -g 0 --jobs 14 --deadline 300     # a GPU machine: every run at once
    python tools/evidence.py --jobs 1 --only resnet20-paper    # the CPU: one run after the other
    python tools/evidence.py -g 0 --only article-vgg:s2        # one seed of one row (:chainer/:pytorch too)
    python tools/evidence.py --list                            # the runs and their commands
    python tools/evidence.py --publish docs/results/partial    # the finished runs into the docs, the table rebuilt

Each run is one command a user can type (printed by ``--list``):
``python src/compare.py run PRESET --scale partial --seeds S`` for Chainer and
``python tools/torch_control.py PRESET --scale partial --seeds S`` for the
control, writing to ``RUNS_DIR/partial/PRESET/``. This tool only schedules
them: in the table's order (or the longest first), at most ``--jobs`` at a time, each single-threaded
on the CPU side (OMP/BLAS/PyTorch threads 1) so that many share a GPU
machine's cores. A run whose ``_run.json`` says ``finished`` is skipped; a
Chainer run that was stopped resumes from its snapshot, a control run from its checkpoint; so does a killed one
(its record still says ``running``), from its last end-of-epoch snapshot. At ``--deadline``
seconds every run still going gets SIGINT (train.py writes its snapshot and
records "interrupted"), then SIGKILL 30 s later; so does every run when this tool gets Ctrl-C or SIGTERM
(it then exits with 130, naming them). Per-run console output goes to ``RUNS_DIR/partial/logs/``; the
report to ``RUNS_DIR/partial/report.md``.
Each run starts from the code on disk when its turn comes: to edit the code during hours of runs, start them from
a second checkout (``git worktree add``), the built files of ``dataset/`` linked into its own, and an absolute
``--runs_dir``.

A run can move between machines (a lent GPU holds its files only while it is held): ``--pack DIR`` writes
each run left unfinished as ``DIR/resume_NAME.tar`` (its record, log, preset and snapshot or checkpoint),
and ``--unpack DIR`` on the next machine puts them back under ``RUNS_DIR`` before the runs start, so they
resume there::

    python tools/evidence.py -g 0 --jobs 4 --deadline 480 --pack $OUT          # on the GPU
    python tools/evidence.py --unpack FOLDER_OF_THE_TARS --only article-residual  # then here, or next time
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'src'))

import chainer_cifar  # noqa: E402,F401  (compat layer first)
from chainer_cifar.data.pickles import atomic_write  # noqa: E402
from chainer_cifar.errors import Parser, UserError, run_main  # noqa: E402
from chainer_cifar.results import presets  # noqa: E402
from chainer_cifar.results.runs import RESUMABLE  # noqa: E402
from chainer_cifar.training.extensions import sigterm_as_ctrl_c  # noqa: E402

# The table of issue "Show the reproduction": (preset, seeds, frameworks).
ROWS = [
    ('resnet20-paper', (1, 2, 3), ('chainer', 'pytorch')),
    ('resnet56-paper', (1, 2), ('chainer', 'pytorch')),
    ('article-cnn', (1, 2), ('chainer',)),
    ('article-cnnbn', (1, 2), ('chainer',)),
    ('article-vgg', (1, 2), ('chainer',)),
    ('article-residual', (1, 2), ('chainer',)),
    ('article-residual-skip', (1, 2), ('chainer',)),
]
# Rough relative cost of one run (ResNet-20 in Chainer = 1), only to start the longest first.
COST = {'resnet20-paper': 1.0, 'resnet56-paper': 2.8, 'article-cnn': 0.3, 'article-cnnbn': 0.4,
        'article-vgg': 0.8, 'article-residual': 4.0, 'article-residual-skip': 3.5}
CONTROL_COST = 0.3
SMOKE = ['--iter', '1', '--subset', '256']
# A run's files that let it resume elsewhere, and what a device call can bring back (8 files of at most
# 16 MiB, 64 MiB in all) less the four small files of tools/gpu_session.sh.
RUN_FILES = ('_run.json', '_log.csv', '_preset.json', '.snapshot', '.ckpt')
# What docs/results/partial/ keeps of a finished run: the log and the records, no model and no snapshot.
PUBLISHED_FILES = ('_log.csv', '_run.json', '_preset.json')
PACK_PREFIX = 'resume_'
PACK_FILES, PACK_FILE_MIB, PACK_TOTAL_MIB = 4, 16, 60


class Run(object):
    def __init__(self, preset, seed, framework, runs_dir, gpu, smoke=False):
        self.preset, self.seed, self.framework = preset, seed, framework
        self.name = '{}_{}s{}'.format(preset, 'torch_' if framework == 'pytorch' else '', seed)
        self.folder = presets.run_dir(runs_dir, preset, 'partial')
        self.record = os.path.join(self.folder, self.name + '_run.json')
        self.snapshot = os.path.join(self.folder, self.name + '.snapshot')
        self.checkpoint = os.path.join(self.folder, self.name + '.ckpt')
        self.cost = COST.get(preset, 1.0) * (CONTROL_COST if framework == 'pytorch' else 1.0)
        script = 'src/compare.py run' if framework == 'chainer' else 'tools/torch_control.py'
        self.command = ([sys.executable] + script.split() +
                        [preset, '--scale', 'partial', '--seeds', str(seed), '-g', str(gpu),
                         '--runs_dir', runs_dir, '--quiet'] + (SMOKE if smoke else []))
        if framework == 'pytorch':
            self.command += ['--threads', '1']
        self.process = self.started = self.ended = None

    def _record(self):
        try:
            with open(self.record) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def status(self):
        return self._record().get('status')

    def epochs(self):
        return self._record().get('epochs') or 0

    def files(self):
        """The paths of the run's files that let it resume (those that exist)."""
        paths = [os.path.join(self.folder, self.name + suffix) for suffix in RUN_FILES]
        return [p for p in paths if os.path.isfile(p)]

    def argv(self):
        # `compare.py run` itself resumes a stopped run of the same recipe and skips a finished one.
        if self.framework == 'pytorch' and os.path.isfile(self.checkpoint):
            return self.command + ['--resume']  # the control's checkpoint holds only finished epochs
        return self.command


def parse_only(text):
    """``'article-cnn:chainer,article-vgg:s2'`` -> ``{('article-cnn', 'chainer', None), ('article-vgg', None, 2)}``.

    Each item is a row of the table, optionally narrowed to a framework (``:chainer``, ``:pytorch``) and to one
    of its seeds (``:s2``).
    """
    rows = {p: (seeds, frameworks) for p, seeds, frameworks in ROWS}
    chosen = set()
    for item in (i.strip() for i in text.split(',') if i.strip()):
        preset, *narrow = item.split(':')
        seeds, frameworks = rows.get(preset, ((), ()))
        framework = next((n for n in narrow if n in frameworks), None)
        seed = next((int(n[1:]) for n in narrow if re.match(r'^s[0-9]+$', n) and int(n[1:]) in seeds), None)
        if preset not in rows or len(narrow) != (framework is not None) + (seed is not None):
            raise UserError('--only {}: not a run of the table; choose from {} (optionally :chainer or :pytorch, '
                            'and a seed of the row, :s1, :s2, ...)'.format(item, ', '.join(rows)))
        chosen.add((preset, framework, seed))
    return chosen


def plan(runs_dir, gpu, only=None, smoke=False, longest_first=False):
    """Every run of the table (or of ``only``, from :func:`parse_only`), in table order or the longest first."""
    def wanted(preset, framework, seed):
        return not only or any(p == preset and f in (None, framework) and s in (None, seed) for p, f, s in only)
    runs = [Run(p, s, f, runs_dir, gpu, smoke) for p, seeds, frameworks in ROWS
            for s in seeds for f in frameworks if wanted(p, f, s)]
    return sorted(runs, key=lambda r: -r.cost) if longest_first else runs


def single_threaded_env():
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    for var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'CHAINER_CIFAR_THREADS'):
        env[var] = '1'
    return env


class Interrupted(UserError):
    exit_code = 130  # as Ctrl-C


def execute(runs, jobs, deadline, log_dir, say=print):
    """Run ``runs`` ``jobs`` at a time until done or ``deadline`` seconds have passed."""
    os.makedirs(log_dir, exist_ok=True)
    pending = []
    for r in runs:
        if r.status() == 'finished':
            say('skip {} (finished)'.format(r.name))
        else:
            pending.append(r)
    running = []
    try:
        with sigterm_as_ctrl_c():
            schedule(pending, running, jobs, deadline, log_dir, say)
    except KeyboardInterrupt:
        # Each run lives in a session of its own (so that the deadline stops it whole), out of reach of the
        # Ctrl-C or kill that stopped this loop: stop them too, each at its next iteration boundary.
        stop(running)
        raise Interrupted('interrupted: {} stopped at {} snapshot; run the same command again to resume'.format(
            ', '.join(r.name for r in running) or 'no run', 'its' if len(running) == 1 else 'their'))
    return runs


def schedule(pending, running, jobs, deadline, log_dir, say):
    """Start ``pending`` runs ``jobs`` at a time; ``running`` holds those going, for the caller to stop."""
    start, env = time.time(), single_threaded_env()
    while pending or running:
        late = deadline is not None and time.time() - start > deadline
        if late:
            say('{:7.1f} s deadline: stopping {} run(s); {} not started'.format(
                time.time() - start, len(running), len(pending)))
            stop(running)
            del pending[:]
        while pending and len(running) < jobs:
            r = pending.pop(0)
            r.log = open(os.path.join(log_dir, r.name + '.log'), 'w')
            r.started = time.time()
            # A background job of a non-interactive shell inherits SIGINT ignored; give it back, so that
            # the deadline's SIGINT reaches every run (Python then raises KeyboardInterrupt).
            r.process = subprocess.Popen(r.argv(), cwd=ROOT, env=env, stdout=r.log, stderr=subprocess.STDOUT,
                                         start_new_session=True,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            running.append(r)
            say('{:7.1f} s start {}'.format(r.started - start, ' '.join(r.argv()[1:])))
        for r in [r for r in running if r.process.poll() is not None]:
            r.ended = time.time()
            r.log.close()
            running.remove(r)
            said = '{:7.1f} s done  {} (exit {}, {:.0f} s, {})'.format(
                r.ended - start, r.name, r.process.returncode, r.ended - r.started, r.status())
            if r.process.returncode:
                # The record may still hold an earlier process's status: the run's own last word says why.
                said += ': ' + last_line(r.log.name)
            say(said)
        time.sleep(0.5)


def last_line(path):
    """The last non-blank line of a run's console log ('' if none)."""
    with open(path, errors='replace') as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[-1] if lines else ''


def tar_size(paths):
    """The size of the tar :func:`pack` writes of ``paths`` (short names): known before it is written."""
    # Per file a 512-byte header and its data padded to 512 bytes; two end blocks; the whole rounded up to
    # tarfile's 10 KiB records.
    size = sum(512 + -(-os.path.getsize(p) // 512) * 512 for p in paths) + 1024
    return -(-size // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def pack(runs, runs_dir, out_dir, files=PACK_FILES, say=print):
    """Each unfinished run that can resume, as ``out_dir/resume_NAME.tar``, within what a device call returns.

    At most ``files`` tars. Paths inside are relative to ``runs_dir``; a run too large to come back is named and
    left out.
    """
    written = total = 0
    for r in runs:
        resumable = r.snapshot if r.framework == 'chainer' else r.checkpoint
        if r.status() not in RESUMABLE or not os.path.isfile(resumable):
            continue
        members = r.files()
        size = tar_size(members)
        if written == files or size > PACK_FILE_MIB << 20 or total + size > PACK_TOTAL_MIB << 20:
            say('not packed: {} ({:.1f} MiB; this call returns {} such files of at most {} MiB, {} MiB in '
                'all)'.format(r.name, size / 2.0 ** 20, files, PACK_FILE_MIB, PACK_TOTAL_MIB))
            continue

        def write(f):
            # GNU format: whole-second times, so no PAX header per file and the size is tar_size's.
            with tarfile.open(fileobj=f, mode='w', format=tarfile.GNU_FORMAT) as tar:
                for m in members:
                    tar.add(m, arcname=os.path.relpath(m, runs_dir))
        path = os.path.join(out_dir, PACK_PREFIX + r.name + '.tar')
        atomic_write(path, write)
        written, total = written + 1, total + size
        say('packed: {} (epoch {}, {:.1f} MiB)'.format(path, r.epochs(), size / 2.0 ** 20))


def unpack(in_dir, runs_dir, say=print):
    """Put each ``in_dir/resume_NAME.tar`` of :func:`pack` back under ``runs_dir``, unless the run there is as far.

    Only the run's own files are taken, each read as bytes (nothing in a tar is trusted as a path or a link);
    a tar holding anything else is refused whole.
    """
    table = {r.name: r for r in plan(runs_dir, -1)}
    names = sorted(n for n in os.listdir(in_dir) if n.startswith(PACK_PREFIX) and n.endswith('.tar'))
    for name in names:
        path = os.path.join(in_dir, name)
        run = table.get(name[len(PACK_PREFIX):-len('.tar')])
        if run is None:
            raise UserError('{}: not a run of the evidence table (see --list); remove it or rename it'.format(path))
        wanted = {os.path.relpath(os.path.join(run.folder, run.name + s), runs_dir).replace(os.sep, '/'): s
                  for s in RUN_FILES}
        try:
            with tarfile.open(path) as tar:
                members = tar.getmembers()
                strange = [m.name for m in members if m.name not in wanted or not m.isfile()]
                if strange or '_run.json' not in {wanted[m.name] for m in members}:
                    raise UserError('{}: holds {} rather than {}\'s files; not unpacked (make it again with '
                                    '--pack)'.format(path, ', '.join(strange) or 'no run record', run.name))
                data = {wanted[m.name]: tar.extractfile(m).read() for m in members}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise UserError('{}: not a readable tar ({}); copy it again from where --pack wrote it'.format(path, e))
        try:
            packed = json.loads(data['_run.json'].decode('utf-8'))
        except ValueError:
            raise UserError('{}: its run record is not JSON; make it again with --pack'.format(path))
        here = run.status()
        if here == 'finished' or (here is not None and run.epochs() >= (packed.get('epochs') or 0)):
            say('not unpacked: {} (the run here is at epoch {}, the tar\'s at {})'.format(
                path, run.epochs(), packed.get('epochs')))
            continue
        for suffix in RUN_FILES[1:] + RUN_FILES[:1]:  # the record last: the run is unpacked once all is there
            target = os.path.join(run.folder, run.name + suffix)
            if suffix in data:
                atomic_write(target, lambda f: f.write(data[suffix]))
            elif os.path.exists(target):
                os.remove(target)  # not the packed run's: it would be resumed from
        say('unpacked: {} (epoch {})'.format(path, packed.get('epochs')))


def publish(runs, out_dir, say=print):
    """Copy each finished run's :data:`PUBLISHED_FILES` into ``out_dir/PRESET/``; name the unfinished ones.

    A finished run missing one of them is refused before anything is copied.
    """
    finished = [r for r in runs if r.status() == 'finished']
    for r in finished:
        missing = [s for s in PUBLISHED_FILES if not os.path.isfile(os.path.join(r.folder, r.name + s))]
        if missing:
            raise UserError('{} is finished but has no {}; nothing published'.format(
                r.name, ', '.join(r.name + s for s in missing)))
    for r in finished:
        folder = os.path.join(out_dir, r.preset)
        os.makedirs(folder, exist_ok=True)
        for suffix in PUBLISHED_FILES:
            with open(os.path.join(r.folder, r.name + suffix), 'rb') as f:
                data = f.read()
            atomic_write(os.path.join(folder, r.name + suffix), lambda f: f.write(data))
        say('published: {} ({} epochs) in {}'.format(r.name, r.epochs(), folder))
    left = ['{} ({})'.format(r.name, r.status() or 'not run') for r in runs if r.status() != 'finished']
    if left:
        say('not published: {}'.format(', '.join(left)))


def stop(running, grace=30):
    for r in running:
        try:
            os.killpg(r.process.pid, signal.SIGINT)
        except ProcessLookupError:  # it ended by itself a moment ago
            pass
    end = time.time() + grace
    while time.time() < end and any(r.process.poll() is None for r in running):
        time.sleep(0.5)
    for r in running:
        if r.process.poll() is None:
            os.killpg(r.process.pid, signal.SIGKILL)
            r.process.wait()


def build_parser():
    p = Parser(description=__doc__.split('\n')[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split('\n', 1)[1])
    p.add_argument('-g', '--gpu', type=int, default=-1, help='GPU id for every run; negative = CPU')
    p.add_argument('--jobs', type=int, default=1, help='runs at a time (default: %(default)s)')
    p.add_argument('--deadline', type=float, default=None,
                   help='seconds after which the runs still going are stopped (default: none)')
    p.add_argument('--runs_dir', default='results', help='runs go to RUNS_DIR/partial/PRESET/')
    p.add_argument('--only', default=None,
                   help='comma list of presets, each optionally :chainer or :pytorch and a seed :s1, :s2, ... '
                        '(default: every run)')
    p.add_argument('--longest_first', action='store_true',
                   help='start the longest runs first (for many --jobs); default: the table\'s order')
    p.add_argument('--smoke', action='store_true',
                   help='a dry run: every run for 1 epoch on 256 images ({})'.format(' '.join(SMOKE)))
    p.add_argument('--pack', metavar='DIR', default=None,
                   help='at the end, write each unfinished run as DIR/resume_NAME.tar, to resume elsewhere')
    p.add_argument('--pack_files', type=int, default=PACK_FILES,
                   help='at most this many tars (default: %(default)s; a device call returns 8 files in all)')
    p.add_argument('--unpack', metavar='DIR', default=None,
                   help='first put back the runs of DIR/resume_*.tar (written by --pack) under RUNS_DIR')
    p.add_argument('--list', action='store_true', help='print the runs and their commands, run nothing')
    p.add_argument('--publish', metavar='DIR', default=None,
                   help='run nothing: copy the finished runs\' logs and records into DIR/PRESET/ and rebuild '
                        'DIR/report.md and DIR/test_error.png (docs/results/partial)')
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    only = parse_only(args.only) if args.only else None
    if args.jobs < 1:
        raise UserError('--jobs must be at least 1, got {}'.format(args.jobs))
    if args.pack_files < 0:
        raise UserError('--pack_files must be 0 or more, got {}'.format(args.pack_files))
    if args.unpack and not os.path.isdir(args.unpack):
        raise UserError('--unpack {}: no such folder'.format(args.unpack))
    if args.pack and not os.path.isdir(args.pack):
        raise UserError('--pack {}: no such folder; create it first'.format(args.pack))
    if args.publish and not os.path.isdir(args.publish):
        raise UserError('--publish {}: no such folder'.format(args.publish))
    runs = plan(args.runs_dir, args.gpu, only, args.smoke, args.longest_first)
    if args.list:
        for r in runs:
            print('{:<34s} {}'.format(r.name, ' '.join(['python'] + r.command[1:])))
        return 0
    import compare
    if args.publish:
        publish(runs, args.publish)
        compare.write_report(compare.find_logs([args.publish]), os.path.join(args.publish, 'report.md'),
                             os.path.join(args.publish, 'test_error.png'))
        return 0
    partial_dir = os.path.join(args.runs_dir, 'partial')
    if args.unpack:
        unpack(args.unpack, args.runs_dir)
    execute(runs, args.jobs, args.deadline, os.path.join(partial_dir, 'logs'))
    compare.write_report(compare.find_logs([partial_dir]), os.path.join(partial_dir, 'report.md'),
                         os.path.join(partial_dir, 'test_error.png'))
    if args.pack:
        pack(runs, args.runs_dir, args.pack, files=args.pack_files)
    unfinished = [r.name for r in runs if r.status() != 'finished']
    if unfinished:
        print('not finished: {}'.format(', '.join(unfinished)))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
