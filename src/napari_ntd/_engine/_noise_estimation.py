"""Single-image estimation of the noise-level function of raw camera frames.

:func:`estimate_noise` fits ``var(z) = a * E[z] + b`` to one image and
returns a :class:`NoiseEstimate`; ``estimate.to_model()`` is the matching
:class:`~napari_ntd._vst.NoiseModel` for ``denoise_ntd(image,
noise_model=...)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ._vst import NoiseModel

__all__ = ["NoiseEstimate", "estimate_noise"]

#: Smallest plane side accepted (the statistics use up to 13 x 13 windows).
MIN_SIDE = 16
#: Fewest usable pixels (after borders, clipping and edges) for a fit.
MIN_PIXELS = 256
#: Pixels per level set (fewer are merged with the next level).
MIN_LEVEL_COUNT = 128
#: At most this many pixels are analysed (evenly spaced planes of a stack).
MAX_PIXELS = 8_000_000
#: Fraction of the (smooth, unclipped) pixels whose mean is the dark floor.
DARK_FRACTION = 0.01
#: The noise is called Poisson-Gaussian when the signal-dependent variance
#: ``a * (brightest - darkest level)`` exceeds this fraction of the variance at
#: the brightest level, and ``a`` is more than ``SLOPE_Z`` standard errors > 0.
SIGNAL_DEPENDENT_FRACTION = 0.1
SLOPE_Z = 3.0
#: Pixels whose local band-pass energy exceeds this multiple of what the
#: noise alone gives are edges or texture (not used in the fit).
SMOOTH_FACTOR = 1.5
#: Band-pass (difference of Gaussians) scales, and the outer and inner sides
#: of the square ring averaging its energy (the ring leaves out the band-pass
#: values that share noise with the pixel's residual, which would bias the
#: selection).
DOG_SIGMAS = (1.0, 2.0)
TEXTURE_RING = (13, 7)
#: Refits with the texture mask of the previous fit.
SMOOTH_ITERATIONS = 3
#: Residuals further than this many robust std from the median are outliers.
TRUNCATION = 4.0

# Residual kernels, unit norm, 3 x 3. Precise: the pixel minus the mean of its
# 8 neighbours (kills affine signal; nearly uncorrelated residuals). Robust:
# (1, -2, 1) x (1, -2, 1) / 6, which kills any signal affine along x or along
# y (edges along the axes, ramps, curvature along one axis), but whose
# overlapping residuals are more correlated (a less precise variance).
_PRECISE = np.full((3, 3), -1.0 / 8.0)
_PRECISE[1, 1] = 1.0
_PRECISE /= np.linalg.norm(_PRECISE)
_ROBUST = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]) / 6.0
#: Square ring (outer, inner side) of the level-set statistic: the pixels at
#: distances 2-3, none shared with the 3 x 3 residual and level.
LEVEL_RING = (7, 3)
_BORDER = LEVEL_RING[0] // 2


def _residual_corr(kernel: np.ndarray) -> float:
    """``sum rho^2`` over lags: ``var(sample variance) = 2 v^2 corr / n`` for
    ``n`` overlapping residuals of white Gaussian noise."""
    from scipy import signal

    rho = signal.correlate(kernel, kernel, mode="full")
    return float((rho**2).sum())


_CORR_PRECISE = _residual_corr(_PRECISE)
_CORR_ROBUST = _residual_corr(_ROBUST)


def _dog_norm2() -> float:
    """Squared norm of the band-pass kernel (its noise gain)."""
    from scipy import ndimage

    size = int(8 * max(DOG_SIGMAS)) + 1
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    dog = ndimage.gaussian_filter(delta, DOG_SIGMAS[0]) - ndimage.gaussian_filter(
        delta, DOG_SIGMAS[1]
    )
    return float((dog**2).sum())


@dataclass(frozen=True)
class NoiseEstimate:
    """A fitted noise-level function ``var(z) = slope * E[z] + intercept``.

    All values are in the units of the image as given (ADU for integer
    images). Print it for a one-line summary; :meth:`to_model` gives the
    :class:`~napari_ntd._vst.NoiseModel` for ``denoise_ntd``.

    Attributes
    ----------
    kind : {'gaussian', 'poisson-gaussian'}
        The model chosen from the fit.
    sigma : float or None
        ``'gaussian'``: the noise std (quantisation excluded).
    gain : float or None
        ``'poisson-gaussian'``: units per photo-electron (the slope).
    offset : float or None
        ``'poisson-gaussian'``: the black level; the dark floor of the image
        unless given (see :func:`estimate_noise`).
    read_noise : float or None
        ``'poisson-gaussian'``: std of the signal-independent noise at the
        offset, quantisation excluded.
    slope, intercept : float
        The fitted line (quantisation included in ``intercept``).
    slope_stderr, intercept_stderr : float
        Their standard errors.
    quantization_variance : float
        ``1/12`` for integer images (uniform rounding error), else 0.
    offset_source : {'dark floor', 'given', ''}
        Where ``offset`` comes from.
    integer : bool
        Whether the image had an integer dtype (units ADU).
    levels, variances, counts : ndarray
        The level sets used in the final fit: mean intensity, robust
        variance and pixel count (for plots and diagnostics).
    """

    kind: str
    sigma: float | None = None
    gain: float | None = None
    offset: float | None = None
    read_noise: float | None = None
    slope: float = 0.0
    intercept: float = 0.0
    slope_stderr: float = 0.0
    intercept_stderr: float = 0.0
    quantization_variance: float = 0.0
    offset_source: str = ""
    integer: bool = False
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    variances: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def __str__(self) -> str:
        unit = " ADU" if self.integer else ""
        if self.kind == "gaussian":
            return f"Gaussian noise: sigma {self.sigma:.3g}{unit}"
        per = " ADU/e-" if self.integer else " per e-"
        return (
            f"Poisson-Gaussian noise: gain {self.gain:.3g}{per}, offset {self.offset:.4g}{unit}, "
            f"read noise {self.read_noise:.3g}{unit} ({self.read_noise / self.gain:.1f} e-)"
        )

    def variance(self, level: float | np.ndarray) -> float | np.ndarray:
        """The fitted noise variance at intensity ``level`` (quantisation included)."""
        if self.kind == "gaussian":
            return np.zeros_like(np.asarray(level, dtype=float)) + (
                self.sigma**2 + self.quantization_variance
            )
        return self.slope * np.asarray(level, dtype=float) + self.intercept

    def to_model(self) -> NoiseModel:
        """The :class:`~napari_ntd._vst.NoiseModel` of this estimate.

        ``'poisson-gaussian'``: ``NoiseModel('poisson-gaussian', gain, offset,
        read_noise)`` where the read noise includes the rounding error
        (``sqrt(read_noise^2 + quantization_variance)``), since the
        stabilising transform must cover all the signal-independent noise in
        the data. ``'gaussian'``: ``NoiseModel('gaussian')``; the noise
        model has no sigma, so pass ``sigma`` to ``denoise_ntd`` yourself (in
        its units: integer images are scaled to [0, 1] unless
        ``preserve_range=True``) or let it estimate sigma.
        """
        if self.kind == "gaussian":
            return NoiseModel("gaussian")
        read = float(np.sqrt(self.read_noise**2 + self.quantization_variance))
        return NoiseModel(
            "poisson-gaussian", gain=float(self.gain), offset=float(self.offset), read_noise=read
        )


def estimate_noise(
    image: np.ndarray,
    *,
    offset: float | None = None,
    channel_axis: int | None = None,
    spatial_dims: int = 2,
) -> NoiseEstimate:
    """Estimate the noise-level function of a raw image from the image alone.

    Fits ``var(z) = a * E[z] + b`` (Poisson-Gaussian: ``a`` is the gain,
    ``b = read_noise^2 - a * offset`` plus the rounding variance) over the
    smooth parts of the image, in the spirit of Foi et al. (2008), and
    decides between a Gaussian and a Poisson-Gaussian model.

    Parameters
    ----------
    image : array_like, shape (..., H, W)
        The raw noisy image or stack (e.g. uint16 camera frames in ADU, or
        float data). Each 2D plane over the last two axes (after moving
        ``channel_axis``) contributes to one joint fit, so all planes and
        channels must share one noise model (one camera and gain). Stacks
        of more than ``MAX_PIXELS`` pixels are estimated from evenly spaced
        planes.
    offset : float, optional
        The black level, if known (camera specification or a dark frame).
        ``None`` uses the dark floor of the image (see Notes).
    channel_axis : int, optional
        Axis of the channels, if any.
    spatial_dims : {2, 3}
        As in ``denoise_ntd``. The statistics are 2D in either case (the
        noise is assumed white and the same in every plane), so a volume
        is read as a stack of planes.

    Returns
    -------
    NoiseEstimate
        Kind, parameters and the fitted line. For ``'poisson-gaussian'``,
        ``gain``, ``offset`` and ``read_noise``; for ``'gaussian'``,
        ``sigma``.

    Raises
    ------
    ValueError
        Planes smaller than 16 x 16, NaN/inf values, too few usable pixels
        or no level away from clipping (e.g. an image almost all clipped).
    TypeError
        Complex, boolean or non-numeric images.

    Warns
    -----
    UserWarning
        A constant image (returned as Gaussian with sigma 0), a single
        intensity level (no slope can be fitted: Gaussian), a read noise
        that comes out negative (set to 0), a given ``offset`` above the
        dark floor, integer data with noise below ~0.5 ADU (the rounding
        correction does not hold).

    Notes
    -----
    The model (Foi et al. [1]_): ``z = gain * Poisson(y) + offset +
    N(0, read_noise^2)``, rounded for integer data, so ``var(z) = a * E[z]
    + b`` with ``a = gain`` and ``b = read_noise^2 - gain * offset`` (+ 1/12).

    1. Residuals: ``r = k * z`` with a 3 x 3 high-pass kernel ``k`` of unit
       norm, which removes locally affine signal. For independent noise
       ``var(r) = sum_i k_i^2 var(z_i) = a * m + b`` where the *level*
       ``m = k^2 * z`` is the ``k^2``-weighted mean of the same pixels. Two
       kernels: the pixel minus the mean of its 8 neighbours (nearly
       uncorrelated residuals: precise), and ``(1, -2, 1) x (1, -2, 1) / 6``
       (also kills curvature along one axis: robust to signal).
    2. Level sets: pixels are grouped by the mean ``s`` of the ring of 40
       pixels around their 3 x 3 neighbourhood (equal-count and
       equal-width bins of ``s``). ``s`` shares no pixel with ``m`` and
       ``r``, so for white noise the grouping does not select their noise:
       the mean of ``m`` over a set is an unbiased estimate of its level,
       also in the darkest and brightest sets (grouping by a noisy mean of
       the same pixels biases the extreme levels).
    3. Smooth regions: a pixel is used when the energy of a band-pass
       (difference of Gaussians, scales 1 and 2 pixels) over a square ring
       of 13 x 13 minus 7 x 7 pixels is at most 1.5 times what the noise
       alone gives (from the previous fit; three refits). The band-pass
       sees edges and texture far above its small noise gain; the ring
       leaves out the band-pass values that share noise with the pixel's
       residual, which would bias the selection.
    4. Per level set, the variance is the sample variance of the residuals
       within 4 robust std (normalised MAD) of their median, corrected for
       the truncation (Gaussian): nearly as efficient as the sample
       variance and robust to the few edge pixels left. The precise kernel
       is used unless its variance exceeds the robust kernel's by more than
       3 standard errors (signal leaking into it).
    5. The line is fitted by weighted least squares (weights ``n / (2 corr
       var^2)`` from the fitted variance, ``corr`` the residuals'
       correlation), iterated, dropping level sets more than 4 standard
       errors and 10 % off the line (texture).
    6. Clipping: a value is a clipping level when it is the limit of the
       integer dtype, or when pixels pile up at the image's minimum or
       maximum (at least ``max(10, 1e-4 * size)`` pixels and twice as many
       as at the next value). Pixels with a clipped value in their 7 x 7
       window are dropped, and so are level sets within 3 noise std of a
       clipping level (their variance is censored).
    7. Integer images: uniform rounding adds ``1/12`` ADU^2 to the variance
       (Sheppard); it is removed from ``read_noise`` and ``sigma``. This
       holds when the noise before rounding has a std above about 0.5 ADU
       (a warning is given below).
    8. The model is Poisson-Gaussian when ``a`` is more than 3 standard
       errors above 0 and ``a * (brightest - darkest level)`` exceeds 10 %
       of the variance at the brightest level; otherwise Gaussian with
       ``sigma^2`` the pixel-weighted mean variance of the level sets.

    Offset and read noise: the line gives ``a`` and ``b``, not ``offset``
    and ``read_noise`` separately. Without a given ``offset``, the offset is
    the *dark floor*: the mean level ``m`` of the 1 % darkest smooth pixels
    (by ``s``, so again without selecting their noise), and
    ``read_noise^2 = a * offset + b - 1/12``, the measured noise variance at
    the dark floor. This is exact when the darkest parts of the image
    receive no photons (background, dark corners). Otherwise both are upper
    bounds: with ``y0`` photons in the darkest parts, the offset is
    ``gain * y0`` too high and ``read_noise^2`` is ``gain^2 * y0`` too high.
    (The x-intercept ``-b / a`` is the opposite bound, the offset if there
    were no read noise.) The generalized Anscombe transform of
    ``denoise_ntd`` depends on ``a`` and ``b`` only, so the split matters
    only through the exact unbiased inverse at very low counts.

    Limits. The noise is assumed white and the same model in all planes
    (no fixed-pattern or correlated noise, no demosaicing, compression or
    prior smoothing; EMCCD excess noise or other signal-dependent noise is
    read as shot noise). Image texture at the pixel scale is
    indistinguishable from noise where it is not much stronger than the
    noise: on the camera test image (fine grass texture) the gain comes
    out 2-5 % high at 20-300 photons, and up to ~15 % high when clipping
    removes its smooth bright areas. Precision: the slope comes from the
    spread of intensities, so at a few photons per pixel it depends on
    how much of the image is bright: about 3 % (one std) on a 512 x 512
    frame spanning 0-5 photons, 5-10 % when only a few percent of the
    pixels are well above the background.

    References
    ----------
    .. [1] A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical
       Poissonian-Gaussian noise modeling and fitting for single-image
       raw-data", IEEE Trans. Image Process. 17(10), 1737-1754, 2008.
       :doi:`10.1109/TIP.2008.2001399`
    """
    arr = np.asarray(image)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise TypeError(f"expected a real-valued numeric image, got dtype {arr.dtype}")
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if channel_axis is not None:
        arr = np.moveaxis(arr, channel_axis, 0)
    if arr.ndim < spatial_dims + (channel_axis is not None):
        raise ValueError(
            f"an image with {spatial_dims} spatial axes needs at least that many dimensions, "
            f"got shape {np.shape(image)}"
        )
    integer = arr.dtype.kind in "iu"
    h, w = arr.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(
            f"image planes of {h} x {w} pixels are too small to estimate the noise "
            f"(at least {MIN_SIDE} x {MIN_SIDE})"
        )
    if offset is not None and not np.isfinite(offset):
        raise ValueError(f"offset must be finite, got {offset}")
    planes = arr.reshape(-1, h, w)
    if planes.shape[0] * h * w > MAX_PIXELS:  # evenly spaced planes
        keep = max(1, MAX_PIXELS // (h * w))
        planes = planes[np.linspace(0, planes.shape[0] - 1, keep).round().astype(int)]
    x = planes.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    quant = 1.0 / 12.0 if integer else 0.0
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        warnings.warn(
            "the image is constant: no noise to estimate (Gaussian, sigma 0)", stacklevel=2
        )
        return NoiseEstimate("gaussian", sigma=0.0, integer=integer)

    clips = _clip_levels(x, arr.dtype)
    stats = _local_statistics(x, clips)
    if stats["s"].size < MIN_PIXELS:
        raise ValueError(
            f"only {stats['s'].size} usable pixels (borders and clipped areas excluded); "
            f"at least {MIN_PIXELS} are needed to estimate the noise"
        )
    fit = _fit(stats, clips, smooth=None)
    for _ in range(SMOOTH_ITERATIONS):  # again without edges and texture
        fit = _fit(stats, clips, smooth=fit)
    scale = max(abs(lo), abs(hi))
    return _decide(fit, stats, offset=offset, quant=quant, integer=integer, scale=scale)


def _truncation_factor(c: float) -> float:
    """``var`` of N(0, 1) truncated to ``|x| <= c`` (the truncated variance's bias)."""
    from math import erf, exp, pi, sqrt

    return 1.0 - 2.0 * c * exp(-c * c / 2) / sqrt(2 * pi) / erf(c / sqrt(2))


_TRUNC_FACTOR = _truncation_factor(TRUNCATION)


def _clip_levels(x: np.ndarray, dtype: np.dtype) -> tuple[float | None, float | None]:
    """The lower and upper clipping levels of the data (``None``: not clipped).

    A bound is a clipping level when it is the integer dtype's limit or when
    pixels pile up there: at least ``max(10, 1e-4 * size)`` pixels and twice
    as many as at the next value inside.
    """
    flat = x.ravel()
    n_min = max(10, int(1e-4 * flat.size))
    limits = (np.iinfo(dtype).min, np.iinfo(dtype).max) if dtype.kind in "iu" else (None, None)
    out: list[float | None] = []
    for bound, limit, inside in (
        (flat.min(), limits[0], flat > flat.min()),
        (flat.max(), limits[1], flat < flat.max()),
    ):
        count = int(np.count_nonzero(flat == bound))
        rest = flat[inside]
        nxt = rest.min() if bound == flat.min() else rest.max()
        piled = count >= n_min and count > 2 * np.count_nonzero(rest == nxt)
        out.append(float(bound) if (limit is not None and bound == limit) or piled else None)
    return out[0], out[1]


def _local_statistics(x: np.ndarray, clips: tuple[float | None, float | None]) -> dict:
    """Per-pixel residual ``r``, level ``m``, ring mean ``s`` and band-pass energy ``e``.

    ``x``: float64 planes ``(P, H, W)``. Returns flat arrays over the usable
    pixels (away from borders and clipped values).
    """
    from scipy import ndimage

    def box(a: np.ndarray, size: int) -> np.ndarray:
        return ndimage.uniform_filter(a, size=(1, size, size), mode="reflect")

    stats = {}
    for name, kernel in (("precise", _PRECISE), ("robust", _ROBUST)):
        stats["r_" + name] = ndimage.correlate(x, kernel[None], mode="reflect")
        stats["m_" + name] = ndimage.correlate(x, kernel[None] ** 2, mode="reflect")
    outer, inner = LEVEL_RING
    s = (outer**2 * box(x, outer) - inner**2 * box(x, inner)) / (outer**2 - inner**2)
    s1, s2 = DOG_SIGMAS
    dog = ndimage.gaussian_filter(x, (0, s1, s1)) - ndimage.gaussian_filter(x, (0, s2, s2))
    d2 = dog * dog
    outer_e, inner_e = TEXTURE_RING
    e = (outer_e**2 * box(d2, outer_e) - inner_e**2 * box(d2, inner_e)) / (
        (outer_e**2 - inner_e**2) * _dog_norm2()
    )  # ~ the noise variance where the signal is smooth
    usable = np.zeros(x.shape, dtype=bool)
    usable[:, _BORDER:-_BORDER, _BORDER:-_BORDER] = True
    lo, hi = clips
    if lo is not None or hi is not None:
        clipped = np.zeros(x.shape, dtype=bool)
        if lo is not None:
            clipped |= x <= lo
        if hi is not None:
            clipped |= x >= hi
        usable &= ~ndimage.maximum_filter(clipped, size=(1, outer, outer))
    stats.update(s=s, e=e)
    return {key: val[usable] for key, val in stats.items()}


@dataclass
class _Fit:
    slope: float
    intercept: float
    cov: np.ndarray
    levels: np.ndarray
    variances: np.ndarray
    counts: np.ndarray
    keep: np.ndarray  # level sets in the fit
    pixels: np.ndarray  # pixels used (smooth)

    def predict(self, level: np.ndarray) -> np.ndarray:
        return self.slope * level + self.intercept


def _robust_variance(r: np.ndarray) -> float:
    """Variance of the residuals within ``TRUNCATION`` robust std of the median."""
    med = np.median(r)
    dev = np.abs(r - med)
    s0 = 1.4826 * np.median(dev)
    if s0 <= 0:  # quantised, mostly flat: the plain variance
        return float(r.var())
    return float(r[dev <= TRUNCATION * s0].var() / _TRUNC_FACTOR)


def _level_sets(s: np.ndarray, n_sets: int = 32) -> np.ndarray:
    """Group index of each pixel: equal-count and equal-width bins of ``s``, merged
    until each holds ``MIN_LEVEL_COUNT`` pixels."""
    edges = np.unique(
        np.concatenate(
            [np.quantile(s, np.linspace(0, 1, n_sets + 1)), np.linspace(s.min(), s.max(), n_sets)]
        )
    )
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(edges.size - 2, 0))
    counts = np.bincount(idx, minlength=edges.size)
    group = np.zeros(counts.size, dtype=np.intp)
    g, acc = 0, 0
    for i, c in enumerate(counts):
        group[i] = g
        acc += c
        if acc >= MIN_LEVEL_COUNT:
            g, acc = g + 1, 0
    if acc and g > 0:  # a short last group joins the previous one
        group[group == g] = g - 1
    return group[idx]


