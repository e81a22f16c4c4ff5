"""Time-lapse stacks: each frame denoised with the help of its neighbours (issue 16).

``denoise_ntd(movie, time_axis=0)``. Consecutive frames see nearly the same
scene, so the guided method's non-local Bayes pilot
(:mod:`napari_ntd._nlbayes`) searches the groups of similar patches of frame
``t`` in frames ``t - w .. t + w`` too (``w = time_window``; a
``(2 SEARCH + 1)^2`` window around the same position in each). Grouping by
similarity is what makes it robust to motion: a patch whose content moved
or changed is not similar and stays out of the group, so moving objects are
not averaged with where they were (no ghosting).

Per frame ``s``:

1. ``basic_s``: step 1 of non-local Bayes on frame ``s`` with frames
   ``s - w .. s + w`` as candidates; ``dct_s``: the 2D DCT Wiener pilot of
   frame ``s`` (:mod:`napari_ntd._pilot`); the first guide
   ``(basic_s + dct_s) / 2``;
2. ``PASSES`` passes of step 2 with frames ``s - w .. s + w``, each grouped
   on the previous guides; after a pass the next guide is
   ``(basic_s + pass_s) / 2``; the last pass on frame ``t`` is its pilot;
3. the NTK twicing stage of the guided method on frame ``t`` (its own
   patches, a fixed ``t``; off by default), as for a 2D image.

So output frame ``t`` depends on input frames ``t - (PASSES + 1) w .. t +
(PASSES + 1) w`` only (:func:`reach`): the movie is processed as a sliding
window (a few float32 frames of pilot state), and any split of the movie
into chunks overlapping by the reach gives the same result
(:mod:`._dask`). The noise model is global (one transform for the movie); a
sigma not given is estimated per frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator

import numpy as np
import torch

from .._ntk import _guided, _nlbayes, _pilot
from .._util._config import NTDConfig
from .._util._parallel import submit_all
from . import _vst
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

#: Passes of step 2 (each grouped on the previous pass's result): 2 gained
#: 0.3-0.4 dB over one on the benchmark time-lapse, 3 another 0.03.
PASSES = 2

#: ``beta`` of step 2 on time-lapses (2D images: 0.9-1.2). Measured on the
#: benchmark time-lapse at sigma 25 / 50: 1.0: 36.44 / 33.53 dB, 1.3: 36.53 /
#: 33.67, 1.6: 36.58 / 33.72, 2.0: 36.61 / 33.74.
BETA_2 = 1.6


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


def reach(window: int) -> int:
    """Output frame ``t`` reads input frames ``t - reach .. t + reach`` only."""
    return (PASSES + 1) * window


def frame_steps(shape: tuple[int, ...], cfg: NTDConfig, tiles) -> int:
    """Progress steps of one frame: its pilot and the NTK stage's tasks."""
    if cfg.n_iter == 0:
        return 1
    return 1 + len(_guided.batches(shape[:-1], tiles, cfg, shape[-1]))


class _Frames:
    """The per-frame pilot quantities of a sliding window of the movie."""

    def __init__(self, work: np.ndarray, sigmas: list[float], window: int):
        self.work, self.sigmas, self.window = work, sigmas, window
        self.n = work.shape[0]
        self.groups: dict[int, list[np.ndarray]] = {}  # (1, C', H, W) float32 per group
        self.basic: dict[int, list[np.ndarray]] = {}  # step 1 with the neighbours
        # guides[0]: (step 1 + DCT Wiener) / 2; guides[1]: (step 1 + first step 2) / 2
        self.guides: list[dict[int, list[np.ndarray]]] = [{} for _ in range(PASSES)]
        self.params: dict[int, tuple] = {}

    def context(self, s: int) -> range:
        return range(max(0, s - self.window), min(self.n, s + self.window + 1))

    def noisy(self, s: int) -> list[np.ndarray]:
        if s not in self.groups:
            self.groups[s] = _pilot._nlb_groups(self.work[s])
            img = self.work[s]
            steps = _pilot.nlb_params_of(img, self.sigmas[s])
            # reference patches at every position (the 2D default's grid of 3 lost
            # 0.09 / 0.05 dB here at sigma 25 / 50 for 40 % less time); small
            # frames: the largest odd patch that fits
            side = min(img.shape[:2])
            fit = [min(p.patch, side - 1 + side % 2) for p in steps]
            first, second = (
                dataclasses.replace(p, window=SEARCH, stride=1, patch=f)
                for p, f in zip(steps, fit, strict=True)
            )
            self.params[s] = (first, dataclasses.replace(second, beta=BETA_2))
        return self.groups[s]

    def stack(self, s: int, g: int, source: dict) -> np.ndarray:
        """Group ``g`` of the frames around ``s`` as ``(T', C', H, W)``."""
        return np.concatenate([source[k][g] for k in self.context(s)])

    def drop_before(self, s: int) -> None:
        for cache in (self.groups, self.basic, self.params, *self.guides):
            for k in [k for k in cache if k < s]:
                del cache[k]


def _bands_of(frames: _Frames, new: list[int], step: int) -> list[tuple[int, int, tuple]]:
    return [
        (s, g, rows)
        for s in new
        for g in range(len(frames.groups[s]))
        for rows in _nlbayes.bands(frames.work.shape[1], frames.params[s][step].patch)
    ]


def _collect(futures: list) -> list:
    try:
        return [f.result() for f in futures]
    finally:  # an error or a closed generator: drop what has not started
        for f in futures:
            f.cancel()


