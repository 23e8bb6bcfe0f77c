"""download.py: MD5 check, safe extraction, offline copies, clear errors, no leftovers."""
import io
import json
import os
import re
import tarfile

import pytest

from chainer_cifar.data import archive
from chainer_cifar.errors import UserError
from conftest import write_official_batches

import download  # src/download.py


@pytest.fixture(autouse=True)
def no_archive_environment(monkeypatch):
    # CI names the offline archive and its MD5 in the environment; these tests
    # pin the defaults, so they run without them unless a test sets them.
    monkeypatch.delenv('CIFAR10_ARCHIVE', raising=False)
    monkeypatch.delenv('CIFAR10_MD5', raising=False)


def make_archive(tmp_path, extra=None, drop=None, name='cifar-10-python.tar.gz'):
    folder = tmp_path / 'build'
    write_official_batches(str(folder / archive.BATCHES_DIR), n_train=(3, 3, 3, 3, 3), n_test=4)
    path = tmp_path / name
    with tarfile.open(str(path), 'w:gz') as tar:
        for m in archive.MEMBERS:
            if m != drop:
                tar.add(str(folder / archive.BATCHES_DIR / m), arcname=archive.BATCHES_DIR + '/' + m)
        for info, data in (extra or []):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith('.')] if os.path.isdir(folder) else []


def test_local_archive_is_verified_and_extracted(tmp_path):
    path = make_archive(tmp_path)
    out = str(tmp_path / 'dataset')
    rc = download.main(['--archive', path, '--md5', archive.md5sum(path), '--out', out, '--quiet'])
    assert rc is None
    for m in archive.MEMBERS:
        assert os.path.isfile(os.path.join(out, archive.BATCHES_DIR, m))
    info = json.load(open(os.path.join(out, archive.INFO_NAME)))
    assert info['md5'] == archive.md5sum(path) and info['official'] is False
    assert leftovers(out) == []


