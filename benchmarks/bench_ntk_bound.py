"""How much can the guided method's NTK stage add? Oracle bounds (issues 13 and 17).

The guided default is ``z^t = p + V g_t V^T (y - p)`` per 64^2 tile: the
pilot ``p`` plus twicing gains ``g_t = 1 - (1 - lambda)^t`` on the residual's
coefficients in the tile's Nystrom eigenbasis ``V`` (built from the pilot),
with one ``t`` for the image chosen by Monte-Carlo SURE on sample tiles
(:mod:`napari_ntd._guided_sure`). This benchmark rebuilds the same pilot,
tiles, columns and bases as ``denoise_ntd`` and compares, as PSNR gains over
the pilot alone (dB):

* ``sure``: the default (``denoise_ntd`` itself);
* ``per-tile sure``: each tile's own MC-SURE choice, from the pilot of the
  whole perturbed image (the default until issue 13's sampling);
* ``one sure for all``: one ``t`` minimising the sum of all tiles' SURE
  curves (what the default's sample estimates);
* ``sure, fixed basis and pilot``: the textbook SURE of a linear shrinker,
  ``||(1 - g_t) c||^2 + 2 sigma^2 sum(g_t)``, which needs no second pilot but
  treats the basis and the pilot as independent of ``y``: the pilot has
  already taken the noise out of the directions the correction adds back,
  and this rule does not know it;
* ``oracle t``: the best ``t`` of each tile, chosen with the clean image: the
  upper bound of any stopping rule of this filter family;
* ``oracle t, one for all``: one best ``t`` for the whole image;
* ``oracle gains``: the best gain in [0, 1] of every coefficient of every
  tile (clean image again): the bound of any shrinkage in these bases,
  which no estimator from the noisy coefficients came near (an empirical
  Wiener gain ``1 - k sigma^2 / c^2``, k = 1..3, lost 0.2-2.7 dB at sigma 25);
* ``t = 30``: one fixed ``t`` without SURE (the stopping rule's cost is a
  second pilot, of the perturbed image): safe on some images, not on smooth
  ones.

Run by hand::

    python benchmarks/bench_ntk_bound.py                    # 7 gray crops, sigma 15/25/50
    python benchmarks/bench_ntk_bound.py --images camera clock --sigmas 25 --columns 0.02 0.2

Gray images only (the colour default shares the basis across channels).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import save, table
from bench_denoise import load

IMAGES = ("camera", "grass", "gravel", "text", "horse", "page", "clock")
SIGMAS = (15, 25, 50)
FIXED_T = 30
COLUMNS = [
    "sure",
    "per-tile sure",
    "one sure for all",
    "sure, fixed basis and pilot",
    "oracle t",
    "oracle t, one for all",
    "oracle gains",
    f"t = {FIXED_T}",
]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def bounds(clean: np.ndarray, sigma: float, n_columns: float, seed: int = 0) -> dict[str, float]:
    """PSNR of the pilot and gains (dB) of each variant over it, for one gray image."""
    from napari_ntd import denoise_ntd
    from napari_ntd._engine._image import robust_center
    from napari_ntd._ntk import _guided, _guided_sure, _pilot, _twicing
    from napari_ntd._util._config import NTDConfig
    from napari_ntd._util._tiles import tile_weights

    rng = np.random.default_rng(seed)
    noisy = clean + sigma * rng.standard_normal(clean.shape)
    center = robust_center(noisy)
    y, x = noisy - center, clean - center
    eps = _guided_sure.SURE_EPS * sigma
    probe = np.random.default_rng(seed + 1).standard_normal(y.shape)
    y32, b32 = y[..., None].astype(np.float32), probe[..., None].astype(np.float32)
    pilot, pilot_eps = _pilot.pilots([y32, y32 + np.float32(eps) * b32], sigma)
    groups = [y32, pilot, y32 + np.float32(eps) * b32, pilot_eps, b32]
    stack = torch.from_numpy(np.concatenate(groups, -1)).permute(2, 0, 1).contiguous()
    pilot = pilot[..., 0].astype(np.float64)
    cfg = NTDConfig(n_columns=n_columns)
    margin = _guided.guided_margin(cfg.patch_size)
    pieces = _guided.plan(y.shape, (_guided.GUIDED_TILE,) * 2, margin)
    columns = _guided._draw_all(stack[1:2], pieces, cfg, torch.Generator().manual_seed(seed))
    ts = _guided_sure.candidates()
    fixed = int(np.searchsorted(ts, FIXED_T))
    acc = {k: np.zeros(y.shape) for k in COLUMNS if k != "sure"}
    wsum = np.zeros(y.shape)
    per_tile = []  # (tile, weight, output for gains, gains over t, error over t, SURE over t)
    with torch.no_grad():
        for tile, cols in zip(pieces, columns, strict=True):
            w = tile_weights(tile, y.shape, margin, cfg.patch_size)
            wsum[tile] += w
            part = stack[(slice(None), *tile)]
            shape = part.shape[1:]
            p_t = part[1].double().reshape(-1)
            if cols is None:  # constant pilot: every variant keeps it
                for k in acc:
                    acc[k][tile] += w * p_t.reshape(shape).numpy()
                continue
            sure = _guided.sure_batch(part[None], cols[None], sigma, cfg, eps)[0, 0]
            basis = _guided.nystrom_bases(part[None, 1:2], cols[None], cfg)
            v = basis.vectors()[0]  # (d, m) orthonormal
            c = (part[0].double().reshape(-1) - p_t) @ v  # noisy residual's coefficients
            a = (torch.from_numpy(x[tile]).reshape(-1) - p_t) @ v  # the pilot's error's
            g = _twicing.gains(basis.values[0], ts)  # (T, m)
            err = (g * g * c * c).sum(1) - 2 * (g * c * a).sum(1)  # + ||x - p||^2
            gain_diag = torch.where(c != 0, a / torch.where(c != 0, c, 1.0), 0.0).clamp(0, 1)

            def out(gains, p_t=p_t, v=v, c=c, shape=shape):
                return (p_t + v @ (gains * c)).reshape(shape).numpy()

            acc["per-tile sure"][tile] += w * out(g[int(sure.argmin())])
            acc["oracle t"][tile] += w * out(g[int(err.argmin())])
            acc["oracle gains"][tile] += w * out(gain_diag)
            acc[f"t = {FIXED_T}"][tile] += w * out(g[fixed])
            # SURE of the correction alone, as if basis and pilot did not depend on y
            lin = ((1 - g) ** 2 * c * c).sum(1) + 2 * sigma**2 * g.sum(1)
            acc["sure, fixed basis and pilot"][tile] += w * out(g[int(lin.argmin())])
            per_tile.append((tile, w, out, g, err, sure))
    for key, curve in (("oracle t, one for all", 4), ("one sure for all", 5)):
        best = int(sum(e[curve] for e in per_tile).argmin()) if per_tile else 0
        for tile, w, out, g, *_ in per_tile:
            acc[key][tile] += w * out(g[best])
    base = psnr(pilot, x)
    gains = {k: psnr(v / wsum, x) - base for k, v in acc.items()}
    # the default itself: its own pilot (the same) and sampled SURE
    kw = {"sigma": sigma, "seed": seed, "n_columns": n_columns}
    default = denoise_ntd(noisy, **kw) - center
    return {"pilot": base, "sure": psnr(default, x) - base} | gains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", default=list(IMAGES))
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS))
    parser.add_argument("--columns", nargs="+", type=float, default=[0.02])
    parser.add_argument("--size", choices=("crop", "full"), default="crop")
    args = parser.parse_args()
    rows, means = [], []
    for n_columns in args.columns:
        for s in args.sigmas:
            got = []
            for name in args.images:
                img = load(name, args.size)
                if img.ndim == 3:
                    img = img.mean(-1)
                r = bounds(img, s / 255, n_columns)
                got.append(r)
                rows.append([name, s, n_columns, r["pilot"], *(r[k] for k in COLUMNS)])
                print(" | ".join(str(v) for v in rows[-1]), flush=True)
            means.append(["mean", s, n_columns, *(np.mean([r[k] for r in got]) for k in got[0])])
    header = ["image", "sigma", "columns", "pilot (dB)", *(f"{k} (dB)" for k in COLUMNS)]
    body = table(header, rows + means)
    body += (
        f"\n\nGains over the pilot alone (dB). {args.size} images (gray: colour ones averaged), "
        "Gaussian noise, seed 0. `sure`: the default (one t from MC-SURE on sample tiles); "
        "`per-tile sure`: each tile's MC-SURE t (whole perturbed pilot); `one sure for all`: "
        "one t from all tiles' SURE; `oracle t`: the "
        "best t per tile (clean image), the bound of any stopping rule for this filter; "
        "`sure, fixed basis and pilot`: SURE without the second pilot (the correction's "
        "divergence as if the basis and pilot did not depend on y); "
        "`oracle gains`: the best gain in [0, 1] per coefficient; "
        f"`t = {FIXED_T}`: a fixed t, no SURE."
    )
    save("ntk_bound", "What the NTK twicing stage can add: oracle bounds", body)


if __name__ == "__main__":
    main()
