"""The public API: ``denoise_ntd`` and its step-wise generator.

This layer validates options, applies scikit-image's dtype rules and the
channel layout, and hands each image to the execution layer
(:mod:`napari_ntd._engine`: noise model, sigma, tiles, stacks, dask), which
runs the algorithms (:mod:`napari_ntd._ntk`: kernel, Nystrom, twicing and
SURE, pilot, guided method; :mod:`napari_ntd._dip`: trainers).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._engine import _dask, _stacks, _tiling, _vst
from ._engine._image import iter_image
from ._engine._timelapse import DEFAULT_WINDOW, iter_timelapse, timelapse_order
from ._ntk._guided import GUIDED_COLUMNS
from ._util._checks import check_layout, resolve_device
from ._util._config import METHODS, NTDConfig, is_int
from ._util._progress import make_reporter, nested_progress, run_to_end

__all__ = [
    "DIP_KEYWORDS",
    "METHOD_OPTIONS",
    "check_options",
    "denoise_dip",
    "iter_denoise_dip",
    "EXACT_MAX_PIXELS",
    "GUIDED_PATCH_3D",
    "METHODS",
    "default_n_iter",
    "default_patch_size",
    "denoise_ntd",
    "iter_denoise_ntd",
]


#: Largest image (in pixels) for ``method="exact"``: the d x d float64 matrix
#: and its eigendecomposition (~0.5 GB and ~1 min at this size).
EXACT_MAX_PIXELS = 64 * 64

#: Default patch side of the guided method on volumes (``spatial_dims=3``):
#: 5 x 5 x 5 patches (11 x 11 x 11 gained 0.04 dB at 5x the time on the 3D
#: benchmark volume).
GUIDED_PATCH_3D = 5


#: Twicing steps of the guided method on time-lapse frames (``time_axis``): 0,
#: the pilot alone. The NTK stage sees one frame's noisy residual only; on the
#: benchmark time-lapse it changed the time-lapse pilot by +0.03 / -0.01 dB
#: (t = 20, sigma 25 / 50) and -0.08 / -0.5 dB (t = 200). With the motion-
#: compensated pilot, ``benchmarks/bench_timelapse_ntk.py``: the clean-image
#: oracle t per tile would add +0.01 to +0.06 dB (space-time patches
#: included), and the best single t for a whole movie is 0; the stage with
#: space-time patches, n_iter 10 / 40, seeds 0 / 1 at sigma 15: -0.005 /
#: -0.010, +0.009 / +0.013 dB; sigma 25: -0.002 / -0.034, +0.006 / -0.007.
TIMELAPSE_T = 0


def default_n_iter(
    method: str | None = None, spatial_dims: int = 2, time_axis: int | None = None
) -> int | str:
    """The ``n_iter`` ``denoise_ntd`` uses for ``n_iter=None``.

    :data:`TIMELAPSE_T` (0: the pilot alone) on time-lapse frames
    (``time_axis``); ``'auto'`` (Monte-Carlo SURE) otherwise.
    """
    method = "guided" if method is None else method
    if method == "guided" and time_axis is not None:
        return TIMELAPSE_T
    return "auto"


def default_patch_size(method: str | None = None, spatial_dims: int = 2) -> int:
    """The patch side ``denoise_ntd`` uses for ``patch_size=None``.

    11 (the paper's), and ``GUIDED_PATCH_3D`` (5) for the guided method on
    volumes (11^3 patches took ~5x the time of 5^3 for +0.04 dB).
    """
    method = "guided" if method is None else method
    return GUIDED_PATCH_3D if (spatial_dims == 3 and method == "guided") else 11


def _prepare(
    image: Any, channel_axis: int | None, preserve_range: bool, spatial_dims: int = 2
) -> tuple[np.ndarray, np.dtype, np.dtype]:
    """Validate and convert to a float (..., H, W, C) array (skimage dtype rules).

    Leading axes (before the last ``spatial_dims``, channels excluded) are a
    stack of independent images.

    Returns the float image, the output dtype and the compute dtype.
    """
    from skimage.util import img_as_float

    arr = np.asarray(image)
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    check_layout(arr.dtype, arr.shape, channel_axis, spatial_dims)
    if channel_axis is not None:
        arr = np.moveaxis(arr, channel_axis, -1)
    else:
        arr = arr[..., None]

    in_dtype = arr.dtype.newbyteorder("=")
    if arr.dtype.kind == "f":
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)
        out_dtype = arr.dtype.newbyteorder("=")
        arr = arr.astype(out_dtype, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError("image contains NaN or infinite values")
    else:
        out_dtype = np.dtype(np.float64)
        arr = arr.astype(np.float64) if preserve_range else img_as_float(arr)
    # float64 input is computed in float64 (the reference precision); anything
    # else (float32, float16, ints converted to float64) in float32.
    compute = np.dtype(np.float64 if in_dtype == np.float64 else np.float32)
    return np.ascontiguousarray(arr), out_dtype, compute


def _conversion(dtype: np.dtype, preserve_range: bool) -> tuple[float, float]:
    """``(scale, shift)`` of the conversion ``raw -> scale * raw + shift`` of ``_prepare``."""
    from skimage.util import img_as_float

    if dtype.kind not in "biu" or preserve_range:
        return 1.0, 0.0
    ends = img_as_float(np.array([0, 1], dtype=dtype))
    return float(ends[1] - ends[0]), float(ends[0])


def _finish(out: np.ndarray, out_dtype: np.dtype, channel_axis: int | None) -> np.ndarray:
    out = out.astype(out_dtype, copy=False)
    if channel_axis is None:
        return out[..., 0]
    return np.moveaxis(out, -1, channel_axis)


class _Default:
    """A keyword default that tells "not given" apart (shown as its value in help())."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _value(x: Any) -> Any:
    return x.value if isinstance(x, _Default) else x


#: Keywords only some closed-form methods read (the others raise if given).
METHOD_OPTIONS = {
    "guided": ("n_columns", "rank"),
    "nystrom": ("n_columns", "rank", "block_pixels"),
    "exact": (),
}

#: Keywords of the deprecated ``denoise_ntd(method='dip', ...)`` (now ``DIPConfig``).
DIP_KEYWORDS = ("architecture", "optimizer", "input", "width", "lr")


@dataclass(frozen=True)
class _Plan:
    """Validated options of one run, before any image is read."""

    cfg: NTDConfig
    noise: _vst.NoiseModel | None  # None: 'auto', fitted on the image
    budget: int
    tile_shape: tuple[int, ...] | None
    device: torch.device
    spatial_dims: int
    time_axis: int | None = None
    time_window: int = 0


def _check_method(method: str | None) -> None:
    if method is not None and method != "dip" and method not in METHOD_OPTIONS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {tuple(METHOD_OPTIONS)} "
            "(or denoise_dip to train a network)"
        )


