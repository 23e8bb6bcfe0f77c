"""The thread pool and OpenBLAS's thread count of the fast kernels."""
import threading
import time

import numpy
import pytest

import chainer

from chainer_cifar.functions import _parallel
from chainer_cifar.functions import convolution as conv


@pytest.fixture
def restore_threads():
    old = _parallel.num_threads()
    blas, saved = _parallel.blas_threads(), _parallel._blas_saved
    yield
    _parallel.set_num_threads(old)
    if blas is not None:
        _parallel.set_blas_threads(blas)
    _parallel._blas_saved = saved


def test_map_tasks_keeps_item_order_and_runs_nested_work_inline(restore_threads):
    _parallel.set_num_threads(2)
    seen = set()

    def task(i):
        time.sleep(0.01)  # long enough that both threads take items
        seen.add(threading.current_thread().name)
        inner = []
        # A parallel call from inside a share must not wait on the (busy) pool.
        _parallel.run_chunks(lambda a, b: inner.append((a, b)), 10, 1 << 30)
        assert inner == [(0, 10)]
        return i * i
    assert _parallel.map_tasks(task, range(7)) == [i * i for i in range(7)]
    assert len(seen) == 2


def test_map_tasks_hands_the_next_item_to_whichever_thread_is_free(restore_threads):
    # One slow item must not hold back the items after it: the other thread
    # takes them all, and the results still come back in item order.
    _parallel.set_num_threads(2)
    ran_by = {}

    def task(i):
        ran_by[i] = threading.current_thread().name
        time.sleep(0.3 if i == 0 else 0.01)
        return i
    assert _parallel.map_tasks(task, range(6)) == list(range(6))
    slow = ran_by[0]
    assert all(ran_by[i] != slow for i in range(1, 6))


def test_map_tasks_propagates_a_worker_exception(restore_threads):
    _parallel.set_num_threads(2)

    def task(i):
        if i == 5:
            raise ValueError('bad item')
        return i
    with pytest.raises(ValueError, match='bad item'):
        _parallel.map_tasks(task, range(6))


@pytest.mark.skipif(_parallel.blas_threads() is None, reason='NumPy does not use OpenBLAS here')
def test_several_threads_make_openblas_single_threaded_and_one_thread_restores_it(restore_threads):
    _parallel.set_num_threads(1)
    before = _parallel.blas_threads()
    _parallel.set_num_threads(2)
    assert _parallel.blas_threads() == 1
    _parallel.set_num_threads(1)
    assert _parallel.blas_threads() == before


def test_batch_chunks_split_evenly_and_do_not_depend_on_the_thread_count(restore_threads):
    per_image = 144 * 32 * 34  # ResNet-20's first stage, wide rows
    chunks = conv._chunks(128, per_image)
    assert len(chunks) % conv._CHUNK_GROUP == 0
    sizes = {e - a for a, e in chunks}
    assert max(sizes) - min(sizes) <= 1
    assert chunks[0][0] == 0 and chunks[-1][1] == 128
    assert all(e == a2 for (_, e), (a2, _) in zip(chunks, chunks[1:]))
    assert max(sizes) * per_image <= conv._CHUNK_ELEMENTS
    assert conv._chunks(2, per_image) == [(0, 2)]  # fits one chunk


def test_convolution_results_are_bitwise_equal_for_one_and_two_threads(restore_threads):
    rng = numpy.random.RandomState(0)
    x = rng.standard_normal((40, 16, 16, 16)).astype(numpy.float32)  # several chunks
    W = rng.standard_normal((16, 16, 3, 3)).astype(numpy.float32)
    b = rng.standard_normal(16).astype(numpy.float32)
    gy = rng.standard_normal((40, 16, 16, 16)).astype(numpy.float32)
    assert len(conv._chunks(40, 144 * 16 * 18)) > 1
    results = []
    for n in (1, 2):
        _parallel.set_num_threads(n)
        _parallel.set_blas_threads(1)  # OpenBLAS's own threads may round differently
        xv, Wv, bv = chainer.Variable(x), chainer.Variable(W), chainer.Variable(b)
        y = conv.convolution_2d(xv, Wv, bv, 1, 1)
        y.grad = gy
        y.backward()
        results.append((y.array, xv.grad, Wv.grad, bv.grad))
    for one, two in zip(*results):
        numpy.testing.assert_array_equal(one, two)


def test_batch_norm_results_are_bitwise_equal_for_one_and_two_threads(restore_threads, monkeypatch):
    from chainer_cifar.functions import batch_norm as bn
    monkeypatch.setattr(bn, '_GROUP_ELEMENTS', 1 << 14)  # several groups per thread
    rng = numpy.random.RandomState(1)
    x = (rng.standard_normal((64, 8, 32, 32)) * 3 + 50).astype(numpy.float32)  # large mean
    gamma = rng.uniform(0.5, 2, 8).astype(numpy.float32)
    beta = rng.standard_normal(8).astype(numpy.float32)
    gy = rng.standard_normal(x.shape).astype(numpy.float32)
    assert len(bn._groups(x.reshape(64, 8, -1))) > 2
    results = []
    for n in (1, 2):
        _parallel.set_num_threads(n)
        xv, gv, bv = chainer.Variable(x), chainer.Variable(gamma), chainer.Variable(beta)
        y = bn.batch_normalization(xv, gv, bv, relu=True)
        y.grad = gy
        y.backward()
        results.append((y.array, xv.grad, gv.grad, bv.grad))
    for one, two in zip(*results):
        numpy.testing.assert_array_equal(one, two)
    # and the statistics are right despite the large mean
    import chainer.functions as F
    y_ref = F.relu(F.batch_normalization(x, gamma, beta)).array
    numpy.testing.assert_allclose(results[0][0], y_ref, rtol=1e-4, atol=1e-4)
