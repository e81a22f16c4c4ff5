"""The compute pool (issue 13): single-threaded workers, the caller's torch
settings untouched, concurrent calls equal to serial ones, batching invisible."""

import threading

import numpy as np
import pytest
import torch
from skimage import data, img_as_float

from napari_ntd import denoise_ntd
from napari_ntd._ntk import _guided
from napari_ntd._util import _parallel

SIGMA = 0.1


def _noisy(shape=(100, 120), seed=0):
    clean = img_as_float(data.camera())[100 : 100 + shape[0], 150 : 150 + shape[1]]
    return (clean + SIGMA * np.random.default_rng(seed).standard_normal(clean.shape)).astype(
        np.float32
    )


def _fresh_thread_threads() -> int:
    out = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def test_workers_are_single_threaded_and_the_callers_settings_stay():
    here, fresh = torch.get_num_threads(), _fresh_thread_threads()
    denoise_ntd(_noisy(), sigma=SIGMA, seed=0)  # the guided default: pool work
    assert _parallel.run(torch.get_num_threads) == 1
    assert torch.get_num_threads() == here
    assert _fresh_thread_threads() == fresh  # the process-wide default for new threads


def test_torch_threads_is_thread_local_and_restored():
    here, fresh = torch.get_num_threads(), _fresh_thread_threads()
    with _parallel.torch_threads(1):
        assert torch.get_num_threads() == 1
        assert _fresh_thread_threads() == fresh
    assert torch.get_num_threads() == here
    assert _fresh_thread_threads() == fresh


def test_concurrent_calls_equal_serial_calls():
    images = [_noisy(seed=s) for s in range(3)]
    serial = [denoise_ntd(img, sigma=SIGMA, seed=s) for s, img in enumerate(images)]
    results: dict[int, np.ndarray] = {}

    def call(s):
        results[s] = denoise_ntd(images[s], sigma=SIGMA, seed=s)

    threads = [threading.Thread(target=call, args=(s,)) for s in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in range(3):
        np.testing.assert_array_equal(results[s], serial[s])


@pytest.mark.parametrize("n_iter", ["auto", 3])
def test_batching_does_not_change_the_result(monkeypatch, n_iter):
    img = _noisy((130, 130))
    batched = denoise_ntd(img, sigma=SIGMA, seed=0, n_iter=n_iter)
    monkeypatch.setattr(_guided, "BATCH_TILES", 1)
    one_by_one = denoise_ntd(img, sigma=SIGMA, seed=0, n_iter=n_iter)
    np.testing.assert_allclose(one_by_one, batched, rtol=0, atol=1e-6)


def test_nested_submission_runs_inline():
    """A worker that submits work runs it itself (no deadlock on a full pool)."""

    def outer(k):
        return sum(f.result() for f in _parallel.submit_all(lambda i: i * k, [(1,), (2,)]))

    futures = _parallel.submit_all(outer, [(k,) for k in range(2 * _parallel.available_cores())])
    assert [f.result(timeout=30) for f in futures] == [3 * k for k in range(len(futures))]


def test_closing_the_generator_cancels_pending_batches():
    from napari_ntd import iter_denoise_ntd

    gen = iter_denoise_ntd(_noisy((200, 200)), sigma=SIGMA, seed=0)
    next(gen)
    gen.close()  # no exception, no result; the pool stays usable
    out = denoise_ntd(_noisy((40, 40)), sigma=SIGMA, seed=0)
    assert np.isfinite(out).all()


def test_dask_tasks_run_torch_single_threaded(monkeypatch):
    """dask's threaded scheduler runs a task per core: each uses one torch thread."""
    import dask.array as da

    from napari_ntd._engine import _image

    seen = []
    real = _image.estimate_sigma

    def spy(img):
        seen.append(torch.get_num_threads())
        return real(img)

    monkeypatch.setattr(_image, "estimate_sigma", spy)
    here, fresh = torch.get_num_threads(), _fresh_thread_threads()
    stack = np.stack([_noisy((48, 48), seed=s) for s in range(4)])
    lazy = denoise_ntd(da.from_array(stack, chunks=(1, 48, 48)), seed=0, method="nystrom")
    out = lazy.compute(scheduler="threads")
    assert seen == [1] * 4
    np.testing.assert_array_equal(out, denoise_ntd(stack, seed=0, method="nystrom"))
    assert torch.get_num_threads() == here and _fresh_thread_threads() == fresh
