"""Time-lapse stacks: each frame denoised with the help of its neighbours (issue 16).

``denoise_ntd(movie, time_axis=0)``. Consecutive frames see nearly the same
scene, so the guided method's non-local Bayes pilot
(:mod:`napari_ntd._nlbayes`) searches the groups of similar patches of frame
``s`` in frames ``s - w .. s + w`` too (``w = time_window``; a
``(2 SEARCH + 1)^2`` window around the same position in each). Grouping by
similarity is what makes it robust to motion: a patch whose content moved
or changed is not similar and stays out of the group, so moving objects are
not averaged with where they were (no ghosting). To find the moved content
all the same, each frame has a block motion field towards each neighbour
(:mod:`._motion`, :data:`MOTION`): the neighbours are warped onto the frame
before the space-time filters below, and the search window in a neighbour
is centred where the patch moved.

Per frame ``s``:

1. ``dct_s``: the DCT pilot of the short movie ``s - w .. s + w`` (warped
   onto frame ``s``) with space-time blocks (``4 x 4`` or ``8 x 8`` pixels
   by all its frames, :data:`GUIDE_SIZES`;
   :func:`napari_ntd._pilot.window_wiener`): hard thresholding, then the
   empirical Wiener shrinkage guided by its mean with the frames' non-local
   means; frame ``s`` of it is the first guide. It replaces the 2D DCT pilot
   and step 1 of non-local Bayes, which no longer helped next to it (on the
   benchmark time-lapse at sigma 15 / 25 / 50: first pass 38.95 / 37.13 /
   34.29 dB guided by ``(step 1 + dct_s) / 2``, 38.95 / 37.13 / 34.31 by
   ``dct_s`` alone; ``dct_s`` itself 38.63 / 36.46 / 33.30, the 2D DCT
   pilot 36.81 / 34.46 / 30.81);
2. ``PASSES`` passes of step 2, each grouped on the previous guides, the
   patches of every frame of a group aggregated into that frame
   (:data:`CROSS`): the estimate of frame ``t`` gathers its patches from
   the groups of the reference frames ``t - w .. t + w``. After a pass the
   next guide is ``(wiener_s + pass_s) / 2``, ``wiener_s`` its refining
   Wiener (:data:`REFINE_SIZE`: frame ``s`` of the space-time empirical
   Wiener of frames ``s - w .. s + w``, warped onto ``s``, guided by their
   pass estimates); the last pass of frame ``t`` is its pilot, at low noise
   (:data:`LOW_NOISE`) mixed with its refining Wiener
   (:data:`OUTPUT_WIENER`);
3. the NTK twicing stage of the guided method on frame ``t`` (a fixed
   ``t``; off by default: ``benchmarks/bench_timelapse_ntk.py`` bounds its
   gain by +0.06 dB), as for a 2D image but with space-time patches: the
   kernel's input channels are the pilot of ``t`` and the last-pass
   estimates of ``t - 1`` and ``t + 1`` warped onto it.

So output frame ``t`` depends on input frames ``t - (3 PASSES + 1) w .. t +
(3 PASSES + 1) w`` only (:func:`reach`): the movie is processed as a sliding
window (a few float32 frames of pilot state per pass), and any split of the
movie into chunks overlapping by the reach gives the same result
(:mod:`._dask`). The noise model is global (one transform for the movie); a
sigma not given is estimated per frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence

import numpy as np
import torch

from .._ntk import _guided, _nlbayes, _pilot
from .._util._config import NTDConfig
from .._util._parallel import submit_all
from . import _motion, _vst
from ._image import estimate_sigma, plan_tiles, robust_center, spread_and_scale

__all__ = [
    "DEFAULT_WINDOW",
    "SEARCH",
    "frame_steps",
    "iter_timelapse",
    "reach",
    "timelapse_order",
]

#: Neighbouring frames used on each side of a frame (``time_window``).
DEFAULT_WINDOW = 2

#: Half side of the search window in each frame (2D images: 11). With the
#: neighbouring frames as candidates, a small window is better: on the
#: benchmark time-lapse (sigma 25, 2 frames each side) the pilot gave
#: 35.3 / 35.8 / 36.1 / 36.2 dB for 11 / 5 / 3 / 2 (frame by frame: 34.9).
SEARCH = 2

#: Passes of step 2 (each grouped on the previous pass's result). With the
#: space-time DCT guide, on the benchmark time-lapse at sigma 15 / 25 / 50:
#: one pass 38.95 / 37.13 / 34.31 dB, two 38.91 / 37.16 / 34.40 (the 2D
#: guide of the first version: two gained 0.3-0.4 dB over one, three 0.03).
PASSES = 2

#: ``beta`` of step 2 on time-lapses (the IPOL table's value for sigma < 35).
#: Measured on the benchmark time-lapse (seed 0) at sigma 15 / 25 / 50 /
#: Poisson: 1.0: 38.84 / 37.07 / 34.37 / 36.91 dB, ghost 0.3 / 2.3 / 7.8 / 0.9 %,
#: blink error 5.2 / 9.8 / 23.0 / 5.3 %; 1.6 (best with the 2D guide):
#: 38.91 / 37.16 / 34.40 / 37.01 dB, ghost 0.4 / 2.6 / 8.8 / 1.2 %, blink
#: 5.2 / 10.4 / 25.2 / 5.8 %: the stronger shrinkage pulls a group towards
#: its guide's mean, where a moving or blinking nucleus was.
BETA_2 = 1.0

#: Below this noise level (:func:`napari_ntd._pilot.sigma255` of the frame)
#: the first guide has ``4 x 4`` space-time blocks (:data:`GUIDE_SIZES`) and
#: the output mixes in the refining Wiener (:data:`OUTPUT_WIENER`). On the
#: benchmark time-lapse (seed 0; levels 17-20, 28-31, 53-60 and 35-38 at sigma
#: 15 / 25 / 50 / Poisson), both below it everywhere: 39.19 / 37.19 / 34.10 /
#: 37.19 dB (ghost at sigma 50 8.6 %); neither: 38.89 / 37.13 / 34.46 / 37.00;
#: this threshold: 39.19 / 37.19 / 34.46 / 37.19 (ghost 7.8 %).
LOW_NOISE = 45.0

#: Block sides of the first guide's space-time DCT below / from
#: :data:`LOW_NOISE`. Seed 0, sigma 15 / 25 / 50 / Poisson: ``(4, 8)``
#: 39.19 / 37.19 / 34.46 / 37.19 dB, ghost 0.5 / 2.4 / 7.8 / 1.0 %;
#: ``(8, 8)`` 38.99 / 37.15 / 34.46 / 37.04, ghost 0.2 / 2.1 / 7.8 / 0.9 %.
#: The smaller blocks keep more detail but follow the noise more (sigma 50,
#: without the refining Wiener: 33.63 dB vs 34.37, ghost 10.8 vs 7.8 %).
GUIDE_SIZES = (4, 8)

#: Block side of the refining space-time Wiener: frame ``t`` of the empirical
#: Wiener shrinkage of frames ``t - w .. t + w`` guided by a pass's estimates
#: of them (:func:`napari_ntd._pilot.window_guided`: BM3D's second step with
#: sliding space-time blocks instead of groups). The guide of the next pass
#: is its mean with the pass. Seed 0, sigma 15 / 25 / 50 / Poisson with the
#: ``8 x 8`` guide and no output mix: the space-time DCT pilot in that mean
#: instead (the first version): 38.84 / 37.07 / 34.37 / 36.91 dB; the
#: refining Wiener: 38.89 / 37.13 / 34.46 / 37.00. Final setting, ``4 x 4``
#: refining blocks: 39.05 / 36.80 / 34.23 / 36.97 (``8 x 8``: 39.19 / 37.19 /
#: 34.46 / 37.19).
REFINE_SIZE = 8

#: Weight of the refining Wiener of the last pass in the output below
#: :data:`LOW_NOISE` (0 from it): the errors of the two differ. Seed 0,
#: sigma 15 / 25 / Poisson: 0.5: 39.19 / 37.19 / 37.19 dB, ghost 0.5 / 2.4 /
#: 1.0 %, blink error 5.1 / 10.3 / 5.6 %; 0: 39.12 / 37.17 / 37.19, ghost 0.7
#: / 2.8 / 1.2 %, blink 5.1 / 11.6 / 6.4 %. At sigma 50 (the first version's
#: guides): 0: 34.37 dB, 0.3: 34.35, 0.5: 34.29.
OUTPUT_WIENER = 0.5

#: The estimated patches of every frame of a group are aggregated into that
#: frame, not only the reference frame's (as video non-local Bayes does).
#: On the benchmark time-lapse at sigma 15 / 25 / 50 (beta 1.6): 38.91 / 37.16
#: / 34.40 dB, reference frame only 38.83 / 37.09 / 34.36; it doubles the
#: reach of each pass.
CROSS = True

#: Motion compensation (:mod:`._motion`): each frame's neighbours are warped
#: onto it (block motion on the frames' non-local means) before the
#: space-time DCT guide and the refining Wiener, and each neighbour's search
#: window of the non-local Bayes groups is centred where the patch moved.
#: On the benchmark time-lapse, seeds 0 / 1 / 2 at sigma 15: 39.17 / 38.25 /
#: 38.86 dB without, 39.37 / 38.33 / 38.93 with (warping alone, windows
#: fixed: 39.35 / 38.32 / -; BM4D: 39.23 / 38.36 / 38.94); at sigma 25:
#: 37.16 / 36.41 / 36.90 without, 37.35 / 36.47 / 36.91 with warping alone.
#: Where the nuclei move (7 / 17 / 8 % of the pixels) the error was the
#: frame-by-frame one before (seed 0: MSE 300e-6 against 303e-6 frame by
#: frame and BM4D's 254e-6).
MOTION = True

#: Also centre the search windows on the motion (needs :data:`MOTION`).
MOTION_SEARCH = True


def timelapse_order(shape: tuple[int, ...], time_axis: int, channel_axis: int | None) -> list[int]:
    """Axis order ``(..., T, H, W[, C])`` of a time-lapse (H, W: the last two
    axes that are neither channels nor time)."""
    ndim = len(shape)
    if not -ndim <= time_axis < ndim:
        raise ValueError(f"time_axis={time_axis} is invalid for shape {shape}")
    ta = time_axis % ndim
    ch = None if channel_axis is None else channel_axis % ndim
    if ta == ch:
        raise ValueError(f"time_axis={time_axis} and channel_axis={channel_axis} are one axis")
    others = [a for a in range(ndim) if a not in (ta, ch)]
    if len(others) < 2:
        raise ValueError(f"a time-lapse needs 2D frames besides time; got shape {shape}")
    lead, spatial = others[:-2], others[-2:]
    return [*lead, ta, *spatial, *([] if ch is None else [ch])]


def _spread(window: int) -> int:
    """Frames a pass reaches on each side of a frame, beyond its guides."""
    return window * (2 if CROSS else 1)


def reach(window: int) -> int:
    """Output frame ``t`` reads input frames ``t - reach .. t + reach`` only."""
    return _lowest(window, 0) + _spread(window) + window


def _lowest(window: int, k: int) -> int:
    """How far before output frame ``t`` pass ``k``'s estimates are still needed.

    The output reads the last pass of frames ``t - w .. t + w`` (its refining
    Wiener); the estimate of a frame at pass ``k + 1`` reads the guides
    ``_spread(w)`` frames away (the groups of its reference frames), and the
    guide of a frame at pass ``k + 1`` reads pass ``k`` of the frames ``w``
    away; the first guides read the input frames ``w`` away.
    """
    return window + (PASSES - 1 - k) * (_spread(window) + window)


def frame_steps(shape: tuple[int, ...], cfg: NTDConfig, tiles, neighbours: int = 0) -> int:
    """Progress steps of one frame: its pilot and the NTK stage's tasks (whose
    kernel has ``neighbours`` more frames as input channels)."""
    if cfg.n_iter == 0:
        return 1
    return 1 + _guided.n_steps(shape[:-1], tiles, cfg, shape[-1] * (1 + neighbours))


def _near(t: int, n: int, window: int) -> list[int]:
    """The neighbours whose estimates join frame ``t``'s NTK kernel."""
    return [j for j in (t - 1, t + 1) if window >= 1 and 0 <= j < n]


