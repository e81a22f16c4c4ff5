"""Checks shared by the numpy and dask paths: image layout and device."""

from __future__ import annotations

import numpy as np
import torch

from ._config import is_int

__all__ = ["check_layout", "resolve_device"]


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
    if channel_axis is not None and (not is_int(channel_axis) or not -ndim <= channel_axis < ndim):
        raise ValueError(f"channel_axis={channel_axis!r} is invalid for shape {shape}")


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
