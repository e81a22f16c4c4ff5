"""Time-lapse denoising (issue 16): frame by frame vs the frames as a volume vs time-aware.

A realistic time-lapse of a real fluorescence image (StarDist's nuclei,
``img2d.tif``; :func:`simulate_timelapse`) with slow drift, a slow
non-rigid deformation, fast-moving nuclei, bleaching and a blinking nucleus,
at Gaussian noise sigma 15/25/50 (of 255) and Poisson noise (20 photons at
the brightest pixel). Methods (``--methods``):

* ``framewise``: ``denoise_ntd(stack, sigma=sigma)`` (leading axis = a stack
  of independent 2D frames, frame ``k`` seeded ``seed + k``);
* ``volume``: ``denoise_ntd(stack, sigma=sigma, spatial_dims=3)`` (time as
  a third spatial axis: r x r x r patches, a 3D pilot);
* ``timelapse``: ``denoise_ntd(stack, sigma=sigma, time_axis=0)`` (issue 16;
  ``n/a`` while ``denoise_ntd`` has no ``time_axis``);
* ``bm4d``: ``bm4d.bm4d(stack, sigma)`` on the (t, y, x) block (optional
  ``bm4d`` package, non-commercial licence: a baseline, never a dependency);
* ``nlm3d``: skimage ``denoise_nl_means`` on the (t, y, x) block (fast mode,
  5^3 patches, 9^3 search window, h = 0.8 sigma);
* ``bm3d-frames``: BM3D frame by frame (optional ``bm3d`` package).

Poisson data (``noisy = Poisson(peak * clean) / peak``): the NTD methods get
``noise_model=NoiseModel('poisson', gain=1/peak, offset=0, read_noise=0)``
(no sigma; they apply the generalized Anscombe transform themselves); the
peers get the same transform (``gat_forward``), sigma = 1 and the exact
unbiased inverse (``gat_inverse``).

Reported per (noise, method): PSNR and SSIM (mean over frames, data range
1), wall time (imports excluded) and its ratio to BM4D's, and for the
fastest moving nucleus (6 px/frame) the worst frame's centroid error and
contrast ratio and its mean ghost; for the blinking nucleus its worst
intensity error (see :func:`object_metrics`). The ``noisy`` row shows the
metrics' noise floor.

Run: ``python benchmarks/bench_timelapse.py`` (8 frames of 256^2, all noise
levels and methods: ~6 min on 2 CPU cores); a quick check::

    python benchmarks/bench_timelapse.py --frames 4 --size 128 --noise 25 \\
        --methods framewise nlm3d bm4d --out /tmp/timelapse.md

``--figure`` also draws ``timelapse_crops.png`` (next to the table): the
fast nucleus over 4 consecutive frames, rows clean, noisy, framewise,
timelapse, bm4d (first noise level of ``--noise``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

import _common
from _common import bm3d_peer, nlm_peer, save, table

NOISES = ("15", "25", "50", "poisson")
PEAK = 20.0  # photons at the brightest pixel of the Poisson case
METHODS = ("framewise", "volume", "timelapse", "bm4d", "nlm3d", "bm3d-frames")
NLM3D_DISTANCE = 4  # 9 x 9 x 9 search window (8 x 256^2: ~6 s)
SPEEDS = (6.0, 4.5, 3.0)  # px/frame of the moving nuclei; the first one is measured


# ---------------------------------------------------------------------------
# the time-lapse


def load_nuclei_image() -> tuple[np.ndarray, np.ndarray, str]:
    """A real 2D fluorescence image of nuclei, its nucleus labels and its name.

    StarDist's ``img2d.tif`` and its label image ``mask2d.tif`` (512 x 512;
    from the stardist wheel, :func:`bench_camera.fetch_stardist_image`).
    Fallback: skimage's ``human_mitosis`` (only if already in skimage's data
    cache; this benchmark downloads nothing else), labelled by an Otsu
    threshold and a watershed-free connected-component labelling.
    """
    try:
        from bench_camera import fetch_stardist_image

        return (
            fetch_stardist_image("img2d.tif"),
            fetch_stardist_image("mask2d.tif"),
            "StarDist img2d.tif",
        )
    except Exception as err:  # offline, pip or the wheel's layout changed
        print(f"stardist image unavailable ({err}); trying skimage human_mitosis")
    from skimage import data, filters, measure

    img = data.human_mitosis()
    smooth = ndimage.gaussian_filter(img.astype(np.float64), 1.0)
    labels = measure.label(smooth > filters.threshold_otsu(smooth))
    return img, labels, "skimage human_mitosis"


@dataclass(frozen=True)
class Timelapse:
    """A simulated time-lapse and its ground truth (all arrays (T, Y, X) unless noted)."""

    clean: np.ndarray  # float32 in [0, 1]
    centers: np.ndarray  # (n_movers, T, 2) (y, x) centres of the moving nuclei's crops
    mover_support: np.ndarray  # float32 soft mask of the first (fastest) moving nucleus
    blink_support: np.ndarray  # float32 soft mask of the blinking nucleus
    blink_level: np.ndarray  # (T,) its relative brightness
    drift: np.ndarray  # (T, 2) global rigid shift (y, x) in pixels
    source: str


def _soft(mask: np.ndarray) -> np.ndarray:
    return np.clip(ndimage.gaussian_filter(mask.astype(np.float64), 1.0), 0.0, 1.0)


def _isolated(labels: np.ndarray, lab: int, box: tuple[slice, ...], gap: int = 3) -> bool:
    """No other nucleus within ``gap`` px of nucleus ``lab`` (its crop is a whole nucleus)."""
    box = tuple(slice(max(s.start - gap, 0), s.stop + gap) for s in box)
    near = ndimage.binary_dilation(labels[box] == lab, iterations=gap)
    return bool(np.all(np.isin(labels[box][near], (0, lab))))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Two smooth random displacement components, max |displacement| 1."""
    f = np.stack([ndimage.gaussian_filter(rng.standard_normal(shape), scale) for _ in range(2)])
    return f / np.abs(f).max()


