"""Untrusted data files: pickles run nothing, bad values are refused, writes fail cleanly, archives are checked."""
import errno
import os
import pickle
import subprocess
import sys
import tarfile

import numpy
import pytest

from chainer_cifar.data import archive, pickles
from chainer_cifar.errors import UserError, run_main
from chainer_cifar.functions import _native
from conftest import SRC, write_official_batches
from helpers import Reduced, one_error_line, payloads, tiny_argv, write_pickles

import dataset  # src/dataset.py
import download  # src/download.py
import train as train_cli  # src/train.py


def dump(obj, path, protocol):
    with open(str(path), 'wb') as f:
        pickle.dump(obj, f, protocol)


# ---------------------------------------------------------------- pickles run nothing

@pytest.mark.parametrize('kind', ['os.system', 'builtins.exec', 'subprocess.call'])
@pytest.mark.parametrize('which', ['image', 'label'])
def test_a_crafted_dataset_pickle_runs_nothing_and_is_one_error_line(tmp_path, capsys, kind, which):
    image, label = write_pickles(tmp_path / 'dataset')
    marker = tmp_path / 'ran'
    path = image if which == 'image' else label
    dump({'train': payloads(marker)[kind], 'test': numpy.zeros(3)}, path, 2)
    assert run_main(train_cli.main, tiny_argv((image, label), tmp_path / 'out')) == 2
    line = one_error_line(capsys)
    assert not marker.exists()
    assert '{} holds '.format(path) in line and 'which a data file never does; refusing to load it' in line


@pytest.mark.parametrize('protocol', [2, pickle.HIGHEST_PROTOCOL])
def test_a_crafted_official_batch_runs_nothing(official_batches, tmp_path, capsys, protocol):
    folder, _ = official_batches
    marker = tmp_path / 'ran'
    dump({b'data': payloads(marker)['os.system'], b'labels': [0]}, folder / 'data_batch_3', protocol)
    rc = run_main(dataset.main, ['--input', str(folder), '--output', str(tmp_path / 'out')])
    line = one_error_line(capsys)
    assert rc == 2 and not marker.exists()
    assert 'data_batch_3 holds posix.system, which a data file never does' in line
    assert not (tmp_path / 'out').exists()


def test_an_archive_accepted_with_its_own_md5_still_cannot_run_its_batches(tmp_path, capsys):
    batches = tmp_path / 'build' / archive.BATCHES_DIR
    write_official_batches(str(batches), n_train=(3, 3, 3, 3, 3), n_test=4)
    marker = tmp_path / 'ran'
    dump(payloads(marker)['builtins.exec'], batches / 'test_batch', 2)
    path = str(tmp_path / 'evil.tar.gz')
    with tarfile.open(path, 'w:gz') as tar:
        tar.add(str(batches), arcname=archive.BATCHES_DIR)
    out = tmp_path / 'dataset'
    download.main(['--archive', path, '--md5', archive.md5sum(path), '--out', str(out), '--quiet'])
    assert run_main(dataset.main, ['--input', str(out / archive.BATCHES_DIR), '--output', str(out)]) == 2
    assert 'test_batch holds __builtin__.exec' in one_error_line(capsys) and not marker.exists()


def test_an_object_array_in_a_data_pickle_is_refused(tmp_path):
    path = str(tmp_path / 'image.pkl')
    dump({'train': numpy.array([1, 'x', None], dtype=object), 'test': numpy.zeros(2)}, path, 2)
    with pytest.raises(UserError, match='holds a NumPy array of dtype object, which a data file never does'):
        pickles.load_pickle(path)


