"""The public entry point: ``denoise_ntd`` and its step-wise generator.

This module only adapts arrays (dtype rules, channels, validation, device)
and chains the stages: kernel (``_kernel``), eigenbasis (``_nystrom``),
twicing and stopping (``_twicing``).
"""

from __future__ import annotations

import functools
import numbers
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _dask, _guided, _nystrom, _pilot, _stacks, _tiling, _twicing, _vst
from ._kernel import patch_sq_norms
from ._progress import make_reporter, run_to_end

__all__ = ["denoise_ntd", "iter_denoise_ntd", "NTDConfig", "METHODS", "EXACT_MAX_PIXELS"]

#: Methods accepted by ``denoise_ntd``.
METHODS = ("guided", "nystrom", "exact", "dip")

#: Largest image (in pixels) for ``method="exact"``: the d x d float64 matrix
#: and its eigendecomposition (~0.5 GB and ~1 min at this size).
EXACT_MAX_PIXELS = 64 * 64

#: Default patch side of the guided method on volumes (``spatial_dims=3``):
#: 5 x 5 x 5 patches (11 x 11 x 11 gained 0.04 dB at 5x the time on the 3D
#: benchmark volume).
GUIDED_PATCH_3D = 5

#: Floor and cap on the number of Nystrom columns.
MIN_COLUMNS = 64
MAX_COLUMNS = 6000

#: Relative size of the Monte-Carlo SURE perturbation (times sigma).
SURE_EPS = 1e-2

#: Range of the centred image's largest deviation computed as is; outside it
#: the image is rescaled to ~1 first (patch products would over/underflow).
SAFE_SPREAD = (1e-6, 1e6)


@dataclass(frozen=True)
class NTDConfig:
    """Validated options of one ``denoise_ntd`` run (see its docstring)."""

    method: str = "guided"
    sigma: float | None = None
    n_iter: int | str = "auto"
    patch_size: int = 11
    n_columns: float | int = 0.02
    rank: int | None = 256
    block_pixels: int = 4096
    seed: int | None = None
    dip: Any = None  # a napari_ntd._trainers.DIPConfig for method="dip"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.sigma is not None:
            if not isinstance(self.sigma, numbers.Real) or isinstance(self.sigma, bool):
                raise TypeError(f"sigma must be a real number or None, got {self.sigma!r}")
            if not np.isfinite(self.sigma) or self.sigma < 0:
                raise ValueError(f"sigma must be finite and >= 0, got {self.sigma}")
        if isinstance(self.n_iter, str):
            if self.n_iter != "auto":
                raise ValueError(f"n_iter must be 'auto' or a positive int, got {self.n_iter!r}")
        elif _is_int(self.n_iter) and self.n_iter == 0:
            if self.method != "guided":
                raise ValueError(
                    "n_iter=0 (no twicing: the pilot alone) applies to method='guided' only"
                )
        elif not _is_int(self.n_iter) or self.n_iter < 1:
            raise ValueError(f"n_iter must be 'auto' or a positive int, got {self.n_iter!r}")
        if not _is_int(self.patch_size) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd int, got {self.patch_size!r}")
        n = self.n_columns
        if isinstance(n, bool) or not isinstance(n, numbers.Real):
            raise TypeError(f"n_columns must be a fraction in (0, 1] or an int, got {n!r}")
        if _is_int(n):
            if n < 1:
                raise ValueError(f"n_columns must be >= 1, got {n}")
        elif not 0 < n <= 1:
            raise ValueError(f"a fractional n_columns must be in (0, 1], got {n}")
        if self.rank is not None and (not _is_int(self.rank) or self.rank < 1):
            raise ValueError(f"rank must be a positive int or None, got {self.rank!r}")
        if not _is_int(self.block_pixels) or self.block_pixels < 1:
            raise ValueError(f"block_pixels must be a positive int, got {self.block_pixels!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")

    def columns(self, d: int) -> int:
        """Number of Nystrom columns for an image of ``d`` pixels."""
        n = self.n_columns
        m = int(n) if _is_int(n) else round(n * d)
        return int(min(d, max(m, MIN_COLUMNS), MAX_COLUMNS if not _is_int(n) else d))