def simulate_timelapse(
    n_frames: int = 8,
    size: int = 256,
    seed: int = 0,
    *,
    image: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> Timelapse:
    """A realistic fluorescence time-lapse with its ground truth.

    Built from a real image of nuclei (:func:`load_nuclei_image`, or
    ``image = (intensities, labels, name)``), smoothed with a Gaussian of
    std 1 px (its own noise would otherwise be signal) and mapped so that its
    1st-99.9th percentiles go to [0, 1] (clipped). Frame ``t`` is a
    ``size x size`` field of view in the middle of the image (upsampled
    when ``size`` exceeds the image less a margin), sampled with cubic
    splines (``map_coordinates``) at

    * a slow global rigid drift: a constant velocity of 0.3-1 px/frame in a
      random direction plus a +-0.1 px jitter (sub-pixel shifts);
    * a smooth non-rigid deformation (a Gaussian-filtered random field, std
      ``size / 8``) of at most ~1 px that rotates between two such fields
      over the sequence (it changes a little every frame);
    * one nucleus of the field of view blinking in place: its intensity
      multiplied by 1 or 0.15 per frame (random, at least one of each),
      moving with the drift and the deformation.

    On top, ``len(SPEEDS)`` = 3 crops of real, isolated nuclei (their
    label's soft mask times the image) travel in straight lines at 6, 4.5 and 3
    px/frame (random directions, staying inside the frame, apart from each
    other and from the blinking nucleus; of 200 such paths, the one over the
    darkest background), composited by the maximum (a nucleus passing over
    another one). The whole frame
    bleaches by 2 % per frame (``0.98 ** t``) and the stack is divided by
    its maximum: float32 in [0, 1]. Deterministic for a given ``seed``.
    """
    img, labels, name = image if image is not None else load_nuclei_image()
    rng = np.random.default_rng(seed)
    src = ndimage.gaussian_filter(np.asarray(img, dtype=np.float64), 1.0)
    lo, hi = np.percentile(src, (1.0, 99.9))
    src = np.clip((src - lo) / (hi - lo), 0.0, 1.0)
    labels = np.asarray(labels)
    T = n_frames

    # field of view: source pixel = origin + frame pixel / scale
    margin = 4.0 + 1.2 * T
    scale = max(1.0, (size + 2 * margin) / min(src.shape))
    origin = (np.array(src.shape) - size / scale) / 2

    # slow drift and the time-varying deformation (frame pixels)
    angle = rng.uniform(0, 2 * np.pi)
    velocity = rng.uniform(0.3, 1.0) * np.array([np.sin(angle), np.cos(angle)])
    t = np.arange(T)
    drift = (t - (T - 1) / 2)[:, None] * velocity + rng.uniform(-0.1, 0.1, (T, 2))
    f1 = _smooth_field(rng, (size, size), size / 8)
    f2 = _smooth_field(rng, (size, size), size / 8)
    grid = np.mgrid[:size, :size].astype(np.float64)

    # nuclei: blinking one (inside the field of view) and three moving crops
    ids = np.unique(labels)[1:]
    objects = ndimage.find_objects(labels)
    areas = np.asarray(ndimage.sum(np.ones_like(labels), labels, ids))
    whole = [
        all(0 < s.start and s.stop < n for s, n in zip(objects[i - 1], src.shape, strict=True))
        for i in ids
    ]  # not cut by the image border
    typical = ids[whole & (areas > np.percentile(areas, 25)) & (areas < np.percentile(areas, 90))]
    centroids = np.array(ndimage.center_of_mass(np.ones_like(labels), labels, typical))
    fov = (centroids > origin + 20 / scale) & (centroids < origin + (size - 20) / scale)
    inside = typical[fov.all(1)]
    if len(inside) == 0:
        raise ValueError(f"no whole nucleus inside a {size}^2 field of view")
    blink_id = rng.choice(inside)
    blink_mask = _soft(labels == blink_id)
    level = np.where(rng.random(T) < 0.6, 1.0, 0.15)
    level[rng.choice(T, 2, replace=False)] = (1.0, 0.15)
    alone = [i for i in typical if i != blink_id and _isolated(labels, i, objects[i - 1])]
    movers = rng.choice(alone, len(SPEEDS), replace=False)

    clean = np.empty((T, size, size))
    blink_support = np.empty((T, size, size))
    for k in range(T):
        phase = np.pi / 2 * k / max(T - 1, 1)
        warp = np.cos(phase) * f1 + np.sin(phase) * f2
        coords = origin[:, None, None] + (grid + drift[k][:, None, None] + warp) / scale
        frame_src = src * (1 - (1 - level[k]) * blink_mask)
        clean[k] = ndimage.map_coordinates(frame_src, coords, order=3, mode="reflect")
        blink_support[k] = ndimage.map_coordinates(blink_mask, coords, order=1)

    centers = np.empty((len(SPEEDS), T, 2))
    blink_radius = np.sqrt(areas[ids == blink_id][0] / np.pi) * scale
    blink_center = (centroids[typical == blink_id][0] - origin) * scale - drift
    obstacles = [(blink_center, blink_radius + 4)]
    mover_support = np.empty((T, size, size))
    for i, (lab, speed) in enumerate(zip(movers, SPEEDS, strict=True)):
        sl = objects[lab - 1]
        box = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in sl)
        soft = _soft(labels[box] == lab)
        crop, soft = src[box] * soft, soft
        if scale > 1:
            crop, soft = ndimage.zoom(crop, scale, order=1), ndimage.zoom(soft, scale, order=1)
        half = np.array(crop.shape) / 2
        # of 200 random paths clear of the other movers and of the blinking nucleus,
        # the one over the darkest background (its ghosts are the easiest to see)
        local = [ndimage.uniform_filter(frame, int(2 * half.max())) for frame in clean]
        best, path = np.inf, None
        for _ in range(200):
            direction = rng.uniform(0, 2 * np.pi)
            step = speed * np.array([np.sin(direction), np.cos(direction)])
            travel = np.abs(step) * (T - 1) / 2
            room = size / 2 - half - travel - 2
            if (room < 0).any():
                raise ValueError(f"{size}^2 frames are too small for {T} frames at {speed} px/f")
            middle = size / 2 + rng.uniform(-1, 1, 2) * room
            cand = middle + (t - (T - 1) / 2)[:, None] * step
            gaps = [np.hypot(*(cand - c).T).min() - r for c, r in obstacles]
            yx = np.round(cand).astype(int)
            dark = np.mean([local[k][y, x] for k, (y, x) in enumerate(yx)])
            if min(gaps) > half.max() and dark < best:
                best, path = dark, cand
        if path is None:
            raise ValueError(f"no clear path for {len(SPEEDS)} moving nuclei in {size}^2 frames")
        centers[i] = path
        obstacles.append((path, half.max()))
        for k in range(T):
            canvas = np.zeros((2, size, size))
            corner = np.floor(centers[i, k] - half).astype(int)
            frac = centers[i, k] - half - corner
            for c, a in enumerate((crop, soft)):
                shifted = ndimage.shift(np.pad(a, 2), frac, order=3)
                ys = slice(corner[0] - 2, corner[0] - 2 + shifted.shape[0])
                xs = slice(corner[1] - 2, corner[1] - 2 + shifted.shape[1])
                canvas[c][ys, xs] = shifted  # the path keeps the crop inside the frame
            clean[k] = np.maximum(clean[k], canvas[0])
            if i == 0:
                mover_support[k] = np.clip(canvas[1], 0, 1)

    clean *= (0.98**t)[:, None, None]
    clean = np.clip(clean / clean.max(), 0.0, 1.0)
    return Timelapse(
        clean.astype(np.float32),
        centers,
        mover_support.astype(np.float32),
        np.clip(blink_support, 0, 1).astype(np.float32),
        level,
        drift,
        name,
    )


