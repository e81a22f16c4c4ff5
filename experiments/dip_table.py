"""Table-1-shaped benchmark (small CPU version) and the stopping rule vs the oracle.

For each skimage image (64 x 64 crops, sigma = 25/255) and each combination
architecture x optimizer x input, trains with ``n_iter="auto"`` (MC-SURE twin,
capped at MAX_ITER) and records the PSNR of every iterate: the oracle-best
PSNR (the paper's protocol), the PSNR of the SURE-chosen iterate, their gap,
and the wall time. Nystrom NTD (``denoise_ntd``, SURE) is the last row.
Writes ``dip_table.md``.

Usage: python experiments/dip_table.py [size] [max_iter]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage import data, img_as_float

from napari_ntd import denoise_ntd
from napari_ntd._dip._trainers import DIPConfig, iter_dip

OUT = Path(__file__).parent
SIGMA = 25 / 255
SIZE = int(sys.argv[1]) if len(sys.argv) > 1 else 64
MAX_ITER = int(sys.argv[2]) if len(sys.argv) > 2 else 400


def images():
    s = SIZE
    yield "camera", img_as_float(data.camera())[100 : 100 + s, 200 : 200 + s][..., None]
    yield "astronaut", img_as_float(data.astronaut())[20 : 20 + s, 170 : 170 + s]
    yield "coffee", img_as_float(data.coffee())[150 : 150 + s, 200 : 200 + s]


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def run_dip(clean, noisy, **kw):
    center = 0.5
    y = torch.tensor(np.moveaxis(noisy, -1, 0) - center, dtype=torch.float32)
    c = np.moveaxis(clean, -1, 0)
    cfg = DIPConfig(max_iter=MAX_ITER, **kw)
    gen = iter_dip(y, SIGMA, cfg, torch.Generator().manual_seed(0))
    t0 = time.time()
    ps = []
    while True:
        try:
            step = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        ps.append((step.iteration, psnr(np.clip(step.estimate.numpy() + center, 0, 1), c)))
    wall = time.time() - t0
    its, vals = zip(*ps, strict=True)
    k = int(np.argmax(vals))
    chosen = psnr(np.clip(res.estimate.numpy() + center, 0, 1), c)
    return dict(
        oracle=vals[k],
        t_oracle=its[k],
        sure=chosen,
        t_sure=res.iteration,
        n=res.n_updates,
        wall=wall,
    )


def main() -> None:
    torch.set_num_threads(1)
    combos = [
        (a, o, i) for a in ("vanilla", "unet") for o in ("adam", "gd") for i in ("noise", "image")
    ]
    results = {}
    noisy_psnr = []
    for name, clean in images():
        noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
        noisy_psnr.append(psnr(noisy, clean))
        for a, o, i in combos:
            r = run_dip(clean, noisy, architecture=a, optimizer=o, input=i)
            results[(name, a, o, i)] = r
            print(name, a, o, i, {k: round(float(v), 2) for k, v in r.items()}, flush=True)
        t0 = time.time()
        den = denoise_ntd(
            noisy[..., 0] if noisy.shape[-1] == 1 else noisy,
            sigma=SIGMA,
            seed=0,
            channel_axis=None if noisy.shape[-1] == 1 else -1,
        )
        results[(name, "nystrom")] = dict(
            sure=psnr(np.clip(den.reshape(clean.shape), 0, 1), clean), wall=time.time() - t0
        )
        print(name, "nystrom", results[(name, "nystrom")], flush=True)
    names = [n for n, _ in images()]
    mean = lambda key, f: np.mean([results[(n, *key)][f] for n in names])  # noqa: E731
    lines = [
        f"# DIP trainers, {SIZE}x{SIZE} crops of camera/astronaut/coffee, sigma = 25, "
        f"max {MAX_ITER} iterations (CPU)",
        "",
        f"Noisy input: {np.mean(noisy_psnr):.2f} dB. Widths: U-Net 32, vanilla 64 (CPU defaults).",
        "Each cell: PSNR of the MC-SURE-chosen iterate / oracle-best iterate [dB] "
        "(mean of 3 images).",
        "",
        "| | Vanilla noise | Vanilla image | U-Net noise | U-Net image |",
        "|---|---|---|---|---|",
    ]
    for o, label in (("adam", "Adam"), ("gd", "Gradient descent")):
        cells = [
            f"{mean((a, o, i), 'sure'):.2f} / {mean((a, o, i), 'oracle'):.2f}"
            for a in ("vanilla", "unet")
            for i in ("noise", "image")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        "| Nystrom (SURE) | - | "
        f"{np.mean([results[(n, 'nystrom')]['sure'] for n in names]):.2f} | - | - |"
    )
    lines += [
        "",
        "Wall time per image [s] (training + SURE twin):",
        "",
        "| | Vanilla noise | Vanilla image | U-Net noise | U-Net image |",
        "|---|---|---|---|---|",
    ]
    for o, label in (("adam", "Adam"), ("gd", "Gradient descent")):
        cells = [
            f"{mean((a, o, i), 'wall'):.1f}"
            for a in ("vanilla", "unet")
            for i in ("noise", "image")
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append(
        f"| Nystrom | - | {np.mean([results[(n, 'nystrom')]['wall'] for n in names]):.1f} | - | - |"
    )
    lines += [
        "",
        "Stopping rule vs oracle, per run (gap = oracle - SURE choice):",
        "",
        "| image | arch | opt | input | SURE dB | oracle dB | gap dB | t_SURE | t_oracle "
        "| updates |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    gaps = []
    for key, r in results.items():
        if len(key) == 2:
            continue
        gaps.append(r["oracle"] - r["sure"])
        lines.append(
            f"| {' | '.join(key)} | {r['sure']:.2f} | {r['oracle']:.2f} "
            f"| {r['oracle'] - r['sure']:.2f} "
            f"| {r['t_sure']} | {r['t_oracle']} | {r['n']} |"
        )
    lines += [
        "",
        f"Mean gap {np.mean(gaps):.2f} dB, median {np.median(gaps):.2f} dB, "
        f"max {np.max(gaps):.2f} dB.",
    ]
    (OUT / f"dip_table_{SIZE}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
