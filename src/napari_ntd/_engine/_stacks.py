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

import numpy as np

from .._util._progress import nested_progress

__all__ = ["slice_seed", "iter_stack"]


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
