"""What could the NTK stage add on top of the time-lapse pilot? Oracle bounds (issue 16).

The time-lapse default is the pilot alone (``TIMELAPSE_T = 0``). This
benchmark asks whether an NTK twicing stage on top of it could pay: on the
benchmark time-lapse (:func:`bench_timelapse.simulate_timelapse`), it
takes the default's output ``p`` of every inner frame, builds the guided
method's 64^2 tiles, columns and Nystrom bases (the library's functions,
default 2 % columns, 11 x 11 patches) from three kernels:

* ``2d``: the frame's own pilot (what ``n_iter > 0`` runs today);
* ``space-time``: the pilots of frames ``t - 1, t, t + 1`` as the network's
  three input channels (space-time patches ``3 x 11 x 11``);
* ``space-time, warped``: the same with the neighbours warped onto frame
  ``t`` by the pilot's block motion (:mod:`napari_ntd._engine._motion`);

and reports the PSNR gain over ``p`` (dB, mean over the frames) of
``z = p + V g_t V^T (y - p)`` with the clean-image oracle ``t`` per tile (the
bound of any stopping rule, SURE included, of this filter family) and with
the best single ``t`` for the whole movie (the bound of a fixed ``t``).

Run by hand: ``python benchmarks/bench_timelapse_ntk.py`` (~2 min on 2 cores;
``--seeds 0 1 --noise 15 25 50``).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from _common import save, table
from bench_timelapse import add_noise, simulate_timelapse

KERNELS = ("2d", "space-time", "space-time, warped")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def bounds(clean: np.ndarray, noisy: np.ndarray, sigma: float) -> dict[str, tuple[float, float]]:
    """``kernel -> (oracle t per tile gain, oracle single t gain)`` in dB."""
    from napari_ntd import denoise_ntd
    from napari_ntd._engine import _motion
    from napari_ntd._ntk import _guided, _twicing
    from napari_ntd._util._config import NTDConfig
    from napari_ntd._util._tiles import tile_weights

    pilot = denoise_ntd(noisy, sigma=sigma, time_axis=0, seed=0).astype(np.float32)
    cfg = NTDConfig()
    ts = np.concatenate([[0], _twicing.t_grid()])
    margin = _guided.guided_margin(cfg.patch_size)
    out = {}
    for kernel in KERNELS:
        frames = []  # per frame: (weights sum, clean, [(tile, w, p, V, g, c, err)])
        for t in range(1, len(noisy) - 1):
            y, p, x = noisy[t] - 0.5, pilot[t] - 0.5, clean[t] - 0.5
            chans = [p]
            if kernel != "2d":
                for j in (t - 1, t + 1):
                    pj = pilot[j] - 0.5
                    if kernel.endswith("warped"):
                        field = _motion.block_motion(
                            pilot[t][..., None], pilot[j][..., None], sigma
                        )
                        pj = _motion.warp(pj, field)
                    chans.append(pj)
            guide = torch.from_numpy(np.stack(chans)).float()
            pieces = _guided.plan(y.shape, (_guided.GUIDED_TILE,) * 2, margin)
            columns = _guided._draw_all(guide[:1], pieces, cfg, torch.Generator().manual_seed(0))
            wsum, tiles = np.zeros(y.shape), []
            with torch.no_grad():
                for tile, cols in zip(pieces, columns, strict=True):
                    w = tile_weights(tile, y.shape, margin, cfg.patch_size)
                    wsum[tile] += w
                    p_t = torch.from_numpy(p[tile]).double().reshape(-1)
                    if cols is None:
                        tiles.append((tile, w, p_t, None, None, None, None))
                        continue
                    basis = _guided.nystrom_bases(
                        guide[(slice(None), *tile)][None], cols[None], cfg
                    )
                    v = basis.vectors()[0]
                    c = (torch.from_numpy(y[tile]).double().reshape(-1) - p_t) @ v
                    a = (torch.from_numpy(x[tile]).double().reshape(-1) - p_t) @ v
                    g = _twicing.gains(basis.values[0], ts)
                    err = ((g * g * c * c).sum(1) - 2 * (g * c * a).sum(1)).numpy()
                    tiles.append((tile, w, p_t, v, g, c, err))
            frames.append((wsum, x, tiles))
        total = sum(e[-1] for _, _, tiles in frames for e in tiles if e[3] is not None)
        single = int(np.argmin(total))

        def gain(choose, frames=frames) -> float:
            gains = []
            for wsum, x, tiles in frames:
                acc, base = np.zeros(x.shape), np.zeros(x.shape)
                for tile, w, p_t, v, g, c, err in tiles:
                    shape = w.shape
                    base[tile] += w * p_t.reshape(shape).numpy()
                    z = p_t if v is None else p_t + v @ (g[choose(err)] * c)
                    acc[tile] += w * z.reshape(shape).numpy()
                gains.append(_psnr(acc / wsum, x) - _psnr(base / wsum, x))
            return float(np.mean(gains))

        out[kernel] = (
            gain(lambda err: int(np.argmin(err))),
            gain(lambda err, single=single: single),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--noise", nargs="+", default=["15", "25", "50"])
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        tl = simulate_timelapse(8, 256, seed)
        for noise in args.noise:
            noisy, sigma, _, label = add_noise(tl.clean, noise, seed)
            for kernel, (tile, single) in bounds(tl.clean, noisy, sigma).items():
                rows.append([seed, label, kernel, round(tile, 3), round(single, 3)])
                print(rows[-1], flush=True)
    header = ["seed", "noise", "kernel", "oracle t per tile (dB)", "oracle single t (dB)"]
    body = table(header, rows) + (
        "\n\nGain of `p + V g_t V^T (y - p)` over the time-lapse default `p` (inner frames "
        "1-6 of 8 x 256^2, mean over frames); 64^2 tiles, 2 % columns, 11 x 11 patches."
    )
    save("timelapse_ntk", "NTK stage on top of the time-lapse pilot: oracle bounds", body)


if __name__ == "__main__":
    main()
