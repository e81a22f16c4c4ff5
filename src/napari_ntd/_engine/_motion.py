"""Block motion between time-lapse frames, for the motion-compensated pilot (issue 16).

A nucleus moving a few pixels per frame leaves the fixed space-time blocks of
the time-lapse guide (:func:`napari_ntd._pilot.window_wiener`) and the small
search windows of its non-local Bayes groups, so where things move the
time-lapse pilot was no better than frame by frame. Here each frame gets an
integer displacement per ``STRIDE x STRIDE`` cell towards each neighbour,
found by block matching (``BLOCK x BLOCK`` windows, ``+-RADIUS`` pixels per
frame of distance) on the frames' non-local means, biased towards no motion:
a displacement must lower the mean squared difference by ``BIAS * sigma^2``
to be taken, so still or flat regions, where noise alone decides the best
match, keep zero (on the benchmark time-lapse at sigma 15, seed 0, with the
motion used by guides and refining Wiener: bias 0.05 / 0.2 / 1 / 1.5 / 2 / 4:
38.61 / 39.13 / 39.34 / 39.34 / 39.35 / 39.32 dB; none: 39.17).

A whole-frame drift (a stage drifting) larger than ``RADIUS / 2`` is found by
phase correlation and, if it explains the frame better than no motion by the
same margin, adds a second search window around it (a scene drifting 12 px
per frame: the time-lapse gains 2.6 dB over frame by frame; without the
drift it lost 0.6 dB).

A displacement field ``d`` of frame ``s`` towards frame ``j`` says that
``frame_j(x + d(x)) ~ frame_s(x)``: :func:`warp` brings frame ``j`` onto frame
``s``. Fields towards frames further away are chained (:func:`compose`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BIAS",
    "BLOCK",
    "RADIUS",
    "STRIDE",
    "block_motion",
    "compose",
    "dense",
    "global_shift",
    "warp",
]

#: Largest displacement searched between consecutive frames (pixels per axis).
RADIUS = 7

#: Side of the matching window (pixels; on a 256^2 benchmark movie, seed 0 /
#: 1 at sigma 15: 8: 39.32 / 38.29 dB, 12: 39.35 / 38.32).
BLOCK = 12

#: One displacement per cell of this side.
STRIDE = 4

#: Gain a displacement needs over none, times sigma^2 (module docstring).
BIAS = 1.5


def global_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """The integer translation ``d`` with ``b(x + d) ~ a(x)`` over the whole frame
    (phase correlation of the channel means,
    :func:`skimage.registration.phase_cross_correlation`)."""
    return _plane_shift(a.mean(-1, dtype=np.float64), b.mean(-1, dtype=np.float64))


def _plane_shift(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    """:func:`global_shift` of two ``(H, W)`` planes."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(x, y, normalization=None)
    return int(-round(float(shift[0]))), int(-round(float(shift[1])))


def _explains(x: np.ndarray, y: np.ndarray, drift: tuple[int, int], sigma: float) -> bool:
    """Whether the plane ``y`` moved by ``drift`` matches ``x`` better than
    unmoved, by ``BIAS * sigma^2`` in mean squared difference over the frame
    (phase correlation finds a peak in noise too)."""
    h, w = x.shape
    dy, dx = drift
    if abs(dy) >= h or abs(dx) >= w:
        return False
    rows = slice(max(0, -dy), min(h, h - dy))
    cols = slice(max(0, -dx), min(w, w - dx))
    moved = y[rows.start + dy : rows.stop + dy, cols.start + dx : cols.stop + dx]
    gain = np.mean((x[rows, cols] - y[rows, cols]) ** 2) - np.mean((x[rows, cols] - moved) ** 2)
    return bool(gain > BIAS * float(sigma) ** 2)


