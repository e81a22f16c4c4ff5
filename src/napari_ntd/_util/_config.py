"""The validated options of one ``denoise_ntd`` run (:class:`NTDConfig`)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["METHODS", "MIN_COLUMNS", "MAX_COLUMNS", "NTDConfig", "is_int"]


#: Methods accepted by ``denoise_ntd``.
METHODS = ("guided", "nystrom", "exact", "dip")


#: Floor and cap on the number of Nystrom columns.
MIN_COLUMNS = 64


MAX_COLUMNS = 6000


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
        elif is_int(self.n_iter) and self.n_iter == 0:
            if self.method != "guided":
                raise ValueError(
                    "n_iter=0 (no twicing: the pilot alone) applies to method='guided' only"
                )
        elif not is_int(self.n_iter) or self.n_iter < 1:
            raise ValueError(f"n_iter must be 'auto' or a positive int, got {self.n_iter!r}")
        if not is_int(self.patch_size) or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise ValueError(f"patch_size must be a positive odd int, got {self.patch_size!r}")
        n = self.n_columns
        if isinstance(n, bool) or not isinstance(n, numbers.Real):
            raise TypeError(f"n_columns must be a fraction in (0, 1] or an int, got {n!r}")
        if is_int(n):
            if n < 1:
                raise ValueError(f"n_columns must be >= 1, got {n}")
        elif not 0 < n <= 1:
            raise ValueError(f"a fractional n_columns must be in (0, 1], got {n}")
        if self.rank is not None and (not is_int(self.rank) or self.rank < 1):
            raise ValueError(f"rank must be a positive int or None, got {self.rank!r}")
        if not is_int(self.block_pixels) or self.block_pixels < 1:
            raise ValueError(f"block_pixels must be a positive int, got {self.block_pixels!r}")
        if self.seed is not None and not is_int(self.seed):
            raise TypeError(f"seed must be an int or None, got {self.seed!r}")

    def columns(self, d: int) -> int:
        """Number of Nystrom columns for an image of ``d`` pixels."""
        n = self.n_columns
        m = int(n) if is_int(n) else round(n * d)
        return int(min(d, max(m, MIN_COLUMNS), MAX_COLUMNS if not is_int(n) else d))


def is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)