def sure_eps(sigma: float, spread: float, tiny: float) -> float:
    """Size of the Monte-Carlo SURE perturbation: ``SURE_EPS`` times the noise
    level, kept away from zero for (nearly) noise-free images."""
    return SURE_EPS * max(sigma, 1e-3 * spread, tiny)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA if available else CPU; a CUDA request without CUDA is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"invalid device {device!r}: {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def check_layout(
    dtype: np.dtype, shape: tuple[int, ...], channel_axis: int | None, spatial_dims: int
) -> None:
    """Raise for a dtype or a shape/``channel_axis`` that ``denoise_ntd`` cannot take."""
    if dtype.kind == "c":
        raise TypeError("complex images are not supported; denoise real and imaginary parts")
    if dtype.kind not in "biuf":
        raise TypeError(f"image must be a numeric array, got dtype {dtype}")
    ndim = len(shape)
    expected = spatial_dims + (channel_axis is not None)
    if ndim < expected:
        raise NotImplementedError(
            f"denoise_ntd needs {spatial_dims}D images (ndim >= {expected} with channel_axis="
            f"{channel_axis}, spatial_dims={spatial_dims}); got shape {shape}"
        )
    if channel_axis is not None and (not _is_int(channel_axis) or not -ndim <= channel_axis < ndim):
        raise ValueError(f"channel_axis={channel_axis!r} is invalid for shape {shape}")


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


def robust_center(img: np.ndarray) -> float | None:
    """The offset subtracted before the kernel; ``None`` for a constant image.

    Appendix I centres [0, 1] images at 0.5; in general we use the middle of
    the robust (0.5-99.5 percentile) range. The kernel is homogeneous, so only
    the offset matters, not the scale.
    """
    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi <= lo:  # (almost everywhere) constant image
        lo, hi = img.min(), img.max()
        if hi <= lo:
            return None
    return float(0.5 * (lo + hi))


def _estimate_sigma(img: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    multichannel = img.shape[-1] > 1
    with warnings.catch_warnings():  # a constant channel: NaN and "mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        sig = estimate_sigma(
            img if multichannel else img[..., 0], channel_axis=-1 if multichannel else None
        )
    sigmas = [s for s in np.atleast_1d(sig) if np.isfinite(s)]
    return float(np.mean(sigmas)) if sigmas else 0.0


def _counted(gen: Generator[None, None, Any], counter: list[int], total: int):
    """Forward a stage generator's unit steps as ``(done, total)`` progress."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
        counter[0] += 1
        yield (counter[0], total)


def _shifted(gen: Generator, offset: int):
    """Forward ``(done, total)`` steps of ``gen`` after ``offset`` earlier ones."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield (offset + done, offset + total)