def block_motion(a: np.ndarray, b: np.ndarray, sigma: float, radius: int = RADIUS) -> np.ndarray:
    """Integer displacement ``(ceil(H / STRIDE), ceil(W / STRIDE), 2)`` int16 per cell
    of ``a`` towards ``b`` (two ``(H, W, C)`` estimates of consecutive frames):
    the shift within ``+-radius`` whose ``BLOCK x BLOCK`` window around the cell
    best matches (mean squared difference of the channel means), no shift
    unless it is ``BIAS * sigma^2`` worse. Ties go to the first shift in
    raster order (zero first).

    A drift of the whole frame beyond ``radius / 2`` (:func:`global_shift`, a
    stage drifting) adds the shifts within ``+-radius`` of it, the drift
    itself favoured like zero.
    """
    r = int(radius)
    pa, pb = a.mean(-1, dtype=np.float64), b.mean(-1, dtype=np.float64)
    drift = _plane_shift(pa, pb)
    far = max(abs(drift[0]), abs(drift[1])) > r // 2
    centres = [(0, 0)] + ([drift] if far and _explains(pa, pb, drift, sigma) else [])
    favoured = len(centres)
    shifts, seen = list(centres), set(centres)
    for cy, cx in centres:  # the windows around zero and the drift, in raster order
        for v in ((cy + dy, cx + dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)):
            if v not in seen:
                shifts.append(v)
                seen.add(v)
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(a.mean(-1), dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(b.mean(-1), dtype=np.float32))
        h, w = x.shape
        pad = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
        lo = (BLOCK - STRIDE) // 2
        pads = (lo, lo + (-w) % STRIDE, lo, lo + (-h) % STRIDE)
        yp = F.pad(y[None, None], (pad,) * 4, mode="replicate")[0, 0]
        bias = BIAS * float(sigma) ** 2
        best = None
        arg = None
        for k, (dy, dx) in enumerate(shifts):
            e = (x - yp[pad + dy : pad + dy + h, pad + dx : pad + dx + w]) ** 2
            cost = F.avg_pool2d(F.pad(e[None, None], pads, mode="replicate"), BLOCK, STRIDE)[0, 0]
            if k < favoured:
                cost = cost - bias
            if best is None:
                best, arg = cost, torch.zeros(cost.shape, dtype=torch.long)
                continue
            better = cost < best
            best = torch.where(better, cost, best)
            arg = torch.where(better, k, arg)
        table = torch.tensor(shifts, dtype=torch.int16)
        return table[arg].numpy()


def compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The field ``s -> j`` of ``first`` (``s -> m``) then ``second`` (``m -> j``),
    both per cell: ``d(x) = d1(x) + d2(x + d1(x))`` (``d2`` read at the cell the
    moved cell centre falls in)."""
    ch, cw = first.shape[:2]
    cy, cx = np.meshgrid(np.arange(ch), np.arange(cw), indexing="ij")
    half = STRIDE // 2
    ty = np.clip((cy * STRIDE + half + first[..., 0]) // STRIDE, 0, ch - 1)
    tx = np.clip((cx * STRIDE + half + first[..., 1]) // STRIDE, 0, cw - 1)
    return (first + second[ty, tx]).astype(np.int16)


def dense(
    field: np.ndarray | None, shape: tuple[int, int], rows: tuple[int, int] | None = None
) -> np.ndarray:
    """A per-cell field as ``(H, W, 2)`` int32 per pixel (zeros for ``None``);
    ``rows``: only image rows ``rows[0] .. rows[1] - 1``."""
    r0, r1 = (0, shape[0]) if rows is None else rows
    if field is None:
        return np.zeros((r1 - r0, shape[1], 2), np.int32)
    ys = np.arange(r0, r1) // STRIDE
    xs = np.arange(shape[1]) // STRIDE
    return field[ys][:, xs].astype(np.int32)


def warp(img: np.ndarray, field: np.ndarray | None) -> np.ndarray:
    """``img`` ``(H, W, ...)`` read at ``x + d(x)`` (clamped to the frame): frame
    ``j`` brought onto frame ``s`` by the field ``s -> j``."""
    if field is None:
        return img
    h, w = img.shape[:2]
    d = dense(field, (h, w))
    rows = np.clip(np.arange(h)[:, None] + d[..., 0], 0, h - 1)
    cols = np.clip(np.arange(w)[None, :] + d[..., 1], 0, w - 1)
    return img[rows, cols]
