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
4. **Stopping.** One ``t`` per channel by Monte-Carlo SURE of the whole map
   ``y -> z^t`` (pilot included), on a sample of tiles whose pilot is rerun
   on ``y + eps b`` (:mod:`napari_ntd._guided_sure`).

The work runs in tiles (``GUIDED_TILE``): a tile's Nystrom basis has rank at
most ``m`` and the correction ``V g V^T (y - p)`` lives in its span, so
smaller pieces give more degrees of freedom per pixel at a lower cost. The
tiles overlap by ``2 * guided_margin(r)`` (``r // 2 + 1``, not the
``2 r`` of the paper's method): the correction is small next to the pilot,
so a short cross-fade past the zero-weight band suffices (measured on the
benchmark crops: -0.02 dB, 30 % less time).

Volumes (``spatial_dims=3``) work the same way with a 3D pilot, ``r x r x r``
patches (:mod:`napari_ntd._kernel3d`) and ``GUIDED_TILE_3D`` tiles.

Channel groups: the tiled core receives one ``(2 C, *spatial)`` tensor
holding ``y`` and ``p`` (``C`` channels each), so that tiling cuts both alike.

Speed (issue 13): a tile is small (``d = 4096`` pixels, ``m = 64`` columns),
so the work is hundreds of small kernel blocks and eigendecompositions. The
tiles' columns are drawn in tile order (so a seed fixes the result), then
batches of tiles run as tasks on the compute pool (:mod:`napari_ntd._parallel`:
one single-threaded torch worker per core, nothing spin-waits on a busy
machine), each batch with batched ``eigh``/``bmm``. The Nystrom eigenbasis is
never formed: with the kernel rows ``K`` (``d x m``) and a small ``m x m``
matrix ``Q``, ``V = K Q``, so the orthonormalisation needs ``K^T K`` only
(one ``d m^2`` product instead of three). The kernel rows are one
convolution of the tile with the column patches (2D), and at a given ``t``
the rows and ``K^T K`` stay in float32 (SURE's bases use float64).
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
from . import _guided_sure, _twicing
from ._kernel import ntk_block, ntk_from_gram, patch_sq_norms
from ._kernel3d import patches_at_3d
from ._nystrom import _eig_tolerance, patches_at

__all__ = [
    "GUIDED_TILE",
    "GUIDED_TILE_3D",
    "GUIDED_COLUMNS",
    "guided_margin",
    "draw_columns",
    "nystrom_bases",
    "sure_batch",
    "twice_batch",
    "batches",
    "n_steps",
    "iter_guided",
]

#: Default tile side of ``method="guided"`` (pixels).
GUIDED_TILE = 64

#: Default tile side of ``method="guided"`` for volumes (voxels).
GUIDED_TILE_3D = 16

#: Default Nystrom columns of ``method="guided"`` (``n_columns``): 1/64 of a
#: tile's pixels, i.e. 64 in a 64^2 tile rather than 2 % (82). Measured on the
#: 10 benchmark crops: -0.002 / -0.004 / -0.004 dB at sigma 15 / 25 / 50, the
#: NTK stage 20 % faster (30 -> 26 % of the default's time at 512^2).
GUIDED_COLUMNS = 1 / 64

#: Most tiles in one task of the compute pool (progress and load balance).
BATCH_TILES = 4

#: Bytes of kernel rows and coefficients one twicing task may hold (counted as
#: float64; the rows are float32 at a fixed t, so this is an upper bound).
BATCH_BYTES = 64 * 2**20


def guided_margin(patch_size: int) -> int:
    """Half the overlap of the guided method's tiles."""
    return patch_size // 2 + 1


def _sq_norms(x: torch.Tensor, r: int) -> torch.Tensor:
    """Squared norms of the zero-padded patches of a ``(C, *spatial)`` plane or volume."""
    if x.dim() == 3:
        return patch_sq_norms(x, r)
    sq = (x * x).sum(0, keepdim=True)[None]
    ones = torch.ones((1, 1, r, r, r), dtype=x.dtype, device=x.device)
    return F.conv3d(sq, ones, padding=r // 2).reshape(-1)


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

    ``kernel_t`` (B, m, d) float64 or float32: the kernel rows ``Theta(q_j,
    p_i)`` of the columns ``q_j``; ``q`` (B, m, m) float64; ``values`` (B, m) float64 in
    [0, 1], largest 1, zero for dropped directions (whose columns of ``q`` are
    zero).
    """

    kernel_t: torch.Tensor
    q: torch.Tensor
    values: torch.Tensor

    def __getitem__(self, index: slice) -> Bases:
        return Bases(self.kernel_t[index], self.q[index], self.values[index])

    def vectors(self) -> torch.Tensor:
        """The eigenvectors ``V`` (B, d, m), formed (for references and benchmarks)."""
        return self.kernel_t.transpose(1, 2).double() @ self.q

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        """``V^T x`` for ``x`` (B, C, d): (B, C, m)."""
        kt = self.kernel_t
        return (x.to(kt.dtype) @ kt.transpose(1, 2)).double() @ self.q

    def synth(self, a: torch.Tensor) -> torch.Tensor:
        """``V a`` for coefficients ``a`` (B, C, m): (B, C, d)."""
        kt = self.kernel_t
        return ((a @ self.q.transpose(1, 2)).to(kt.dtype) @ kt).double()


def _flip_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a batch of symmetric matrices, largest first."""
    w, v = torch.linalg.eigh(0.5 * (a + a.transpose(-1, -2)))
    return w.flip(-1), v.flip(-1)


def _kernel_rows(x: torch.Tensor, columns: torch.Tensor, r: int) -> tuple[torch.Tensor, ...]:
    """``Theta(q_j, .)`` over a ``(C, *spatial)`` tile (m, d) and ``Theta(q_j, q_k)`` (m, m).

    The inner products of every patch with the column patches are one
    convolution of the tile with them (no patch matrix: 1.4x faster per 2D
    tile, 1.7x per 3D one).
    """
    c, *spatial = x.shape
    pad = r // 2
    xpad = F.pad(x, (pad,) * (2 * len(spatial)))
    if x.dim() == 3:
        p_m = patches_at(xpad, columns, spatial[1], r)  # (m, C r r), channel-major
        inner = F.conv2d(xpad[None], p_m.reshape(-1, c, r, r))
    else:
        p_m = patches_at_3d(xpad, columns, tuple(spatial), r)  # (m, C r r r)
        inner = F.conv3d(xpad[None], p_m.reshape(-1, c, r, r, r))
    inner = inner[0].reshape(len(columns), -1)
    sq = _sq_norms(x, r)
    sq_m = sq[columns]
    k_mm = ntk_block(p_m, p_m, sq_m, sq_m)
    return ntk_from_gram(inner, sq_m, sq, p_m.shape[1]), k_mm


def nystrom_bases(
    x: torch.Tensor, columns: torch.Tensor, cfg: Any, *, precise: bool = True
) -> Bases:
    """The exact eigenbasis of each tile's Nystrom filter (appendix G).

    ``x`` (B, C, *spatial): the images the kernel compares (pilots);
    ``columns`` (B, m): the column pixels. Same filter as
    :func:`napari_ntd._nystrom.nystrom_basis`: with ``Theta_mm = U Lambda U^T``
    and ``A = K U Lambda^-1/2`` (``W ~ A A^T``), ``A^T A = R S R^T`` gives
    ``W``'s eigenvectors ``A R S^-1/2`` and eigenvalues ``S`` (scaled so that
    the largest is 1). Directions below the round-off tolerance (and past
    ``cfg.rank``) are dropped, as there.

    ``precise``: the kernel rows and ``K^T K`` in float64, as SURE needs
    (float32 there: -0.35 dB); else in ``x``'s dtype, as twicing at a given
    ``t`` can afford (float32: outputs within 1e-3 dB at t = 30 on the
    benchmark crops, 0.035 dB at t = 1000, against 2x the cost of the product).
    """
    r = cfg.patch_size
    b, m = columns.shape
    d = math.prod(x.shape[2:])
    tol = _eig_tolerance(x.dtype)
    k_mm = x.new_empty((b, m, m))
    dtype = torch.float64 if precise else x.dtype
    kernel_t = torch.empty((b, m, d), dtype=dtype, device=x.device)
    for i in range(b):
        kernel_t[i], k_mm[i] = _kernel_rows(x[i], columns[i], r)
    lam, u = _flip_eigh(k_mm.double())
    top = lam[:, :1]
    keep = (lam > tol * top) & (top > 0)
    if cfg.rank is not None:
        keep &= torch.arange(m, device=x.device) < cfg.rank
    d_inv = u * torch.where(keep, lam.clamp_min(1e-300).rsqrt(), 0.0)[:, None, :]  # U Lambda^-1/2
    gram = (kernel_t @ kernel_t.transpose(1, 2)).double()  # K^T K
    s, rot = _flip_eigh(d_inv.transpose(1, 2) @ gram @ d_inv)
    s0 = s[:, :1]
    keep = (s > tol * s0) & (s0 > 0)
    q = d_inv @ rot * torch.where(keep, s.clamp_min(1e-300).rsqrt(), 0.0)[:, None, :]
    values = torch.where(keep, s / s0.clamp_min(1e-300), 0.0)
    return Bases(kernel_t=kernel_t, q=q, values=values)


def _groups(stack: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The ``n`` channel groups of a ``(B, n C, *spatial)`` stack, each ``(B, C, d)`` float64."""
    b, nch = stack.shape[0], stack.shape[1] // n
    return [stack[:, i * nch : (i + 1) * nch].reshape(b, nch, -1).double() for i in range(n)]


def sure_batch(
    stack: torch.Tensor, columns: torch.Tensor, sigma: float, cfg: Any, eps: float
) -> torch.Tensor:
    """Monte-Carlo SURE risk of a batch of tiles, for each candidate ``t``.

    ``stack`` (B, 5 C, *spatial): ``y``, the pilot ``p``, ``y + eps b``, the
    perturbed image's pilot and the probe ``b``; ``columns`` (B, m). Returns
    (B, C, T), ``t`` over :func:`napari_ntd._guided_sure.candidates`: the sum
    over the tile's pixels of ``(y - z^t)^2 - sigma^2`` plus ``2 sigma^2``
    times the divergence ``b^T (z^t(y + eps b) - z^t(y)) / eps``.
    """
    b = stack.shape[0]
    nch = stack.shape[1] // 5
    y, p, y_eps, p_eps, probe = _groups(stack, 5)
    d = y.shape[-1]
    # the perturbed run needs its own basis: keeping the pilot's (leaving the
    # filter's dependence on y out of the divergence) made SURE pick too large
    # a t (-0.47 dB mean on the benchmark crops)
    pilots = torch.cat([stack[:, nch : 2 * nch], stack[:, 3 * nch : 4 * nch]])
    bases = nystrom_bases(pilots, torch.cat([columns, columns]), cfg)
    g_all = _twicing.gains(bases.values, _guided_sure.candidates())  # (2B, T, m)
    g, g_eps = g_all[:b], g_all[b:]
    base, eps_base = bases[:b], bases[b:]
    r = y - p
    c = base.coef(r)  # (B, C, m)
    c_eps = eps_base.coef(y_eps - p_eps)
    # z^t = p + V (g_t * c); V has orthonormal columns, so
    # ||y - z^t||^2 = ||y - p||^2 - 2 <g_t c, c> + ||g_t c||^2.
    res = (r**2).sum(-1)[..., None] - (g[:, None] * (2.0 - g[:, None]) * (c**2)[:, :, None]).sum(-1)
    b_z = (probe * p).sum(-1)[..., None] + (g[:, None] * (c * base.coef(probe))[:, :, None]).sum(-1)
    b_z_eps = (probe * p_eps).sum(-1)[..., None] + (
        g_eps[:, None] * (c_eps * eps_base.coef(probe))[:, :, None]
    ).sum(-1)
    div = (b_z_eps - b_z) / eps
    return res - d * sigma**2 + 2.0 * sigma**2 * div  # (B, C, T)


def twice_batch(
    stack: torch.Tensor, columns: torch.Tensor, t: Sequence[int], cfg: Any
) -> torch.Tensor:
    """Guided twicing of a batch of tiles ``stack`` (B, 2 C, *spatial): ``y`` and ``p``.

    Returns ``z^t = p + V g_t V^T (y - p)`` (B, C, *spatial) with ``t[c]``
    iterations for channel ``c``; ``columns`` (B, m).
    """
    b = stack.shape[0]
    nch = stack.shape[1] // 2
    spatial = tuple(stack.shape[2:])
    y, p = _groups(stack, 2)
    base = nystrom_bases(stack[:, nch:], columns, cfg, precise=False)
    g = _twicing.gains(base.values, np.asarray(t))  # (B, C, m)
    z = p + base.synth(g * base.coef(y - p))
    return z.reshape(b, nch, *spatial).to(stack.dtype)


def _run_batch(
    y: torch.Tensor,
    pieces: list[tuple[slice, ...]],
    columns: list[torch.Tensor | None],
    t: Sequence[int],
    cfg: Any,
) -> list[torch.Tensor]:
    """One task: twice tiles of one shape, batched by column count (usually all alike).

    The tiles are cut from the whole ``(2 C, *spatial)`` stack ``y`` here, so
    that only the running tasks' tiles are ever copied.
    """
    tiles = [y[(slice(None), *tile)] for tile in pieces]
    out: list[torch.Tensor | None] = [None] * len(tiles)
    nch = tiles[0].shape[0] // 2
    counts = [0 if c is None else c.numel() for c in columns]
    with torch.no_grad():
        for m in dict.fromkeys(counts):
            idx = [i for i, c in enumerate(counts) if c == m]
            stack = torch.stack([tiles[i] for i in idx])
            if m == 0:  # the pilot is zero (centred constant): keep it
                z = stack[:, nch:].clone()
            else:
                cols = torch.stack([columns[i] for i in idx]).to(stack.device)
                z = twice_batch(stack, cols, t, cfg)
            for i, zi in zip(idx, z, strict=True):
                out[i] = zi
    return out


def _sure_task(stack: torch.Tensor, columns: torch.Tensor, sigma: float, cfg: Any, eps: float):
    """One task: the SURE curves (1, C, T) of one sample tile (:func:`sure_batch`)."""
    with torch.no_grad():
        return sure_batch(stack[None], columns[None].to(stack.device), sigma, cfg, eps)


def _batch_size(d: int, m: int, nch: int) -> int:
    """Twicing tiles per task within :data:`BATCH_TILES` and :data:`BATCH_BYTES`."""
    per_tile = 8 * (d * m + 2 * m * m + nch * m * 3)
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
    """Tile indices of each twicing task of :func:`iter_guided`."""
    pieces = plan(spatial, tiles, guided_margin(cfg.patch_size))
    d = math.prod(sl.stop - sl.start for sl in pieces[0])
    size = _batch_size(d, cfg.columns(d), channels)
    return [list(range(i, min(i + size, len(pieces)))) for i in range(0, len(pieces), size)]


def n_steps(spatial: Sequence[int], tiles: Sequence[int] | None, cfg: Any, channels: int) -> int:
    """Progress steps of :func:`iter_guided`: the SURE step (``n_iter='auto'``) and the tasks."""
    return int(cfg.n_iter == "auto") + len(batches(spatial, tiles, cfg, channels))


def _draw_all(pilot: torch.Tensor, pieces, cfg: Any, rng: torch.Generator):
    """:func:`draw_columns` of every tile, in tile order."""
    with torch.no_grad():
        return [draw_columns(pilot[(slice(None), *t)], cfg, rng) for t in pieces]


def _sample_stacks(
    y: torch.Tensor,
    pieces: list[tuple[slice, ...]],
    sample: _guided_sure.SureSample,
    perturbed: Sequence[np.ndarray],
) -> list[torch.Tensor]:
    """The ``(5 C, *tile)`` input of :func:`sure_batch` for each sample tile."""
    nch = y.shape[0] // 2
    nd = y.dim() - 1
    out = []
    for k, i in enumerate(sample.tiles):
        inner = sample.inner(k, pieces[i])

        def tensor(a: np.ndarray, inner=inner) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a[inner])).permute(nd, *range(nd)).to(y)

        part = y[(slice(None), *pieces[i])]
        probe = tensor(sample.probes[k])
        y_t, p_t = part[:nch], part[nch:]
        out.append(torch.cat([y_t, p_t, y_t + sample.eps * probe, tensor(perturbed[k]), probe]))
    return out


def iter_guided(
    y: torch.Tensor,
    sigma: float,
    cfg: Any,
    rng: torch.Generator,
    *,
    tiles: Sequence[int] | None = None,
    sample: _guided_sure.SureSample | None = None,
    perturbed: Sequence[np.ndarray] = (),
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """The guided NTK stage of a ``(2 C, *spatial)`` stack: ``y`` and its pilot ``p``.

    Tiles of ``tiles`` (``None``: one piece) overlapping by
    ``2 * guided_margin(patch_size)``, cross-faded as in
    :func:`napari_ntd._tiling.iter_tiled`. ``t`` is ``cfg.n_iter``, or for
    ``'auto'`` the SURE choice (:mod:`napari_ntd._guided_sure`) from
    ``sample`` and the pilots of its ``perturbed`` crops ``(*crop, C)``.
    Yields ``(done, total)`` per step (:func:`n_steps`); closing the generator
    cancels the tasks not yet started. Returns ``(C, *spatial)``.
    """

    spatial = tuple(y.shape[1:])
    nch = y.shape[0] // 2
    margin = guided_margin(cfg.patch_size)
    pieces = plan(spatial, tiles, margin)
    tasks = batches(spatial, tiles, cfg, nch)
    total = n_steps(spatial, tiles, cfg, nch)
    # columns in tile order: the random sequence does not depend on the batching
    # (drawn on a worker: the per-tile convolutions stay off torch's OpenMP team)
    columns = _parallel.run(_draw_all, y[nch:], pieces, cfg, rng)
    if cfg.n_iter == "auto":
        if sample is None:
            raise ValueError("n_iter='auto' needs a SURE sample")
        stacks = _sample_stacks(y, pieces, sample, perturbed)
        # one tile per task: a few tasks, balanced over the workers even when
        # another process takes a core; a constant tile (no columns) has no say
        jobs = [
            (stack, columns[i], sigma, cfg, sample.eps)
            for stack, i in zip(stacks, sample.tiles, strict=True)
            if columns[i] is not None
        ]
        futures = _parallel.submit_all(_sure_task, jobs)
        try:
            curves = [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()
        t = _guided_sure.choose(curves) if curves else np.zeros(nch, dtype=np.int64)
        yield (1, total)
    else:
        t = np.full(nch, int(cfg.n_iter))
    done = total - len(tasks)
    if not t.any():  # the pilot: no twicing to run
        for k in range(len(tasks)):
            yield (done + k + 1, total)
        return y[nch:].clone()
    jobs = [(y, [pieces[i] for i in task], [columns[i] for i in task], t, cfg) for task in tasks]
    futures = _parallel.submit_all(_run_batch, jobs)
    try:
        if len(pieces) == 1:
            (z,) = futures[0].result()
            yield (total, total)
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
            yield (done + k + 1, total)
    finally:
        for future in futures:
            future.cancel()
    return acc / wsum
