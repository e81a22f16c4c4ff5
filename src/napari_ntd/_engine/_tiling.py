"""Tiling: memory estimate, tile plan, cross-fade weights, tiled denoising.

A large image is cut into overlapping tiles; each tile is denoised by the
per-plane core with the image's global noise level and centring (so the
filters of neighbouring tiles are built alike), and the tiles are blended
with weights that are zero where a tile's patches would reach past its edge
and ramp linearly across the overlap::

    tile 1  ...11111111110ooooo\\
    tile 2        /ooooo01111111111...     (o: overlap of 2 * margin)

Every pixel's output therefore comes from patches that lie entirely inside
the tile that produced it (the margin is at least the receptive field,
``patch_size``), and the switch between two tiles' filters is spread over
the overlap: no seams. The filter is non-local only *within* a tile.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch

from .._util._progress import nested_progress
from .._util._tiles import plan_tiles, tile_weights

__all__ = [
    "DEFAULT_MAX_MEMORY",
    "AUTO_TILE",
    "parse_memory",
    "estimate_memory",
    "tile_margin",
    "method_margin",
    "min_tile_side",
    "normalize_tile_shape",
    "choose_tile_shape",
    "MemoryBudgetError",
    "guided_image_bytes",
    "check_memory",
    "plan_tiles",
    "tile_weights",
    "iter_tiled",
]

#: Default memory budget of one denoising run (bytes): fits laptops.
DEFAULT_MAX_MEMORY = 2 * 1024**3

#: Tile side used when the budget forces tiling (smaller if even that does
#: not fit). Per-pixel cost grows with the tile area (columns are a fraction
#: of the pixels), so moderate tiles are also the fastest.
AUTO_TILE = 256

_UNITS = {"": 1, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_memory(value: int | float | str | None) -> int:
    """A memory budget in bytes: a number, or a string like ``'4GB'``/``'512MiB'``."""
    if value is None:
        return DEFAULT_MAX_MEMORY
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", value)
        if not match:
            raise ValueError(f"max_memory must be bytes or like '4GB', got {value!r}")
        num, unit, binary = match.groups()
        mult = _UNITS[unit.lower()]
        if binary and unit:
            mult = 1024 ** ("kmgt".index(unit.lower()) + 1)
        value = float(num) * mult
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"max_memory must be a number of bytes or a string, got {value!r}")
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"max_memory must be positive, got {value!r}")
    return int(value)


def estimate_memory(spatial_shape: Sequence[int], channels: int, cfg: Any, itemsize: int) -> int:
    """Approximate peak bytes of denoising one image (or tile) in one piece.

    Nystrom with ``d`` pixels, ``m`` columns, rank ``k``, ``n0`` patch
    values: the basis ``d k`` (twice with MC-SURE), the ``m x m`` block and
    its float64 eigendecomposition (~3 ``m^2`` doubles), the kernel blocks
    ``~5 block_pixels m`` and the column patches ``m n0``; plus ~8 image-sized
    float64 buffers. ``guided``: the same with two bases (the SURE sample
    tiles' pilot and perturbed pilot) and five image groups (see ``_guided``).
    ``exact``: the ``d x d`` kernel in float64, ~3 times.
    Other methods: the image buffers only.
    """
    d = math.prod(int(s) for s in spatial_shape)
    images = 8 * d * channels * 8
    n0 = channels * cfg.patch_size ** len(spatial_shape)
    passes = 2 if cfg.n_iter == "auto" else 1
    if cfg.method == "guided":
        images *= 3  # y, pilot, perturbed pair and probe, float64 copies in the core
    if cfg.method in ("nystrom", "guided"):
        m = cfg.columns(d)
        k = m if cfg.rank is None else min(cfg.rank, m)
        work = (
            passes * d * k * itemsize
            + 3 * m * m * 8
            + 5 * min(cfg.block_pixels, d) * m * itemsize
            + m * n0 * itemsize
        )
    elif cfg.method == "exact":
        work = 3 * d * d * 8
    elif cfg.method == "dip" and getattr(cfg, "dip", None) is not None:
        # activations kept for backward and their gradients (~16 per hidden
        # channel and pixel over the U-Net's levels); the vanilla CNN: its
        # two hidden maps and the im2col buffer of the r x r convolution
        per_pixel = 16 * cfg.dip.c
        if cfg.dip.architecture == "vanilla":
            per_pixel = 4 * cfg.dip.c + n0
        work = passes * d * per_pixel * itemsize
    else:
        work = 0
    return int(images + work)


def guided_image_bytes(spatial_shape: Sequence[int], channels: int, itemsize: int) -> int:
    """Whole-image arrays of ``method='guided'`` besides its tiles.

    The image and pilot groups (numpy and torch copies), the pilot's work
    buffers (non-local means, hard thresholding and the non-local Bayes
    bands run at once on the compute pool, with the SURE sample's perturbed
    crops, then the DCT Wiener passes and the second non-local Bayes step)
    and the blended output: at most ``12 * itemsize + 160`` bytes per pixel
    and channel (measured: peak RSS 0.95 GiB for a 2048 x 2048 float32
    image; 1.26 GiB with the whole-image perturbed pilot SURE took before).
    """
    d = math.prod(int(s) for s in spatial_shape)
    return int(d * channels * (12 * itemsize + 160))


class MemoryBudgetError(MemoryError, ValueError):
    """The estimated peak memory exceeds ``max_memory`` and tiling cannot fix it."""


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def check_memory(
    piece_shape: Sequence[int],
    channels: int,
    cfg: Any,
    itemsize: int,
    max_memory: int,
    explicit_tiles: bool,
    extra: int = 0,
) -> None:
    """Raise :class:`MemoryBudgetError` if one piece (image or tile) needs more than the budget.

    Called after :func:`choose_tile_shape`: automatic tiling already went down to
    its smallest tile, so what remains over budget needs the user's decision.
    """
    need = estimate_memory(piece_shape, channels, cfg, itemsize) + extra
    if need <= max_memory:
        return
    if cfg.method == "guided":
        hint = "method='nystrom' (tiled throughout) or a dask array with smaller chunks"
    elif explicit_tiles:
        hint = "a smaller tile_shape"
    elif cfg.method == "exact":
        hint = "method='nystrom'"
    elif cfg.method == "dip":
        hint = "a smaller width"
    else:
        hint = "fewer n_columns, a smaller rank or a fixed n_iter"
    size = " x ".join(map(str, piece_shape))
    raise MemoryBudgetError(
        f"method={cfg.method!r} needs about {_human(need)} for a piece of {size} pixels"
        f"{' and the whole-image arrays' if extra else ''} "
        f"({channels} channel(s)), more than max_memory={_human(max_memory)}; pass "
        f"max_memory={math.ceil(need / 2**20)}MiB or more, or use {hint}"
    )


def tile_margin(patch_size: int) -> int:
    """Margin (pixels) each tile keeps past the region it is trusted for.

    Equal to ``patch_size``, the receptive field of the network's first
    convolution; tiles overlap by twice this.
    """
    return int(patch_size)


def method_margin(cfg: Any) -> int:
    """Half the tile overlap of ``cfg``'s method (shorter for the guided NTD)."""
    if cfg.method == "guided":
        from .._ntk._guided import guided_margin

        return guided_margin(cfg.patch_size)
    return tile_margin(cfg.patch_size)


def min_tile_side(cfg: Any) -> int:
    """Smallest tile side for ``cfg``'s method: the overlap on both sides, plus one."""
    return 4 * method_margin(cfg) + 1


def normalize_tile_shape(tile_shape: int | Sequence[int], ndim: int, cfg: Any) -> tuple[int, ...]:
    """Validate ``tile_shape`` (an int for all spatial axes, or one per axis)."""
    if isinstance(tile_shape, numbers.Integral) and not isinstance(tile_shape, bool):
        shape = (int(tile_shape),) * ndim
    else:
        try:
            if isinstance(tile_shape, str):
                raise TypeError
            shape = tuple(int(t) for t in tile_shape)
        except (TypeError, ValueError):
            raise TypeError(
                f"tile_shape must be an int or a tuple of ints, got {tile_shape!r}"
            ) from None
        if len(shape) != ndim:
            raise ValueError(
                f"tile_shape {tuple(tile_shape)} must have one entry per spatial axis ({ndim})"
            )
    minimum = min_tile_side(cfg)
    if any(t < minimum for t in shape):
        raise ValueError(
            f"tile_shape {shape} is too small: tiles overlap by {2 * method_margin(cfg)}, so "
            f"each side must be at least {minimum} for patch_size={cfg.patch_size}"
        )
    return shape


def choose_tile_shape(
    spatial_shape: Sequence[int],
    channels: int,
    cfg: Any,
    itemsize: int,
    tile_shape: int | Sequence[int] | None,
    max_memory: int,
) -> tuple[int, ...] | None:
    """The tile shape to use, or ``None`` to denoise in one piece.

    An explicit ``tile_shape`` is used as given (clipped to the image).
    Otherwise the image is tiled only when :func:`estimate_memory` exceeds
    ``max_memory``, with square tiles of side ``AUTO_TILE`` or the largest
    smaller side that fits.
    """
    ndim = len(spatial_shape)
    if tile_shape is not None:
        shape = normalize_tile_shape(tile_shape, ndim, cfg)
    elif estimate_memory(spatial_shape, channels, cfg, itemsize) <= max_memory:
        return None
    else:
        side = AUTO_TILE
        floor = 4 * tile_margin(cfg.patch_size) + 1
        while side > floor and estimate_memory((side,) * ndim, channels, cfg, itemsize) > (
            max_memory
        ):
            side = max(floor, int(side * 0.8))
        shape = (side,) * ndim
    shape = tuple(min(t, s) for t, s in zip(shape, spatial_shape, strict=True))
    if shape == tuple(spatial_shape):
        return None
    return shape


def iter_tiled(
    y: torch.Tensor,
    sigma: float,
    cfg: Any,
    rng: torch.Generator,
    core: Callable[..., Generator[tuple[int, int], None, torch.Tensor]],
    tile_shape: Sequence[int],
    margin: int | None = None,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Denoise a centred ``(C, *spatial)`` tensor tile by tile and blend.

    ``margin`` (default :func:`tile_margin`) is half the tiles' overlap; it
    must exceed ``patch_size // 2`` (the zero-weight band at inner edges).

    ``core(y_tile, sigma, cfg, rng)`` is the per-piece denoiser (a
    generator yielding ``(done, total)`` and returning the tile). Tiles run
    in C order and share ``rng``, so a seed fixes the whole result.
    """

    spatial = tuple(y.shape[1:])
    margin = tile_margin(cfg.patch_size) if margin is None else int(margin)
    tiles = plan_tiles(spatial, tile_shape, margin)
    acc = None  # the core may return fewer channels than it reads (the guided NTD)
    wsum = torch.zeros(spatial, dtype=y.dtype, device=y.device)
    for i, tile in enumerate(tiles):
        idx = (slice(None), *tile)
        z = yield from nested_progress(core(y[idx].contiguous(), sigma, cfg, rng), i, len(tiles))
        if acc is None:
            acc = y.new_zeros((z.shape[0], *spatial))
        w = torch.from_numpy(tile_weights(tile, spatial, margin, cfg.patch_size))
        w = w.to(device=y.device, dtype=y.dtype)
        acc[idx] += z * w
        wsum[tile] += w
    return acc / wsum
