"""Stopping of the guided NTD: one ``t`` per channel from Monte-Carlo SURE on sample tiles.

The guided method (:mod:`napari_ntd._guided`) outputs ``z^t = p + V g_t V^T
(y - p)`` per tile. Monte-Carlo SURE of the whole map ``y -> z^t`` (pilot
included) needs the output for a perturbed image ``y + eps b``, hence the
pilot of the perturbed image: the pilot is the costly part of the method, and
a second one over the whole image made the NTK stage ~60 % of the default's
time (issue 13).

Here the perturbed pilot is computed only on a few sample tiles, spread over
the image, each in a crop with a ``SURE_HALO`` margin (the crops cover about
``SURE_AREA`` of the image: 8 tiles of a 512^2 image, 2 of a 256^2 one), with
the probe ``b`` only there. One ``t`` per channel minimises the sum of the
sample tiles' SURE curves and serves every tile. The unperturbed output of a
sample tile is the whole-image pilot's, so the divergence is that of the map
the user gets, up to the crop's edge effects. Measured (gains over the pilot
in dB at sigma 15 / 25 / 50, ``benchmarks/bench_ntk_bound.py`` on 7 gray
256^2 crops and ``bench_denoise.py --set all`` on 10 images):

* on the gray crops this default adds +0.039 / +0.097 / +0.253, per-tile
  SURE from a whole perturbed pilot +0.029 / +0.101 / +0.257, one ``t`` from
  all tiles' SURE +0.047 / +0.108 / +0.257; the best single ``t`` (clean
  image) +0.046 / +0.107 / +0.261 and the best ``t`` per tile +0.072 /
  +0.165 / +0.320;
* on the 10 images (colour included) the stage adds +0.04 / +0.09 / +0.22
  on the crops and +0.06 / +0.13 / +0.25 at full size, against +0.05 / +0.11
  / +0.26 and +0.08 / +0.17 / +0.29 per tile: a single ``t`` loses where
  only part of the image gains (the clock's face, rocket), and no longer loses
  on flat images (horse: 0 instead of -0.05). The stage now takes ~26 % of
  the default's time instead of ~60 %;
* the halo: the crop's edge effects enter the divergence; without a halo
  four sample tiles lost up to 0.35 dB at sigma 50, with 8 pixels none (16:
  the same). Sample sizes: 2 / 4 / 8 tiles of the crops gave +0.035 / +0.041
  / +0.041 at sigma 15, the same within 0.01 at 25 and 50; 4 tiles of the
  full images lost 0.056 dB on one image, 8 at most 0.007;
* per-tile choices from the sample's divergence did not transfer: scaling
  each tile's textbook divergence ``sum(g_t)`` by the sample's ratio, or
  charging each tile the sample's divergence per pixel, lost 0.1-0.6 dB on
  average and up to 5 dB on the smooth clock: the divergence is the tile's
  own (how much of the noise the pilot kept there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import _twicing

__all__ = [
    "SURE_EPS",
    "SURE_HALO",
    "SURE_TILES",
    "SureSample",
    "candidates",
    "n_sample",
    "stream_seed",
    "plan_sample",
    "perturbed_crops",
    "choose",
]

#: Monte-Carlo SURE perturbation of the guided method, times sigma. The
#: non-local Bayes pilot picks its groups by distance, so it jumps when a
#: small perturbation changes a group: with the paper's 0.01 sigma the
#: divergence was noise and SURE chose t badly (-0.6 dB mean, -5.7 dB on a
#: smooth image); at 0.3 sigma the finite difference averages over the jumps
#: (+0.16 dB mean over the pilot, worst case -0.05 dB, on 16 crops at sigma
#: 15 and 50; 0.1 / 0.2 / 0.5 sigma: +0.15 / +0.16 / +0.14). The jumps are
#: real divergence, not noise to average away: running the perturbed pilot
#: with the unperturbed run's groups (a smooth map, half the cost) left the
#: grouping's share out and SURE chose far too large t (-0.3 to -0.7 dB mean,
#: -9 dB on the smooth image).
SURE_EPS = 0.3

#: Margin (pixels) of the crop around a sample tile whose pilot is perturbed.
SURE_HALO = 8

#: Share of the image the perturbed crops may cover (their pilot's cost
#: over the pilot's): 8 tiles of a 512^2 image, 2 of a 256^2 one.
SURE_AREA = 0.2

#: Fewest sample tiles (all of them when the image has fewer).
SURE_TILES = 2


@dataclass(frozen=True)
class SureSample:
    """Where and how the guided method's SURE perturbs the image.

    ``tiles``: indices of the sample tiles in the tile plan; ``crops``: the
    region around each whose pilot is perturbed (the tile plus ``SURE_HALO``,
    within the image); ``probes``: the standard normal direction ``b`` on each
    crop, ``(*crop, C)``; ``eps``: the perturbation size.
    """

    tiles: tuple[int, ...]
    crops: tuple[tuple[slice, ...], ...]
    probes: tuple[np.ndarray, ...]
    eps: float

    def inner(self, k: int, tile: tuple[slice, ...]) -> tuple[slice, ...]:
        """The ``k``-th sample tile's place within its crop."""
        return tuple(
            slice(t.start - c.start, t.stop - c.start)
            for t, c in zip(tile, self.crops[k], strict=True)
        )


