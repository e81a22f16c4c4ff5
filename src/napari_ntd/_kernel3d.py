"""True 3D patches: the NTK of an ``r x r x r`` first convolution, by Nystrom.

The same network as :mod:`napari_ntd._kernel` with a 3D convolution; the
kernel ``Theta(p, q)`` depends on patches only through inner products and
norms, so :func:`napari_ntd._kernel.ntk_from_gram` applies unchanged with
``n0 = channels * r**3``. Here a voxel's ``r x r x r`` patch becomes a kernel
column, and (as in :func:`napari_ntd._nystrom.nystrom_basis`) columns become
eigenimages by the Nystrom extension, in blocks of voxels.
"""

from __future__ import annotations

import math
from collections.abc import Generator

import torch
import torch.nn.functional as F

from ._kernel import ntk_from_gram
from ._nystrom import (
    Basis,
    _eig_tolerance,
    _orthonormal_basis,
    _top_eigh,
    empty_basis,
    n_blocks,
)

__all__ = ["patches_at_3d", "nystrom_basis_3d", "nystrom_steps_3d"]


def patches_at_3d(
    xpad: torch.Tensor, index: torch.Tensor, shape: tuple[int, int, int], r: int
) -> torch.Tensor:
    """Patches of a padded ``(C, D + r - 1, H + r - 1, W + r - 1)`` volume at flat indices.

    Returns ``(len(index), C * r**3)``, channel-major then (z, y, x).
    """
    _, h, w = shape
    off = torch.arange(r, device=xpad.device)
    iz = (index // (h * w))[:, None, None, None] + off[None, :, None, None]
    iy = ((index // w) % h)[:, None, None, None] + off[None, None, :, None]
    ix = (index % w)[:, None, None, None] + off[None, None, None, :]
    p = xpad[:, iz, iy, ix]  # (C, n, r, r, r)
    return p.permute(1, 0, 2, 3, 4).reshape(index.numel(), -1)


def nystrom_steps_3d(d: int, m: int, block_pixels: int = 4096) -> int:
    """Number of progress steps :func:`nystrom_basis_3d` yields."""
    return n_blocks(m, block_pixels) + 1 + n_blocks(d, block_pixels)


def nystrom_basis_3d(
    x: torch.Tensor,
    columns: torch.Tensor,
    *,
    patch_size: int,
    rank: int | None = None,
    block_pixels: int = 4096,
) -> Generator[None, None, Basis]:
    """Nystrom eigenbasis of the 3D NTD filter of a ``(C, D, H, W)`` volume.

    Same algorithm and return value as :func:`napari_ntd._nystrom.nystrom_basis`
    (appendix G), with zero-padded ``r x r x r`` patches.
    """
    c, dz, h, w = x.shape
    shape = (dz, h, w)
    r = patch_size
    d = dz * h * w
    m = columns.numel()
    n0 = c * r**3
    pad = r // 2
    xpad = F.pad(x, (pad, pad, pad, pad, pad, pad))
    p_m = patches_at_3d(xpad, columns, shape, r)
    sq_m = (p_m * p_m).sum(1)

    k_mm = torch.empty((m, m), dtype=x.dtype, device=x.device)
    for i0 in range(0, m, block_pixels):
        i1 = min(i0 + block_pixels, m)
        k_mm[i0:i1] = ntk_from_gram(p_m[i0:i1] @ p_m.T, sq_m[i0:i1], sq_m, n0)
        yield
    evals, evecs = _top_eigh(0.5 * (k_mm + k_mm.T), rank)
    del k_mm
    yield
    top = evals[0].item()
    if not top > 0:  # all sampled patches are zero: no filter (output 0)
        return empty_basis(x, d)
    keep = int((evals > _eig_tolerance(x.dtype) * top).sum())
    if rank is not None:
        keep = min(keep, rank)
    evals, evecs = evals[:keep], evecs[:, :keep]
    proj = (evecs / evals * math.sqrt(m / d)).to(x.dtype)

    vectors = torch.empty((d, keep), dtype=x.dtype, device=x.device)
    for i0 in range(0, d, block_pixels):
        i1 = min(i0 + block_pixels, d)
        p_b = patches_at_3d(xpad, torch.arange(i0, i1, device=x.device), shape, r)
        sq_b = (p_b * p_b).sum(1)
        vectors[i0:i1] = ntk_from_gram(p_b @ p_m.T, sq_b, sq_m, n0) @ proj
        yield
    # the exact eigenbasis of the Nystrom matrix, as in 2D
    return _orthonormal_basis(vectors, evals / top, block_pixels)
