"""Noise models: the generalized Anscombe transform (GAT) and its inverse.

Shot-noise-limited images (fluorescence microscopy, photon counting) follow
the Poisson-Gaussian model of Makitalo & Foi::

    z = gain * p + n,    p ~ Poisson(y),    n ~ N(offset, read_noise^2)

whose variance ``gain * (E z - offset) + read_noise^2`` grows with the
signal. The GAT ::

    f(z) = 2 sqrt(max((z - offset) / gain + 3/8 + (read_noise / gain)^2, 0))

makes the noise approximately N(0, 1), so the Gaussian denoiser runs on
``f(z)`` with ``sigma = 1``. The *exact unbiased inverse* maps a denoised
value ``D`` back to the ``y`` with ``E[f(z) | y] = D`` (Makitalo & Foi 2011,
2013): the algebraic inverse of ``f`` is biased at low counts because the
square root is concave. ``E[f(z) | y]`` is tabulated here by summing the
Poisson probabilities (and Gauss-Hermite quadrature over the read noise) up
to ``y = TABLE_MAX`` photons; above it, the asymptotic inverse
``y = ((D + sqrt(D^2 + 2)) / 4)^2 - 3/8 - (read_noise / gain)^2`` is exact
to ~5e-5 photons.

All parameters here are in the units of the array they apply to; the
adaptation from the units of the user's raw (integer) image happens in
:func:`NoiseModel.converted`.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "NOISE_MODELS",
    "NoiseModel",
    "as_noise_model",
    "resolve_auto",
    "estimate_poisson_gaussian",
    "gat_forward",
    "gat_inverse",
    "expected_gat",
]

#: Accepted ``noise_model`` names (``'auto'``, the default of ``denoise_ntd``,
#: is resolved from the image by :func:`resolve_auto`).
NOISE_MODELS = ("gaussian", "poisson", "poisson-gaussian")

#: Photon level up to which ``E[f(z) | y]`` is tabulated exactly.
TABLE_MAX = 300.0


@dataclass(frozen=True)
class NoiseModel:
    """A noise model and its parameters.

    Parameters
    ----------
    kind : {'gaussian', 'poisson', 'poisson-gaussian'}
        ``'gaussian'``: additive white noise of std ``sigma`` (the
        denoiser's native model). ``'poisson'``: ``z = gain * Poisson(y) +
        offset``. ``'poisson-gaussian'``: plus N(0, read_noise^2).
    gain : float, optional
        Intensity units per photon (e.g. ADU per electron). ``None``
        estimates it from the image.
    offset : float, optional
        Dark level (camera offset); ``None`` means 0 for ``'poisson'`` and,
        for ``'poisson-gaussian'``, is folded with the read noise into the
        estimated variance intercept.
    read_noise : float, optional
        Std of the Gaussian part, in intensity units. ``None`` estimates it
        (``'poisson-gaussian'``); must be None or 0 for ``'poisson'``.

    Notes
    -----
    ``gain``, ``offset`` and ``read_noise`` are in the units of the *input*
    image: raw ADU for an integer image, even when it is converted to
    [0, 1] (``preserve_range=False``).
    """

    kind: str = "gaussian"
    gain: float | None = None
    offset: float | None = None
    read_noise: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOISE_MODELS:
            raise ValueError(f"unknown noise_model {self.kind!r}; expected one of {NOISE_MODELS}")
        for name in ("gain", "offset", "read_noise"):
            val = getattr(self, name)
            if val is None:
                continue
            if isinstance(val, bool) or not isinstance(val, numbers.Real):
                raise TypeError(f"{name} must be a real number or None, got {val!r}")
            if not np.isfinite(val):
                raise ValueError(f"{name} must be finite, got {val}")
        if self.gain is not None and self.gain <= 0:
            raise ValueError(f"gain must be > 0, got {self.gain}")
        if self.read_noise is not None and self.read_noise < 0:
            raise ValueError(f"read_noise must be >= 0, got {self.read_noise}")
        if self.kind == "gaussian" and any(
            v is not None for v in (self.gain, self.offset, self.read_noise)
        ):
            raise ValueError(
                "gain, offset and read_noise apply to the 'poisson' and 'poisson-gaussian' "
                "noise models; the Gaussian model uses sigma"
            )
        if self.kind == "poisson" and self.read_noise not in (None, 0):
            raise ValueError("noise_model='poisson' has no read noise; use 'poisson-gaussian'")

    def converted(self, scale: float, shift: float) -> NoiseModel:
        """The same model in the units of ``scale * raw + shift``."""
        return replace(
            self,
            gain=None if self.gain is None else self.gain * scale,
            offset=None if self.offset is None else self.offset * scale + shift,
            read_noise=None if self.read_noise is None else self.read_noise * scale,
        )

    def resolved(self, image: np.ndarray, channel_axis: int | None = None) -> NoiseModel:
        """All parameters set: missing ones estimated from ``image`` (same units)."""
        if self.kind == "gaussian":
            return self
        if self.kind == "poisson":
            offset = 0.0 if self.offset is None else self.offset
            gain = self.gain
            if gain is None:
                gain, _ = estimate_poisson_gaussian(
                    image, offset=offset, poisson_only=True, channel_axis=channel_axis
                )
            return replace(self, gain=gain, offset=offset, read_noise=0.0)
        if self.gain is not None and self.read_noise is not None:
            return replace(self, offset=0.0 if self.offset is None else self.offset)
        gain, intercept = estimate_poisson_gaussian(
            image, offset=self.offset, channel_axis=channel_axis
        )
        gain = self.gain if self.gain is not None else gain
        # var = gain * (mean - offset) + read^2 = gain * mean + intercept
        if self.read_noise is not None:
            read = self.read_noise
            offset = self.offset if self.offset is not None else (read**2 - intercept) / gain
        elif self.offset is not None:
            read = float(np.sqrt(max(intercept + gain * self.offset, 0.0)))
            offset = self.offset
        elif intercept >= 0:
            read, offset = float(np.sqrt(intercept)), 0.0
        else:
            read, offset = 0.0, -intercept / gain
        return replace(self, gain=float(gain), offset=float(offset), read_noise=float(read))


def as_noise_model(noise_model: str | NoiseModel | None) -> NoiseModel:
    """``'poisson'`` etc., a :class:`NoiseModel` or an estimate -> a :class:`NoiseModel`.

    An object with a ``to_model()`` method (a
    :class:`~napari_ntd._noise_estimation.NoiseEstimate`) gives its model.
    """
    if noise_model is None:
        return NoiseModel()
    if isinstance(noise_model, str) and noise_model == "auto":
        raise ValueError("noise_model='auto' is resolved from the image: use resolve_auto")
    if isinstance(noise_model, NoiseModel):
        return noise_model
    if isinstance(noise_model, str):
        return NoiseModel(kind=noise_model)
    to_model = getattr(noise_model, "to_model", None)
    if callable(to_model) and isinstance(model := to_model(), NoiseModel):
        return model
    raise TypeError(f"noise_model must be a name or a NoiseModel, got {noise_model!r}")


def resolve_auto(
    image: np.ndarray, channel_axis: int | None, spatial_dims: int, sigma: float | None
) -> NoiseModel:
    """The model ``noise_model='auto'`` picks for ``image`` (raw units).

    A given ``sigma`` means Gaussian noise. Otherwise the noise-level
    function is fitted (:func:`napari_ntd._noise_estimation.estimate_noise`,
    all planes of a stack together): Poisson-Gaussian when the variance
    grows with the signal, else Gaussian (``sigma`` then estimated per image
    as for ``noise_model='gaussian'``). Images the fit cannot use (smaller
    than 16 x 16, constant, no level away from clipping) are Gaussian.
    """
    import warnings

    from ._noise_estimation import estimate_noise

    if sigma is not None or image.dtype.kind == "b":
        return NoiseModel()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = estimate_noise(image, channel_axis=channel_axis, spatial_dims=spatial_dims)
    except ValueError:
        return NoiseModel()
    return est.to_model()


def _normalized(model: NoiseModel) -> tuple[float, float, float]:
    if model.gain is None or model.offset is None or model.read_noise is None:
        raise ValueError(f"noise model parameters are not all known: {model}")
    return float(model.gain), float(model.offset), float(model.read_noise) / float(model.gain)


def gat_forward(z: np.ndarray, model: NoiseModel) -> np.ndarray:
    """Generalized Anscombe transform; the output noise has std ~1."""
    gain, offset, s = _normalized(model)
    return 2.0 * np.sqrt(np.maximum((z - offset) / gain + 0.375 + s * s, 0.0))


@functools.lru_cache(maxsize=32)
def _table(s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(y, E[f(z) | y])`` on a grid of photon levels for read noise ``s`` photons."""
    from scipy.stats import poisson

    ys = np.unique(np.concatenate([np.linspace(0, 4, 201), np.geomspace(4, TABLE_MAX, 400)]))
    kmax = int(TABLE_MAX + 15 * np.sqrt(TABLE_MAX) + 40)
    k = np.arange(kmax + 1, dtype=np.float64)
    if s > 0:
        x, w = np.polynomial.hermite_e.hermegauss(96)
        w = w / w.sum()
        fk = (2.0 * np.sqrt(np.maximum(k[:, None] + s * x[None] + 0.375 + s * s, 0.0))) @ w
    else:
        fk = 2.0 * np.sqrt(k + 0.375)
    pmf = poisson.pmf(k[None, :], ys[:, None])
    return ys, pmf @ fk


def expected_gat(y: np.ndarray, read_noise_photons: float = 0.0) -> np.ndarray:
    """``E[f(z) | y]`` for photon levels ``y <= TABLE_MAX`` (normalized units)."""
    ys, ef = _table(float(read_noise_photons))
    return np.interp(y, ys, ef)


def gat_inverse(d: np.ndarray, model: NoiseModel, *, unbiased: bool = True) -> np.ndarray:
    """Back from the stabilised domain to intensities ``gain * y + offset``.

    ``unbiased=True`` (default) is the exact unbiased inverse
    ``y = E[f | y]^{-1}(d)`` (0 below ``E[f | 0]``); ``unbiased=False`` the
    algebraic inverse of :func:`gat_forward`.
    """
    gain, offset, s = _normalized(model)
    d = np.asarray(d, dtype=np.float64)
    c = 0.375 + s * s
    if not unbiased:
        y = np.maximum(d, 0.0) ** 2 / 4.0 - c
    else:
        ys, ef = _table(s)
        t = (d + np.sqrt(d * d + 2.0)) / 4.0
        y = np.where(d > ef[-1], t * t - c, np.interp(d, ef, ys))
        y = np.maximum(y, 0.0)
    return gain * y + offset


def estimate_poisson_gaussian(
    image: np.ndarray,
    *,
    offset: float | None = None,
    poisson_only: bool = False,
    channel_axis: int | None = None,
    n_bins: int = 32,
) -> tuple[float, float]:
    """Fit ``var(z) = gain * E[z] + intercept`` from one image.

    Parameters
    ----------
    image : ndarray, shape (..., H, W)
        The noisy image; the fit uses 2D ``3 x 3`` high-pass residuals of
        each plane over the last two axes (after moving ``channel_axis``).
    offset : float, optional
        Known dark level; with ``poisson_only`` the intercept is
        ``-gain * offset``.
    poisson_only : bool
        Fit ``var = gain * (E[z] - offset)`` (no read noise).
    channel_axis : int, optional
        Axis of the channels, if any (all channels share one fit).
    n_bins : int
        Number of equal-count intensity levels.

    Returns
    -------
    gain, intercept : float

    Notes
    -----
    The residual ``r = (K * z) / 6`` with the Laplacian-like kernel
    ``K = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (``||K|| = 6``) removes
    locally linear signal; ``r``'s variance is the noise variance. The local
    mean is a ``5 x 5`` box average. Per intensity level, the variance is the
    squared normalized MAD of ``r`` (robust to edges), and a weighted least
    squares line is fitted, then refitted without levels far above it
    (texture). In the spirit of Foi et al., IEEE TIP 17(10), 2008.
    """
    from scipy import ndimage

    arr = np.asarray(image, dtype=np.float64)
    if channel_axis is not None:
        arr = np.moveaxis(arr, channel_axis, 0)
    planes = arr.reshape((-1, *arr.shape[-2:]))
    k = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]]) / 6.0
    res = ndimage.convolve(planes, k[None], mode="reflect")
    mean = ndimage.uniform_filter(planes, size=(1, 5, 5), mode="reflect")
    # drop the borders (reflection) and flat saturated areas
    res, mean = res[:, 2:-2, 2:-2].ravel(), mean[:, 2:-2, 2:-2].ravel()
    if mean.size < 16 * n_bins:
        n_bins = max(2, mean.size // 16)
    order = np.argsort(mean, kind="stable")
    levels, variances, counts = [], [], []
    for idx in np.array_split(order, n_bins):
        r = res[idx]
        mad = np.median(np.abs(r - np.median(r)))
        v = (1.4826 * mad) ** 2
        if v <= 0:  # quantized flat level (e.g. all zeros): use the plain variance
            v = float(r.var())
        levels.append(mean[idx].mean())
        variances.append(v)
        counts.append(idx.size)
    m, v, n = np.array(levels), np.array(variances), np.array(counts, dtype=np.float64)
    keep = np.ones(m.size, dtype=bool)
    off = 0.0 if offset is None else float(offset)
    gain, intercept = 0.0, 0.0
    for _ in range(3):
        # weights ~ 1 / var(v_hat) ~ n / v^2 (chi-square variance)
        w = n[keep] / np.maximum(v[keep], np.finfo(float).tiny) ** 2
        if poisson_only:
            x = m[keep] - off
            gain = float((w * x * v[keep]).sum() / max((w * x * x).sum(), np.finfo(float).tiny))
            intercept = -gain * off
        else:
            a = np.stack([m[keep], np.ones(keep.sum())], axis=1) * np.sqrt(w)[:, None]
            sol, *_ = np.linalg.lstsq(a, v[keep] * np.sqrt(w), rcond=None)
            gain, intercept = float(sol[0]), float(sol[1])
        fit = gain * m + intercept
        new = v <= 1.5 * np.maximum(fit, 0) + 1e-12 * v.max()
        if new.sum() < 2 or np.array_equal(new, keep):
            break
        keep = new
    if not gain > 0:
        raise ValueError(
            "could not estimate a positive gain from this image (is it shot-noise limited?); "
            "pass gain= explicitly"
        )
    return gain, intercept
