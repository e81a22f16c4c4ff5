"""Quality, time and peak memory of denoise_ntd next to classical denoisers.

Run by hand (not a test)::

    python benchmarks/bench_denoise.py                      # 256^2 crops, sigma 15/25/50
    python benchmarks/bench_denoise.py --sizes crop full --sigmas 25

Each (method, image, sigma) runs in its own subprocess so that the peak RSS
(``ru_maxrss``) is that method's alone; the wall time excludes imports.
Prints a markdown table and writes it to ``benchmarks/results/``.

Methods: ``ntd`` (``denoise_ntd`` defaults: ``method="guided"``, MC-SURE),
``pilot`` (the guided method's pilot alone, i.e. its
``t = 0``: shows what the NTK twicing adds), ``ntd-nystrom`` (the paper's
method, ``method="nystrom"``), ``ntd-oracle`` (the same Nystrom fit with the
oracle-best t: an upper bound for its stopping rule), skimage
``denoise_nl_means`` (fast mode, h = 0.8 sigma),
``denoise_tv_chambolle`` (weight = sigma), ``denoise_wavelet`` (BayesShrink),
and BM3D when the optional ``bm3d`` package is installed (non-commercial
licence: a baseline only, never a dependency).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import bm3d_peer, nlm_peer

IMAGES = ("camera", "astronaut", "coffee")
METHODS = ("ntd", "pilot", "ntd-nystrom", "ntd-oracle", "nlm", "tv", "wavelet", "bm3d")


def load(name: str, size: str) -> np.ndarray:
    from skimage import data, img_as_float

    img = img_as_float(getattr(data, name)())
    if size == "crop":
        h, w = img.shape[:2]
        img = img[h // 2 - 128 : h // 2 + 128, w // 2 - 128 : w // 2 + 128]
    return img


def run_one(method: str, name: str, size: str, sigma255: float, seed: int) -> dict:
    import torch
    from skimage.metrics import peak_signal_noise_ratio as psnr

    torch.set_num_threads(torch.get_num_threads())
    clean = load(name, size)
    sigma = sigma255 / 255
    rng = np.random.default_rng(seed)
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    ch = -1 if clean.ndim == 3 else None
    start = time.perf_counter()
    if method in ("ntd", "ntd-nystrom", "ntd-oracle"):
        from napari_ntd import denoise_ntd

        if method != "ntd-oracle":
            kind = "nystrom" if method == "ntd-nystrom" else None  # None: the default
            out = denoise_ntd(noisy, sigma=sigma, channel_axis=ch, seed=seed, method=kind)
            extra = {}
        else:
            out, t = _ntd_oracle(noisy, clean, sigma, ch, seed)
            extra = {"t": t}
    elif method == "pilot":
        from napari_ntd._ntk._pilot import pilot

        img = noisy if ch is not None else noisy[..., None]
        out = pilot(img, sigma)
        out = out if ch is not None else out[..., 0]
        extra = {}
    elif method == "nlm":
        out = nlm_peer(noisy, sigma, ch)
        extra = {}
    elif method == "tv":
        from skimage.restoration import denoise_tv_chambolle

        out = denoise_tv_chambolle(noisy, weight=sigma, channel_axis=ch)
        extra = {}
    elif method == "wavelet":
        from skimage.restoration import denoise_wavelet

        out = denoise_wavelet(noisy, sigma=sigma, channel_axis=ch, rescale_sigma=True)
        extra = {}
    elif method == "bm3d":
        out = bm3d_peer(noisy, sigma, ch)
        extra = {}
    else:
        raise ValueError(method)
    elapsed = time.perf_counter() - start
    return {
        "psnr": float(psnr(clean, np.clip(out, 0, 1), data_range=1)),
        "noisy": float(psnr(clean, noisy, data_range=1)),
        "time": elapsed,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **extra,
    }


def _ntd_oracle(noisy, clean, sigma, ch, seed):
    """The default NTD fit, with t chosen on the clean image (per channel)."""
    import torch

    from napari_ntd._engine._image import robust_center
    from napari_ntd._ntk._plane import iter_fit_plane
    from napari_ntd._ntk._twicing import error_curve, project, t_grid
    from napari_ntd._util._config import NTDConfig
    from napari_ntd._util._progress import run_to_end

    img = noisy if ch is not None else noisy[..., None]
    ref = clean if ch is not None else clean[..., None]
    center = robust_center(img)
    y = torch.from_numpy(img - center).permute(2, 0, 1).contiguous()
    x = torch.from_numpy(ref - center).float().permute(2, 0, 1).reshape(img.shape[-1], -1)
    cfg = NTDConfig(method="nystrom", n_iter=1, seed=seed)
    fit = run_to_end(iter_fit_plane(y, sigma, cfg, torch.Generator().manual_seed(seed)))
    ts = t_grid()
    err = error_curve(fit.basis, fit.proj, project(fit.basis, x).coef, (x.double() ** 2).sum(1), ts)
    t_best = ts[err.argmin(1).numpy()]
    out = fit.output(t_best).permute(1, 2, 0).numpy() + center
    return (out if ch is not None else out[..., 0]), [int(t) for t in t_best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["crop"], choices=["crop", "full"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50])
    parser.add_argument("--images", nargs="+", default=list(IMAGES), choices=IMAGES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/bench_denoise.md")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "IMAGE", "SIZE", "SIGMA"))
    parser.add_argument(
        "--figure", action="store_true", help="also draw PSNR vs sigma and a crop comparison"
    )
    args = parser.parse_args()
    if args.one:
        m, name, size, s = args.one
        print(json.dumps(run_one(m, name, size, float(s), args.seed)))
        return

    try:
        import bm3d  # noqa: F401
    except ImportError:
        args.methods = [m for m in args.methods if m != "bm3d"]
    rows = []
    header = "| image | size | sigma | noisy | " + " | ".join(args.methods) + " |"
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}; PSNR dB / wall s / peak RSS MB",
        "",
        header,
        "|" + "---|" * (4 + len(args.methods)),
    ]
    print("\n".join(lines), flush=True)
    for size in args.sizes:
        for name in args.images:
            for s in args.sigmas:
                cells, noisy = [], None
                for m in args.methods:
                    cmd = [
                        sys.executable,
                        __file__,
                        "--seed",
                        str(args.seed),
                        "--one",
                        m,
                        name,
                        size,
                        str(s),
                    ]
                    res = subprocess.run(cmd, capture_output=True, text=True)
                    if res.returncode:
                        cells.append("error")
                        print(res.stderr[-2000:], file=sys.stderr)
                        continue
                    r = json.loads(res.stdout.strip().splitlines()[-1])
                    noisy = r["noisy"]
                    rows.append({"method": m, "image": name, "size": size, "sigma": s, **r})
                    cells.append(f"{r['psnr']:.2f} / {r['time']:.1f} / {r['rss_mb']:.0f}")
                shape = "x".join(map(str, load(name, size).shape))
                line = f"| {name} | {shape} | {s:g} | {noisy:.2f} | " + " | ".join(cells) + " |"
                lines.append(line)
                print(line, flush=True)
    # means per method
    means = []
    for m in args.methods:
        sel = [r for r in rows if r["method"] == m]
        if sel:
            means.append(
                f"{np.mean([r['psnr'] for r in sel]):.2f} / {np.mean([r['time'] for r in sel]):.1f}"
                f" / {max(r['rss_mb'] for r in sel):.0f}"
            )
        else:
            means.append("-")
    lines.append("| **mean** | | | | " + " | ".join(means) + " |")
    print(lines[-1])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps(rows, indent=1))
    if args.figure:
        plot_psnr(rows, out.with_name(out.stem + "_psnr.png"))
        plot_crops(out.with_name(out.stem + "_crops.png"), args.seed)


def plot_psnr(rows: list[dict], path: Path) -> None:
    """PSNR vs sigma per method (mean over images), one panel per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        for m in METHODS:
            sel = [r for r in rows if r["method"] == m and r["size"] == size]
            if not sel:
                continue
            sig = sorted({r["sigma"] for r in sel})
            mean = [np.mean([r["psnr"] for r in sel if r["sigma"] == s]) for s in sig]
            ax.plot(sig, mean, "o-", label=m, lw=2.5 if m == "ntd" else 1.2)
        ax.set(xlabel="sigma (of 255)", ylabel="mean PSNR (dB)", title=f"{size} images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def plot_crops(path: Path, seed: int, name: str = "camera", sigma255: float = 25) -> None:
    """Visual comparison on one 96 x 96 detail of a 256 x 256 crop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.metrics import peak_signal_noise_ratio as psnr

    from napari_ntd import denoise_ntd

    clean = load(name, "crop")
    sigma = sigma255 / 255
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    panels = {
        "clean": clean,
        "noisy": noisy,
        "NLM (h=0.8 sigma)": nlm_peer(noisy, sigma, None),
        "NTD nystrom (paper)": denoise_ntd(noisy, sigma=sigma, seed=seed, method="nystrom"),
        "NTD guided (default)": denoise_ntd(noisy, sigma=sigma, seed=seed),
    }
    try:
        panels["BM3D"] = bm3d_peer(noisy, sigma, None)
    except ImportError:
        pass
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3))
    for ax, (title, img) in zip(axes, panels.items(), strict=True):
        ax.imshow(np.clip(img[80:176, 80:176], 0, 1), cmap="gray", vmin=0, vmax=1)
        label = title if title == "clean" else f"{title}\n{psnr(clean, img, data_range=1):.2f} dB"
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