def nested_progress(gen: Generator, index: int, count: int):
    """Run the ``index``-th of ``count`` equal sub-jobs, rescaling its progress."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield (index * total + done, count * total)


@dataclass(frozen=True)
class PlaneFit:
    """A fitted filter for one plane: the basis, projections and chosen ``t``.

    ``sure`` (C, T) is the Monte-Carlo SURE curve over ``ts`` (``None`` for a
    fixed ``n_iter``). Benchmarks evaluate other curves (e.g. the oracle MSE)
    from the same fit with :func:`napari_ntd._twicing.error_curve`.
    """

    basis: _nystrom.Basis
    proj: _twicing.Projections
    t: np.ndarray
    shape: tuple[int, int, int]
    ts: np.ndarray | None = None
    sure: torch.Tensor | None = None

    def output(self, t: np.ndarray | None = None) -> torch.Tensor:
        """Twicing output (C, H, W) at ``t`` (one per channel; default: chosen)."""
        t = self.t if t is None else np.broadcast_to(np.asarray(t), self.t.shape)
        return _twicing.apply(self.basis, self.proj, t).reshape(self.shape)


def iter_fit_plane(
    y: torch.Tensor,
    sigma: float,
    cfg: NTDConfig,
    rng: torch.Generator,
) -> Generator[tuple[int, int], None, PlaneFit]:
    """Compute the NTD eigenbasis of a centred ``(C, H, W)`` plane and choose ``t``."""
    nch, h, w = y.shape
    d = h * w
    auto = cfg.n_iter == "auto"
    dev = y.device
    if cfg.method == "exact":
        per_pass = _nystrom.EXACT_STEPS

        def make_basis(x):
            return _nystrom.exact_basis(x, patch_size=cfg.patch_size)
    else:
        # uniformly random pixels (appendix G), among those whose patch is not
        # zero: a zero patch has a zero kernel column and adds nothing
        informative = torch.nonzero(patch_sq_norms(y, cfg.patch_size) > 0).flatten().cpu()
        if informative.numel() == 0:
            informative = torch.arange(d)
        m = min(cfg.columns(d), informative.numel())
        pick = torch.randperm(informative.numel(), generator=rng)[:m]
        columns = informative[pick].to(dev)
        per_pass = _nystrom.nystrom_steps(h, w, m, cfg.block_pixels)

        def make_basis(x):
            return _nystrom.nystrom_basis(
                x, columns, patch_size=cfg.patch_size, rank=cfg.rank, block_pixels=cfg.block_pixels
            )

    total = per_pass * (2 if auto else 1) + 1
    counter = [0]
    basis = yield from _counted(make_basis(y), counter, total)
    y_flat = y.reshape(nch, d)
    if auto:
        spread = float(y.max() - y.min())
        eps = sure_eps(sigma, spread, torch.finfo(y.dtype).eps)
        b = torch.randn((nch, h, w), generator=rng, dtype=y.dtype).to(dev)
        y_eps = y + eps * b
        b_flat = b.reshape(nch, d)
        proj = _twicing.project(basis, y_flat, b_flat)
        basis_eps = yield from _counted(make_basis(y_eps), counter, total)
        proj_eps = _twicing.project(basis_eps, y_eps.reshape(nch, d), b_flat)
        ts = _twicing.t_grid()
        y_sq = (y_flat.double() ** 2).sum(1)
        sure = _twicing.sure_curve(basis, proj, basis_eps.values, proj_eps, y_sq, sigma, eps, ts)
        del basis_eps, proj_eps
        t_sel = ts[sure.argmin(1).cpu().numpy()]
    else:
        proj = _twicing.project(basis, y_flat)
        t_sel = np.full(nch, int(cfg.n_iter))
    yield (total, total)
    return PlaneFit(basis, proj, t_sel, (nch, h, w), *((ts, sure) if auto else ()))


def iter_denoise_plane(
    y: torch.Tensor,
    sigma: float,
    cfg: NTDConfig,
    rng: torch.Generator,
) -> Generator[tuple[int, int], None, torch.Tensor]:
    """Denoise one centred ``(C, H, W)`` plane with the configured method.

    The core every wrapper (stacks, tiles, noise models) calls. All channels
    share one kernel; each channel gets its own stopping time.
    """
    if cfg.method == "dip":
        from ._trainers import iter_dip_plane

        return (yield from iter_dip_plane(y, sigma, cfg, rng))
    fit = yield from iter_fit_plane(y, sigma, cfg, rng)
    return fit.output()


def iter_denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str | None = None,
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    patch_size: int | None = None,
    n_columns: float | int = 0.02,
    rank: int | None = 256,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    block_pixels: int = 4096,
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
    spatial_dims: int = 2,
    architecture: str = "unet",
    optimizer: str = "adam",
    input: str = "image",
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
    if method is None:  # the best method for the data
        method = "guided"
    if patch_size is None:  # 11^3 patches: ~5x the time of 5^3 for +0.04 dB
        patch_size = GUIDED_PATCH_3D if (spatial_dims == 3 and method == "guided") else 11
    cfg = NTDConfig(
        method=method,
        sigma=sigma,
        n_iter=n_iter,
        patch_size=patch_size,
        n_columns=n_columns,
        rank=rank,
        block_pixels=block_pixels,
        seed=seed,
        dip=_dip_config(method, architecture, optimizer, input, width, lr),
    )
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if spatial_dims == 3 and cfg.method not in ("nystrom", "guided"):
        raise NotImplementedError(
            "spatial_dims=3 (r x r x r patches) supports method='guided' or 'nystrom' only, "
            f"got {cfg.method!r}"
        )
    auto = isinstance(noise_model, str) and noise_model == "auto"
    noise = _vst.NoiseModel() if auto else _vst.as_noise_model(noise_model)
    if noise.kind != "gaussian" and cfg.sigma is not None:
        raise ValueError(
            f"sigma applies to the Gaussian noise model; with noise_model={noise.kind!r} the "
            "noise is stabilised to sigma = 1 (set gain/offset/read_noise instead)"
        )
    budget = _tiling.parse_memory(max_memory)
    if tile_shape is not None:
        tile_shape = _tiling.normalize_tile_shape(tile_shape, spatial_dims, cfg)
    img, out_dtype, compute = _prepare(image, channel_axis, preserve_range, spatial_dims)
    if auto:  # fitted on the raw input (its units, its rounding), all planes together
        noise = _vst.resolve_auto(np.asarray(image), channel_axis, spatial_dims, cfg.sigma)
    noise = noise.converted(*_conversion(np.asarray(image).dtype, preserve_range))
    dev = resolve_device(device)
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
        _iter_image,
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


def _conversion(dtype: np.dtype, preserve_range: bool) -> tuple[float, float]:
    """``(scale, shift)`` of the conversion ``raw -> scale * raw + shift`` of ``_prepare``."""
    from skimage.util import img_as_float

    if dtype.kind not in "biu" or preserve_range:
        return 1.0, 0.0
    ends = img_as_float(np.array([0, 1], dtype=dtype))
    return float(ends[1] - ends[0]), float(ends[0])


def _iter_image(
    img: np.ndarray,
    seed: int,
    *,
    cfg: NTDConfig,
    device: torch.device,
    compute: np.dtype,
    noise: _vst.NoiseModel,
    tile_shape: tuple[int, ...] | None,
    max_memory: int,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise one ``(*spatial, C)`` image: noise model, sigma, centring, tiles.

    Returns float64 ``(*spatial, C)``.
    """
    nd = img.ndim - 1
    if cfg.method == "guided":
        # float32 for every input: the pilot's and the kernel's rounding
        # (~1e-7 relative) is far below any noise, and the small sums of the
        # twicing and SURE run in float64 anyway (see _guided)
        compute = np.dtype(np.float32)
    if noise.kind != "gaussian":  # stabilise: noise ~ N(0, 1)
        noise = noise.resolved(img, channel_axis=-1)
        work = _vst.gat_forward(img, noise)
        sig = 1.0
    else:
        work = img
        sig = _estimate_sigma(img) if cfg.sigma is None else float(cfg.sigma)

    center = robust_center(work)
    if center is None:  # constant: nothing to filter
        yield (1, 1)
        return img.astype(np.float64)

    itemsize = np.dtype(compute).itemsize
    if cfg.method == "guided" and tile_shape is None:
        side = _guided.GUIDED_TILE if nd == 2 else _guided.GUIDED_TILE_3D
        side = max(side, _tiling.min_tile_side(cfg))  # large patches
        tiles = tuple(min(side, n) for n in img.shape[:-1])
        tiles = None if tiles == img.shape[:-1] else tiles
    else:
        tiles = _tiling.choose_tile_shape(
            img.shape[:-1], img.shape[-1], cfg, itemsize, tile_shape, max_memory
        )
    piece = img.shape[:-1] if tiles is None else tiles
    whole = 0
    if cfg.method == "guided":  # the pilot and the channel groups are whole-image arrays
        whole = _tiling.guided_image_bytes(img.shape[:-1], img.shape[-1], itemsize)
    _tiling.check_memory(
        piece, img.shape[-1], cfg, itemsize, max_memory, tile_shape is not None, extra=whole
    )

    # The filter is scale-invariant: extreme value ranges, whose patch products
    # would over- or underflow, are brought to ~1 and the result scaled back.
    spread = max(abs(float(work.max()) - center), abs(float(work.min()) - center))
    scale = 1.0 if SAFE_SPREAD[0] <= spread <= SAFE_SPREAD[1] else spread
    centred = work - center if scale == 1.0 else (work.astype(np.float64) - center) / scale
    tdtype = torch.float64 if compute == np.float64 else torch.float32
    rng = torch.Generator().manual_seed(int(seed))
    core = iter_denoise_plane if nd == 2 else _stacks.iter_denoise_volume
    if cfg.method == "guided" and cfg.n_iter == 0:  # t = 0: the pilot alone
        steps = _pilot.PILOT_STEPS
        (z,) = yield from _counted(
            _pilot.iter_pilots([centred.astype(compute)], sig / scale), [0], steps
        )
        if sig <= 0:  # no pilot passes ran
            yield (steps, steps)
        out = z.astype(np.float64) * scale + center
        return _vst.gat_inverse(out, noise) if noise.kind != "gaussian" else out
    if cfg.method == "guided":  # pilot, perturbed pilot and probe as channel groups
        sig_c = sig / scale
        auto = cfg.n_iter == "auto"
        eps = sure_eps(sig_c, spread / scale, float(np.finfo(compute).eps)) if auto else 0.0
        probe = torch.randn(centred.shape, generator=rng, dtype=torch.float64).numpy()
        steps = _pilot.PILOT_STEPS
        total = steps + len(_guided.batches(img.shape[:-1], tiles, cfg, img.shape[-1]))
        stack = yield from _counted(
            _guided.iter_guided_stack(centred.astype(compute), sig_c, eps, probe.astype(compute)),
            [0],
            total,
        )
        y = torch.from_numpy(stack).to(device=device, dtype=tdtype)
        y = y.permute(nd, *range(nd)).contiguous()
        gen = _guided.iter_guided(y, sig_c, cfg, rng, eps=eps, tiles=tiles)
        z = yield from _shifted(gen, steps)
        out = z.permute(*range(1, nd + 1), 0).cpu().numpy().astype(np.float64) * scale + center
        return _vst.gat_inverse(out, noise) if noise.kind != "gaussian" else out
    y = torch.from_numpy(centred).to(device=device, dtype=tdtype)
    y = y.permute(nd, *range(nd)).contiguous()
    if tiles is None:
        z = yield from core(y, sig / scale, cfg, rng)
    else:
        z = yield from _tiling.iter_tiled(y, sig / scale, cfg, rng, core, tiles)
    out = z.permute(*range(1, nd + 1), 0).cpu().numpy().astype(np.float64) * scale + center
    if noise.kind != "gaussian":
        out = _vst.gat_inverse(out, noise)
    return out


