"""denoise_ntd(method="dip"): the public wiring of the DIP trainers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ntd import denoise_ntd, iter_denoise_ntd
from napari_ntd._util._progress import run_to_end

KW = dict(method="dip", width=8, seed=0)


def test_dip_denoises_grayscale(noisy_camera):
    clean, noisy, sigma = noisy_camera
    den = denoise_ntd(noisy, sigma=sigma, n_iter=150, **KW)
    assert den.shape == noisy.shape and den.dtype == np.float64
    assert np.mean((den - clean) ** 2) < np.mean((noisy - clean) ** 2)


@pytest.mark.parametrize("channel_axis", [0, -1])
def test_dip_color_channel_axis_and_float32(astronaut_crop, channel_axis):
    img = np.moveaxis(astronaut_crop, -1, channel_axis).astype(np.float32)
    den = denoise_ntd(img, channel_axis=channel_axis, n_iter=3, architecture="vanilla", **KW)
    assert den.shape == img.shape and den.dtype == np.float32


def test_dip_auto_progress_and_seed(noisy_camera):
    _, noisy, sigma = noisy_camera
    gen = iter_denoise_ntd(noisy[:16, :16], sigma=sigma, architecture="vanilla", patch_size=5, **KW)
    # drive the generator by hand: (done, total) with done <= total
    seen = []
    out = run_to_end(gen, seen.append)
    assert all(0 < d <= t for d, t in seen) and len(seen) > 1
    again = denoise_ntd(noisy[:16, :16], sigma=sigma, architecture="vanilla", patch_size=5, **KW)
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(optimizer="sgd"), "optimizer"),
        (dict(architecture="resnet"), "architecture"),
        (dict(input="zeros"), "input"),
        (dict(width=0), "width"),
    ],
)
def test_dip_bad_options(noisy_camera, kw, match):
    with pytest.raises(ValueError, match=match):
        denoise_ntd(noisy_camera[1], method="dip", **kw)


def test_dip_image_too_small():
    with pytest.raises(ValueError, match="small"):
        denoise_ntd(np.random.default_rng(0).random((12, 5)), method="dip", patch_size=3, sigma=0.1)
