"""One image through the configured method: noise model, sigma, centring, tiles.

:func:`iter_image` receives a float ``(*spatial, C)`` image (dtype rules and
channels already handled by :mod:`napari_ntd._api`) and returns the float64
result; stacks call it once per image (:mod:`._stacks`).
"""

from __future__ import annotations

import warnings
from collections.abc import Generator

import numpy as np
import torch

from .._ntk import _guided, _guided_sure, _pilot
from .._ntk._guided_sure import SURE_EPS
from .._ntk._plane import iter_denoise_plane, iter_denoise_volume, sure_eps
from .._util._config import NTDConfig
from .._util._parallel import iter_in_pool
from .._util._progress import counted, shifted
from . import _tiling, _vst

__all__ = [
    "SAFE_SPREAD",
    "estimate_sigma",
    "iter_image",
    "plan_tiles",
    "robust_center",
    "spread_and_scale",
]

#: Range of the centred image's largest deviation computed as is; outside it
#: the image is rescaled to ~1 first (patch products would over/underflow).
SAFE_SPREAD = (1e-6, 1e6)


def robust_center(img: np.ndarray) -> float | None:
    """The offset subtracted before the kernel; ``None`` for a constant image.

    Appendix I centres [0, 1] images at 0.5; in general we use the middle of
    the robust (0.5-99.5 percentile) range. The kernel is homogeneous, so only
    the offset matters, not the scale.
    """
    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi <= lo:  # (almost everywhere) constant image
        lo, hi = img.min(), img.max()
        if hi <= lo:
            return None
    return float(0.5 * (lo + hi))


def estimate_sigma(img: np.ndarray) -> float:
    """Gaussian noise std of a ``(*spatial, C)`` image (skimage's wavelet estimate,
    averaged over channels; 0 when no channel gives a finite value)."""
    from skimage.restoration import estimate_sigma as wavelet_sigma

    multichannel = img.shape[-1] > 1
    with warnings.catch_warnings():  # a constant channel: NaN and "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        sig = wavelet_sigma(
            img if multichannel else img[..., 0], channel_axis=-1 if multichannel else None
        )
    sigmas = [s for s in np.atleast_1d(sig) if np.isfinite(s)]
    return float(np.mean(sigmas)) if sigmas else 0.0


def plan_tiles(
    shape: tuple[int, ...],
    cfg: NTDConfig,
    itemsize: int,
    tile_shape: tuple[int, ...] | None,
    max_memory: int,
) -> tuple[int, ...] | None:
    """The tiles of one ``(*spatial, C)`` image (``None``: one piece), memory checked.

    The guided method works in ``GUIDED_TILE`` tiles (``GUIDED_TILE_3D`` for
    volumes) unless ``tile_shape`` is given; the others tile only to fit
    ``max_memory``.
    """
    spatial, channels = shape[:-1], shape[-1]
    if cfg.method == "guided" and tile_shape is None:
        side = _guided.GUIDED_TILE if len(spatial) == 2 else _guided.GUIDED_TILE_3D
        side = max(side, _tiling.min_tile_side(cfg))  # large patches
        tiles = tuple(min(side, n) for n in spatial)
        tiles = None if tiles == spatial else tiles
    else:
        tiles = _tiling.choose_tile_shape(spatial, channels, cfg, itemsize, tile_shape, max_memory)
    piece = spatial if tiles is None else tiles
    whole = 0
    if cfg.method == "guided":  # the pilot and the channel groups are whole-image arrays
        whole = _tiling.guided_image_bytes(spatial, channels, itemsize)
    _tiling.check_memory(
        piece, channels, cfg, itemsize, max_memory, tile_shape is not None, extra=whole
    )
    return tiles


def spread_and_scale(work: np.ndarray, center: float) -> tuple[float, float]:
    """The largest deviation from ``center`` and the scale the kernel works at.

    The filter is scale-invariant: extreme value ranges, whose patch products
    would over- or underflow, are brought to ~1 (``scale = spread``) and the
    result scaled back; others are used as they are (``scale = 1``).
    """
    spread = max(abs(float(work.max()) - center), abs(float(work.min()) - center))
    return spread, 1.0 if SAFE_SPREAD[0] <= spread <= SAFE_SPREAD[1] else spread


def _core(cfg: NTDConfig, nd: int):
    """The per-piece denoiser of the paper's methods and DIP (2D planes, 3D volumes)."""
    if cfg.method == "dip":
        from .._dip._trainers import iter_dip_plane

        return iter_dip_plane
    return iter_denoise_plane if nd == 2 else iter_denoise_volume


