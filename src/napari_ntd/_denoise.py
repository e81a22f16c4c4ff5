"""The public entry point: ``denoise_ntd`` and its step-wise generator.

This module only adapts arrays (dtype rules, channels, validation, device)
and chains the stages: kernel (``_kernel``), eigenbasis (``_nystrom``),
twicing and stopping (``_twicing``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import _nystrom, _twicing
from ._progress import make_reporter

__all__ = ["denoise_ntd", "iter_denoise_ntd", "NTDConfig", "METHODS", "EXACT_MAX_PIXELS"]

#: Methods accepted by ``denoise_ntd``.
METHODS = ("nystrom", "exact")

#: Largest image (in pixels) for ``method="exact"``: the d x d float64 matrix
#: and its eigendecomposition (~0.5 GB and ~1 min at this size).
EXACT_MAX_PIXELS = 64 * 64

#: Floor and cap on the number of Nystrom columns.
MIN_COLUMNS = 64
MAX_COLUMNS = 6000

#: Relative size of the Monte-Carlo SURE perturbation (times sigma).
SURE_EPS = 1e-2


@dataclass(frozen=True)
class NTDConfig:
    """Validated options of one ``denoise_ntd`` run (see its docstring)."""

    method: str = "nystrom"
    sigma: float | None = None
    n_iter: int | str = "auto"
    patch_size: int = 11
    n_columns: float | int = 0.02
    rank: int | None = 256
    block_pixels: int = 4096
    seed: int | None = None

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


def _prepare(
    image: Any, channel_axis: int | None, preserve_range: bool
) -> tuple[np.ndarray, np.dtype, np.dtype]:
    """Validate and convert to a float (H, W, C) array (skimage dtype rules).

    Returns the float image, the output dtype and the compute dtype.
    """
    from skimage.util import img_as_float

    arr = np.asarray(image)
    if arr.dtype.kind == "c":
        raise TypeError("complex images are not supported; denoise real and imaginary parts")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"image must be a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    expected = 2 if channel_axis is None else 3
    if arr.ndim != expected:
        hint = (
            "pass channel_axis for a multichannel image"
            if channel_axis is None and arr.ndim == 3
            else "denoise stacks slice by slice"
        )
        raise NotImplementedError(
            f"denoise_ntd supports 2D images (ndim {expected} with channel_axis="
            f"{channel_axis}); got shape {arr.shape} ({hint})"
        )
    if channel_axis is not None:
        if not _is_int(channel_axis) or not -arr.ndim <= channel_axis < arr.ndim:
            raise ValueError(f"channel_axis={channel_axis!r} is invalid for shape {arr.shape}")
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


def _estimate_sigma(img: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma

    multichannel = img.shape[-1] > 1
    sig = estimate_sigma(
        img if multichannel else img[..., 0],
        channel_axis=-1 if multichannel else None,
        average_sigmas=True,
    )
    return float(sig)


def iter_denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str = "nystrom",
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    patch_size: int = 11,
    n_columns: float | int = 0.02,
    rank: int | None = 256,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    block_pixels: int = 4096,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Step-wise :func:`denoise_ntd`: yields ``(done, total)`` and returns the result.

    Same parameters as :func:`denoise_ntd` (without ``progress``). Use it to
    drive the denoiser from an event loop or worker thread and stop between
    steps: ``result = yield from iter_denoise_ntd(image)``, or iterate and
    read ``StopIteration.value``.
    """
    cfg = NTDConfig(
        method=method,
        sigma=sigma,
        n_iter=n_iter,
        patch_size=patch_size,
        n_columns=n_columns,
        rank=rank,
        block_pixels=block_pixels,
        seed=seed,
    )
    img, out_dtype, compute = _prepare(image, channel_axis, preserve_range)
    dev = resolve_device(device)
    h, w, nch = img.shape
    d = h * w
    if h < cfg.patch_size or w < cfg.patch_size:
        raise ValueError(
            f"image ({h} x {w}) is smaller than the patch ({cfg.patch_size} x {cfg.patch_size}); "
            "use a smaller patch_size"
        )
    if cfg.method == "exact" and d > EXACT_MAX_PIXELS:
        raise ValueError(
            f"method='exact' builds the full {d} x {d} filter; it is limited to "
            f"{EXACT_MAX_PIXELS} pixels. Use method='nystrom' for this image."
        )
    sig = _estimate_sigma(img) if cfg.sigma is None else float(cfg.sigma)
    auto = cfg.n_iter == "auto"

    lo, hi = np.percentile(img, [0.5, 99.5])
    if hi <= lo:  # constant (or almost everywhere constant) image: nothing to filter
        lo, hi = img.min(), img.max()
        if hi <= lo:
            yield (1, 1)
            return _finish(img, out_dtype, channel_axis, image)
    center = 0.5 * (lo + hi)

    tdtype = torch.float64 if compute == np.float64 else torch.float32
    rng = torch.Generator().manual_seed(
        cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    )
    y = torch.from_numpy(img - center).to(device=dev, dtype=tdtype)  # (H, W, C)
    y = y.permute(2, 0, 1).contiguous()  # (C, H, W)

    if cfg.method == "exact":
        m = d
        per_pass = _nystrom.EXACT_STEPS

        def make_basis(x):
            return _nystrom.exact_basis(x, patch_size=cfg.patch_size)
    else:
        m = cfg.columns(d)
        columns = torch.randperm(d, generator=rng)[:m].to(dev)
        per_pass = _nystrom.nystrom_steps(h, w, m, cfg.block_pixels)

        def make_basis(x):
            return _nystrom.nystrom_basis(
                x, columns, patch_size=cfg.patch_size, rank=cfg.rank, block_pixels=cfg.block_pixels
            )

    total = per_pass * (2 if auto else 1) + 1
    done = 0

    def steps(gen):
        nonlocal done
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value
            done += 1
            yield (done, total)

    basis = yield from steps(make_basis(y))
    y_flat = y.reshape(nch, d)
    if auto:
        eps = SURE_EPS * max(sig, 1e-3 * float(hi - lo))
        b = torch.randn((nch, h, w), generator=rng, dtype=tdtype).to(dev)
        y_eps = y + eps * b
        b_flat = b.reshape(nch, d)
        proj = _twicing.project(basis, y_flat, b_flat)
        basis_eps = yield from steps(make_basis(y_eps))
        proj_eps = _twicing.project(basis_eps, y_eps.reshape(nch, d), b_flat)
        ts = _twicing.t_grid()
        y_sq = (y_flat.double() ** 2).sum(1)
        sure = _twicing.sure_curve(basis, proj, basis_eps.values, proj_eps, y_sq, sig, eps, ts)
        del basis_eps
        t_sel = ts[sure.argmin(1).cpu().numpy()]
    else:
        proj = _twicing.project(basis, y_flat)
        t_sel = np.full(nch, int(cfg.n_iter))
    z = _twicing.apply(basis, proj, t_sel)
    done += 1
    yield (done, total)
    out = z.reshape(nch, h, w).permute(1, 2, 0).cpu().numpy().astype(np.float64) + center
    return _finish(out, out_dtype, channel_axis, image)


def _finish(out: np.ndarray, out_dtype: np.dtype, channel_axis: int | None, image: Any):
    out = out.astype(out_dtype, copy=False)
    if channel_axis is None:
        return out[..., 0]
    return np.moveaxis(out, -1, channel_axis)


def denoise_ntd(
    image: Any,
    *,
    sigma: float | None = None,
    method: str = "nystrom",
    n_iter: int | str = "auto",
    channel_axis: int | None = None,
    patch_size: int = 11,
    n_columns: float | int = 0.02,
    rank: int | None = 256,
    device: str | torch.device | None = None,
    seed: int | None = None,
    preserve_range: bool = False,
    progress: bool | Callable[[int, int], Any] | None = None,
    block_pixels: int = 4096,
) -> np.ndarray:
    """Denoise an image with the neural tangent denoiser (NTD).

    PLACEHOLDER
    """
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
    )
    with make_reporter(progress) as report:
        while True:
            try:
                report(*next(gen))
            except StopIteration as stop:
                return stop.value