def test_bytes_read_as_object_pointers_are_refused_not_a_crash(tmp_path):
    # numpy.ndarray(shape, '|O', bytes) -- the call this tool's protocol-2 writer uses, with an
    # object dtype -- makes NumPy treat the bytes as pointers: plain pickle.load crashes on it.
    path = tmp_path / 'image.pkl'
    path.write_bytes(b'\x80\x02cnumpy\nndarray\nK\x01\x85X\x02\x00\x00\x00|OC\x08AAAAAAAA\x87R.')
    code = ('import sys; sys.path.insert(0, {!r}); from chainer_cifar.data import pickles\n'
            'try:\n    print(pickles.load_pickle({!r}))\nexcept Exception as e:\n    print(e)'.format(SRC, str(path)))
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'holds a NumPy array of dtype object' in proc.stdout


def test_a_void_dtype_with_forged_object_flags_is_refused(tmp_path):
    # A dtype's pickled state carries NumPy's internal flags; forged ones mark plain bytes as objects.
    forged = Reduced(numpy.dtype, ('V8', False, True), (3, '|', None, None, None, 8, 1, 0x3f))
    path = str(tmp_path / 'x.pkl')
    dump({'train': forged}, path, 2)
    with pytest.raises(UserError, match=r'holds a NumPy array of dtype \|V8'):
        pickles.load_pickle(path)


def test_every_array_layout_numpy_and_this_tool_write_loads_exactly(tmp_path):
    arrays = {'f4': numpy.arange(12, dtype=numpy.float32).reshape(3, 4) / 7,
              'big_endian': numpy.arange(6, dtype='>f8'), 'fortran': numpy.asfortranarray(numpy.eye(3, 4)),
              'u1': numpy.arange(256, dtype=numpy.uint8), 'i8': numpy.array([-1, 2 ** 40]),
              'bool': numpy.array([True, False]), 'text': numpy.array(['cat', 'ship']),
              'bytes': numpy.array([b'a', b'bc']), 'scalar_array': numpy.array(3.5), 'empty': numpy.zeros((0, 3))}
    obj = {'arrays': arrays, 'list': [1, 2.5, 'x', b'y', b'', None, True], 'tuple': (1, (2,))}
    path = str(tmp_path / 'x.pkl')
    for write in [lambda p: dump(obj, p, 2), lambda p: dump(obj, p, 5),
                  lambda p: pickles.save_pickle(obj, p, 2), lambda p: pickles.save_pickle(obj, p)]:
        write(path)
        loaded = pickles.load_pickle(path)
        assert loaded['list'] == obj['list'] and loaded['tuple'] == obj['tuple']
        for k, a in arrays.items():
            b = loaded['arrays'][k]
            # (plain pickle.load loses '>f8' in protocol 2: NumPy reuses its float64 singleton)
            assert b.dtype == a.dtype and b.shape == a.shape and b.tobytes() == a.tobytes(), k
            assert b.flags.writeable, k


def test_python2_pickles_load_bit_exactly_as_pickle_loads_them():
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
    for name in ('legacy_py2_image.pkl', 'legacy_py2_label.pkl'):
        path = os.path.join(data, name)
        with open(path, 'rb') as f:
            expected, loaded = pickle.load(f, encoding='latin1'), pickles.load_pickle(path)
        assert sorted(loaded) == sorted(expected)
        for k in expected:
            assert loaded[k].dtype == expected[k].dtype and loaded[k].tobytes() == expected[k].tobytes()


# ---------------------------------------------------------------- values are checked at load

def _write(tmp_path, images=None, labels=None):
    rng = numpy.random.RandomState(0)
    image, label = str(tmp_path / 'image.pkl'), str(tmp_path / 'label.pkl')
    x = {'train': rng.randn(6, 3072).astype(numpy.float32), 'test': rng.randn(4, 3072).astype(numpy.float32)}
    y = {'train': numpy.array([0, 1, 2, 3, 4, 9], numpy.int32), 'test': numpy.array([5, 6, 7, 8], numpy.int32)}
    x.update(images or {})
    y.update(labels or {})
    pickles.save_pickle(x, image)
    pickles.save_pickle(y, label)
    return image, label