def candidates() -> np.ndarray:
    """The ``t`` SURE chooses from: 0 (the pilot) and the twicing grid."""
    return np.concatenate([[0], _twicing.t_grid()])


def stream_seed(seed: int) -> int:
    """Seed of the sample and probe draws, a stream independent of ``seed``'s own."""
    return int(np.random.SeedSequence((int(seed), 1)).generate_state(1, np.uint64)[0] >> 1)


def n_sample(n_tiles: int, pixels: int, tile_pixels: int) -> int:
    """Sample tiles of an image of ``n_tiles`` tiles and ``pixels`` pixels: their
    crops of ``tile_pixels`` cover about :data:`SURE_AREA` of it."""
    k = int(SURE_AREA * pixels / max(tile_pixels, 1))
    return min(n_tiles, max(SURE_TILES, k))


def plan_sample(
    pieces: Sequence[tuple[slice, ...]],
    spatial: Sequence[int],
    channels: int,
    eps: float,
    rng: torch.Generator,
    dtype: np.dtype,
) -> SureSample:
    """Sample tiles spread evenly over the tile order (random offset), their crops and probes."""
    n = len(pieces)
    crop = math.prod(
        min(t.stop - t.start + 2 * SURE_HALO, size)
        for t, size in zip(pieces[0], spatial, strict=True)
    )
    k = n_sample(n, math.prod(spatial), crop)
    offset = float(torch.rand((), generator=rng, dtype=torch.float64))
    tiles = sorted({int((j + offset) * n / k) % n for j in range(k)})
    crops, probes = [], []
    for i in tiles:
        crop = tuple(
            slice(max(0, t.start - SURE_HALO), min(size, t.stop + SURE_HALO))
            for t, size in zip(pieces[i], spatial, strict=True)
        )
        shape = (*(c.stop - c.start for c in crop), channels)
        probe = torch.randn(shape, generator=rng, dtype=torch.float64).numpy().astype(dtype)
        crops.append(crop)
        probes.append(probe)
    return SureSample(tuple(tiles), tuple(crops), tuple(probes), float(eps))


def perturbed_crops(image: np.ndarray, sample: SureSample) -> list[np.ndarray]:
    """``y + eps b`` on each crop of a ``(*spatial, C)`` image."""
    return [
        (image[crop] + sample.eps * probe).astype(image.dtype)
        for crop, probe in zip(sample.crops, sample.probes, strict=True)
    ]


def choose(curves: Sequence[torch.Tensor]) -> np.ndarray:
    """One ``t`` per channel: the argmin of the summed SURE risk curves ``(B, C, T)``."""
    total = sum(c.sum(0) for c in curves)  # (C, T)
    return candidates()[total.argmin(-1).cpu().numpy()]