def _check_spatial_dims(spatial_dims: int, method: str) -> None:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if spatial_dims == 3 and method not in ("nystrom", "guided"):
        raise NotImplementedError(
            "spatial_dims=3 (r x r x r patches) supports method='guided' or 'nystrom' only, "
            f"got {method!r}"
        )


def _check_time(time_axis: Any, time_window: Any, method: str, spatial_dims: int, n_iter) -> None:
    if time_axis is None:
        if not isinstance(time_window, _Default):
            raise TypeError("time_window applies to time-lapse data: give time_axis too")
        return
    if not is_int(time_axis):
        raise TypeError(f"time_axis must be an int or None, got {time_axis!r}")
    if method != "guided":
        raise NotImplementedError(
            f"time_axis (neighbouring frames) supports method='guided' only, got {method!r}"
        )
    if spatial_dims != 2:
        raise ValueError("time_axis works on 2D frames (spatial_dims=2)")
    window = _value(time_window)
    if not is_int(window) or window < 0:
        raise ValueError(f"time_window must be an int >= 0, got {window!r}")
    if isinstance(n_iter, str):
        raise NotImplementedError(
            "n_iter='auto' (SURE) is not available with time_axis; give an int or None"
        )


def _plan(
    *,
    method: str | None = None,
    sigma: float | None = None,
    n_iter: int | str | None = None,
    patch_size: int | None = None,
    n_columns: Any = _Default(0.02),  # noqa: B008 - an immutable marker
    rank: Any = _Default(256),  # noqa: B008
    block_pixels: Any = _Default(4096),  # noqa: B008
    device: str | torch.device | None = None,
    seed: int | None = None,
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: Any = "auto",
    spatial_dims: int = 2,
    time_axis: int | None = None,
    time_window: Any = _Default(DEFAULT_WINDOW),  # noqa: B008
    dip: Any = None,
) -> _Plan:
    method = "guided" if method is None else method
    _check_method(method)
    _check_spatial_dims(spatial_dims, method)
    _check_time(time_axis, time_window, method, spatial_dims, n_iter)
    if method != "dip":
        given = {"n_columns": n_columns, "rank": rank, "block_pixels": block_pixels}
        unused = [k for k, v in given.items() if not isinstance(v, _Default)]
        unused = [k for k in unused if k not in METHOD_OPTIONS[method]]
        if unused:
            users = [m for m, opts in METHOD_OPTIONS.items() if unused[0] in opts]
            raise TypeError(
                f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to "
                f"method={method!r} (used by {', '.join(map(repr, users))})"
            )
    if method == "guided" and isinstance(n_columns, _Default):
        n_columns = GUIDED_COLUMNS
    if patch_size is None:
        patch_size = default_patch_size(method, spatial_dims)
    if n_iter is None:
        n_iter = default_n_iter(method, spatial_dims, time_axis)
    cfg = NTDConfig(
        method=method,
        sigma=sigma,
        n_iter=n_iter,
        patch_size=patch_size,
        n_columns=_value(n_columns),
        rank=_value(rank),
        block_pixels=_value(block_pixels),
        seed=seed,
        dip=dip,
    )
    auto = isinstance(noise_model, str) and noise_model == "auto"
    noise = None if auto else _vst.as_noise_model(noise_model)
    if noise is not None and noise.kind != "gaussian" and cfg.sigma is not None:
        raise ValueError(
            f"sigma applies to the Gaussian noise model; with noise_model={noise.kind!r} the "
            "noise is stabilised to sigma = 1 (set gain/offset/read_noise instead)"
        )
    budget = _tiling.parse_memory(max_memory)
    if tile_shape is not None:
        tile_shape = _tiling.normalize_tile_shape(tile_shape, spatial_dims, cfg)
    return _Plan(
        cfg,
        noise,
        budget,
        tile_shape,
        resolve_device(device),
        spatial_dims,
        time_axis,
        int(_value(time_window)),
    )


