"""Dask arrays in, lazy dask arrays out (out-of-core stacks, napari dask layers).

Time-lapses (``time_axis``) are the exception to "no overlap": output frame
``t`` reads input frames ``t - r .. t + r`` (``r = reach(time_window)``,
:mod:`._timelapse`), so chunks along time overlap by ``r`` frames
(:func:`dask.array.map_overlap`, no padding at the ends) and the result
equals the numpy result frame for frame (for a given sigma or noise model:
``'auto'`` is fitted per chunk).

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
    frames: tuple[int, tuple[int, ...], int] | None = None,
    block_info: dict | None = None,
) -> np.ndarray:
    """Denoise every leading index of a block, seeded by its global index.

    ``frames`` (time-lapses: the axis after the leading ones is time, and
    ``options`` hold ``time_axis=0``): ``(n_frames, starts, depth)``, the
    movie's length, the first frame of each chunk and the overlap; movie
    ``k``'s frame ``f`` is seeded ``base_seed + k * n_frames + f``.
    """
    from .._util._parallel import torch_threads

    loc = block_info[0]["array-location"][:n_leading] if block_info else [(0, 0)] * n_leading
    stride, first = 1, 0
    if frames is not None:
        stride, starts, depth = frames
        chunk = block_info[0]["chunk-location"][n_leading] if block_info else 0
        first = starts[chunk] - (depth if chunk > 0 else 0)  # the overlapped block's first frame
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
                seed=base_seed + k * stride + first,
                **options,
            )
    return out


def _denoise_dask_timelapse(
    image: Any,
    *,
    denoise: Callable[..., np.ndarray],
    channel_axis: int | None,
    time_axis: int,
    time_window: Any,
    seed: int | None,
    options: dict[str, Any],
) -> Any:
    import dask.array as da
    from dask.array.overlap import ensure_minimum_chunksize

    from ._timelapse import DEFAULT_WINDOW, reach, timelapse_order

    window = getattr(time_window, "value", time_window)
    window = DEFAULT_WINDOW if window is None else window
    order = timelapse_order(tuple(image.shape), time_axis, channel_axis)
    arr = image.transpose(order)
    has_channels = channel_axis is not None
    t_ax = arr.ndim - 3 - has_channels
    depth = reach(int(window))
    time_chunks = ensure_minimum_chunksize(depth, arr.chunks[t_ax]) if depth else arr.chunks[t_ax]
    arr = arr.rechunk({t_ax: time_chunks, **{ax: -1 for ax in range(t_ax + 1, arr.ndim)}})
    base_seed = seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    out_dtype = _output_dtype(arr.dtype)
    starts = tuple(int(x) for x in np.cumsum((0, *arr.chunks[t_ax][:-1])))
    func = functools.partial(
        _denoise_block,
        n_leading=t_ax,
        lead_shape=tuple(arr.shape[:t_ax]),
        base_seed=int(base_seed),
        out_dtype=out_dtype,
        has_channels=has_channels,
        denoise=denoise,
        options={**options, "time_axis": 0, "time_window": time_window},
        frames=(int(arr.shape[t_ax]), starts, depth),
    )
    out = da.map_overlap(
        func,
        arr,
        depth={t_ax: depth},
        boundary="none",
        dtype=out_dtype,
        meta=np.empty((), out_dtype),
    )
    return out.transpose(tuple(int(a) for a in np.argsort(order)))


def denoise_dask(
    image: Any,
    *,
    denoise: Callable[..., np.ndarray],
    channel_axis: int | None = None,
    spatial_dims: int = 2,
    seed: int | None = None,
    progress: Any = None,
    time_axis: int | None = None,
    time_window: Any = None,
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
    if time_axis is not None:
        return _denoise_dask_timelapse(
            image,
            denoise=denoise,
            channel_axis=channel_axis,
            time_axis=time_axis,
            time_window=time_window,
            seed=seed,
            options=options,
        )
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
