"""Dask arrays in, lazy dask arrays out (out-of-core stacks, napari dask layers).

The graph is one :func:`dask.array.map_blocks` task per chunk of leading
(stack) indices. The spatial and channel axes are merged into single chunks
first, so that every image is denoised whole, exactly as with numpy input
(including the cross-faded tiling of large planes); blocks need no overlap.
Seeds follow the stack rule (image
``k`` uses ``seed + k``), so the result equals the numpy result for the same
seed, on a single machine or on ``dask.distributed`` workers.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["is_dask_array", "denoise_dask"]


def is_dask_array(x: Any) -> bool:
    """True for a ``dask.array.Array`` (without importing dask otherwise)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(x, mod.Array)


def _output_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _denoise_block(
    block: np.ndarray,
    *,
    n_leading: int,
    lead_shape: tuple[int, ...],
    base_seed: int,
    out_dtype: np.dtype,
    has_channels: bool,
    denoise: Callable[..., np.ndarray],
    options: dict[str, Any],
    block_info: dict | None = None,
) -> np.ndarray:
    from .._util._parallel import torch_threads

    loc = block_info[0]["array-location"][:n_leading] if block_info else [(0, 0)] * n_leading
    out = np.empty(block.shape, dtype=out_dtype)
    # dask runs one task per core: torch work done in this thread (methods
    # other than the guided one, whose work goes to the shared compute pool)
    # uses one thread, so that tasks x torch threads never exceed the cores
    with torch_threads(1):
        for idx in np.ndindex(*block.shape[:n_leading]):
            glob = tuple(i + start for i, (start, _) in zip(idx, loc, strict=True))
            k = int(np.ravel_multi_index(glob, lead_shape)) if n_leading else 0
            out[idx] = denoise(
                block[idx],
                channel_axis=-1 if has_channels else None,
                seed=base_seed + k,
                **options,
            )
    return out


def denoise_dask(
    image: Any,
    *,
    denoise: Callable[..., np.ndarray],
    channel_axis: int | None = None,
    spatial_dims: int = 2,
    seed: int | None = None,
    progress: Any = None,
    **options: Any,
) -> Any:
    """Lazy :func:`napari_ntd.denoise_ntd` of a dask array (same options).

    ``denoise`` is the numpy function each block calls (``denoise_ntd``,
    passed down by the public API, which this layer does not import).

    ``progress`` is ignored (use :class:`dask.diagnostics.ProgressBar` or the
    distributed dashboard). Returns a dask array of the output dtype
    (float32 for float16/float32 input, float64 otherwise).
    """
    import dask.array as da

    from .._util._checks import check_layout

    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    check_layout(image.dtype, tuple(image.shape), channel_axis, spatial_dims)
    arr = image
    if channel_axis is not None:
        arr = da.moveaxis(arr, channel_axis, -1)
    has_channels = channel_axis is not None
    n_inner = spatial_dims + has_channels
    n_leading = arr.ndim - n_inner
    arr = arr.rechunk({ax: -1 for ax in range(n_leading, arr.ndim)})
    base_seed = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    out_dtype = _output_dtype(arr.dtype)
    func = functools.partial(
        _denoise_block,
        n_leading=n_leading,
        lead_shape=tuple(arr.shape[:n_leading]),
        base_seed=int(base_seed),
        out_dtype=out_dtype,
        has_channels=has_channels,
        denoise=denoise,
        options={**options, "spatial_dims": spatial_dims},
    )
    # each block holds whole images (spatial chunks merged above): no overlap needed
    out = da.map_blocks(func, arr, dtype=out_dtype, meta=np.empty((), out_dtype))
    if has_channels:
        out = da.moveaxis(out, -1, channel_axis)
    return out