def test_md5_mismatch_names_both_sums_and_writes_nothing(tmp_path, capsys):
    path = make_archive(tmp_path)
    out = str(tmp_path / 'dataset')
    rc = download.run_main(download.main, ['--archive', path, '--out', out, '--quiet'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert 'MD5 mismatch' in err and archive.MD5 in err and archive.md5sum(path) in err
    assert not os.path.exists(os.path.join(out, archive.BATCHES_DIR))


def test_env_variable_names_the_archive(tmp_path, monkeypatch):
    path = make_archive(tmp_path)
    monkeypatch.setenv('CIFAR10_ARCHIVE', path)
    monkeypatch.setenv('CIFAR10_MD5', archive.md5sum(path))
    out = str(tmp_path / 'dataset')
    download.main(['--out', out, '--quiet'])
    assert os.path.isdir(os.path.join(out, archive.BATCHES_DIR))


def test_truncated_archive_is_reported_as_corrupt(tmp_path):
    path = make_archive(tmp_path)
    data = open(path, 'rb').read()
    open(path, 'wb').write(data[:len(data) // 2])
    out = str(tmp_path / 'dataset')
    with pytest.raises(UserError, match='corrupt or truncated'):
        archive.fetch(out, archive=path, md5=archive.md5sum(path), log=lambda *a: None)
    assert not os.path.exists(os.path.join(out, archive.BATCHES_DIR)) and leftovers(out) == []


def test_archive_missing_a_batch_is_refused(tmp_path):
    path = make_archive(tmp_path, drop='test_batch')
    with pytest.raises(UserError, match='lacks test_batch'):
        archive.fetch(str(tmp_path / 'd'), archive=path, md5=archive.md5sum(path), log=lambda *a: None)


@pytest.mark.parametrize('member', [
    ('../evil', tarfile.REGTYPE, None),
    ('/etc/evil', tarfile.REGTYPE, None),
    ('cifar-10-batches-py/link', tarfile.SYMTYPE, '../../outside'),
    ('cifar-10-batches-py/abslink', tarfile.SYMTYPE, '/etc/passwd'),
    ('cifar-10-batches-py/hard', tarfile.LNKTYPE, '../outside'),
    ('cifar-10-batches-py/dev', tarfile.CHRTYPE, None),
], ids=['dotdot', 'absolute', 'symlink_out', 'symlink_abs', 'hardlink_out', 'device'])
def test_unsafe_members_are_refused_before_anything_is_written(tmp_path, member):
    name, kind, link = member
    info = tarfile.TarInfo(name)
    info.type = kind
    data = None
    if kind == tarfile.REGTYPE:
        data = b'x'
        info.size = 1
    if link:
        info.linkname = link
    path = make_archive(tmp_path, extra=[(info, data)])
    out = tmp_path / 'dataset'
    with pytest.raises(UserError, match='refusing archive member'):
        archive.fetch(str(out), archive=path, md5=archive.md5sum(path), log=lambda *a: None)
    assert not (tmp_path / 'evil').exists() and not (out / archive.BATCHES_DIR).exists()
    assert leftovers(str(out)) == []


def test_verified_archive_already_downloaded_is_not_fetched_again(tmp_path, monkeypatch):
    path = make_archive(tmp_path)
    out = tmp_path / 'dataset'
    out.mkdir()
    os.rename(path, str(out / archive.ARCHIVE_NAME))

    def no_download(*args, **kwargs):
        raise AssertionError('downloaded although a verified archive was there')
    monkeypatch.setattr(archive, 'download', no_download)
    archive.fetch(str(out), md5=archive.md5sum(str(out / archive.ARCHIVE_NAME)), log=lambda *a: None)
    assert (out / archive.BATCHES_DIR / 'test_batch').is_file()


def test_download_goes_through_a_temporary_file_and_checks_md5(tmp_path):
    # A file:// URL exercises the real download code without a network.
    path = make_archive(tmp_path, name='served.tar.gz')
    out = tmp_path / 'dataset'
    info = archive.fetch(str(out), url='file://' + path, md5=archive.md5sum(path),
                         progress=False, log=lambda *a: None)
    assert info['md5'] == archive.md5sum(path)
    assert archive.md5sum(str(out / archive.ARCHIVE_NAME)) == archive.md5sum(path)
    with pytest.raises(UserError, match='MD5 mismatch'):
        archive.fetch(str(tmp_path / 'other'), url='file://' + path, progress=False, log=lambda *a: None)
    assert not (tmp_path / 'other' / archive.ARCHIVE_NAME).exists()
    assert leftovers(str(tmp_path / 'other')) == []


def test_unreachable_url_suggests_the_offline_option(tmp_path):
    with pytest.raises(UserError, match='--archive'):
        archive.fetch(str(tmp_path / 'd'), url='http://127.0.0.1:9/cifar.tar.gz', progress=False,
                      log=lambda *a: None)
    assert leftovers(str(tmp_path / 'd')) == []


def test_unreachable_url_names_every_offline_setting_in_one_line(tmp_path, capsys):
    rc = download.run_main(download.main, ['--url', 'http://127.0.0.1:9/cifar.tar.gz', '--out', str(tmp_path / 'd'),
                                           '--quiet'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert 'CIFAR10_ARCHIVE=PATH CIFAR10_MD5=HEX bash quickstart.sh' in err
    assert '--archive PATH --md5 HEX' in err


def test_offline_hint_names_the_projects_partial_copy_only_where_it_exists(tmp_path, monkeypatch):
    copy = tmp_path / 'shared' / 'cifar-10-python-mini.tar.gz'
    monkeypatch.setattr(archive, 'PARTIAL_COPY', str(copy))
    assert 'partial copy' not in archive.offline_hint() and archive.PARTIAL_MD5 not in archive.offline_hint()
    copy.parent.mkdir()
    copy.write_bytes(b'x')
    hint = archive.offline_hint()
    assert 'CIFAR10_ARCHIVE={} CIFAR10_MD5={}'.format(copy, archive.PARTIAL_MD5) in hint
    assert '--archive {} --md5 {}'.format(copy, archive.PARTIAL_MD5) in hint


def test_md5_mismatch_of_a_local_copy_names_the_command_that_accepts_it(tmp_path, capsys):
    # CIFAR10_ARCHIVE without CIFAR10_MD5: the error must give the whole quick-start command.
    path = make_archive(tmp_path)
    md5 = archive.md5sum(path)
    rc = download.run_main(download.main, ['--archive', path, '--out', str(tmp_path / 'd'), '--quiet'])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert 'CIFAR10_ARCHIVE={} CIFAR10_MD5={} bash quickstart.sh'.format(path, md5) in err
    assert '--archive {} --md5 {}'.format(path, md5) in err
    assert 'partial copy' not in err


def test_md5_mismatch_recognises_the_projects_partial_copy(tmp_path, monkeypatch):
    path = make_archive(tmp_path)
    monkeypatch.setattr(archive, 'PARTIAL_MD5', archive.md5sum(path))
    with pytest.raises(UserError, match='it is the partial copy this project keeps'):
        archive.fetch(str(tmp_path / 'd'), archive=path, log=lambda *a: None)


def test_help_states_each_default_once(monkeypatch):
    text = ' '.join(download.build_parser().format_help().split())
    assert 'default: None' not in text and not re.search(r'\(default: [^)]*\) \(default:', text)
    assert text.count('(default:') == 4  # --archive, --url, --md5, --out
    assert '(default: $CIFAR10_ARCHIVE if set, else download)' in text
    monkeypatch.setenv('CIFAR10_ARCHIVE', '/data/copy.tar.gz')
    text = ' '.join(download.build_parser().format_help().split())
    assert '(default: $CIFAR10_ARCHIVE, now /data/copy.tar.gz)' in text and text.count('(default:') == 4