def test_images_stored_as_strings_are_refused(tmp_path):
    image, label = _write(tmp_path, images={'train': numpy.full((6, 3072), '1.5')})
    with pytest.raises(UserError, match=r"image.pkl\['train'\] holds <U3 values, not pixel numbers"):
        pickles.load_dataset(image, label)


@pytest.mark.parametrize('value', [numpy.nan, numpy.inf, -numpy.inf, 1e300])
def test_non_finite_pixels_are_refused_with_their_count(tmp_path, value):
    x = numpy.zeros((4, 3072))
    x[1, 5] = x[3, 7] = value  # 1e300 is finite in float64 but infinite as float32
    image, label = _write(tmp_path, images={'test': x})
    with pytest.raises(UserError) as e:
        pickles.load_dataset(image, label)
    assert "image.pkl['test'] has 2 non-finite values (NaN or infinity) of 12288" in str(e.value)


@pytest.mark.parametrize('labels, message', [
    (numpy.array([0, 1, -1, 3, 4, 5]), r"has 1 labels outside 0-9 \(e.g. -1 at index 2\)"),
    (numpy.array([0, 1, 42, 3, 4, 5]), r"has 1 labels outside 0-9 \(e.g. 42 at index 2\)"),
    (numpy.array([0, 1, 2.5, 3, 4, 5]), r"has 1 labels that are not whole numbers \(e.g. 2.5\)"),
    (numpy.array([0, 1, numpy.nan, 3, 4, 5]), r"has 1 labels that are not whole numbers \(e.g. nan\)"),
    (numpy.array(['0', '1', '2', '3', '4', '5']), r"holds <U1 values, not class numbers 0-9"),
    (numpy.array([2 ** 40] * 6, numpy.int64), r"has 6 labels outside 0-9"),
], ids=['minus_one', 'forty_two', 'fraction', 'nan', 'strings', 'beyond_int32'])
def test_labels_must_be_whole_numbers_0_to_9(tmp_path, labels, message):
    image, label = _write(tmp_path, labels={'train': labels})
    with pytest.raises(UserError, match=r"label.pkl\['train'\] " + message):
        pickles.load_dataset(image, label)


def test_whole_float_labels_load_as_int32(tmp_path):
    image, label = _write(tmp_path, labels={'test': numpy.array([5.0, 6.0, 7.0, 8.0])})
    test_y = pickles.load_dataset(image, label)[3]
    assert test_y.dtype == numpy.int32 and test_y.tolist() == [5, 6, 7, 8]


def test_a_label_of_42_stops_train_py_with_one_line(tmp_path, capsys):
    image, label = write_pickles(tmp_path / 'dataset')
    y = pickles.load_pickle(label)
    y['train'][7] = 42
    pickles.save_pickle(y, label)
    out = tmp_path / 'out'
    assert run_main(train_cli.main, tiny_argv((image, label), out)) == 2
    assert "label.pkl['train'] has 1 labels outside 0-9 (e.g. 42 at index 7)" in one_error_line(capsys)
    assert not out.exists() or not os.listdir(str(out))


def test_an_official_batch_of_float_pixels_or_labels_is_refused(official_batches):
    folder, _ = official_batches
    for batch in ({b'data': numpy.full((4, 3072), 300.0), b'labels': [0] * 4},
                  {b'data': numpy.zeros((4, 3072), numpy.uint8), b'labels': [0.5] * 4}):
        dump(batch, folder / 'test_batch', 2)
        with pytest.raises(UserError, match='expected uint8 pixels and integer labels'):
            archive.read_batches(str(folder))


# ---------------------------------------------------------------- writes

@pytest.mark.parametrize('code, words', [
    (errno.ENOSPC, 'No space left on device; free some space'),
    (errno.EDQUOT, 'quota'),
    (errno.EROFS, 'Read-only file system; the file system is read-only'),
    (errno.EACCES, 'Permission denied; choose a folder you may write to'),
])
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, code, words):
    def write(f):
        f.write(b'partial')
        raise OSError(code, os.strerror(code))
    target = str(tmp_path / 'x.pkl')
    with pytest.raises(UserError) as e:
        pickles.atomic_write(target, write)
    assert str(e.value).startswith('cannot write {}: '.format(target)) and words in str(e.value)
    assert os.listdir(str(tmp_path)) == []


