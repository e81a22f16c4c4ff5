"""Stage 2: an eigenbasis of the NTD filter, exact or by Nystrom (appendix G).

This is where kernel columns become eigenimages.

Both functions are generators: they yield ``None`` once per unit of work
(one block of kernel rows, one eigendecomposition) so that callers can report
progress and stop between steps, and return a :class:`Basis` as the
generator's value (``basis = yield from nystrom_basis(...)``).
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._kernel import exact_kernel, ntk_block

__all__ = [
    "Basis",
    "empty_basis",
    "exact_basis",
    "n_blocks",
    "nystrom_basis",
    "nystrom_from_patches",
    "patches_at",
]


@dataclass(frozen=True)
class Basis:
    """Eigenpairs of a filter matrix ``W ~= V diag(values) V^T``.

    Attributes
    ----------
    vectors : Tensor, shape (d, k)
        Eigenimages (flattened, row-major), one per column.
    values : Tensor, shape (k,)
        Eigenvalues in decreasing order, scaled so that the largest is 1.
    """

    vectors: torch.Tensor
    values: torch.Tensor


def empty_basis(x: torch.Tensor, d: int) -> Basis:
    """The basis of a zero filter (all patches zero): twicing then outputs 0."""
    return Basis(vectors=x.new_zeros((d, 0)), values=x.new_zeros(0))


def n_blocks(n: int, block: int) -> int:
    """Number of blocks of size ``block`` covering ``n`` items."""
    return -(-n // block)


def _eig_tolerance(dtype: torch.dtype) -> float:
    # Eigenvalues below this fraction of the largest are round-off of the
    # kernel evaluation; dividing by them in eq. (71) would amplify it.
    return 1e-5 if dtype == torch.float32 else 1e-10


def patches_at(xpad: torch.Tensor, index: torch.Tensor, width: int, r: int) -> torch.Tensor:
    """Patches of a padded ``(C, H + r - 1, W + r - 1)`` image at flat pixel indices.

    Same layout as :func:`napari_ntd._kernel.patch_matrix` (channel-major).
    """
    off = torch.arange(r, device=xpad.device)
    rows = (index // width)[:, None, None] + off[None, :, None]
    cols = (index % width)[:, None, None] + off[None, None, :]
    p = xpad[:, rows, cols]  # (C, n, r, r)
    return p.permute(1, 0, 2, 3).reshape(index.numel(), -1)


def _row_slabs(height: int, width: int, block_pixels: int) -> list[tuple[int, int]]:
    rows = max(1, block_pixels // width)
    return [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)]


def _top_eigh(a: torch.Tensor, rank: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading eigenpairs (descending, float64) of a symmetric matrix.

    On the CPU, when few eigenpairs are wanted, LAPACK's ``syevr`` computes
    only those (about 3x faster than the full decomposition at m = 5000).
    """
    m = a.shape[0]
    if a.device.type == "cpu" and rank is not None and rank < m // 2:
        from scipy.linalg import eigh

        w, v = eigh(a.double().numpy(), subset_by_index=[m - rank, m - 1], driver="evr")
        w, v = torch.from_numpy(w), torch.from_numpy(v)
    else:
        w, v = torch.linalg.eigh(a.double())
    return w.flip(0), v.flip(1)


def nystrom_basis(
    x: torch.Tensor,
    columns: torch.Tensor,
    *,
    patch_size: int,
    rank: int | None = None,
    block_pixels: int = 4096,
) -> Generator[None, None, Basis]:
    """Nystrom eigenbasis of the NTD filter of a ``(C, H, W)`` image.

    Parameters
    ----------
    x : Tensor, shape (C, H, W)
        Centred image; all channels share one kernel (appendix E).
    columns : Tensor of int64, shape (m,)
        Flat indices of the pixels whose kernel columns are computed.
    patch_size : int
        Side ``r`` of the first convolution (odd).
    rank : int, optional
        Keep at most this many leading eigenpairs (default: all that are
        numerically non-zero). The extension costs ``d * m * rank``.
    block_pixels : int
        Kernel rows computed at once; memory is ``O(block_pixels * m)``.

    Notes
    -----
    Appendix G: ``Theta_mm = V~ diag(l~) V~^T``, ``v_i = sqrt(m/d) / l~_i *
    Theta_dm v~_i`` and ``lambda_i = d/m l~_i``, then eigenvalues are scaled
    so that the largest is 1. ``Theta_dm`` is never stored: it is computed in
    blocks of rows and multiplied straight away by the ``m x k`` projection.
    The returned basis is the exact (orthonormal) eigenbasis of the Nystrom
    matrix ``W = sum_i lambda_i v_i v_i^T`` (see :func:`_orthonormal_basis`),
    so that closed-form twicing equals eq. (5) iterated with that ``W``.
    """
    _, h, w = x.shape
    r = patch_size
    pad = r // 2
    xpad = F.pad(x, (pad, pad, pad, pad))
    rows = (
        (slice(r0 * w, r1 * w), F.unfold(xpad[None, :, r0 : r1 + 2 * pad], kernel_size=r)[0].T)
        for r0, r1 in _row_slabs(h, w, block_pixels)
    )
    return (
        yield from nystrom_from_patches(
            patches_at(xpad, columns, w, r), rows, h * w, rank=rank, block_pixels=block_pixels
        )
    )