def _estimates(frames: _Frames, new: list[int], jobs, results) -> list[list[np.ndarray]]:
    stacks = [[frames.groups[s][g] for g in range(len(frames.groups[s]))] for s in new]
    index = {s: i for i, s in enumerate(new)}
    return _nlbayes.assemble(stacks, [(index[s], g, rows) for s, g, rows in jobs], results)


def _first(frames: _Frames, new: list[int]) -> None:
    """Step 1 and the DCT Wiener pilot of frames ``new``: their first guides."""
    for s in new:
        for k in frames.context(s):
            frames.noisy(k)
    jobs = _bands_of(frames, new, 0)

    def step1(s: int, g: int, rows: tuple[int, int]):
        stack = frames.stack(s, g, frames.groups)
        ref = s - frames.context(s).start
        return _nlbayes.nlb_band(stack, None, frames.sigmas[s], frames.params[s][0], rows, ref)

    futures = submit_all(
        lambda kind, s: _pilot.dct_pass(kind, frames.work[s], frames.sigmas[s]),
        [(kind, s) for s in new for kind in ("nlm", "hard")],
    )
    futures += submit_all(step1, jobs)
    out = _collect(futures)
    parts, results = out[: 2 * len(new)], out[2 * len(new) :]
    wiener = _collect(
        submit_all(
            lambda s, nl, hard: _pilot._wiener_pass(frames.work[s], nl, hard, frames.sigmas[s]),
            [(s, parts[2 * i], parts[2 * i + 1]) for i, s in enumerate(new)],
        )
    )
    basic = _estimates(frames, new, jobs, results)
    for i, s in enumerate(new):
        frames.basic[s] = basic[i]
        frames.guides[0][s] = _pilot.mean_guide(basic[i], wiener[i])


def _second(frames: _Frames, new: list[int], level: int) -> list[list[np.ndarray]]:
    """Step 2 of frames ``new`` with their neighbours, grouped on ``guides[level]``."""
    need = sorted({k for s in new for k in frames.context(s)} - set(frames.guides[level]))
    if need and level == 0:
        _first(frames, need)
    elif need:
        _guides_next(frames, need, level)
    jobs = _bands_of(frames, new, 1)
    guides = frames.guides[level]

    def step2(s: int, g: int, rows: tuple[int, int]):
        ref = s - frames.context(s).start
        noisy, guide = frames.stack(s, g, frames.groups), frames.stack(s, g, guides)
        return _nlbayes.nlb_band(noisy, guide, frames.sigmas[s], frames.params[s][1], rows, ref)

    return _estimates(frames, new, jobs, _collect(submit_all(step2, jobs)))


def _guides_next(frames: _Frames, new: list[int], level: int) -> None:
    """Guides of pass ``level``: the mean of step 1 and the previous pass's step 2."""
    final = _second(frames, new, level - 1)
    for i, s in enumerate(new):
        frames.guides[level][s] = [
            (b + f) / 2 for b, f in zip(frames.basic[s], final[i], strict=True)
        ]


def _pilot_of(frames: _Frames, t: int) -> np.ndarray:
    """The time-lapse pilot of frame ``t`` (``(H, W, C)``): the second pass of step 2."""
    (final,) = _second(frames, [t], PASSES - 1)
    return _pilot._from_groups(final, frames.work[t])


def _ntk_stage(
    y: np.ndarray, pilot: np.ndarray, sigma: float, cfg: NTDConfig, seed: int, tiles, device
) -> Generator[tuple[int, int], None, np.ndarray]:
    """The guided NTK twicing of one frame from its pilot (fixed ``t``)."""
    center = robust_center(y)
    if center is None or cfg.n_iter == 0 or sigma <= 0:
        return pilot.astype(np.float64)
    _, scale = spread_and_scale(y, center)
    yc = ((y.astype(np.float64) - center) / scale).astype(np.float32)
    pc = ((pilot.astype(np.float64) - center) / scale).astype(np.float32)
    stack = np.concatenate([yc, pc, yc, pc, np.zeros_like(yc)], axis=-1)
    st = torch.from_numpy(stack).to(device).permute(2, 0, 1).contiguous()
    rng = torch.Generator().manual_seed(int(seed))
    z = yield from _guided.iter_guided(st, sigma / scale, cfg, rng, eps=0.0, tiles=tiles)
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
    per_frame = frame_steps(work.shape[1:], cfg, tiles)
    total = per_frame * len(frames)
    out = np.empty((len(frames), *movie.shape[1:]), np.float64)
    cache = _Frames(work, sigmas, window)
    for i, t in enumerate(frames):
        base = i * per_frame
        if sigmas[t] <= 0:  # nothing to filter in this frame
            out[i] = movie[t]
            yield (base + per_frame, total)
            continue
        pilot = _pilot_of(cache, t)
        yield (base + 1, total)
        stage = _ntk_stage(work[t], pilot, sigmas[t], cfg, seed + t, tiles, device)
        z = yield from _shift(stage, base + 1, total)
        out[i] = _vst.gat_inverse(z, noise) if noise.kind != "gaussian" else z
        cache.drop_before(t + 1 - PASSES * window)
    return out


def _shift(gen: Generator, offset: int, total: int):
    """Forward the NTK stage's ``(done, total)`` steps inside the movie's count."""
    while True:
        try:
            done, _ = next(gen)
        except StopIteration as stop:
            return stop.value
        yield (offset + done, total)
