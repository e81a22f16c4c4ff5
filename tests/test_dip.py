"""denoise_dip: the public wiring of the DIP trainers (and the deprecated
``denoise_ntd(method='dip')`` spelling, kept for a release)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_ntd import DIPConfig, denoise_dip, denoise_ntd, iter_denoise_dip
from napari_ntd._util._progress import run_to_end

CFG = DIPConfig(width=8)


def test_dip_denoises_grayscale(noisy_camera):
    clean, noisy, sigma = noisy_camera
    den = denoise_dip(noisy, config=CFG, sigma=sigma, n_iter=150, seed=0)
    assert den.shape == noisy.shape and den.dtype == np.float64
    assert np.mean((den - clean) ** 2) < np.mean((noisy - clean) ** 2)


@pytest.mark.parametrize("channel_axis", [0, -1])
def test_dip_color_channel_axis_and_float32(astronaut_crop, channel_axis):
    img = np.moveaxis(astronaut_crop, -1, channel_axis).astype(np.float32)
    cfg = DIPConfig(width=8, architecture="vanilla")
    den = denoise_dip(img, config=cfg, channel_axis=channel_axis, n_iter=3, seed=0)
    assert den.shape == img.shape and den.dtype == np.float32


def test_dip_auto_progress_and_seed(noisy_camera):
    _, noisy, sigma = noisy_camera
    cfg = DIPConfig(width=8, architecture="vanilla", patch_size=5)
    gen = iter_denoise_dip(noisy[:16, :16], config=cfg, sigma=sigma, seed=0)
    # drive the generator by hand: (done, total) with done <= total
    seen = []
    out = run_to_end(gen, seen.append)
    assert all(0 < d <= t for d, t in seen) and len(seen) > 1
    again = denoise_dip(noisy[:16, :16], config=cfg, sigma=sigma, seed=0)
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
def test_dip_bad_options(kw, match):
    with pytest.raises(ValueError, match=match):
        DIPConfig(**kw)


def test_dip_image_too_small():
    cfg = DIPConfig(patch_size=3)  # the U-Net
    with pytest.raises(ValueError, match="small"):
        denoise_dip(np.random.default_rng(0).random((12, 5)), config=cfg, sigma=0.1)


def test_old_spelling_warns_and_gives_the_same_result(noisy_camera):
    img = noisy_camera[1][:16, :16]
    with pytest.warns(DeprecationWarning, match="denoise_dip") as record:
        old = denoise_ntd(
            img, method="dip", architecture="vanilla", width=8, patch_size=5, n_iter=3, seed=0
        )
    assert record[0].filename == __file__  # points at the caller's line
    cfg = DIPConfig(width=8, architecture="vanilla", patch_size=5)
    new = denoise_dip(img, config=cfg, n_iter=3, seed=0)
    np.testing.assert_array_equal(old, new)
