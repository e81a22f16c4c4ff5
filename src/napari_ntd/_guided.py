"""The guided NTD (``method="guided"``): a classical pilot, then NTK twicing.

Beyond the paper (issue 6). BM3D's two-stage idea applied to the NTD:

1. **Pilot.** A first estimate ``p``: sliding-DCT Wiener shrinkage guided by
   non-local means and DCT hard thresholding (:func:`napari_ntd._pilot.pilot`).
2. **Kernel from the pilot.** The network's input is the pilot instead of the
   noisy image: the NTK filter ``W`` is evaluated on the pilot's patches
   (Nystrom, same columns and kernel as ``method="nystrom"``), whose
   similarities are far less noisy than those of ``y``.
3. **Twicing from the pilot.** ``z <- z + W (y - z)`` started at ``z^0 = p``
   (a network initialised to output the pilot), i.e. in closed form
   ``z^t = p + V g_t(Lambda) V^T (y - p)``; ``t = 0`` returns the pilot.
4. **Stopping.** Monte-Carlo SURE of the whole map ``y -> z^t`` (pilot
   included): one extra run on ``y + eps b`` (pilot of the perturbed image,
   its basis with the same columns) gives the divergence for every ``t``.

The work runs in tiles (``GUIDED_TILE``): a tile's Nystrom basis has rank at
most ``m`` and the correction ``V g V^T (y - p)`` lives in its span, so
smaller pieces give more degrees of freedom per pixel at a lower cost. The
tiles overlap by ``2 * guided_margin(r)`` (``r // 2 + 1``, not the
``2 r`` of the paper's method): the correction is small next to the pilot,
so a short cross-fade past the zero-weight band suffices (measured on the
benchmark crops: -0.02 dB, 30 % less time).

Volumes (``spatial_dims=3``) work the same way with a 3D pilot, ``r x r x r``
patches (:mod:`napari_ntd._kernel3d`) and ``GUIDED_TILE_3D`` tiles.

Channel groups: the tiled core receives one ``(5 C, *spatial)`` tensor holding
``y``, ``p``, ``y + eps b``, the pilot of ``y + eps b`` and ``b`` (``C``
channels each), so that tiling cuts all five alike.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import _nystrom, _pilot, _twicing
from ._kernel import patch_sq_norms
from ._kernel3d import nystrom_basis_3d, nystrom_steps_3d

__all__ = [
    "GUIDED_TILE",
    "guided_margin",
    "guided_stack",
    "iter_guided_plane",
]

#: Default tile side of ``method="guided"`` (pixels).
GUIDED_TILE = 64

#: Default tile side of ``method="guided"`` for volumes (voxels).
GUIDED_TILE_3D = 16


_GROUPS = 5


def guided_margin(patch_size: int) -> int:
    """Half the overlap of the guided method's tiles."""
    return patch_size // 2 + 1


def guided_stack(centred: np.ndarray, sigma: float, eps: float, probe: np.ndarray) -> np.ndarray:
    """The ``(*spatial, 5 C)`` input of :func:`iter_guided_plane` for a centred image.

    ``probe`` is the Monte-Carlo SURE direction ``b`` (standard normal, the
    image's shape) and ``eps`` the perturbation size (0: no SURE run).
    """
    if eps == 0:  # fixed t: no SURE run, no second pilot
        pilot = _pilot.pilot(centred, sigma)
        return np.concatenate([centred, pilot, centred, pilot, probe], axis=-1)
    perturbed = centred + eps * probe
    # skimage's NLM and torch release the GIL: the two pilots run on two cores
    with ThreadPoolExecutor(max_workers=2) as pool:
        pilots = list(pool.map(_pilot.pilot, (centred, perturbed), (sigma, sigma)))
    parts = [centred, pilots[0], perturbed, pilots[1], probe]
    return np.concatenate(parts, axis=-1)


def _basis(x: torch.Tensor, columns: torch.Tensor, cfg: Any):
    make = _nystrom.nystrom_basis if x.dim() == 3 else nystrom_basis_3d
    return make(x, columns, patch_size=cfg.patch_size, rank=cfg.rank, block_pixels=cfg.block_pixels)