def _level_set_variance(stats: dict, idx: np.ndarray) -> tuple[float, float, float]:
    """``(level, variance, corr)`` of one level set.

    The precise residual unless its variance exceeds the robust one's by more
    than 3 standard errors of the difference (signal leaking into it).
    """
    rp, rr = stats["r_precise"][idx], stats["r_robust"][idx]
    vp, vr = _robust_variance(rp), _robust_variance(rr)
    u = rp * rp - rr * rr  # the difference's noise (paired)
    se = float(u.std()) * np.sqrt(_CORR_ROBUST / idx.size)
    if vp - vr <= 3.0 * se:
        return float(stats["m_precise"][idx].mean()), vp, _CORR_PRECISE
    return float(stats["m_robust"][idx].mean()), vr, _CORR_ROBUST


def _fit(stats: dict, clips: tuple[float | None, float | None], smooth: _Fit | None) -> _Fit:
    """Level sets and the weighted least-squares line through their variances."""
    s = stats["s"]
    pixels = np.ones(s.size, dtype=bool)
    if smooth is not None:  # drop edges and texture: band-pass energy above the noise
        expected = np.maximum(smooth.predict(s), 0.0)
        pixels = stats["e"] <= SMOOTH_FACTOR * expected
        if pixels.sum() < MIN_PIXELS:
            pixels = np.ones(s.size, dtype=bool)
    where = np.flatnonzero(pixels)
    group = _level_sets(s[where])
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    sets = [_level_set_variance(stats, where[idx]) for idx in np.split(order, bounds)]
    lv, vv, cc = (np.array(col) for col in zip(*sets, strict=True))
    nn = np.array([idx.size for idx in np.split(order, bounds)], dtype=np.float64)
    # variance floor for the weights (a level set without noise must not dominate)
    tiny = max(1e-6 * float(vv.max(initial=0.0)), np.finfo(float).tiny)
    keep = np.ones(lv.size, dtype=bool)
    weight_var = np.maximum(vv, tiny)
    slope, intercept, cov = 0.0, float(np.average(vv, weights=nn)), np.zeros((2, 2))
    for it in range(20):
        if keep.sum() < 2 or np.ptp(lv[keep]) == 0:
            slope, intercept = 0.0, float(np.average(vv[keep], weights=nn[keep]))
            cov = np.zeros((2, 2))
            break
        w = nn[keep] / (2.0 * cc[keep] * weight_var[keep] ** 2)  # 1 / var(v_hat)
        # centred levels: a well-conditioned system whatever the offset
        center = float(np.average(lv[keep], weights=w))
        a = np.stack([lv[keep] - center, np.ones(keep.sum())], axis=1) * np.sqrt(w)[:, None]
        (slope, icept), *_ = np.linalg.lstsq(a, vv[keep] * np.sqrt(w), rcond=None)
        intercept = icept - slope * center
        to_raw = np.array([[1.0, 0.0], [-center, 1.0]])  # (slope, icept) -> (slope, intercept)
        cov = to_raw @ np.linalg.pinv(a.T @ a) @ to_raw.T
        pred = slope * lv + intercept
        dof = keep.sum() - 2
        if dof > 0:
            chi2 = float((w * (vv[keep] - pred[keep]) ** 2).sum() / dof)
            cov = cov * max(chi2, 1.0)
        pos = np.maximum(pred, tiny)
        t = (vv - pred) / (pos * np.sqrt(2.0 * cc / nn))
        if it == 0:  # the first line may be pulled up by texture: only drop far-above sets
            new = vv <= 1.5 * pos
        else:
            new = (np.abs(t) <= 4.0) | (np.abs(vv - pred) <= 0.1 * pos)
        std = np.sqrt(pos)
        if clips[0] is not None:
            new &= lv - 3.0 * std > clips[0]
        if clips[1] is not None:
            new &= lv + 3.0 * std < clips[1]
        weight_var = pos
        if (it > 0 and np.array_equal(new, keep)) or not new.any():
            keep = new
            break
        keep = new
    return _Fit(float(slope), float(intercept), cov, lv, vv, nn, keep, pixels)