def check_options(**options: Any) -> None:
    """Raise the error :func:`denoise_ntd` would raise for these keyword options.

    For front-ends that validate once, before reading any data (the command
    line): everything that does not depend on the image is checked (method,
    sigma, n_iter, patch_size, n_columns, rank, block_pixels, device, seed,
    tile_shape, max_memory, noise_model, spatial_dims, time_axis, time_window
    and which keywords apply to the method).

    Examples
    --------
    >>> check_options(method="exact", n_columns=100)
    Traceback (most recent call last):
    ...
    TypeError: n_columns does not apply to method='exact' (used by 'guided', 'nystrom')
    """
    import inspect

    ignored = {"channel_axis", "preserve_range", "progress"}
    known = (set(inspect.signature(_plan).parameters) - {"dip"}) | ignored
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}")
    _plan(**{k: v for k, v in options.items() if k not in ignored})


def _run(
    image: Any, plan: _Plan, channel_axis: int | None, preserve_range: bool
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise ``image`` with a validated plan: dtype rules, noise model, stack."""
    if plan.time_axis is not None:
        return (yield from _run_timelapse(image, plan, channel_axis, preserve_range))
    cfg, spatial_dims, tile_shape = plan.cfg, plan.spatial_dims, plan.tile_shape
    raw = np.asarray(image)
    img, out_dtype, compute = _prepare(raw, channel_axis, preserve_range, spatial_dims)
    noise = plan.noise
    if noise is None:  # 'auto': fitted on the raw input (its units, its rounding), all planes
        noise = _vst.resolve_auto(raw, channel_axis, spatial_dims, cfg.sigma)
    noise = noise.converted(*_conversion(raw.dtype, preserve_range))
    dev, budget = plan.device, plan.budget
    spatial = img.shape[-1 - spatial_dims : -1]
    if min(spatial[-2:]) < cfg.patch_size:  # a volume may be thinner than the patch in z
        if channel_axis is None and img.ndim - 1 > spatial_dims and img.shape[-2] <= 4:
            raise NotImplementedError(
                f"an image of shape {img.shape[:-1]} is read as a stack of {spatial_dims}D "
                f"images of shape {spatial}; its last axis looks like channels: pass "
                "channel_axis=-1 for a multichannel image"
            )
        size = " x ".join(map(str, spatial))
        patch = " x ".join([str(cfg.patch_size)] * spatial_dims)
        raise ValueError(
            f"image ({size}) is smaller than the patch ({patch}); use a smaller patch_size"
        )
    n_pix = int(np.prod(spatial if tile_shape is None else np.minimum(spatial, tile_shape)))
    if cfg.method == "exact" and n_pix > EXACT_MAX_PIXELS:
        raise ValueError(
            f"method='exact' builds the full {n_pix} x {n_pix} filter; it is limited to "
            f"{EXACT_MAX_PIXELS} pixels. Use method='nystrom' or a smaller tile_shape."
        )
    base_seed = (
        cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    )
    per_image = functools.partial(
        iter_image,
        cfg=cfg,
        device=dev,
        compute=compute,
        noise=noise,
        tile_shape=tile_shape,
        max_memory=budget,
    )
    n_leading = img.ndim - 1 - spatial_dims
    out = yield from _stacks.iter_stack(img, n_leading, per_image, base_seed)
    return _finish(out, out_dtype, channel_axis)


def _run_timelapse(
    image: Any, plan: _Plan, channel_axis: int | None, preserve_range: bool
) -> Generator[tuple[int, int], None, np.ndarray]:
    """A time-lapse: each frame with its neighbours (:mod:`napari_ntd._timelapse`)."""
    cfg = plan.cfg
    raw = np.asarray(image)
    if raw.size == 0:
        raise ValueError(f"image is empty (shape {raw.shape})")
    check_layout(raw.dtype, raw.shape, channel_axis, 2)
    order = timelapse_order(raw.shape, plan.time_axis, channel_axis)
    moved = raw.transpose(order)
    ch = None if channel_axis is None else -1
    img, out_dtype, _ = _prepare(moved, ch, preserve_range, 2)
    noise = plan.noise
    if noise is None:  # 'auto': fitted on all frames
        noise = _vst.resolve_auto(moved, ch, 2, cfg.sigma)
    noise = noise.converted(*_conversion(raw.dtype, preserve_range))
    if cfg.n_iter != 0 and min(img.shape[-3:-1]) < cfg.patch_size:  # the NTK stage's patch
        size = " x ".join(map(str, img.shape[-3:-1]))
        raise ValueError(
            f"frames ({size}) are smaller than the patch ({cfg.patch_size}); "
            "use a smaller patch_size"
        )
    base_seed = (
        cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    )
    n_frames = img.shape[-4]
    lead = img.shape[:-4]
    out = np.empty(img.shape, np.float64)
    count = int(np.prod(lead))
    for k, idx in enumerate(np.ndindex(*lead)):
        movie = iter_timelapse(
            img[idx],
            base_seed + k * n_frames,
            cfg=cfg,
            device=plan.device,
            noise=noise,
            window=plan.time_window,
            tile_shape=plan.tile_shape,
            max_memory=plan.budget,
        )
        out[idx] = yield from nested_progress(movie, k, count)
    out = out.astype(out_dtype, copy=False)
    out = out if ch is not None else out[..., 0]
    return out.transpose(np.argsort(order))


def _dip_from_keywords(method: str | None, dip_keywords: dict[str, Any], stacklevel: int):
    """The deprecated ``method='dip'`` spelling -> a ``DIPConfig`` (else raise for stray keys)."""
    _check_method(method)
    given = {k: v for k, v in dip_keywords.items() if v is not None}
    if method != "dip":
        if given:
            raise TypeError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to the DIP "
                "trainers: use denoise_dip(image, config=DIPConfig(...))"
            )
        return None
    from ._dip._trainers import DIPConfig

    warnings.warn(
        "denoise_ntd(method='dip', ...) is deprecated and will be removed in napari-ntd 0.3; "
        "use denoise_dip(image, config=DIPConfig(...))",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
    return DIPConfig(**given)


def iter_denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str | None = None,
    n_iter: int | str | None = None,
    channel_axis: int | None = None,
    patch_size: int | None = None,
    n_columns: float | int = _Default(0.02),
    rank: int | None = _Default(256),
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    block_pixels: int = _Default(4096),
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
    spatial_dims: int = 2,
    time_axis: int | None = None,
    time_window: int = _Default(DEFAULT_WINDOW),
    architecture: str | None = None,
    optimizer: str | None = None,
    input: str | None = None,
    width: int | None = None,
    lr: float | None = None,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Step-wise :func:`denoise_ntd`: yields ``(done, total)`` and returns the result.

    Same parameters as :func:`denoise_ntd` (without ``progress``). Use it to
    drive the denoiser from an event loop or worker thread and stop between
    steps: ``result = yield from iter_denoise_ntd(image)``, or iterate and
    read ``StopIteration.value``. Closing the generator early leaves the
    input untouched and returns nothing.
    """
    dip_keywords = dict(architecture=architecture, optimizer=optimizer, input=input, width=width)
    dip = _dip_from_keywords(method, {**dip_keywords, "lr": lr}, 3)
    plan = _plan(
        method=method,
        sigma=sigma,
        n_iter=n_iter,
        patch_size=patch_size,
        n_columns=n_columns,
        rank=rank,
        block_pixels=block_pixels,
        device=device,
        seed=seed,
        tile_shape=tile_shape,
        max_memory=max_memory,
        noise_model=noise_model,
        spatial_dims=spatial_dims,
        time_axis=time_axis,
        time_window=time_window,
        dip=dip,
    )
    return (yield from _run(image, plan, channel_axis, preserve_range))


def iter_denoise_dip(
    image: Any,
    *,
    config: Any = None,
    sigma: float | None = None,
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Step-wise :func:`denoise_dip`: yields ``(done, total)`` and returns the result."""
    from ._dip._trainers import DIPConfig

    config = DIPConfig() if config is None else config
    if not isinstance(config, DIPConfig):
        raise TypeError(f"config must be a DIPConfig, got {config!r}")
    plan = _plan(
        method="dip",
        sigma=sigma,
        n_iter=n_iter,
        patch_size=config.patch_size,
        device=device,
        seed=seed,
        tile_shape=tile_shape,
        max_memory=max_memory,
        noise_model=noise_model,
        spatial_dims=2,
        dip=config,
    )
    return (yield from _run(image, plan, channel_axis, preserve_range))


def denoise_dip(
    image: Any,
    *,
    config: Any = None,
    sigma: float | None = None,
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
    progress: bool | Callable[[int, int], Any] | None = None,
) -> np.ndarray:
    """Denoise an image by training a network on it: the deep image prior (DIP).

    Sections 5-6 of the paper: a CNN trained on the noisy image alone (Adam
    or gradient descent), stopped by Monte-Carlo SURE. Slower than the
    closed-form :func:`denoise_ntd` (minutes instead of seconds on a CPU);
    the network adapts its filter to the image.

    Parameters
    ----------
    image : ndarray
        2D image (or a stack of them), ``channel_axis`` for channels; the
        dtype rules of :func:`denoise_ntd`.
    config : DIPConfig, optional
        The trainer: ``architecture`` ('unet' of appendix H.2, 'vanilla' of
        H.1), ``optimizer`` ('adam', 'gd', 'adam+gd'), ``input`` ('image',
        'noise'), ``width``, ``lr``, ``patch_size`` (vanilla CNN). The default
        width (32 for the U-Net) is chosen for CPUs: a 256 x 256 float64
        image with the U-Net takes about 0.45 s per Adam step with the SURE
        twin on two idle cores (about 1 s when another job shares them), so
        10-25 min at the cap of 1500 steps; float32 input runs in float32,
        about 7x faster.
    sigma, n_iter, channel_axis, device, seed, preserve_range, tile_shape, max_memory, noise_model
        As in :func:`denoise_ntd`; ``n_iter`` counts network updates and
        ``'auto'`` keeps the iterate with the smallest Monte-Carlo SURE (a
        twin network trained on ``y + eps b``, twice the cost).
    progress : bool or callable, optional
        ``True`` shows a tqdm bar; a callable gets ``(done, total)``.

    Returns
    -------
    ndarray
        Denoised image, same shape as ``image``, dtype as for :func:`denoise_ntd`.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_ntd import DIPConfig
    >>> y = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> out = denoise_dip(y, config=DIPConfig(width=8), n_iter=5, sigma=0.1, seed=0)
    >>> out.shape, out.dtype
    ((32, 32), dtype('float32'))
    """
    gen = iter_denoise_dip(
        image,
        config=config,
        sigma=sigma,
        n_iter=n_iter,
        channel_axis=channel_axis,
        device=device,
        seed=seed,
        preserve_range=preserve_range,
        tile_shape=tile_shape,
        max_memory=max_memory,
        noise_model=noise_model,
    )
    with make_reporter(progress) as report:
        return run_to_end(gen, lambda step: report(*step))


def denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str | None = None,
    n_iter: int | str | None = None,
    channel_axis: int | None = None,
    patch_size: int | None = None,
    n_columns: float | int = _Default(0.02),
    rank: int | None = _Default(256),
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    progress: bool | Callable[[int, int], Any] | None = None,
    block_pixels: int = _Default(4096),
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
    spatial_dims: int = 2,
    time_axis: int | None = None,
    time_window: int = _Default(DEFAULT_WINDOW),
    architecture: str | None = None,
    optimizer: str | None = None,
    input: str | None = None,
    width: int | None = None,
    lr: float | None = None,
) -> np.ndarray:
    """Denoise an image with the neural tangent denoiser (NTD).

    The filter is the infinite-width neural tangent kernel of a one-hidden-layer
    ReLU CNN (``r x r`` conv, ReLU, ``1 x 1`` conv; appendix H.1 of the paper)
    evaluated on image patches, applied by twicing ``z <- z + W (y - z)`` and
    stopped after ``n_iter`` steps: on the noisy image's patches from
    ``z = 0`` (``method='nystrom'``, the paper), or on a classical pilot's
    patches from ``z = pilot`` (``method='guided'``, the default).

    Parameters
    ----------
    image : ndarray or dask array
        2D grayscale image, or 2D multichannel image with ``channel_axis``;
        a stack ``(..., H, W)`` of them (see ``spatial_dims``). A dask array
        gives a lazy dask array (``dask.array.map_blocks``, one task per
        chunk of leading indices). Integer images are converted with ``img_as_float`` (unless
        ``preserve_range``); float32 and float64 are kept, float16 becomes
        float32.
    sigma : float, optional
        Standard deviation of the Gaussian noise, in the units of the
        (converted) image. ``None`` estimates it with
        :func:`skimage.restoration.estimate_sigma`.
    method : {None, 'guided', 'nystrom', 'exact'}
        ``None`` (default) is ``'guided'``, for 2D images and volumes
        (``spatial_dims=3``). ``'guided'`` (beyond the paper; see
        :mod:`napari_ntd._ntk._guided`): a classical pilot (non-local Bayes
        estimates of groups of similar patches, guided by sliding-DCT Wiener
        shrinkage; a DCT/non-local-means pilot on volumes), the NTK on the
        pilot's patches, twicing started from the pilot in 64 x 64 tiles
        (16^3 for volumes), and Monte-Carlo SURE over the whole map
        (``t = 0`` is the pilot); the best quality and the fastest. ``'nystrom'``
        is the paper's algorithm:
        the filter from ``n_columns`` random columns (appendix G) of the
        kernel on the noisy image, twicing from zero. ``'exact'`` builds the full
        ``d x d`` filter; images of at most ``EXACT_MAX_PIXELS`` pixels.
        To train a network instead (the deep image prior), use
        :func:`denoise_dip`; ``method='dip'`` with the trainer keywords
        ``architecture``, ``optimizer``, ``input``, ``width``, ``lr`` still
        works but is deprecated (removed in 0.3).
    n_iter : int, 'auto' or None
        Twicing iterations ``t``. ``None`` (default): ``'auto'``, or 0 (the
        pilot alone) for time-lapse data (``time_axis``). ``'auto'`` chooses
        ``t`` by Monte-Carlo SURE (one extra pass on ``y + eps b`` with the
        same columns): the guided method chooses one ``t`` per channel from
        a sample of its tiles, whose pilot it reruns on ``y + eps b``; the
        result equals ``n_iter=<that t>`` with the same ``seed``. The paper's
        methods choose per channel and tile. ``0`` (guided method only)
        returns its pilot alone: no NTK stage.
    time_axis : int, optional
        The axis of time in a time-lapse (guided method, 2D frames): each
        frame is denoised with its neighbours, whose similar patches join
        its groups (:mod:`napari_ntd._engine._timelapse`; robust to motion:
        patches are grouped by similarity, and the neighbours are
        motion-compensated by block matching, up to 7 px per frame).
        Other leading axes are independent time-lapses.
    time_window : int
        With ``time_axis``: neighbouring frames on each side (default 2).
        Output frame ``t`` reads input frames ``t - 14 .. t + 14`` (seven
        times the window).
    channel_axis : int, optional
        Axis of the channels. All channels share one kernel computed from
        their joint patches (appendix E) and are filtered separately.
    patch_size : int, optional
        Side of the first convolution, i.e. of the compared patches (odd).
        Default 11; ``GUIDED_PATCH_3D`` (5) for the guided method on volumes.
    n_columns : float or int
        Nystrom columns (``'guided'``, ``'nystrom'``): a fraction of the
        pixels (kept within [64, 6000]) or an exact count; default 2 %
        (``'nystrom'``), 1/64 of each tile (``'guided'``: 64 in a 64^2 tile).
    rank : int or None
        Leading eigenimages kept after the Nystrom extension (``'guided'``,
        ``'nystrom'``; default 256); ``None`` keeps all numerically non-zero
        ones (the paper's setting).
    device : str or torch.device, optional
        ``None`` uses CUDA when available, else the CPU.
    seed : int, optional
        Seeds the column choice and the SURE probe; the same seed gives the
        same output on the same machine (CPU).
    preserve_range : bool
        Keep the value range of integer images instead of scaling to [0, 1].
    progress : bool or callable, optional
        ``True`` shows a tqdm bar; a callable is called as
        ``progress(done, total)`` after each step.
    block_pixels : int
        ``'nystrom'``: kernel rows computed at once (memory
        ``~ 5 * block_pixels * m`` floats; the guided method works in small
        tiles and needs no blocks).
    tile_shape : int or tuple of int, optional
        Denoise in overlapping tiles of this shape (per spatial axis) and
        cross-fade them; tiles overlap by ``2 * patch_size`` (guided:
        ``2 * (patch_size // 2 + 1)``) and each pixel
        comes from a tile where its receptive field is complete, so there are
        no seams. The filter is then non-local within a tile. ``None`` tiles
        only when the memory estimate exceeds ``max_memory`` (tiles of
        ``AUTO_TILE``). The noise level and centring are global.
    max_memory : int or str, optional
        Memory budget in bytes or as ``'4GB'``; ``None`` is 2 GiB.
    noise_model : {'auto', 'gaussian', 'poisson', 'poisson-gaussian'} or NoiseModel
        ``'auto'`` (default): Gaussian when ``sigma`` is given; otherwise the
        noise-level function is fitted from the image
        (:func:`napari_ntd.estimate_noise`: gain, offset, read noise) and
        the Poisson-Gaussian model is used when the noise grows with the
        signal (raw camera counts), the Gaussian one otherwise. Pass
        ``estimate_noise(image)`` itself to reuse or check a fit.
        ``'gaussian'`` uses ``sigma``. The Poisson models apply the
        generalized Anscombe transform (noise -> N(0, 1)), denoise with
        ``sigma = 1`` and map back with the exact unbiased inverse. Pass
        ``NoiseModel('poisson-gaussian', gain=..., offset=..., read_noise=...)``
        (units of the raw input, e.g. ADU) to fix the parameters; missing
        ones are estimated from each image.
    spatial_dims : {2, 3}
        Number of trailing (non-channel) axes forming one image. With 2
        (default), leading axes of 3D/4D input are independent 2D slices;
        slice ``k`` (flat C-order index) uses seed ``seed + k``, so the
        result equals looping 2D calls. With 3, the last three axes are a
        volume denoised with ``r x r x r`` patches and a 3D pilot (methods
        ``'guided'``, the default, and ``'nystrom'``).
    Returns
    -------
    ndarray
        Denoised image, same shape as ``image``; float32 for float32/float16
        input, float64 otherwise.

    Raises
    ------
    ValueError
        NaN/inf values, an empty image, an image smaller than the patch,
        an unknown method, a negative sigma, an unavailable device.
    TypeError
        Complex or non-numeric images; a keyword the chosen method does not
        use (``n_columns``/``rank`` with ``'exact'``, ``block_pixels`` with
        ``'guided'`` or ``'exact'``, the trainer keywords without
        ``method='dip'``).
    NotImplementedError
        Fewer than ``spatial_dims`` spatial axes; ``spatial_dims=3`` with a
        method other than ``'guided'`` or ``'nystrom'``.

    Notes
    -----
    With ``s = (2/n0) ||p|| ||q||`` and ``cos(phi) = <p, q> / (||p|| ||q||)``
    for zero-padded patches ``p``, ``q`` of ``n0`` values, the kernel is
    ``s / pi * (sin(phi) + 2 (pi - phi) cos(phi))`` (eq. 9 with two layers:
    eq. 14 plus the first-layer term). The image is centred on the middle of
    its robust range first (appendix I subtracts 0.5 from [0, 1] images).
    Nystrom: ``m`` columns cost ``O(d m n0)`` for the kernel, ``O(m^3)`` for the
    eigendecomposition and ``O(d m rank)`` for the extension; memory is
    ``O(d rank + m^2)``. ``n_iter='auto'`` doubles the cost.
    The guided method computes in float32 with float64 sums for every input
    (its rounding is far below any noise); the paper's methods compute in
    float64 for float64 input and float32 otherwise.

    References
    ----------
    .. [1] J. Tachella, J. Tang, M. Davies, "CNN Denoisers As Non-Local
           Filters: The Neural Tangent Denoiser", CVPR 2021.
           :arXiv:`2006.02379`
    .. [2] S. Ramani, T. Blu, M. Unser, "Monte-Carlo SURE: A Black-Box
           Optimization of Regularization Parameters for General Denoising
           Algorithms", IEEE TIP 17(9), 2008. :DOI:`10.1109/TIP.2008.2001404`

    Examples
    --------
    >>> import numpy as np
    >>> from skimage import data, img_as_float
    >>> clean = img_as_float(data.camera())[200:264, 200:264]
    >>> noisy = clean + 0.1 * np.random.default_rng(0).standard_normal(clean.shape)
    >>> den = denoise_ntd(noisy, sigma=0.1, seed=0)
    >>> bool(np.mean((den - clean) ** 2) < np.mean((noisy - clean) ** 2))
    True

    Raw camera counts keep their units with ``preserve_range=True``; the
    noise model is fitted from the image (``noise_model='auto'``):

    >>> raw = np.random.default_rng(0).poisson(20 * clean) * 2 + 100
    >>> out = denoise_ntd(raw.astype(np.uint16), preserve_range=True, seed=0)
    >>> out.dtype, bool(90 < out.mean() < 150)
    (dtype('float64'), True)
    """
    dip_keywords = dict(architecture=architecture, optimizer=optimizer, input=input)
    dip_keywords.update(width=width, lr=lr)
    if method == "dip":  # deprecated spelling: warn here, at the caller's line
        config = _dip_from_keywords(method, dip_keywords, 3)
        _check_spatial_dims(spatial_dims, method)
        if patch_size is not None:
            config = dataclasses.replace(config, patch_size=patch_size)
        return denoise_dip(
            image,
            config=config,
            sigma=sigma,
            n_iter=n_iter,
            channel_axis=channel_axis,
            device=device,
            seed=seed,
            preserve_range=preserve_range,
            progress=progress,
            tile_shape=tile_shape,
            max_memory=max_memory,
            noise_model=noise_model,
        )
    if _dask.is_dask_array(image):  # lazy in, lazy out; every option passes through
        options = {k: v for k, v in locals().items() if k not in ("image", "dip_keywords")}
        _dip_from_keywords(method, dip_keywords, 3)
        check_options(**{k: v for k, v in options.items() if k not in dip_keywords})
        return _dask.denoise_dask(image, denoise=denoise_ntd, **options)
    gen = iter_denoise_ntd(
        image,
        sigma=sigma,
        method=method,
        n_iter=n_iter,
        channel_axis=channel_axis,
        patch_size=patch_size,
        n_columns=n_columns,
        rank=rank,
        device=device,
        seed=seed,
        preserve_range=preserve_range,
        block_pixels=block_pixels,
        tile_shape=tile_shape,
        max_memory=max_memory,
        noise_model=noise_model,
        spatial_dims=spatial_dims,
        time_axis=time_axis,
        time_window=time_window,
        **dip_keywords,
    )
    with make_reporter(progress) as report:
        return run_to_end(gen, lambda step: report(*step))
