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

Speed (issue 13): a tile is small (``d = 4096`` pixels, ``m = 82`` columns),
so the work is hundreds of small kernel blocks and eigendecompositions. The
tiles' columns are drawn in tile order (so a seed fixes the result), then
batches of tiles run as tasks on the compute pool (:mod:`napari_ntd._parallel`:
one single-threaded torch worker per core, nothing spin-waits on a busy
machine), each batch with batched ``eigh``/``bmm``. The Nystrom eigenbasis is
never formed: with the kernel rows ``K`` (``d x m``) and a small ``m x m``
matrix ``Q``, ``V = K Q``, so the orthonormalisation needs ``K^T K`` only
(one ``d m^2`` product instead of three).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._util import _parallel
from .._util._tiles import plan_tiles, tile_weights
from . import _pilot, _twicing
from ._kernel import ntk_block, patch_matrix, patch_sq_norms
from ._kernel3d import patches_at_3d
from ._nystrom import _eig_tolerance

__all__ = [
    "SURE_EPS",
    "GUIDED_TILE",
    "GUIDED_TILE_3D",
    "guided_margin",
    "guided_stack",
    "iter_guided_stack",
    "draw_columns",
    "guided_batch",
    "batches",
    "iter_guided",
    "iter_guided_plane",
]

#: Monte-Carlo SURE perturbation of the guided method, times sigma. The
#: non-local Bayes pilot picks its groups by distance, so it jumps when a
#: small perturbation changes a group: with the paper's 0.01 sigma the
#: divergence was noise and SURE chose t badly (-0.6 dB mean, -5.7 dB on a
#: smooth image); at 0.3 sigma the finite difference averages over the jumps
#: (+0.16 dB mean over the pilot, worst case -0.05 dB, on 16 crops at sigma
#: 15 and 50; 0.1 / 0.2 / 0.5 sigma: +0.15 / +0.16 / +0.14). The jumps are
#: real divergence, not noise to average away: running the perturbed pilot
#: with the unperturbed run's groups (a smooth map, half the cost) left the
#: grouping's share out and SURE chose far too large t (-0.3 to -0.7 dB mean,
#: -9 dB on the smooth image).
SURE_EPS = 0.3

#: Default tile side of ``method="guided"`` (pixels).
GUIDED_TILE = 64

#: Default tile side of ``method="guided"`` for volumes (voxels).
GUIDED_TILE_3D = 16

#: Most tiles in one task of the compute pool (progress and load balance).
BATCH_TILES = 4

#: Bytes of float64 kernel rows and SURE terms one task may hold.
BATCH_BYTES = 64 * 2**20

_GROUPS = 5


def guided_margin(patch_size: int) -> int:
    """Half the overlap of the guided method's tiles."""
    return patch_size // 2 + 1


def iter_guided_stack(
    centred: np.ndarray, sigma: float, eps: float, probe: np.ndarray
) -> Generator[None, None, np.ndarray]:
    """The ``(*spatial, 5 C)`` input of :func:`iter_guided` for a centred image.

    ``probe`` is the Monte-Carlo SURE direction ``b`` (standard normal, the
    image's shape) and ``eps`` the perturbation size (0: no SURE run, no
    second pilot). The passes of both pilots run in parallel on the compute
    pool; yields ``None`` ``_pilot.PILOT_STEPS`` times.
    """
    if eps == 0:  # fixed t: no SURE run, no second pilot
        (pilot,) = yield from _pilot.iter_pilots([centred], sigma)
        return np.concatenate([centred, pilot, centred, pilot, probe], axis=-1)
    perturbed = centred + eps * probe
    pilot, pilot_eps = yield from _pilot.iter_pilots([centred, perturbed], sigma)
    return np.concatenate([centred, pilot, perturbed, pilot_eps, probe], axis=-1)


def guided_stack(centred: np.ndarray, sigma: float, eps: float, probe: np.ndarray) -> np.ndarray:
    """:func:`iter_guided_stack` run to its end."""
    from .._util._progress import run_to_end

    return run_to_end(iter_guided_stack(centred, sigma, eps, probe))