def _steps(spatial: tuple[int, ...], m: int, block_pixels: int) -> int:
    if len(spatial) == 2:
        return _nystrom.nystrom_steps(*spatial, m, block_pixels)
    return nystrom_steps_3d(math.prod(spatial), m, block_pixels)


def _sq_norms(x: torch.Tensor, r: int) -> torch.Tensor:
    """Squared norms of the zero-padded patches of a ``(C, *spatial)`` plane or volume."""
    if x.dim() == 3:
        return patch_sq_norms(x, r)
    sq = (x * x).sum(0, keepdim=True)[None]
    ones = torch.ones((1, 1, r, r, r), dtype=x.dtype, device=x.device)
    return F.conv3d(sq, ones, padding=r // 2).reshape(-1)


def iter_guided_plane(
    stack: torch.Tensor,
    sigma: float,
    cfg: Any,
    rng: torch.Generator,
    *,
    eps: float,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Guided twicing of one (tile of a) plane or volume; ``stack`` as in :func:`guided_stack`.

    Returns the ``(C, *spatial)`` output with ``t`` chosen per channel by
    Monte-Carlo SURE over ``t = 0`` (the pilot) and the twicing grid, or
    ``t = cfg.n_iter`` when it is an int (then the perturbed half is unused).
    """
    from ._denoise import _counted

    nch = stack.shape[0] // _GROUPS
    y, p, y_eps, p_eps, probe = (stack[i * nch : (i + 1) * nch] for i in range(_GROUPS))
    spatial = tuple(y.shape[1:])
    d = math.prod(spatial)
    informative = torch.nonzero(_sq_norms(p, cfg.patch_size) > 0).flatten().cpu()
    if informative.numel() == 0:  # the pilot is zero (centred constant): keep it
        yield (1, 1)
        return p.clone()
    m = min(cfg.columns(d), informative.numel())
    columns = informative[torch.randperm(informative.numel(), generator=rng)[:m]].to(y.device)
    auto = cfg.n_iter == "auto"
    total = _steps(spatial, m, cfg.block_pixels) * (2 if auto else 1) + 1
    counter = [0]
    basis = yield from _counted(_basis(p, columns, cfg), counter, total)
    if auto:
        basis_eps = yield from _counted(_basis(p_eps, columns, cfg), counter, total)
    ts = np.concatenate([[0], _twicing.t_grid()]) if auto else np.array([int(cfg.n_iter)])
    y, p, y_eps, p_eps, probe = (a.reshape(nch, d).double() for a in (y, p, y_eps, p_eps, probe))

    def terms(b: _nystrom.Basis, target: torch.Tensor, start: torch.Tensor):
        v = b.vectors.double()
        g = _twicing.gains(b.values, ts)
        if auto:
            g[0] = 0.0  # t = 0: the pilot
        return v, g, (target - start) @ v  # basis, gains (T, k), coefficients (C, k)

    v, g, c = terms(basis, y, p)
    if auto:
        v_eps, g_eps, c_eps = terms(basis_eps, y_eps, p_eps)
        # z^t = p + V (g_t * c); V has orthonormal columns, so
        # ||y - z^t||^2 = ||y - p||^2 - 2 <g_t c, c> + ||g_t c||^2.
        gc = g[None] * (2.0 - g[None]) * (c**2)[:, None]
        res = ((y - p) ** 2).sum(1)[:, None] - gc.sum(2)
        b_z = (probe * p).sum(1)[:, None] + (g[None] * (c * (probe @ v))[:, None]).sum(2)
        b_z_eps = (probe * p_eps).sum(1)[:, None] + (
            g_eps[None] * (c_eps * (probe @ v_eps))[:, None]
        ).sum(2)
        div = (b_z_eps - b_z) / eps
        sure = res / d - sigma**2 + 2.0 * sigma**2 * div / d  # (C, T)
        best = sure.argmin(1)
    else:
        best = torch.zeros(nch, dtype=torch.long, device=g.device)
    z = p + (g[best] * c) @ v.T
    yield (total, total)
    return z.reshape(nch, *spatial).to(stack.dtype)