def iter_image(
    img: np.ndarray,
    seed: int,
    *,
    cfg: NTDConfig,
    device: torch.device,
    compute: np.dtype,
    noise: _vst.NoiseModel,
    tile_shape: tuple[int, ...] | None,
    max_memory: int,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise one ``(*spatial, C)`` image: noise model, sigma, centring, tiles.

    Returns float64 ``(*spatial, C)``.
    """
    nd = img.ndim - 1
    if cfg.method == "guided":
        # float32 for every input: the pilot's and the kernel's rounding
        # (~1e-7 relative) is far below any noise, and the small sums of the
        # twicing and SURE run in float64 anyway (see _guided)
        compute = np.dtype(np.float32)
    if noise.kind != "gaussian":  # stabilise: noise ~ N(0, 1)
        noise = noise.resolved(img, channel_axis=-1)
        work = _vst.gat_forward(img, noise)
        sig = 1.0
    else:
        work = img
        sig = estimate_sigma(img) if cfg.sigma is None else float(cfg.sigma)

    center = robust_center(work)
    if center is None:  # constant: nothing to filter
        yield (1, 1)
        return img.astype(np.float64)

    tiles = plan_tiles(img.shape, cfg, np.dtype(compute).itemsize, tile_shape, max_memory)
    spread, scale = spread_and_scale(work, center)
    centred = work - center if scale == 1.0 else (work.astype(np.float64) - center) / scale
    tdtype = torch.float64 if compute == np.float64 else torch.float32
    rng = torch.Generator().manual_seed(int(seed))

    def to_tensor(a: np.ndarray) -> torch.Tensor:  # (*spatial, C) -> (C, *spatial)
        return torch.from_numpy(a).to(device=device, dtype=tdtype).permute(nd, *range(nd))

    def back(z: torch.Tensor | np.ndarray) -> np.ndarray:  # to the image's units
        if isinstance(z, torch.Tensor):
            z = z.permute(*range(1, nd + 1), 0).cpu().numpy()
        out = z.astype(np.float64) * scale + center
        return _vst.gat_inverse(out, noise) if noise.kind != "gaussian" else out

    steps = _pilot.PILOT_STEPS
    if cfg.method == "guided" and cfg.n_iter == 0:  # t = 0: the pilot alone
        gen = _pilot.iter_pilots([centred.astype(compute)], sig / scale)
        (z,) = yield from counted(gen, [0], steps)
        return back(z)
    if cfg.method == "guided":  # the pilot (and perturbed crops of it for SURE)
        sig_c = sig / scale
        image = centred.astype(compute)
        spatial, nch = img.shape[:-1], img.shape[-1]
        sample = None
        if cfg.n_iter == "auto":
            eps = sure_eps(sig_c, spread / scale, float(np.finfo(compute).eps), SURE_EPS)
            pieces = _guided.plan(spatial, tiles, _guided.guided_margin(cfg.patch_size))
            # its own random stream: the columns (from ``rng``) are those of
            # n_iter=t, so the default equals denoise_ntd(n_iter=<its t>)
            sure_rng = torch.Generator().manual_seed(_guided_sure.stream_seed(seed))
            sample = _guided_sure.plan_sample(pieces, spatial, nch, eps, sure_rng, compute)
        crops = _guided_sure.perturbed_crops(image, sample) if sample else []
        total = steps + _guided.n_steps(spatial, tiles, cfg, nch)
        gen = _pilot.iter_pilots([image, *crops], sig_c, like=image)
        pilot, *perturbed = yield from counted(gen, [0], total)
        y = to_tensor(np.concatenate([image, pilot], axis=-1)).contiguous()
        del crops, pilot
        stage = _guided.iter_guided(
            y, sig_c, cfg, rng, tiles=tiles, sample=sample, perturbed=perturbed
        )
        z = yield from shifted(stage, steps)
        return back(z)
    y = to_tensor(centred).contiguous()
    # the steps run on a compute worker: one torch thread, nothing spin-waits
    # next to other work (the guided method above schedules its own tasks)
    core = _core(cfg, nd)
    if tiles is None:
        z = yield from iter_in_pool(core(y, sig / scale, cfg, rng))
    else:
        z = yield from iter_in_pool(_tiling.iter_tiled(y, sig / scale, cfg, rng, core, tiles))
    return back(z)
