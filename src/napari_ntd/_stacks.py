"""Stacks and volumes: leading axes as independent images, or true 3D patches.

``spatial_dims=2`` (default): an array ``(..., H, W[, C])`` is a stack of 2D
images; every leading index is denoised on its own, exactly as a 2D call
would do it. Slice ``k`` (flat C-order index over the leading axes) uses
seed ``seed + k``, so ``denoise_ntd(stack, seed=s)[k] ==
denoise_ntd(stack[k], seed=s + k)`` for a 3D stack (``[i, j]`` with
``k = i * n_j + j`` for 4D).

``spatial_dims=3``: the last three axes ``(D, H, W)`` form a volume, the
kernel compares ``r x r x r`` patches (:mod:`napari_ntd._kernel3d`), and the
filter is non-local over the whole volume. Leading axes (e.g. time) are
again independent, with the same seed rule.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch

from . import _twicing
from ._kernel3d import nystrom_basis_3d, nystrom_steps_3d

__all__ = ["slice_seed", "iter_stack", "iter_denoise_volume"]


def slice_seed(seed: int | None, index: int) -> int | None:
    """Seed of the ``index``-th image of a stack (``seed + index``)."""
    return None if seed is None else int(seed) + int(index)


def iter_stack(
    img: np.ndarray,
    n_leading: int,
    per_image: Callable[[np.ndarray, int | None], Generator[tuple[int, int], None, np.ndarray]],
    seed: int | None,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Run ``per_image(img[idx], slice_seed(seed, k))`` over the leading indices.

    ``img`` has ``n_leading`` leading axes; the result has ``img``'s shape.
    """
    from ._denoise import nested_progress

    if n_leading == 0:
        return (yield from per_image(img, seed))
    lead = img.shape[:n_leading]
    count = int(np.prod(lead))
    out = None
    for k, idx in enumerate(np.ndindex(*lead)):
        res = yield from nested_progress(per_image(img[idx], slice_seed(seed, k)), k, count)
        if out is None:
            out = np.empty(img.shape, dtype=res.dtype)
        out[idx] = res
    return out


def iter_denoise_volume(
    y: torch.Tensor, sigma: float, cfg: Any, rng: torch.Generator
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Denoise one centred ``(C, D, H, W)`` volume with ``r x r x r`` patches.

    The 3D counterpart of :func:`napari_ntd._denoise.iter_denoise_plane`
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
    done = 0

    def counted(gen):
        nonlocal done
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
            done += 1
            yield (done, total)

    basis = yield from counted(make_basis(y))
    y_flat = y.reshape(nch, d)
    if auto:
        spread = float(y.max() - y.min())
        eps = 1e-2 * max(sigma, 1e-3 * spread, torch.finfo(y.dtype).eps)
        b = torch.randn(y.shape, generator=rng, dtype=y.dtype).to(dev)
        y_eps = y + eps * b
        b_flat = b.reshape(nch, d)
        proj = _twicing.project(basis, y_flat, b_flat)
        basis_eps = yield from counted(make_basis(y_eps))
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