def test_a_full_disk_while_dataset_py_writes_is_one_error_line(official_batches, tmp_path, capsys, monkeypatch):
    folder, _ = official_batches
    out = tmp_path / 'out'

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, 'fsync', full)
    assert run_main(dataset.main, ['--input', str(folder), '--output', str(out)]) == 2
    line = one_error_line(capsys)
    assert line == 'error: cannot write {}: No space left on device; free some space and run again'.format(
        out / 'label.pkl')
    assert os.listdir(str(out)) == []


def test_a_full_disk_outside_atomic_write_is_one_error_line(capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), 'results/x.png')
    assert run_main(main) == 2
    assert one_error_line(capsys) == ('error: cannot write results/x.png: No space left on device; free some '
                                      'space and run again')


def _dead_pid():
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def test_temporary_files_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    host = pickles._HOST
    dead = tmp_path / '.x.pkl.{}-{}.abcd1234.tmp'.format(_dead_pid(), host)
    live = tmp_path / '.x.pkl.{}-{}.efgh5678.tmp'.format(os.getpid(), host)
    other_host = tmp_path / '.x.pkl.{}-{}.ijkl9012.tmp'.format(_dead_pid(), 'f' * 8 if host != 'f' * 8 else 'e' * 8)
    other_target = tmp_path / '.y.pkl.{}-{}.mnop3456.tmp'.format(_dead_pid(), host)
    old_style, young_style = tmp_path / '.x.pkl.qrst7890.tmp', tmp_path / '.x.pkl.uvwx1234.tmp'
    for p in (dead, live, other_host, other_target, old_style, young_style):
        p.write_bytes(b'leftover')
    os.utime(str(old_style), (0, 0))  # written long before names carried a PID
    pickles.atomic_write(str(tmp_path / 'x.pkl'), lambda f: f.write(b'new'))
    assert not dead.exists() and not old_style.exists()
    assert live.exists() and other_host.exists() and other_target.exists() and young_style.exists()
    assert (tmp_path / 'x.pkl').read_bytes() == b'new'


def test_a_writer_killed_with_sigkill_leaves_a_temp_file_the_next_write_removes(tmp_path):
    target = str(tmp_path / 'big.pkl')
    code = ('import sys, time; sys.path.insert(0, {!r}); from chainer_cifar.data.pickles import atomic_write\n'
            'def write(f):\n    f.write(b"x" * 1000); f.flush(); print("writing", flush=True); time.sleep(60)\n'
            'atomic_write({!r}, write)'.format(SRC, target))
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == 'writing'
    finally:
        proc.kill()
        proc.wait()
    assert len([n for n in os.listdir(str(tmp_path)) if n.endswith('.tmp')]) == 1
    pickles.atomic_write(target, lambda f: f.write(b'done'))
    assert os.listdir(str(tmp_path)) == ['big.pkl']


# ---------------------------------------------------------------- archives

def _archive(tmp_path):
    batches = tmp_path / 'build' / archive.BATCHES_DIR
    write_official_batches(str(batches), n_train=(3, 3, 3, 3, 3), n_test=4)
    path = str(tmp_path / 'cifar.tar.gz')
    with tarfile.open(path, 'w:gz') as tar:
        for m in archive.MEMBERS:
            tar.add(str(batches / m), arcname=archive.BATCHES_DIR + '/' + m)
    return path