class _Frames:
    """The per-frame pilot quantities of a sliding window of the movie.

    Pass ``k`` (``0 .. PASSES - 1``) is grouped on ``guides[k]``; the estimate
    of frame ``t`` at pass ``k`` adds up the ``acc[k][t]`` accumulators of
    its patches from the groups of the reference frames ``context(t)``.
    """

    def __init__(self, work: np.ndarray, sigmas: list[float], window: int):
        self.work, self.sigmas, self.window = work, sigmas, window
        self.n = work.shape[0]
        self.groups: dict[int, list[np.ndarray]] = {}  # (1, C', H, W) float32 per group
        self.params: dict[int, _nlbayes.NLBParams] = {}
        self.nl: dict[int, np.ndarray] = {}  # non-local means (H, W, C)
        self.dct: dict[int, list[np.ndarray]] = {}  # the space-time DCT pilot, per group
        self.guides: list[dict[int, list[np.ndarray]]] = [{} for _ in range(PASSES)]
        self.est: list[dict[int, list[np.ndarray]]] = [{} for _ in range(PASSES)]
        self.acc: list[dict[int, list]] = [{} for _ in range(PASSES)]  # (num, den) per group
        self.ran: list[set[int]] = [set() for _ in range(PASSES)]  # reference frames run
        self.levels: dict[int, float] = {}  # sigma255 of the frames
        # block motion (per cell) of frame s towards each frame of context(s)
        self.flows: dict[int, list[np.ndarray | None]] = {}
        self.pairs: dict[tuple[int, int], np.ndarray] = {}  # consecutive frames

    def low_noise(self, s: int) -> bool:
        """Whether frame ``s`` is below :data:`LOW_NOISE`."""
        if s not in self.levels:
            self.levels[s] = _pilot.sigma255(self.work[s], self.sigmas[s])
        return self.levels[s] < LOW_NOISE

    def context(self, s: int) -> range:
        return range(max(0, s - self.window), min(self.n, s + self.window + 1))

    def noisy(self, s: int) -> list[np.ndarray]:
        if s not in self.groups:
            self.groups[s] = _pilot._nlb_groups(self.work[s])
            img = self.work[s]
            step2 = _pilot.nlb_params_of(img, self.sigmas[s])[1]
            # reference patches at every position (the 2D default's grid of 3 lost
            # 0.09 / 0.05 dB here at sigma 25 / 50 for 40 % less time); small
            # frames: the largest odd patch that fits
            side = min(img.shape[:2])
            self.params[s] = dataclasses.replace(
                step2,
                window=SEARCH,
                stride=1,
                patch=min(step2.patch, side - 1 + side % 2),
                beta=BETA_2,
            )
        return self.groups[s]

    def stack(self, s: int, g: int, source: dict) -> np.ndarray:
        """Group ``g`` of the frames around ``s`` as ``(T', C', H, W)``."""
        return np.concatenate([source[k][g] for k in self.context(s)])

    def drop_before(self, t: int) -> None:
        """Drop what output frames ``t`` and later no longer need."""
        w, spread = self.window, _spread(self.window)
        first = t - _lowest(w, 0) - spread  # the first guides
        lows = [(self.groups, first), (self.params, first), (self.nl, first - w)]
        lows += [(self.dct, first), (self.levels, first)]
        for k in range(PASSES):
            low = t - _lowest(w, k)  # pass k's estimates: frames >= low
            lows += [(self.est[k], low), (self.acc[k], low), (self.guides[k], low - spread)]
        for cache, low in lows:
            for k in [k for k in cache if k < low]:
                del cache[k]
        for k in range(PASSES):
            self.ran[k] = {s for s in self.ran[k] if s >= t - reach(w)}
        for s in [s for s in self.flows if s < t - reach(w)]:
            del self.flows[s]
        for ab in [ab for ab in self.pairs if min(ab) < t - reach(w)]:
            del self.pairs[ab]

    def warped(self, s: int, images: list[np.ndarray]) -> np.ndarray:
        """``images`` (one per frame of ``context(s)``) brought onto frame ``s``."""
        fields = self.fields(s)
        return np.stack([_motion.warp(a, f) for a, f in zip(images, fields, strict=True)])

    def fields(self, s: int) -> list[np.ndarray | None]:
        """The motion fields of frame ``s`` towards each frame of ``context(s)``
        (``None``: no motion, also without :data:`MOTION`)."""
        return self.flows[s] if MOTION else [None] * len(self.context(s))

    def offsets(self, s: int, patch: int, rows: tuple[int, int]) -> np.ndarray | None:
        """Search-window offsets ``(T', rows[1] - rows[0], W - patch + 1, 2)`` of the
        reference frame ``s``'s patches with top rows ``rows`` in each frame of
        ``context(s)`` (the motion at the patch centres)."""
        if not (MOTION and MOTION_SEARCH):
            return None
        w = self.work.shape[2]
        c = patch // 2
        span = (rows[0] + c, rows[1] + c)
        return np.stack(
            [
                _motion.dense(f, (self.work.shape[1], w), span)[:, c : c + w - patch + 1]
                for f in self.fields(s)
            ]
        )


