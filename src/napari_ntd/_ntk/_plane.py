"""The paper's per-plane core: a Nystrom (or exact) eigenbasis, twicing from zero,
and the stopping time by Monte-Carlo SURE; for 2D planes and 3D volumes.

Stages: :mod:`._kernel` (patches to kernel columns), :mod:`._nystrom`
(columns to eigenimages), :mod:`._twicing` (twicing and SURE).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._util._config import NTDConfig
from .._util._progress import counted
from . import _nystrom, _twicing
from ._kernel import patch_sq_norms
from ._kernel3d import nystrom_basis_3d, nystrom_steps_3d

__all__ = ["PlaneFit", "iter_fit_plane", "iter_denoise_plane", "iter_denoise_volume", "sure_eps"]

#: Relative size of the Monte-Carlo SURE perturbation (times sigma).
SURE_EPS = 1e-2


def sure_eps(sigma: float, spread: float, tiny: float, rel: float = SURE_EPS) -> float:
    """Size of the Monte-Carlo SURE perturbation: ``rel`` (``SURE_EPS``) times
    the noise level, kept away from zero for (nearly) noise-free images."""
    return rel * max(sigma, 1e-3 * spread, tiny)


@dataclass(frozen=True)
class PlaneFit:
    """A fitted filter for one plane: the basis, projections and chosen ``t``.

    ``sure`` (C, T) is the Monte-Carlo SURE curve over ``ts`` (``None`` for a
    fixed ``n_iter``). Benchmarks evaluate other curves (e.g. the oracle MSE)
    from the same fit with :func:`napari_ntd._twicing.error_curve`.
    """

    basis: _nystrom.Basis
    proj: _twicing.Projections
    t: np.ndarray
    shape: tuple[int, int, int]
    ts: np.ndarray | None = None
    sure: torch.Tensor | None = None

    def output(self, t: np.ndarray | None = None) -> torch.Tensor:
        """Twicing output (C, H, W) at ``t`` (one per channel; default: chosen)."""
        t = self.t if t is None else np.broadcast_to(np.asarray(t), self.t.shape)
        return _twicing.apply(self.basis, self.proj, t).reshape(self.shape)


def iter_fit_plane(
    y: torch.Tensor,
    sigma: float,
    cfg: NTDConfig,
    rng: torch.Generator,
) -> Generator[tuple[int, int], None, PlaneFit]:
    """Compute the NTD eigenbasis of a centred ``(C, H, W)`` plane and choose ``t``."""
    nch, h, w = y.shape
    d = h * w
    auto = cfg.n_iter == "auto"
    dev = y.device
    if cfg.method == "exact":
        per_pass = _nystrom.EXACT_STEPS

        def make_basis(x):
            return _nystrom.exact_basis(x, patch_size=cfg.patch_size)
    else:
        # uniformly random pixels (appendix G), among those whose patch is not
        # zero: a zero patch has a zero kernel column and adds nothing
        informative = torch.nonzero(patch_sq_norms(y, cfg.patch_size) > 0).flatten().cpu()
        if informative.numel() == 0:
            informative = torch.arange(d)
        m = min(cfg.columns(d), informative.numel())
        pick = torch.randperm(informative.numel(), generator=rng)[:m]
        columns = informative[pick].to(dev)
        per_pass = _nystrom.nystrom_steps(h, w, m, cfg.block_pixels)

        def make_basis(x):
            return _nystrom.nystrom_basis(
                x, columns, patch_size=cfg.patch_size, rank=cfg.rank, block_pixels=cfg.block_pixels
            )

    total = per_pass * (2 if auto else 1) + 1
    counter = [0]
    basis = yield from counted(make_basis(y), counter, total)
    y_flat = y.reshape(nch, d)
    if auto:
        spread = float(y.max() - y.min())
        eps = sure_eps(sigma, spread, torch.finfo(y.dtype).eps)
        b = torch.randn((nch, h, w), generator=rng, dtype=y.dtype).to(dev)
        y_eps = y + eps * b
        b_flat = b.reshape(nch, d)
        proj = _twicing.project(basis, y_flat, b_flat)
        basis_eps = yield from counted(make_basis(y_eps), counter, total)
        proj_eps = _twicing.project(basis_eps, y_eps.reshape(nch, d), b_flat)
        ts = _twicing.t_grid()
        y_sq = (y_flat.double() ** 2).sum(1)
        sure = _twicing.sure_curve(basis, proj, basis_eps.values, proj_eps, y_sq, sigma, eps, ts)
        del basis_eps, proj_eps
        t_sel = ts[sure.argmin(1).cpu().numpy()]
    else:
        proj = _twicing.project(basis, y_flat)
        t_sel = np.full(nch, int(cfg.n_iter))
    yield (total, total)
    return PlaneFit(basis, proj, t_sel, (nch, h, w), *((ts, sure) if auto else ()))


def iter_denoise_plane(
    y: torch.Tensor,
    sigma: float,
    cfg: NTDConfig,
    rng: torch.Generator,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Denoise one centred ``(C, H, W)`` plane with the configured method.

    The core every wrapper (stacks, tiles, noise models) calls. All channels
    share one kernel; each channel gets its own stopping time.
    """
    fit = yield from iter_fit_plane(y, sigma, cfg, rng)
    return fit.output()


def iter_denoise_volume(
    y: torch.Tensor, sigma: float, cfg: Any, rng: torch.Generator
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Denoise one centred ``(C, D, H, W)`` volume with ``r x r x r`` patches.

    The 3D counterpart of :func:`iter_denoise_plane`
    (Nystrom only): same column draw, MC-SURE stopping and twicing.
    """
    if cfg.method != "nystrom":
        raise NotImplementedError(
            f"spatial_dims=3 supports method='nystrom' only, got {cfg.method!r}"
        )
    nch = y.shape[0]
    spatial = tuple(y.shape[1:])
    d = int(np.prod(spatial))
    dev = y.device
    auto = cfg.n_iter == "auto"
    m = cfg.columns(d)
    columns = torch.randperm(d, generator=rng)[:m].to(dev)
    per_pass = nystrom_steps_3d(d, m, cfg.block_pixels)

    def make_basis(x):
        return nystrom_basis_3d(
            x, columns, patch_size=cfg.patch_size, rank=cfg.rank, block_pixels=cfg.block_pixels
        )

    total = per_pass * (2 if auto else 1) + 1
    counter = [0]
    basis = yield from counted(make_basis(y), counter, total)
    y_flat = y.reshape(nch, d)
    if auto:
        spread = float(y.max() - y.min())
        eps = sure_eps(sigma, spread, torch.finfo(y.dtype).eps)
        b = torch.randn(y.shape, generator=rng, dtype=y.dtype).to(dev)
        y_eps = y + eps * b
        b_flat = b.reshape(nch, d)
        proj = _twicing.project(basis, y_flat, b_flat)
        basis_eps = yield from counted(make_basis(y_eps), counter, total)
        proj_eps = _twicing.project(basis_eps, y_eps.reshape(nch, d), b_flat)
        ts = _twicing.t_grid()
        y_sq = (y_flat.double() ** 2).sum(1)
        sure = _twicing.sure_curve(basis, proj, basis_eps.values, proj_eps, y_sq, sigma, eps, ts)
        del basis_eps
        t_sel = ts[sure.argmin(1).cpu().numpy()]
    else:
        proj = _twicing.project(basis, y_flat)
        t_sel = np.full(nch, int(cfg.n_iter))
    z = _twicing.apply(basis, proj, t_sel)
    yield (total, total)
    return z.reshape(y.shape)
