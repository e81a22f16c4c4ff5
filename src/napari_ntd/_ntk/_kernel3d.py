"""True 3D patches: the NTK of an ``r x r x r`` first convolution, by Nystrom.

The same network as :mod:`napari_ntd._kernel` with a 3D convolution; the
kernel ``Theta(p, q)`` depends on patches only through inner products and
norms, so :func:`napari_ntd._kernel.ntk_from_gram` applies unchanged with
``n0 = channels * r**3``. Here a voxel's ``r x r x r`` patch becomes a kernel
column, and (as in :func:`napari_ntd._nystrom.nystrom_basis`) columns become
eigenimages by the Nystrom extension, in blocks of voxels.
"""

from __future__ import annotations

from collections.abc import Generator

import torch
import torch.nn.functional as F

from ._nystrom import Basis, n_blocks, nystrom_from_patches

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
    _, dz, h, w = x.shape
    shape = (dz, h, w)
    r = patch_size
    d = dz * h * w
    pad = r // 2
    xpad = F.pad(x, (pad, pad, pad, pad, pad, pad))
    rows = (
        (
            slice(i0, min(i0 + block_pixels, d)),
            patches_at_3d(
                xpad, torch.arange(i0, min(i0 + block_pixels, d), device=x.device), shape, r
            ),
        )
        for i0 in range(0, d, block_pixels)
    )
    return (
        yield from nystrom_from_patches(
            patches_at_3d(xpad, columns, shape, r), rows, d, rank=rank, block_pixels=block_pixels
        )
    )