def _collect(futures: list) -> list:
    try:
        return [f.result() for f in futures]
    finally:  # an error or a closed generator: drop what has not started
        for f in futures:
            f.cancel()


def _motion_of(frames: _Frames, targets: list[int]) -> None:
    """Block motion of frames ``targets`` towards their neighbours (their
    context's non-local means must be there): consecutive pairs matched on the
    compute pool, further neighbours chained."""
    new = [s for s in targets if s not in frames.flows]
    if not MOTION or not new:
        return
    need = set()
    for s in new:
        ctx = frames.context(s)
        need |= {(a, a + 1) for a in range(s, ctx.stop - 1)}
        need |= {(a, a - 1) for a in range(ctx.start + 1, s + 1)}
    pairs = sorted(need - set(frames.pairs))

    def match(a: int, b: int) -> np.ndarray:
        return _motion.block_motion(frames.nl[a], frames.nl[b], frames.sigmas[a])

    frames.pairs.update(zip(pairs, _collect(submit_all(match, pairs)), strict=True))
    for s in new:
        fields: list[np.ndarray | None] = []
        for j in frames.context(s):
            field = None
            step = 1 if j > s else -1
            for a in range(s, j, step):
                pair = frames.pairs[(a, a + step)]
                field = pair if field is None else _motion.compose(field, pair)
            fields.append(field)
        frames.flows[s] = fields


