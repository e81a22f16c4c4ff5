"""Tiling: plan, cross-fade weights, memory budget, tiled vs untiled, seams."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from napari_ntd import denoise_ntd
from napari_ntd._denoise import NTDConfig
from napari_ntd._tiling import (
    DEFAULT_MAX_MEMORY,
    choose_tile_shape,
    estimate_memory,
    parse_memory,
    plan_tiles,
    tile_margin,
    tile_weights,
)

FAST = {"method": "nystrom", "patch_size": 5, "n_columns": 64, "n_iter": 4, "seed": 0}


@pytest.fixture(scope="module")
def noisy96():
    clean = img_as_float(data.camera())[80:176, 200:296]
    noisy = clean + 0.08 * np.random.default_rng(5).standard_normal(clean.shape)
    return clean, noisy


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, DEFAULT_MAX_MEMORY), (1000, 1000), ("4GB", 4 * 10**9), ("512MiB", 512 * 2**20)],
)
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize("value", ["lots", -1, 0, float("nan")])
def test_parse_memory_rejects(value):
    with pytest.raises(ValueError, match="max_memory"):
        parse_memory(value)


@pytest.mark.parametrize(("shape", "tile"), [((96, 96), (40, 40)), ((100, 61), (48, 30))])
def test_plan_covers_with_overlap(shape, tile):
    margin = 5
    tiles = plan_tiles(shape, tile, margin)
    count = np.zeros(shape, int)
    for t in tiles:
        assert all(s.stop - s.start == min(ts, n) for s, ts, n in zip(t, tile, shape, strict=True))
        count[t] += 1
    assert count.min() >= 1
    for ax in range(2):  # neighbours along each axis overlap by >= 2 * margin
        starts = sorted({t[ax].start for t in tiles})
        stops = sorted({t[ax].stop for t in tiles})
        assert all(b - a >= 2 * margin for a, b in zip(starts[1:], stops[:-1], strict=True))


def test_weights_zero_where_patches_leave_the_tile_and_cover_everything():
    shape, patch = (96, 96), 5
    margin = tile_margin(patch)
    tiles = plan_tiles(shape, (40, 40), margin)
    total = np.zeros(shape)
    for t in tiles:
        w = tile_weights(t, shape, margin, patch)
        assert w.shape == tuple(s.stop - s.start for s in t)
        if t[0].start > 0:  # inner edge: incomplete patches get no weight
            assert np.all(w[: patch // 2] == 0)
        if t[0].stop < shape[0]:
            assert np.all(w[-(patch // 2) :] == 0)
        total[t] += w
    assert total.min() > 0.2


def test_memory_estimate_and_auto_tiles():
    cfg = NTDConfig(method="nystrom")
    small = estimate_memory((512, 512), 1, cfg, 4)
    big = estimate_memory((4096, 4096), 1, cfg, 4)
    assert small < DEFAULT_MAX_MEMORY < big
    assert choose_tile_shape((512, 512), 1, cfg, 4, None, DEFAULT_MAX_MEMORY) is None
    assert choose_tile_shape((4096, 4096), 1, cfg, 4, None, DEFAULT_MAX_MEMORY) == (256, 256)
    tiny = choose_tile_shape((4096, 4096), 1, cfg, 4, None, 100 * 2**20)
    assert tiny[0] < 256
    assert estimate_memory(tiny, 1, cfg, 4) <= 100 * 2**20
    # explicit tiles are clipped to the image; a tile covering it means no tiling
    assert choose_tile_shape((100, 60), 1, cfg, 4, (64, 64), 1) == (64, 60)
    assert choose_tile_shape((60, 60), 1, cfg, 4, 64, 1) is None


def test_tile_shape_validation():
    img = np.zeros((64, 64))
    with pytest.raises(ValueError, match="at least 21"):  # nystrom: overlap 2 * patch
        denoise_ntd(img, tile_shape=16, patch_size=5, method="nystrom")
    with pytest.raises(ValueError, match="at least 13"):  # guided: overlap 2 * (r // 2 + 1)
        denoise_ntd(img, tile_shape=12, patch_size=5)
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        denoise_ntd(img, tile_shape=(32, 32, 32), patch_size=5)
    with pytest.raises(TypeError, match="tile_shape"):
        denoise_ntd(img, tile_shape="big", patch_size=5)


def test_tile_covering_image_is_untiled(noisy96):
    _, noisy = noisy96
    a = denoise_ntd(noisy, sigma=0.08, **FAST)
    b = denoise_ntd(noisy, sigma=0.08, tile_shape=128, **FAST)
    np.testing.assert_array_equal(a, b)


def test_tiled_close_to_untiled(noisy96):
    clean, noisy = noisy96
    # fixed t and 10 % columns: the Nystrom spread between runs is ~0.2 dB
    opts = {"method": "nystrom", "patch_size": 5, "n_columns": 0.1, "n_iter": 4, "rank": 64}
    opts.update(seed=0, sigma=0.08)
    full = denoise_ntd(noisy, **opts)
    tiled = denoise_ntd(noisy, tile_shape=64, **opts)
    p_full, p_tiled = psnr(clean, full, data_range=1), psnr(clean, tiled, data_range=1)
    assert p_tiled > psnr(clean, noisy, data_range=1) + 2
    assert abs(p_tiled - p_full) < 0.5
    # the two filters differ, but far less than the noise
    assert np.sqrt(np.mean((tiled - full) ** 2)) < 0.4 * 0.08


def test_auto_tiling_under_memory_budget(noisy96):
    _, noisy = noisy96
    cfg = NTDConfig(**FAST)
    budget = estimate_memory((64, 64), 1, cfg, 8)
    auto = denoise_ntd(noisy, sigma=0.08, max_memory=budget, **FAST)
    shape = choose_tile_shape((96, 96), 1, cfg, 8, None, budget)
    assert shape is not None and shape[0] <= 64
    explicit = denoise_ntd(noisy, sigma=0.08, tile_shape=shape, **FAST)
    np.testing.assert_array_equal(auto, explicit)


def _border_jump_ratio(err, borders):
    """Mean |error step| across tile borders over the median step elsewhere."""
    steps = np.abs(np.diff(err, axis=1)).mean(0)  # step between columns j and j+1
    at = np.array([steps[b - 1] for b in borders])
    return at.max() / np.median(steps)


def test_no_seams():
    # a smooth image: any seam would stand out in the error map
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    clean = 0.5 + 0.3 * np.sin(2 * np.pi * xx) * np.cos(np.pi * yy)
    noisy = clean + 0.05 * np.random.default_rng(2).standard_normal(clean.shape)
    tile = 48
    out = denoise_ntd(noisy, sigma=0.05, tile_shape=tile, patch_size=5, n_columns=64, seed=1)
    tiles = plan_tiles(clean.shape, (tile, tile), tile_margin(5))
    borders = sorted({t[1].start for t in tiles if t[1].start > 0})
    borders += sorted({t[1].stop for t in tiles if t[1].stop < 96})
    err = out - clean
    assert _border_jump_ratio(err, borders) < 1.6
    assert _border_jump_ratio(err.T, borders) < 1.6