def nystrom_from_patches(
    p_m: torch.Tensor,
    row_blocks: Iterable[tuple[slice, torch.Tensor]],
    d: int,
    *,
    rank: int | None,
    block_pixels: int,
) -> Generator[None, None, Basis]:
    """Appendix G from patches: the core shared by 2D and 3D (``_kernel3d``) patches.

    ``p_m`` holds the ``m`` column patches; ``row_blocks`` yields
    ``(rows, patches)`` covering all ``d`` pixels, computed lazily so that
    only one block of patches and of kernel rows exists at a time.
    """
    m = p_m.shape[0]
    sq_m = (p_m * p_m).sum(1)
    k_mm = torch.empty((m, m), dtype=p_m.dtype, device=p_m.device)
    for i0 in range(0, m, block_pixels):
        i1 = min(i0 + block_pixels, m)
        k_mm[i0:i1] = ntk_block(p_m[i0:i1], p_m, sq_m[i0:i1], sq_m)
        yield
    evals, evecs = _top_eigh(0.5 * (k_mm + k_mm.T), rank)
    del k_mm
    yield
    top = evals[0].item()
    if not top > 0:  # all sampled patches are zero: no filter (output 0)
        return empty_basis(p_m, d)
    keep = int((evals > _eig_tolerance(p_m.dtype) * top).sum())
    if rank is not None:
        keep = min(keep, rank)
    evals, evecs = evals[:keep], evecs[:, :keep]
    proj = (evecs / evals * math.sqrt(m / d)).to(p_m.dtype)

    vectors = torch.empty((d, keep), dtype=p_m.dtype, device=p_m.device)
    for rows, p_b in row_blocks:
        sq_b = (p_b * p_b).sum(1)
        vectors[rows] = ntk_block(p_b, p_m, sq_b, sq_m) @ proj
        yield
    return _orthonormal_basis(vectors, evals / top, block_pixels)


def _orthonormal_basis(v: torch.Tensor, lam: torch.Tensor, block: int) -> Basis:
    """Exact eigenpairs of the Nystrom filter ``W = V diag(lam) V^T``, in place.

    The extended vectors of eq. (71) are only approximately orthonormal, so
    ``V g(lam) V^T y`` is not the twicing of ``W``. With ``B = V diag(lam)^1/2``
    (``W = B B^T``) and ``B^T B = U S U^T``, the eigenvectors of ``W`` are
    ``B U S^-1/2`` with eigenvalues ``S``; then twicing in this basis equals
    iterating ``z <- z + W (y - z)`` (eq. 5) with the Nystrom matrix exactly.
    Costs ``O(d k^2)``; ``v`` is overwritten block by block.
    """
    scale = lam.sqrt()  # float64
    gram = torch.zeros((v.shape[1],) * 2, dtype=torch.float64, device=v.device)
    for i0 in range(0, v.shape[0], block * 8):
        b = v[i0 : i0 + block * 8].double() * scale
        gram += b.T @ b
    s, u = torch.linalg.eigh(gram)
    s, u = s.flip(0), u.flip(1)
    keep = int((s > _eig_tolerance(v.dtype) * s[0]).sum())
    s, u = s[:keep], u[:, :keep]
    rot = (scale[:, None] * u / s.sqrt()).to(v.dtype)  # (k, keep)
    out = torch.empty((v.shape[0], keep), dtype=v.dtype, device=v.device)
    for i0 in range(0, v.shape[0], block * 8):
        out[i0 : i0 + block * 8] = v[i0 : i0 + block * 8] @ rot
    return Basis(vectors=out, values=(s / s[0]).to(v.dtype))


def nystrom_steps(height: int, width: int, m: int, block_pixels: int = 4096) -> int:
    """Number of progress steps :func:`nystrom_basis` yields."""
    return n_blocks(m, block_pixels) + 1 + len(_row_slabs(height, width, block_pixels))


def exact_basis(x: torch.Tensor, *, patch_size: int) -> Generator[None, None, Basis]:
    """Full eigendecomposition of the ``d x d`` NTD filter (small images)."""
    k = exact_kernel(x, patch_size).double()
    yield
    evals, evecs = torch.linalg.eigh(0.5 * (k + k.T))
    yield
    evals, evecs = evals.flip(0), evecs.flip(1)
    top = evals[0].item()
    if not top > 0:  # the centred image is zero: no filter (output 0)
        return empty_basis(x, k.shape[0])
    evals = evals.clamp_min(0.0)
    return Basis(vectors=evecs.to(x.dtype), values=(evals / top).to(x.dtype))


EXACT_STEPS = 2