def make_timelapse(n_frames: int = 8, size: int = 256, seed: int = 0) -> np.ndarray:
    """The clean (T, Y, X) float32 stack in [0, 1] of :func:`simulate_timelapse`."""
    return simulate_timelapse(n_frames, size, seed).clean


# ---------------------------------------------------------------------------
# the methods: (noisy, sigma, model) -> estimate; Poisson data: sigma None, model given

Method = Callable[[np.ndarray, "float | None", object], np.ndarray]


def _ntd(noisy, sigma, model, **kw):
    from napari_ntd import denoise_ntd

    if model is not None:
        return denoise_ntd(noisy, noise_model=model, seed=0, **kw)
    return denoise_ntd(noisy, sigma=sigma, seed=0, **kw)


def _stabilised(peer: Callable[[np.ndarray, float], np.ndarray]) -> Method:
    """A Gaussian denoiser made to take Poisson data (GAT, sigma 1, exact unbiased inverse)."""

    def run(noisy, sigma, model):
        if model is None:
            return peer(noisy, sigma)
        from napari_ntd._engine._vst import gat_forward, gat_inverse

        return gat_inverse(peer(gat_forward(noisy.astype(np.float64), model), 1.0), model)

    return run


def _bm4d(noisy, sigma):
    """BM4D on (y, x, t): its 'np' profile takes 4^3/5^3 blocks for 5 or more frames
    along the last axis, 8 x 8 x 1 blocks (matched across frames) for fewer."""
    import bm4d

    return np.moveaxis(bm4d.bm4d(np.moveaxis(noisy, 0, -1), sigma), -1, 0)


