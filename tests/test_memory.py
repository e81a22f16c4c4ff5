"""Memory budget: estimate first; tile when allowed, else a clear error (never an OOM kill)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

import napari_ntd._engine._tiling as tiling
from napari_ntd import DIPConfig, denoise_ntd
from napari_ntd._api import iter_denoise_ntd
from napari_ntd._engine._tiling import MemoryBudgetError, estimate_memory, parse_memory
from napari_ntd._ui._cli import main
from napari_ntd._util._config import NTDConfig

FAST = {"method": "nystrom", "n_columns": 64, "n_iter": 1, "patch_size": 5, "seed": 0}


@pytest.fixture
def image():
    return np.random.default_rng(0).random((96, 96))


def _suggested(message: str) -> str:
    return re.search(r"pass (?:max_memory|--max-memory)=(\d+MiB) or more", message).group(1)


def test_estimate_grows_with_size_and_method():
    nys = NTDConfig(method="nystrom", n_iter=1)
    assert estimate_memory((64, 64), 1, nys, 4) < estimate_memory((128, 128), 1, nys, 4)
    assert estimate_memory((64, 64), 1, nys, 4) < estimate_memory((64, 64), 1, nys, 8)
    assert estimate_memory((64, 64), 1, nys, 4) < estimate_memory((64, 64), 3, nys, 4)
    exact = NTDConfig(method="exact", n_iter=1)
    assert estimate_memory((64, 64), 1, exact, 8) >= 3 * (64 * 64) ** 2 * 8
    narrow = NTDConfig(method="dip", dip=DIPConfig(width=8))
    wide = NTDConfig(method="dip", dip=DIPConfig(width=64))
    assert estimate_memory((64, 64), 1, narrow, 4) < estimate_memory((64, 64), 1, wide, 4)
    vanilla = NTDConfig(method="dip", dip=DIPConfig(architecture="vanilla", width=8))
    assert estimate_memory((64, 64), 1, vanilla, 4) > 64 * 64 * 4 * 32


def test_small_budget_tiles_nystrom(image, monkeypatch):
    budget = parse_memory("4MB")
    cfg = NTDConfig(**{k: v for k, v in FAST.items() if k != "seed"})
    assert estimate_memory(image.shape, 1, cfg, 8) > budget  # would not fit in one piece
    pieces = []
    real = tiling.iter_tiled

    def spy(y, sigma, cfg, rng, core, tile_shape, *rest):
        pieces.append(tuple(tile_shape))
        return real(y, sigma, cfg, rng, core, tile_shape, *rest)

    monkeypatch.setattr(tiling, "iter_tiled", spy)
    out = denoise_ntd(image, max_memory="4MB", **FAST)
    assert len(pieces) == 1 and max(pieces[0]) < 96
    assert estimate_memory(pieces[0], 1, cfg, 8) <= budget
    assert out.shape == image.shape and np.isfinite(out).all()
    whole = denoise_ntd(image, **FAST)
    assert np.abs(out - whole).mean() < 0.05  # tiled ~ untiled


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"max_memory": 1000}, "fewer n_columns"),  # even the smallest tile is too big
        ({"max_memory": "4MB", "tile_shape": 96}, "a smaller tile_shape"),
        ({"max_memory": "1MB", "method": "exact"}, "method='nystrom'"),
        ({"max_memory": "20kB", "method": "dip", "width": 4}, "a smaller width"),
    ],
)
def test_over_budget_without_tiling_raises_with_the_need(kwargs, hint):
    image = np.random.default_rng(0).random((32, 32))
    if kwargs.get("tile_shape") or kwargs.get("max_memory") == 1000:
        image = np.random.default_rng(0).random((96, 96))
    options = {**FAST, **kwargs}
    if options.get("method") == "exact":  # takes no columns
        options.pop("n_columns", None)
    gen = iter_denoise_ntd(image, **options)
    with pytest.raises(MemoryBudgetError) as info:
        next(gen)  # raised before the first step of work
    msg = str(info.value)
    assert "needs about" in msg and "more than max_memory=" in msg and hint in msg
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    # the suggested budget is enough
    out = denoise_ntd(image, **{**options, "max_memory": _suggested(msg)})
    assert out.shape == image.shape and np.isfinite(out).all()


def test_default_budget_still_allows_ordinary_images():
    img = np.random.default_rng(1).random((64, 64))
    assert np.isfinite(denoise_ntd(img, **FAST)).all()
    assert np.isfinite(denoise_ntd(img[:32, :32], method="exact", n_iter=1)).all()


def test_cli_reports_the_budget(tmp_path, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    dst = tmp_path / "out.tif"
    args = ["denoise", str(src), str(dst), "--method", "exact", "--n-iter", "1", "--quiet"]
    assert main([*args, "--max-memory", "100kB"]) == 1
    err = capsys.readouterr().err
    assert "needs about" in err and "--max-memory" in err and "max_memory" not in err
    assert not dst.exists()
    assert main([*args, "--max-memory", _suggested(err)]) == 0
    assert dst.exists()


def test_guided_counts_its_whole_image_arrays():
    """The guided default holds image-sized arrays besides its tiles: they count."""
    from napari_ntd._engine._tiling import guided_image_bytes

    image = np.random.default_rng(0).random((200, 200))
    whole = guided_image_bytes(image.shape, 1, 8)
    assert whole == 200 * 200 * (12 * 8 + 160)
    gen = iter_denoise_ntd(image, max_memory=whole, n_iter=1, seed=0)  # the tile does not fit
    with pytest.raises(MemoryBudgetError) as info:
        next(gen)
    msg = str(info.value)
    assert "whole-image arrays" in msg and "method='nystrom'" in msg
    out = denoise_ntd(image, max_memory=_suggested(msg), n_iter=1, seed=0)
    assert out.shape == image.shape and np.isfinite(out).all()
