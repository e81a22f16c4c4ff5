"""Shared fixtures: small seeded noisy images (no downloads)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float


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