def _dct_pilots(frames: _Frames, targets: list[int]) -> None:
    """The space-time DCT pilots of frames ``targets`` (frame ``s`` of the DCT
    pilot of frames ``s - w .. s + w``)."""
    new = [s for s in targets if s not in frames.dct]
    if not new:
        return
    nls = sorted({k for s in new for k in frames.context(s)} - set(frames.nl))
    out = _collect(
        submit_all(lambda s: _pilot.nlm(frames.work[s], frames.sigmas[s]), [(s,) for s in nls])
    )
    frames.nl.update(zip(nls, out, strict=True))
    _motion_of(frames, new)

    def pilot_of(s: int) -> list[np.ndarray]:
        ctx = frames.context(s)
        nl = frames.warped(s, [frames.nl[k] for k in ctx])
        movie = frames.warped(s, [frames.work[k] for k in ctx])
        size = GUIDE_SIZES[0] if frames.low_noise(s) else GUIDE_SIZES[1]
        dct = _pilot.window_wiener(movie, nl, frames.sigmas[s], size)
        return _pilot._nlb_groups(dct[s - ctx.start])

    frames.dct.update(zip(new, _collect(submit_all(pilot_of, [(s,) for s in new])), strict=True))


def _run(frames: _Frames, k: int, srcs: list[int]) -> None:
    """Pass ``k`` on the reference frames ``srcs``, added to the accumulators."""
    srcs = [s for s in srcs if s not in frames.ran[k]]
    if not srcs:
        return
    for s in srcs:
        for j in frames.context(s):
            frames.noisy(j)
    _guides(frames, k, sorted({j for s in srcs for j in frames.context(s)}))
    jobs = [
        (s, g, rows)
        for s in srcs
        for g in range(len(frames.groups[s]))
        for rows in _nlbayes.bands(frames.work.shape[1], frames.params[s].patch)
    ]

    def band(s: int, g: int, rows: tuple[int, int]):
        ref = s - frames.context(s).start
        noisy, guide = frames.stack(s, g, frames.groups), frames.stack(s, g, frames.guides[k])
        params = frames.params[s]
        offsets = frames.offsets(s, params.patch, rows)
        return _nlbayes.nlb_band(
            noisy, guide, frames.sigmas[s], params, rows, ref, CROSS, offsets=offsets
        )

    acc = frames.acc[k]
    for (s, g, _), (num, den, r0) in zip(jobs, _collect(submit_all(band, jobs)), strict=True):
        parts = zip(frames.context(s), num, den, strict=True) if CROSS else [(s, num, den)]
        for j, num_j, den_j in parts:
            if j not in acc:
                acc[j] = [None] * len(frames.groups[j])
            if acc[j][g] is None:
                _, c, h, w = frames.groups[j][g].shape
                acc[j][g] = (np.zeros((c, h, w)), np.zeros((h, w)))
            tot, wsum = acc[j][g]
            tot[:, r0 : r0 + den_j.shape[0]] += num_j
            wsum[r0 : r0 + den_j.shape[0]] += den_j
    frames.ran[k].update(srcs)