def _decide(
    fit: _Fit, stats: dict, *, offset: float | None, quant: float, integer: bool, scale: float
) -> NoiseEstimate:
    """Gaussian or Poisson-Gaussian, offset and read noise from the fitted line."""
    a, b = fit.slope, fit.intercept
    se_a, se_b = (float(np.sqrt(max(fit.cov[i, i], 0.0))) for i in (0, 1))
    lv, vv, nn = fit.levels[fit.keep], fit.variances[fit.keep], fit.counts[fit.keep]
    common = {
        "slope": a,
        "intercept": b,
        "slope_stderr": se_a,
        "intercept_stderr": se_b,
        "quantization_variance": quant,
        "integer": integer,
        "levels": lv,
        "variances": vv,
        "counts": nn,
    }
    if lv.size == 0:
        raise ValueError(
            "no intensity level of the image is far enough from the clipping levels "
            "to measure the noise"
        )
    if not np.sqrt(vv.max()) > 1e-9 * scale:  # round-off of the residuals
        warnings.warn(
            "no noise found: the image is smooth at the pixel scale (Gaussian, sigma 0)",
            stacklevel=3,
        )
        return NoiseEstimate("gaussian", sigma=0.0, **common)
    if integer and float(np.min(fit.predict(lv))) < 0.25 + quant:
        warnings.warn(
            "the noise std is below ~0.5 ADU: the rounding to integers is not uniform noise "
            "and the estimate is unreliable",
            stacklevel=3,
        )
    if lv.size < 2 or np.ptp(lv) == 0:
        warnings.warn(
            "the image has a single intensity level: the signal dependence of the noise "
            "cannot be fitted (Gaussian model)",
            stacklevel=3,
        )
    lo, hi = (float(lv.min()), float(lv.max())) if lv.size else (0.0, 0.0)
    dependent = (
        a > SLOPE_Z * se_a
        and a > 0
        and a * (hi - lo) > SIGNAL_DEPENDENT_FRACTION * max(a * hi + b, np.finfo(float).tiny)
    )
    if not dependent:
        var = float(np.average(vv, weights=nn)) if lv.size else 0.0
        return NoiseEstimate("gaussian", sigma=float(np.sqrt(max(var - quant, 0.0))), **common)
    if offset is None:
        s, m = stats["s"][fit.pixels], stats["m_precise"][fit.pixels]
        n_dark = min(s.size, max(64, int(DARK_FRACTION * s.size)))
        dark = np.argpartition(s, n_dark - 1)[:n_dark]
        off, source = float(m[dark].mean()), "dark floor"
    else:
        off, source = float(offset), "given"
        dark_floor = float(lo)
        if off > dark_floor + 3.0 * np.sqrt(max(a * dark_floor + b, 0.0)):
            warnings.warn(
                f"the given offset {off:.4g} is above the darkest levels of the image "
                f"({dark_floor:.4g})",
                stacklevel=3,
            )
    read2 = a * off + b - quant
    if read2 < 0:
        warnings.warn(
            f"the fitted line gives a negative read-noise variance ({read2:.3g}) at the offset "
            f"{off:.4g}; read noise set to 0",
            stacklevel=3,
        )
        read2 = 0.0
    return NoiseEstimate(
        "poisson-gaussian",
        gain=float(a),
        offset=off,
        read_noise=float(np.sqrt(read2)),
        offset_source=source,
        **common,
    )