@pytest.mark.parametrize('offset', [-2, -6, -12, -40], ids=['length', 'crc', 'stream_end', 'stream'])
def test_a_bit_flipped_near_the_end_of_the_archive_is_corrupt_and_nothing_is_extracted(tmp_path, capsys, offset):
    path = _archive(tmp_path)
    with open(path, 'r+b') as f:
        f.seek(offset, os.SEEK_END)
        byte = f.read(1)[0]
        f.seek(offset, os.SEEK_END)
        f.write(bytes([byte ^ 0x10]))
    out = tmp_path / 'dataset'
    argv = ['--archive', path, '--md5', archive.md5sum(path), '--out', str(out), '--quiet']
    assert run_main(download.main, argv) == 2
    line = one_error_line(capsys)
    assert 'is corrupt or truncated' in line and 'download it again' in line
    assert not (out / archive.BATCHES_DIR).exists() and [n for n in os.listdir(str(out))] == []


def test_an_archive_cut_short_inside_its_last_member_is_corrupt(tmp_path):
    path = _archive(tmp_path)
    os.truncate(path, os.path.getsize(path) - 30)
    with pytest.raises(UserError, match='is corrupt or truncated'):
        archive.fetch(str(tmp_path / 'out'), archive=path, md5=archive.md5sum(path), log=lambda *a: None)
    assert os.listdir(str(tmp_path / 'out')) == []


def test_folders_of_killed_extractions_are_removed_by_the_next_one(tmp_path):
    path = _archive(tmp_path)
    out = tmp_path / 'dataset'
    stale = out / '.extract.{}-{}.abcd1234'.format(_dead_pid(), pickles._HOST)
    (stale / archive.BATCHES_DIR).mkdir(parents=True)
    (stale / archive.BATCHES_DIR / 'data_batch_1').write_bytes(b'half')
    archive.fetch(str(out), archive=path, md5=archive.md5sum(path), log=lambda *a: None)
    assert sorted(os.listdir(str(out))) == sorted([archive.BATCHES_DIR, archive.INFO_NAME])


# ---------------------------------------------------------------- compiled-kernel cache

def test_the_temporary_cache_folder_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv('CHAINER_CIFAR_NATIVE_CACHE', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    folders = _native._cache_dirs()
    assert folders[0] == str(tmp_path / 'chainer_cifar')
    assert os.path.basename(folders[-1]) == 'chainer_cifar-{}'.format(os.getuid())


def test_a_new_cache_folder_is_private(monkeypatch, tmp_path):
    folder = tmp_path / 'cache'
    monkeypatch.setenv('CHAINER_CIFAR_NATIVE_CACHE', str(folder))
    with pytest.raises(OSError):
        _native._build('false', b'x')  # `false` fails at once: only the folder is made
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.parametrize('where', ['folder', 'library'])
def test_a_library_others_could_have_written_is_never_loaded(monkeypatch, tmp_path, where):
    folder = tmp_path / 'cache'
    folder.mkdir(mode=0o700)
    planted = folder / _native._library_name('false', b'x')
    planted.write_bytes(b'not ours')
    os.chmod(str(folder if where == 'folder' else planted), 0o777)
    monkeypatch.setenv('CHAINER_CIFAR_NATIVE_CACHE', str(folder))
    with pytest.raises(OSError, match='writable by others'):
        _native._build('false', b'x')


@pytest.mark.skipif(os.getuid() != 0, reason='needs root to give a folder to another user')
def test_a_cache_folder_of_another_user_is_never_used(monkeypatch, tmp_path):
    folder = tmp_path / 'cache'
    folder.mkdir(mode=0o755)
    os.chown(str(folder), 65534, 65534)
    monkeypatch.setenv('CHAINER_CIFAR_NATIVE_CACHE', str(folder))
    with pytest.raises(OSError, match='belongs to another user'):
        _native._build('false', b'x')


def test_data_files_are_read_with_the_safe_unpickler_only():
    # Every pickle.load / Unpickler in the data code goes through SafeUnpickler.
    import chainer_cifar.data.archive as a
    import chainer_cifar.data.pickles as p
    for module in (a, p):
        with open(module.__file__) as f:
            text = f.read()
        assert 'pickle.load(' not in text and 'pickle.loads(' not in text, module.__name__