def _estimates(frames: _Frames, k: int, targets: list[int]) -> None:
    """The estimates of frames ``targets`` at pass ``k``."""
    targets = [t for t in targets if t not in frames.est[k]]
    if not targets:
        return
    srcs = {s for t in targets for s in frames.context(t)} if CROSS else set(targets)
    _run(frames, k, sorted(srcs))
    for t in targets:
        frames.est[k][t] = [
            (tot / wsum).astype(np.float32)[None] for tot, wsum in frames.acc[k].pop(t)
        ]


def _refined(frames: _Frames, k: int, targets: list[int]) -> list[list[np.ndarray]]:
    """The refining Wiener of pass ``k`` on frames ``targets`` (per group):
    frame ``t`` of the space-time Wiener of frames ``t - w .. t + w`` guided by
    their pass ``k`` estimates."""
    _estimates(frames, k, sorted({j for t in targets for j in frames.context(t)}))

    def refine(t: int) -> list[np.ndarray]:
        ctx = frames.context(t)
        est = frames.warped(t, [_pilot._from_groups(frames.est[k][j], frames.work[j]) for j in ctx])
        movie = frames.warped(t, [frames.work[j] for j in ctx])
        out = _pilot.window_guided(movie, est, frames.sigmas[t], REFINE_SIZE)
        return _pilot._nlb_groups(out[t - ctx.start])

    return _collect(submit_all(refine, [(t,) for t in targets]))