def _sq_norms(x: torch.Tensor, r: int) -> torch.Tensor:
    """Squared norms of the zero-padded patches of a ``(C, *spatial)`` plane or volume."""
    if x.dim() == 3:
        return patch_sq_norms(x, r)
    sq = (x * x).sum(0, keepdim=True)[None]
    ones = torch.ones((1, 1, r, r, r), dtype=x.dtype, device=x.device)
    return F.conv3d(sq, ones, padding=r // 2).reshape(-1)


def _all_patches(x: torch.Tensor, r: int) -> torch.Tensor:
    """All zero-padded patches ``(d, n0)`` of a ``(C, *spatial)`` plane or volume."""
    if x.dim() == 3:
        return patch_matrix(x, r)
    pad = r // 2
    d = math.prod(x.shape[1:])
    xpad = F.pad(x, (pad,) * 6)
    return patches_at_3d(xpad, torch.arange(d, device=x.device), tuple(x.shape[1:]), r)


def draw_columns(pilot: torch.Tensor, cfg: Any, rng: torch.Generator) -> torch.Tensor | None:
    """Nystrom columns of one tile: uniformly random pixels whose pilot patch is not zero.

    ``None`` when every patch of the pilot is zero (a centred constant).
    """
    informative = torch.nonzero(_sq_norms(pilot, cfg.patch_size) > 0).flatten().cpu()
    if informative.numel() == 0:
        return None
    m = min(cfg.columns(math.prod(pilot.shape[1:])), informative.numel())
    return informative[torch.randperm(informative.numel(), generator=rng)[:m]]


@dataclass(frozen=True)
class Bases:
    """Orthonormal Nystrom eigenbases of a batch of tiles, ``V = K Q`` (not formed).

    ``kernel`` (B, d, m) float64: the kernel rows ``Theta(p_i, q_j)``;
    ``q`` (B, m, m) float64; ``values`` (B, m) float64 in [0, 1], largest 1,
    zero for dropped directions (whose columns of ``q`` are zero).
    """

    kernel: torch.Tensor
    q: torch.Tensor
    values: torch.Tensor

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        """``V^T x`` for ``x`` (B, C, d): (B, C, m)."""
        return (x @ self.kernel) @ self.q

    def synth(self, a: torch.Tensor) -> torch.Tensor:
        """``V a`` for coefficients ``a`` (B, C, m): (B, C, d)."""
        return (a @ self.q.transpose(1, 2)) @ self.kernel.transpose(1, 2)


def _flip_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a batch of symmetric matrices, largest first."""
    w, v = torch.linalg.eigh(0.5 * (a + a.transpose(-1, -2)))
    return w.flip(-1), v.flip(-1)


def nystrom_bases(x: torch.Tensor, columns: torch.Tensor, cfg: Any) -> Bases:
    """The exact eigenbasis of each tile's Nystrom filter (appendix G).

    ``x`` (B, C, *spatial): the images the kernel compares (pilots);
    ``columns`` (B, m): the column pixels. Same filter as
    :func:`napari_ntd._nystrom.nystrom_basis`: with ``Theta_mm = U Lambda U^T``
    and ``A = K U Lambda^-1/2`` (``W ~ A A^T``), ``A^T A = R S R^T`` gives
    ``W``'s eigenvectors ``A R S^-1/2`` and eigenvalues ``S`` (scaled so that
    the largest is 1). Directions below the round-off tolerance (and past
    ``cfg.rank``) are dropped, as there.
    """
    r = cfg.patch_size
    b, m = columns.shape
    tol = _eig_tolerance(x.dtype)
    k_mm = x.new_empty((b, m, m))
    k_dm = []
    for i in range(b):
        p = _all_patches(x[i], r)
        sq = (p * p).sum(1)
        p_m, sq_m = p[columns[i]], sq[columns[i]]
        k_mm[i] = ntk_block(p_m, p_m, sq_m, sq_m)
        k_dm.append(ntk_block(p, p_m, sq, sq_m).double())
    kernel = torch.stack(k_dm)
    del k_dm
    lam, u = _flip_eigh(k_mm.double())
    top = lam[:, :1]
    keep = (lam > tol * top) & (top > 0)
    if cfg.rank is not None:
        keep &= torch.arange(m, device=x.device) < cfg.rank
    d_inv = u * torch.where(keep, lam.clamp_min(1e-300).rsqrt(), 0.0)[:, None, :]  # U Lambda^-1/2
    gram = kernel.transpose(1, 2) @ kernel  # K^T K, float64 (float32: -0.35 dB, SURE)
    s, rot = _flip_eigh(d_inv.transpose(1, 2) @ gram @ d_inv)
    s0 = s[:, :1]
    keep = (s > tol * s0) & (s0 > 0)
    q = d_inv @ rot * torch.where(keep, s.clamp_min(1e-300).rsqrt(), 0.0)[:, None, :]
    values = torch.where(keep, s / s0.clamp_min(1e-300), 0.0)
    return Bases(kernel=kernel, q=q, values=values)


def guided_batch(
    stack: torch.Tensor, columns: torch.Tensor, sigma: float, cfg: Any, eps: float
) -> torch.Tensor:
    """Guided twicing of a batch of tiles ``stack`` (B, 5 C, *spatial) with ``columns`` (B, m).

    Returns ``z`` (B, C, *spatial): ``z^t = p + V g_t V^T (y - p)`` with ``t``
    chosen per tile and channel by Monte-Carlo SURE over ``t = 0`` (the
    pilot) and the twicing grid, or ``t = cfg.n_iter`` when it is an int.
    """
    b = stack.shape[0]
    nch = stack.shape[1] // _GROUPS
    spatial = tuple(stack.shape[2:])
    d = math.prod(spatial)
    auto = cfg.n_iter == "auto"
    groups = [stack[:, i * nch : (i + 1) * nch] for i in range(_GROUPS)]
    y, p, y_eps, p_eps, probe = (g.reshape(b, nch, d).double() for g in groups)
    # the perturbed run needs its own basis: keeping the pilot's (leaving the
    # filter's dependence on y out of the divergence) made SURE pick too large
    # a t (-0.47 dB mean on the benchmark crops)
    pilots = torch.cat([groups[1], groups[3]]) if auto else groups[1]
    bases = nystrom_bases(pilots, torch.cat([columns, columns]) if auto else columns, cfg)
    ts = np.concatenate([[0], _twicing.t_grid()]) if auto else np.array([int(cfg.n_iter)])
    g_all = _twicing.gains(bases.values, ts)  # (B or 2B, T, m)
    g = g_all[:b]
    base = Bases(bases.kernel[:b], bases.q[:b], bases.values[:b])
    r = y - p
    c = base.coef(r)  # (B, C, m)
    if auto:
        eps_base = Bases(bases.kernel[b:], bases.q[b:], bases.values[b:])
        g_eps = g_all[b:]
        c_eps = eps_base.coef(y_eps - p_eps)
        # z^t = p + V (g_t * c); V has orthonormal columns, so
        # ||y - z^t||^2 = ||y - p||^2 - 2 <g_t c, c> + ||g_t c||^2.
        res = (r**2).sum(-1)[..., None] - (
            g[:, None] * (2.0 - g[:, None]) * (c**2)[:, :, None]
        ).sum(-1)
        b_z = (probe * p).sum(-1)[..., None] + (
            g[:, None] * (c * base.coef(probe))[:, :, None]
        ).sum(-1)
        b_z_eps = (probe * p_eps).sum(-1)[..., None] + (
            g_eps[:, None] * (c_eps * eps_base.coef(probe))[:, :, None]
        ).sum(-1)
        div = (b_z_eps - b_z) / eps
        sure = res / d - sigma**2 + 2.0 * sigma**2 * div / d  # (B, C, T)
        best = sure.argmin(-1)
    else:
        best = torch.zeros((b, nch), dtype=torch.long, device=stack.device)
    g_best = torch.gather(g, 1, best[..., None].expand(b, nch, g.shape[-1]))  # (B, C, m)
    z = p + base.synth(g_best * c)
    return z.reshape(b, nch, *spatial).to(stack.dtype)


def _run_batch(
    y: torch.Tensor,
    pieces: list[tuple[slice, ...]],
    columns: list[torch.Tensor | None],
    sigma: float,
    cfg: Any,
    eps: float,
) -> list[torch.Tensor]:
    """One task: filter tiles of one shape, batched by column count (usually all alike).

    The tiles are cut from the whole ``y`` here, so that only the running
    tasks' tiles are ever copied.
    """
    tiles = [y[(slice(None), *t)] for t in pieces]
    out: list[torch.Tensor | None] = [None] * len(tiles)
    nch = tiles[0].shape[0] // _GROUPS
    counts = [0 if c is None else c.numel() for c in columns]
    with torch.no_grad():
        for m in dict.fromkeys(counts):
            idx = [i for i, c in enumerate(counts) if c == m]
            stack = torch.stack([tiles[i] for i in idx])
            if m == 0:  # the pilot is zero (centred constant): keep it
                z = stack[:, nch : 2 * nch].clone()
            else:
                cols = torch.stack([columns[i] for i in idx]).to(stack.device)
                z = guided_batch(stack, cols, sigma, cfg, eps)
            for i, zi in zip(idx, z, strict=True):
                out[i] = zi
    return out


def _batch_size(d: int, m: int, nch: int, auto: bool) -> int:
    """Tiles per task within :data:`BATCH_TILES` and :data:`BATCH_BYTES`."""
    n_t = len(_twicing.t_grid()) + 1 if auto else 1
    per_tile = 8 * (2 if auto else 1) * (d * m + 2 * m * m + nch * n_t * m * 3)
    return int(max(1, min(BATCH_TILES, BATCH_BYTES // max(per_tile, 1))))


def plan(
    spatial: Sequence[int], tiles: Sequence[int] | None, margin: int
) -> list[tuple[slice, ...]]:
    """The tiles of the guided method (one whole-image tile when ``tiles`` is None)."""

    if tiles is None:
        return [tuple(slice(0, n) for n in spatial)]
    return plan_tiles(spatial, tiles, margin)


def batches(
    spatial: Sequence[int], tiles: Sequence[int] | None, cfg: Any, channels: int
) -> list[list[int]]:
    """Tile indices of each task of :func:`iter_guided` (known before the pilots run)."""
    pieces = plan(spatial, tiles, guided_margin(cfg.patch_size))
    d = math.prod(sl.stop - sl.start for sl in pieces[0])
    size = _batch_size(d, cfg.columns(d), channels, cfg.n_iter == "auto")
    return [list(range(i, min(i + size, len(pieces)))) for i in range(0, len(pieces), size)]


def _draw_all(pilot: torch.Tensor, pieces, cfg: Any, rng: torch.Generator):
    """:func:`draw_columns` of every tile, in tile order."""
    with torch.no_grad():
        return [draw_columns(pilot[(slice(None), *t)], cfg, rng) for t in pieces]


def iter_guided(
    y: torch.Tensor,
    sigma: float,
    cfg: Any,
    rng: torch.Generator,
    *,
    eps: float,
    tiles: Sequence[int] | None = None,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """The guided NTK stage of a ``(5 C, *spatial)`` stack (:func:`guided_stack`).

    Tiles of ``tiles`` (``None``: one piece) overlapping by
    ``2 * guided_margin(patch_size)``, cross-faded as in
    :func:`napari_ntd._tiling.iter_tiled`. Yields ``(done, total)`` per task
    (``total = len(batches(...))``); closing the generator cancels the tasks
    not yet started. Returns ``(C, *spatial)``.
    """

    spatial = tuple(y.shape[1:])
    nch = y.shape[0] // _GROUPS
    margin = guided_margin(cfg.patch_size)
    pieces = plan(spatial, tiles, margin)
    tasks = batches(spatial, tiles, cfg, nch)
    # columns in tile order: the random sequence does not depend on the batching
    # (drawn on a worker: the per-tile convolutions stay off torch's OpenMP team)
    columns = _parallel.run(_draw_all, y[nch : 2 * nch], pieces, cfg, rng)
    jobs = [
        (
            y,
            [pieces[i] for i in task],
            [columns[i] for i in task],
            sigma,
            cfg,
            eps,
        )
        for task in tasks
    ]
    futures = _parallel.submit_all(_run_batch, jobs)
    try:
        if len(pieces) == 1:
            (z,) = futures[0].result()
            yield (1, 1)
            return z
        acc = y.new_zeros((nch, *spatial))
        wsum = torch.zeros(spatial, dtype=y.dtype, device=y.device)
        for k, (task, future) in enumerate(zip(tasks, futures, strict=True)):
            for i, zi in zip(task, future.result(), strict=True):
                tile = pieces[i]
                w = torch.from_numpy(tile_weights(tile, spatial, margin, cfg.patch_size))
                w = w.to(device=y.device, dtype=y.dtype)
                acc[(slice(None), *tile)] += zi * w
                wsum[tile] += w
            yield (k + 1, len(tasks))
    finally:
        for future in futures:
            future.cancel()
    return acc / wsum


def iter_guided_plane(
    stack: torch.Tensor,
    sigma: float,
    cfg: Any,
    rng: torch.Generator,
    *,
    eps: float,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Guided twicing of one (tile of a) plane or volume in one piece; ``stack`` as in
    :func:`guided_stack`, channels first. Returns ``(C, *spatial)``.
    """
    return (yield from iter_guided(stack, sigma, cfg, rng, eps=eps, tiles=None))
