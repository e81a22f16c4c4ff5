"""Tile geometry: overlapping tiles covering an image and their cross-fade weights.

Tiles keep their requested size and overlap by at least ``2 * margin``; a
tile's weight is zero within ``patch_size // 2`` of an inner edge (where its
patches would reach past the tile) and ramps linearly to one across the rest
of the overlap (see :mod:`napari_ntd._engine._tiling`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["plan_tiles", "tile_weights"]


def _axis_tiles(n: int, tile: int, overlap: int) -> list[slice]:
    """Fewest tiles of size ``tile`` covering ``n`` with overlaps >= ``overlap``.

    The tiles keep the requested size (their non-locality and column count;
    shrinking 256 to 186 on a 512 axis cost 0.8 dB) and are spread evenly,
    so overlaps may exceed ``overlap``.
    """
    if tile >= n:
        return [slice(0, n)]
    count = math.ceil((n - overlap) / (tile - overlap))
    size = tile
    starts = [round(i * (n - size) / (count - 1)) for i in range(count)]
    return [slice(s0, s0 + size) for s0 in starts]


def plan_tiles(
    spatial_shape: Sequence[int], tile_shape: Sequence[int], margin: int
) -> list[tuple[slice, ...]]:
    """Tiles (tuples of slices, C order) of at most ``tile_shape`` covering the image."""
    per_axis = [
        _axis_tiles(n, t, 2 * margin) for n, t in zip(spatial_shape, tile_shape, strict=True)
    ]
    grid = np.meshgrid(*[np.arange(len(a)) for a in per_axis], indexing="ij")
    return [
        tuple(per_axis[ax][int(g.flat[i])] for ax, g in enumerate(grid))
        for i in range(grid[0].size)
    ]


def _ramp(length: int, lo_edge: bool, hi_edge: bool, margin: int, dead: int) -> np.ndarray:
    """1D weights: 0 for ``dead`` pixels at an inner edge, then a linear ramp to 1."""
    e = np.arange(length, dtype=np.float64)
    ramp_len = max(2 * margin - 2 * dead, 1)
    w = np.ones(length)
    if lo_edge:
        w = np.minimum(w, np.clip((e + 0.5 - dead) / ramp_len, 0.0, 1.0))
    if hi_edge:
        w = np.minimum(w, np.clip((length - 1 - e + 0.5 - dead) / ramp_len, 0.0, 1.0))
    return w


def tile_weights(
    tile: tuple[slice, ...], spatial_shape: Sequence[int], margin: int, patch_size: int
) -> np.ndarray:
    """Cross-fade weights of one tile (zero within ``patch_size // 2`` of inner edges)."""
    dead = patch_size // 2
    w = np.ones(())
    for sl, n in zip(tile, spatial_shape, strict=True):
        ramp = _ramp(sl.stop - sl.start, sl.start > 0, sl.stop < n, margin, dead)
        w = np.multiply.outer(w, ramp)
    return w
