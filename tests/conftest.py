"""Shared fixtures: small seeded noisy images (no downloads); one BLAS/torch thread
for the tests' own reference computations."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_references():
    """The tests' own references (explicit Jacobians, numpy eigh of small
    matrices) are many small linear-algebra calls: in the test's thread they
    run with one BLAS and one torch thread, as the library's work does on its
    compute pool, so that the suite keeps its pace on a busy machine. The
    library is never configured here: its thread handling is tested as is
    (tests/test_parallel.py)."""
    from threadpoolctl import threadpool_limits

    from napari_ntd._util._parallel import torch_threads

    with threadpool_limits(limits=1, user_api="blas"), torch_threads(1):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def camera_crop():
    """A 48 x 48 crop of skimage's camera in [0, 1] (float64)."""
    return img_as_float(data.camera())[100:148, 200:248]


@pytest.fixture
def noisy_camera(camera_crop, rng):
    """(clean, noisy, sigma) with sigma = 25/255."""
    sigma = 25 / 255
    noisy = camera_crop + sigma * rng.standard_normal(camera_crop.shape)
    return camera_crop, noisy, sigma


@pytest.fixture
def astronaut_crop():
    """A 40 x 40 x 3 crop of skimage's astronaut in [0, 1] (float64)."""
    return img_as_float(data.astronaut())[30:70, 180:220]
