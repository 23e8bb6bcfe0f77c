"""Shared fixtures: the package on sys.path, synthetic data in the official format."""
import os
import pickle
import sys

import numpy
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, 'src')
if SRC not in sys.path:
    sys.path.insert(0, SRC)

import chainer_cifar  # noqa: E402,F401  (applies the compatibility layer first)

MINI_ARCHIVE_MD5 = 'c1366a7aca9f64f5a55aeab36eb1bc98'


def write_official_batches(folder, n_train=(20, 20, 20, 20, 20), n_test=30, seed=0):
    """Write data_batch_1..5, test_batch and batches.meta like the official archive.

    Protocol-2 pickles with bytes keys, as Python 2's cPickle wrote them.
    Returns ``(train_images uint8 (N, 3072), train_labels, test_images, test_labels)``.
    """
    rng = numpy.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    all_x, all_y = [], []
    names = ['data_batch_{}'.format(i + 1) for i in range(len(n_train))] + ['test_batch']
    for name, n in zip(names, list(n_train) + [n_test]):
        x = rng.randint(0, 256, size=(n, 3072)).astype(numpy.uint8)
        y = [int(v) for v in rng.randint(0, 10, size=n)]
        batch = {b'batch_label': name.encode(), b'labels': y, b'data': x,
                 b'filenames': [('%s_%05d.png' % (name, i)).encode() for i in range(n)]}
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump(batch, f, 2)
        all_x.append(x)
        all_y.append(numpy.asarray(y, numpy.int32))
    meta = {b'label_names': [c.encode() for c in (
        'airplane automobile bird cat deer dog frog horse ship truck'.split())],
        b'num_cases_per_batch': 10000, b'num_vis': 3072}
    with open(os.path.join(folder, 'batches.meta'), 'wb') as f:
        pickle.dump(meta, f, 2)
    return (numpy.concatenate(all_x[:-1]), numpy.concatenate(all_y[:-1]), all_x[-1], all_y[-1])


def pytest_collection_modifyitems(config, items):
    """``slow`` tests run when asked for: ``-m slow`` (an -m expression naming them) or ``CHAINER_CIFAR_SLOW_TESTS=1``."""
    if 'slow' in (config.getoption('markexpr') or '') or os.environ.get('CHAINER_CIFAR_SLOW_TESTS') == '1':
        return
    skip = pytest.mark.skip(reason='slow: run it with pytest -m slow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def official_batches(tmp_path):
    """A ``cifar-10-batches-py`` folder of 100 train / 30 test random images."""
    folder = tmp_path / 'dataset' / 'cifar-10-batches-py'
    data = write_official_batches(str(folder))
    return folder, data


def import_torch(what):
    """PyTorch for the tests of the measurement tools, or a skip naming ``what`` needs it.

    ``CHAINER_CIFAR_REQUIRE_TORCH=1`` (CI sets it where it installs the CPU wheel) turns the skip
    into a failure, so the control's tests cannot silently vanish there.
    """
    try:
        import torch
        return torch
    except Exception as e:  # any import failure means: no usable PyTorch here
        reason = '{} needs PyTorch, which is not importable here ({})'.format(what, e)
        if os.environ.get('CHAINER_CIFAR_REQUIRE_TORCH') == '1':
            pytest.fail('CHAINER_CIFAR_REQUIRE_TORCH=1 but ' + reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope='session')
def mini_archive():
    """The real partial CIFAR-10 archive: ``$CIFAR10_ARCHIVE`` or ``../shared/cifar10/``.

    CI sets ``CIFAR10_ARCHIVE`` explicitly; then a missing file is an error,
    not a skip, so the end-to-end tests cannot silently vanish there.
    """
    path = os.environ.get('CIFAR10_ARCHIVE')
    if path:
        if not os.path.exists(path):
            pytest.fail('CIFAR10_ARCHIVE={} does not exist'.format(path))
        return path
    path = os.path.join(ROOT, '..', 'shared', 'cifar10', 'cifar-10-python-mini.tar.gz')
    if not os.path.exists(path):
        pytest.skip('mini archive not found (set CIFAR10_ARCHIVE to run the end-to-end tests)')
    return os.path.abspath(path)


@pytest.fixture(scope='session')
def mini_dataset(mini_archive, tmp_path_factory):
    """``download.py`` + ``dataset.py`` run once on the real partial archive.

    Returns the ``dataset`` folder holding label.pkl, image*.pkl and the rest.
    """
    import dataset
    import download
    out = tmp_path_factory.mktemp('mini') / 'dataset'
    download.main(['--archive', mini_archive, '--md5', MINI_ARCHIVE_MD5, '--out', str(out), '--quiet'])
    dataset.main(['--input', str(out / 'cifar-10-batches-py'), '--output', str(out)])
    return out


@pytest.fixture
def trained(tmp_path):
    """A saved tiny model (``helpers.TinyAnalysisNet``) with its _run.json, test pickles and preprocessing
    statistics: ``(model path, model, images, labels)``."""
    import helpers  # registers the tiny models only where a test asks for them
    return helpers.save_trained(tmp_path)


@pytest.fixture(params=[1, 2], ids=['1thread', '2threads'])
def threads(request):
    """Runs a fast-kernel test with the kernels' thread pool at 1 and at 2 threads."""
    from chainer_cifar.functions import _parallel
    old = _parallel.num_threads()
    _parallel.set_num_threads(request.param)
    saved = _parallel._MIN_ELEMENTS
    _parallel._MIN_ELEMENTS = 0  # split even tiny arrays, so the chunked code runs
    yield request.param
    _parallel._MIN_ELEMENTS = saved
    _parallel.set_num_threads(old)
