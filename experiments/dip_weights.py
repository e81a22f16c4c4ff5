"""Figure 3 (small CPU version): change of the hidden-layer weights vs width.

U-Net with noise input on a 32 x 32 camera crop (sigma = 25/255), trained for
N_ITER iterations with Adam (lr = 0.16 / c) or gradient descent
(lr = 1 / lambda_max of the tangent kernel, O(1/c)), 3 seeds per width.
Hidden layers are the 7 c x c convolutions (convd2..convu3). Reports the best
PSNR along the run, ||w - w0||_2 over hidden layers and the mean over hidden
layers of max |w - w0|. Writes ``dip_weights.png`` and ``dip_weights.md``.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from skimage import data, img_as_float

from napari_ntd._dip._trainers import DIPConfig, _gd_lr, _make_runs, _set_optimizer

OUT = Path(__file__).parent
SIGMA, N_ITER = 25 / 255, 150
WIDTHS = [8, 16, 32, 64, 128]
HIDDEN = slice(1, 8)


def run(y, clean, kind, width, seed):
    cfg = DIPConfig(input="noise", optimizer=kind, width=width)
    gen = torch.Generator().manual_seed(seed)
    (r,) = _make_runs(y, cfg, gen, None)
    w0 = r.snapshot()
    lr = 0.16 / width if kind == "adam" else _gd_lr(cfg, r, gen)
    _set_optimizer([r], kind, lr)
    best = -np.inf
    for _ in range(N_ITER):
        z = r.output(True)
        best = max(best, 10 * np.log10(1 / float(((z.detach() - clean) ** 2).mean())))
        r.update(z)
    dw = [(w - w_0) for w, w_0 in zip(r.snapshot()[HIDDEN], w0[HIDDEN], strict=True)]
    l2 = float(torch.sqrt(sum((d**2).sum() for d in dw)))
    linf = float(np.mean([float(d.abs().max()) for d in dw]))
    return best, l2, linf


def main() -> None:
    torch.set_num_threads(1)
    clean = img_as_float(data.camera())[100:132, 200:232]
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    y = torch.tensor(noisy - 0.5, dtype=torch.float32)[None]
    c = torch.tensor(clean - 0.5, dtype=torch.float32)[None]
    stats = {}
    for kind in ("adam", "gd"):
        for width in WIDTHS:
            t0 = time.time()
            vals = np.array([run(y, c, kind, width, s) for s in range(3)])
            stats[(kind, width)] = vals
            print(kind, width, vals.mean(0).round(4), round(time.time() - t0, 1), flush=True)
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.5))
    titles = ["best PSNR [dB]", "||w - w0||_2 (hidden)", "mean max |w - w0| (hidden)"]
    for kind, label in (("adam", "Adam"), ("gd", "GD")):
        v = np.stack([stats[(kind, w)] for w in WIDTHS])  # (W, seeds, 3)
        for j in range(3):
            ax[j].errorbar(
                WIDTHS,
                v[:, :, j].mean(1),
                yerr=[
                    v[:, :, j].mean(1) - v[:, :, j].min(1),
                    v[:, :, j].max(1) - v[:, :, j].mean(1),
                ],
                marker="o",
                capsize=3,
                label=label,
            )
    for j in range(3):
        ax[j].set(xscale="log", xlabel="channels c", title=titles[j])
        if j:
            ax[j].set_yscale("log")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(OUT / "dip_weights.png", dpi=120)
    lines = [
        f"# Weight change vs width (U-Net, noise input, {N_ITER} iterations, 32x32 camera)",
        "",
        "| optimizer | c | best PSNR | ||w-w0|| hidden | mean max |dw| hidden |",
        "|---|---|---|---|---|",
    ]
    for (kind, width), v in stats.items():
        m = v.mean(0)
        lines.append(f"| {kind} | {width} | {m[0]:.2f} | {m[1]:.4g} | {m[2]:.4g} |")
    for kind in ("adam", "gd"):
        v = np.array([stats[(kind, w)].mean(0) for w in WIDTHS])
        s2 = np.polyfit(np.log(WIDTHS), np.log(v[:, 1]), 1)[0]
        si = np.polyfit(np.log(WIDTHS), np.log(v[:, 2]), 1)[0]
        lines.append(
            f"\n{kind}: slope of log ||dw|| vs log c = {s2:.2f}, of log max|dw| = {si:.2f}"
        )
    (OUT / "dip_weights.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