def _dip_config(method, architecture, optimizer, input, width, lr):
    """The ``DIPConfig`` of ``method='dip'`` (validated), else ``None``."""
    if method != "dip":
        return None
    from ._trainers import DIPConfig

    return DIPConfig(
        architecture=architecture, optimizer=optimizer, input=input, width=width, lr=lr
    )


def _finish(out: np.ndarray, out_dtype: np.dtype, channel_axis: int | None) -> np.ndarray:
    out = out.astype(out_dtype, copy=False)
    if channel_axis is None:
        return out[..., 0]
    return np.moveaxis(out, -1, channel_axis)


def denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str | None = None,
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    patch_size: int | None = None,
    n_columns: float | int = 0.02,
    rank: int | None = 256,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    progress: bool | Callable[[int, int], Any] | None = None,
    block_pixels: int = 4096,
    tile_shape: int | tuple[int, ...] | None = None,
    max_memory: int | str | None = None,
    noise_model: str | _vst.NoiseModel = "auto",
    spatial_dims: int = 2,
    architecture: str = "unet",
    optimizer: str = "adam",
    input: str = "image",
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
    method : {None, 'guided', 'nystrom', 'exact', 'dip'}
        ``None`` (default) is ``'guided'``, for 2D images and volumes
        (``spatial_dims=3``). ``'guided'`` (beyond the paper; see
        :mod:`napari_ntd._guided`): a classical pilot (sliding-DCT Wiener
        guided by non-local means), the NTK on the pilot's patches, twicing
        started from the pilot in 64 x 64 tiles (16^3 for volumes), and
        Monte-Carlo SURE over the whole map (``t = 0`` is the pilot); the
        best quality and the fastest. ``'nystrom'`` is the paper's algorithm:
        the filter from ``n_columns`` random columns (appendix G) of the
        kernel on the noisy image, twicing from zero. ``'exact'`` builds the full
        ``d x d`` filter; images of at most ``EXACT_MAX_PIXELS`` pixels.
        ``'dip'`` trains a network on the image (sections 5-6; options
        ``architecture``, ``optimizer``, ``input``, ``width``, ``lr``; see
        :mod:`napari_ntd._trainers`); ``n_iter`` counts its updates and
        ``'auto'`` keeps the iterate with the smallest Monte-Carlo SURE
        (a twin network trained on ``y + eps b``, twice the cost).
    n_iter : int or 'auto'
        Twicing iterations ``t``. ``'auto'`` chooses ``t`` by Monte-Carlo SURE
        (one extra pass on ``y + eps b`` with the same columns), separately
        for each channel. ``0`` (guided method only) returns its pilot alone:
        no NTK stage, the fastest setting (about 5x faster on volumes, 0.05 dB
        lower on the benchmarks).
    channel_axis : int, optional
        Axis of the channels. All channels share one kernel computed from
        their joint patches (appendix E) and are filtered separately.
    patch_size : int, optional
        Side of the first convolution, i.e. of the compared patches (odd).
        Default 11; ``GUIDED_PATCH_3D`` (5) for the guided method on volumes.
    n_columns : float or int
        Nystrom columns: a fraction of the pixels (default 2 %, kept within
        [64, 6000]) or an exact count.
    rank : int or None
        Leading eigenimages kept after the Nystrom extension (default 256);
        ``None`` keeps all numerically non-zero ones (the paper's setting).
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
        Kernel rows computed at once (memory ``~ 5 * block_pixels * m``
        floats).
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
    architecture : {'unet', 'vanilla'}
        ``method='dip'``: the U-Net of appendix H.2 (3 x 3 convs, three
        bilinear down/up stages, no skips; any size, padded internally) or the
        vanilla CNN of H.1 (``patch_size`` conv, ReLU, 1 x 1 conv).
    optimizer : {'adam', 'gd', 'adam+gd'}
        ``method='dip'``: Adam (betas 0.9, 0.999), plain gradient descent
        (learning rate ``1 / lambda_max`` of the tangent kernel, ``O(1/c)``;
        the NTK regime, slow: the paper needs 1e4-1e5 steps), or Adam then
        gradient descent with the adapted kernel (appendix I.4).
    input : {'image', 'noise'}
        ``method='dip'``: the noisy image (initial output subtracted) or iid
        Gaussian noise (the original DIP) at the network input.
    width : int, optional
        ``method='dip'``: hidden channels. The default (32 for the U-Net, 64
        for the vanilla CNN) is chosen for CPUs: a 256 x 256 float64 image
        with the U-Net takes about 0.45 s per Adam iteration with the SURE
        twin on two idle cores (about 1 s when another job shares them), so
        10-25 min at the cap of 1500 iterations; float32 input runs in
        float32, about 7x faster. The paper uses 128 and 512 (the U-Net at 128:
        about 3 s per step in float64, 0.7 s in float32).
    lr : float, optional
        ``method='dip'``: learning rate; ``None`` uses ``min(0.005, 0.16 / width)``
        for Adam and ``1 / lambda_max(J J^T)`` for gradient descent.

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
        Complex or non-numeric images.
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
    Computation runs in float64 for float64 input and float32 otherwise.

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
    """
    if _dask.is_dask_array(image):  # lazy in, lazy out; every option passes through
        options = {k: v for k, v in locals().items() if k != "image"}
        return _dask.denoise_dask(image, **options)
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
        architecture=architecture,
        optimizer=optimizer,
        input=input,
        width=width,
        lr=lr,
    )
    with make_reporter(progress) as report:
        return run_to_end(gen, lambda step: report(*step))