def _guides(frames: _Frames, k: int, targets: list[int]) -> None:
    """Guides of pass ``k``: the space-time DCT pilot, then the mean of the
    previous pass and its refining Wiener."""
    targets = [t for t in targets if t not in frames.guides[k]]
    if not targets:
        return
    if not k:
        _dct_pilots(frames, targets)
        frames.guides[k].update((t, frames.dct[t]) for t in targets)
        return
    for t, wiener in zip(targets, _refined(frames, k - 1, targets), strict=True):
        est = frames.est[k - 1][t]
        frames.guides[k][t] = [(a + b) / 2 for a, b in zip(wiener, est, strict=True)]


def _pilot_of(frames: _Frames, t: int) -> np.ndarray:
    """The time-lapse pilot of frame ``t`` (``(H, W, C)``): the last pass of step 2,
    below :data:`LOW_NOISE` mixed with its refining Wiener."""
    _estimates(frames, PASSES - 1, [t])
    est = frames.est[PASSES - 1][t]
    if frames.low_noise(t) and OUTPUT_WIENER:
        (wiener,) = _refined(frames, PASSES - 1, [t])
        a = OUTPUT_WIENER
        est = [(1 - a) * e + a * r for e, r in zip(est, wiener, strict=True)]
    return _pilot._from_groups(est, frames.work[t])


def _neighbour_pilots(frames: _Frames, t: int) -> list[np.ndarray]:
    """The last-pass estimates of frames ``t - 1`` and ``t + 1`` (those in the
    movie and the window), warped onto frame ``t``: the extra input channels of
    the NTK stage's kernel (space-time patches)."""
    ctx = frames.context(t)
    near = _near(t, frames.n, frames.window)
    _estimates(frames, PASSES - 1, near)
    fields = dict(zip(ctx, frames.fields(t), strict=True))
    return [
        _motion.warp(_pilot._from_groups(frames.est[PASSES - 1][j], frames.work[j]), fields[j])
        for j in near
    ]