def _nlm3d(noisy, sigma):
    return nlm_peer(noisy, sigma, None, patch_distance=NLM3D_DISTANCE)


def _bm3d_frames(noisy, sigma):
    return np.stack([bm3d_peer(frame, sigma, None) for frame in noisy])


RUNS: dict[str, Method] = {
    "framewise": lambda y, s, m: _ntd(y, s, m),
    "volume": lambda y, s, m: _ntd(y, s, m, spatial_dims=3),
    "timelapse": lambda y, s, m: _ntd(y, s, m, time_axis=0),
    "bm4d": _stabilised(_bm4d),
    "nlm3d": _stabilised(_nlm3d),
    "bm3d-frames": _stabilised(_bm3d_frames),
}
OPTIONAL = {"bm4d": "bm4d", "bm3d-frames": "bm3d"}  # method -> module it needs


# ---------------------------------------------------------------------------
# metrics


def frame_scores(clean: np.ndarray, est: np.ndarray) -> tuple[float, float]:
    """Mean over frames of PSNR and SSIM (data range 1)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    est = np.asarray(est, dtype=np.float64)
    ref = clean.astype(np.float64)
    p = [peak_signal_noise_ratio(c, e, data_range=1) for c, e in zip(ref, est, strict=True)]
    s = [structural_similarity(c, e, data_range=1) for c, e in zip(ref, est, strict=True)]
    return float(np.mean(p)), float(np.mean(s))


def object_metrics(tl: Timelapse, est: np.ndarray) -> dict[str, float]:
    """Ghosting of the fastest moving nucleus and errors on the blinking nucleus.

    Per frame ``t``, with ``S_t`` the moving nucleus' core (soft mask > 0.5)
    and ``W_t`` its neighbourhood (``S_t`` dilated by 6 px), ``b_t`` the
    clean frame's median on ``W_t - S_t`` (local background):

    * ``centroid``: distance (px) between the intensity centroids of
      ``max(est - b_t, 0)`` and ``max(clean - b_t, 0)`` on ``W_t``; max over
      frames;
    * ``contrast``: ``(mean_S(est) - b_t) / (mean_S(clean) - b_t)``, the frame
      furthest from 1 (below 1: the nucleus is dimmed or smeared);
    * ``ghost``: ``mean(est - clean)`` where the nucleus was or will be
      (cores at ``t - 1`` and ``t + 1`` less ``S_t`` dilated by 2 px), in %
      of the nucleus' contrast; mean over frames (a trailing copy is > 0,
      a dark halo < 0; the mean, not the worst frame, to stay above the
      noise of these small regions);
    * ``blink``: ``|mean(est - clean)|`` on the blinking nucleus' core, in %
      of its clean 'on' contrast over the local background; max over frames.
    """
    est = np.asarray(est, dtype=np.float64)
    clean = tl.clean.astype(np.float64)
    T = len(clean)
    cores = tl.mover_support > 0.5
    cents, contrasts, ghosts, blinks = [], [], [], []
    for k in range(T):
        core = cores[k]
        near = ndimage.binary_dilation(core, iterations=6)
        b = float(np.median(clean[k][near & ~core]))
        yx = np.nonzero(near)

        def centroid(img, yx=yx, b=b):
            w = np.maximum(img[yx] - b, 0.0)
            return np.array([np.sum(w * yx[0]), np.sum(w * yx[1])]) / max(w.sum(), 1e-12)

        cents.append(float(np.hypot(*(centroid(est[k]) - centroid(clean[k])))))
        contrast = clean[k][core].mean() - b
        contrasts.append((est[k][core].mean() - b) / contrast)
        was = np.zeros_like(core)
        for j in (k - 1, k + 1):
            if 0 <= j < T:
                was |= cores[j]
        was &= ~ndimage.binary_dilation(core, iterations=2)
        if was.any():
            ghosts.append(100 * float((est[k] - clean[k])[was].mean()) / contrast)
    on = int(np.argmax(tl.blink_level))
    bcore = tl.blink_support > 0.5
    ring = ndimage.binary_dilation(bcore[on], iterations=6) & ~bcore[on]
    on_contrast = clean[on][bcore[on]].mean() - np.median(clean[on][ring])
    for k in range(T):
        blinks.append(100 * abs(float((est[k] - clean[k])[bcore[k]].mean())) / on_contrast)
    contrasts = np.asarray(contrasts)
    return {
        "centroid": max(cents),
        "contrast": float(contrasts[np.argmax(np.abs(contrasts - 1))]),
        "ghost": float(np.mean(ghosts)) if ghosts else float("nan"),
        "blink": float(max(blinks)),
    }


# ---------------------------------------------------------------------------


def add_noise(clean: np.ndarray, noise: str, seed: int):
    """``(noisy float32, sigma or None, NoiseModel or None, label)`` for one noise setting."""
    from napari_ntd import NoiseModel

    if noise == "poisson":
        rng = np.random.default_rng([seed, 0])
        noisy = rng.poisson(clean.astype(np.float64) * PEAK) / PEAK
        model = NoiseModel("poisson", gain=1 / PEAK, offset=0.0, read_noise=0.0)
        return noisy.astype(np.float32), None, model, f"Poisson, {PEAK:g} photons"
    sigma = float(noise) / 255
    rng = np.random.default_rng([seed, 1, round(1000 * float(noise))])
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    return noisy.astype(np.float32), sigma, None, f"Gaussian {float(noise):g}/255"


def available(methods: list[str]) -> list[str]:
    import importlib

    keep = []
    for m in methods:
        try:
            if m in OPTIONAL:
                importlib.import_module(OPTIONAL[m])
        except ImportError:
            print(f"{OPTIONAL[m]} not installed: no {m} row")
            continue
        keep.append(m)
    return keep


def figure(tl: Timelapse, noisy: np.ndarray, outputs: dict, title: str, path: Path) -> None:
    """The fast nucleus in 4 consecutive frames: clean, noisy, framewise, timelapse, bm4d."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = len(tl.clean)
    start = max((T - 4) // 2, 0)
    frames = list(range(start, min(start + 4, T)))
    c = tl.centers[0, frames]
    radius = np.sqrt(max(float(tl.mover_support[frames[0]].sum()), 1.0) / np.pi)
    half = int(np.ceil(np.ptp(c, axis=0).max() / 2 + radius + 10))
    mid = np.round(c.mean(0)).astype(int)
    size = tl.clean.shape[-1]
    lo = np.clip(mid - half, 0, size - 2 * half)
    box = (slice(lo[0], lo[0] + 2 * half), slice(lo[1], lo[1] + 2 * half))
    rows = {"clean": tl.clean, "noisy": noisy}
    rows |= {m: outputs.get(m) for m in ("framewise", "timelapse", "bm4d")}
    fig, axes = plt.subplots(
        len(rows), len(frames), figsize=(2.1 * len(frames), 2.1 * len(rows)), squeeze=False
    )
    for r, (name, stack) in enumerate(rows.items()):
        for j, k in enumerate(frames):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if stack is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(np.clip(stack[k][box], 0, 1), cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
            if r == 0:
                ax.set_title(f"frame {k}", fontsize=9)
    fig.suptitle(f"{title}: nucleus moving {SPEEDS[0]:g} px/frame", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def _noise(text: str) -> str:
    if text != "poisson":
        try:
            float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a sigma (of 255) or 'poisson': {text!r}") from None
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="time-lapse and noise seed")
    parser.add_argument(
        "--noise", nargs="+", type=_noise, default=list(NOISES), help="sigmas (of 255), poisson"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", help="the markdown table here instead of benchmarks/results/")
    parser.add_argument("--figure", action="store_true", help="also draw timelapse_crops.png")
    args = parser.parse_args()
    methods = available(args.methods)

    tl = simulate_timelapse(args.frames, args.size, args.seed)
    T, size = tl.clean.shape[0], tl.clean.shape[-1]
    print(f"time-lapse {tl.clean.shape} from {tl.source}", flush=True)
    header = [
        "noise",
        "method",
        "PSNR (dB)",
        "SSIM",
        "time (s)",
        "time / BM4D",
        "centroid err (px)",
        "contrast ratio",
        "ghost (%)",
        "blink err (%)",
    ]
    rows, figure_data = [], None
    for noise in args.noise:
        noisy, sigma, model, label = add_noise(tl.clean, noise, args.seed)
        results: dict[str, tuple] = {"noisy": (noisy, None)}
        outputs = {}
        for m in methods:
            t0 = time.perf_counter()
            try:
                out = RUNS[m](noisy, sigma, model)
            except (TypeError, NotImplementedError) as err:
                if m != "timelapse" or "time_axis" not in str(err):
                    raise
                print(f"{m}: n/a ({type(err).__name__}: {err})", flush=True)
                results[m] = (None, None)
                continue
            dt = time.perf_counter() - t0
            outputs[m] = np.asarray(out, dtype=np.float32)
            results[m] = (outputs[m], dt)
            print(f"{label}, {m}: {dt:.1f} s", flush=True)
        t_bm4d = results.get("bm4d", (None, None))[1]
        for m, (est, dt) in results.items():
            if est is None:
                rows.append([label, m, *["n/a"] * (len(header) - 2)])
                continue
            p, s = frame_scores(tl.clean, est)
            obj = object_metrics(tl, est)
            ratio = dt / t_bm4d if dt is not None and t_bm4d else "-"
            rows.append(
                [
                    label,
                    m,
                    p,
                    s,
                    "-" if dt is None else dt,
                    ratio,
                    obj["centroid"],
                    obj["contrast"],
                    obj["ghost"],
                    obj["blink"],
                ]
            )
            print(rows[-1], flush=True)
        if figure_data is None:
            figure_data = (noisy, outputs, label)

    body = table(header, rows)
    body += (
        f"\n\nTime-lapse {T} x {size} x {size} from {tl.source} (`simulate_timelapse`, "
        f"seed {args.seed}): drift {np.hypot(*np.diff(tl.drift, axis=0).T).max():.2g} px/frame "
        "at most, a ~1 px non-rigid deformation changing over time, 3 real nuclei moving "
        f"{', '.join(f'{v:g}' for v in SPEEDS)} px/frame (max composite), bleaching 2 %/frame, "
        f"one nucleus blinking (levels {', '.join(f'{v:g}' for v in tl.blink_level)}). "
        "PSNR/SSIM: mean over frames, data range 1, estimates not clipped. Object metrics "
        f"(worst frame but ghost) on the nucleus moving {SPEEDS[0]:g} px/frame: centroid error, "
        "contrast ratio to the clean contrast over the local background, ghost = excess "
        "intensity where it was at t-1 / will be at t+1 in % of its contrast (mean over "
        "frames); blink err = "
        "|mean error| on the blinking nucleus in % of its 'on' contrast. "
        "NTD: `denoise_ntd` defaults (guided, MC-SURE), seed 0; Poisson: `noise_model="
        f"NoiseModel('poisson', gain=1/{PEAK:g}, offset=0, read_noise=0)` (no sigma). Peers "
        "on Poisson data: generalized Anscombe transform (`gat_forward`), sigma = 1, exact "
        "unbiased inverse (`gat_inverse`). nlm3d: skimage fast NLM on "
        f"(t, y, x), 5^3 patches, patch_distance {NLM3D_DISTANCE}, h = 0.8 sigma. "
        "n/a: `time_axis` not implemented yet."
    )
    title = "Time-lapse: frame by frame vs volume vs time-aware, next to BM4D"
    if args.out:  # the same page, elsewhere (checks)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        _common.RESULTS = out.parent
        save(out.stem, title, body)
        fig_path = out.with_name(out.stem + "_crops.png")
    else:
        save("timelapse", title, body)
        fig_path = _common.RESULTS / "timelapse_crops.png"
    if args.figure and figure_data is not None:
        noisy, outputs, label = figure_data
        figure(tl, noisy, outputs, label, fig_path)


if __name__ == "__main__":
    main()