def _ntk_stage(
    y: np.ndarray,
    pilot: np.ndarray,
    sigma: float,
    cfg: NTDConfig,
    seed: int,
    tiles,
    device,
    neighbours: Sequence[np.ndarray] = (),
) -> Generator[tuple[int, int], None, np.ndarray]:
    """The guided NTK twicing of one frame from its pilot (fixed ``t``).

    The kernel compares space-time patches: the network's input is the
    frame's pilot and ``neighbours`` (its neighbours' estimates warped onto
    it, :func:`_neighbour_pilots`) as extra channels, whose residual is zero
    (they are filtered as data too, then dropped).
    """
    center = robust_center(y)
    if center is None or cfg.n_iter == 0 or sigma <= 0:
        return pilot.astype(np.float64)
    _, scale = spread_and_scale(y, center)

    def scaled(a: np.ndarray) -> np.ndarray:
        return ((a.astype(np.float64) - center) / scale).astype(np.float32)

    yc, pc = scaled(y), scaled(pilot)
    extra = [scaled(a) for a in neighbours]
    data = np.concatenate([yc, *extra], axis=-1)
    guide = np.concatenate([pc, *extra], axis=-1)
    stack = np.concatenate([data, guide], axis=-1)
    st = torch.from_numpy(stack).to(device).permute(2, 0, 1).contiguous()
    rng = torch.Generator().manual_seed(int(seed))
    z = yield from _guided.iter_guided(st, sigma / scale, cfg, rng, tiles=tiles)
    z = z[: y.shape[-1]]  # the frame's own channels
    return z.permute(1, 2, 0).cpu().numpy().astype(np.float64) * scale + center


def iter_timelapse(
    movie: np.ndarray,
    seed: int,
    *,
    cfg: NTDConfig,
    device: torch.device,
    noise: _vst.NoiseModel,
    window: int,
    tile_shape: tuple[int, ...] | None,
    max_memory: int,
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise a ``(T, H, W, C)`` float movie; frame ``k`` seeded ``seed + k``.

    Returns float64 ``(T, H, W, C)``.
    """
    n = movie.shape[0]
    frames = range(n)
    if noise.kind != "gaussian":  # stabilise: noise ~ N(0, 1), one transform for the movie
        noise = noise.resolved(movie, channel_axis=-1)
        work = _vst.gat_forward(movie, noise).astype(np.float32)
        sigmas = [1.0] * n
    else:
        work = np.asarray(movie, dtype=np.float32)
        sigmas = [
            estimate_sigma(work[s]) if cfg.sigma is None else float(cfg.sigma) for s in frames
        ]
    tiles = plan_tiles(work.shape[1:], cfg, 4, tile_shape, max_memory)  # float32
    steps = [frame_steps(work.shape[1:], cfg, tiles, len(_near(t, n, window))) for t in frames]
    total = sum(steps)
    out = np.empty((len(frames), *movie.shape[1:]), np.float64)
    cache = _Frames(work, sigmas, window)
    base = 0
    for i, t in enumerate(frames):
        last = base  # the last step yielded
        if sigmas[t] <= 0:  # nothing to filter in this frame
            out[i] = movie[t]
        else:
            pilot = _pilot_of(cache, t)
            last = base + 1
            yield (last, total)
            near = _neighbour_pilots(cache, t) if cfg.n_iter != 0 else []
            stage = _ntk_stage(work[t], pilot, sigmas[t], cfg, seed + t, tiles, device, near)
            while True:  # the stage's (done, total) steps inside the movie's count
                try:
                    done, _ = next(stage)
                except StopIteration as stop:
                    z = stop.value
                    break
                last = base + 1 + done
                yield (last, total)
            out[i] = _vst.gat_inverse(z, noise) if noise.kind != "gaussian" else z
            cache.drop_before(t + 1)
        base += steps[t]
        if last < base:  # steps the frame skipped (a constant frame, no noise)
            yield (base, total)
    return out
