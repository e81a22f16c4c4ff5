"""Quality, time and peak memory of denoise_ntd next to classical denoisers.

Run by hand (not a test)::

    python benchmarks/bench_denoise.py                      # 256^2 crops, sigma 15/25/50
    python benchmarks/bench_denoise.py --sizes crop full --sigmas 25
    python benchmarks/bench_denoise.py --set all --methods ntd pilot bm3d --sigmas 15 25 50

Each (method, image, sigma) runs in its own subprocess so that the peak RSS
(``ru_maxrss``) is that method's alone; the wall time excludes imports. The
runs are sequential unless ``--jobs N`` asks for N at once (their times then
share the CPU: use it for PSNR only). Prints markdown tables (PSNR / time /
RSS per run; PSNR per image and sigma with the default's gain over BM3D and
over its pilot, and means per sigma; mean time per method with the default's
time over BM3D's) and writes them to ``--out`` (and the runs to its ``.json``).

Images (skimage's bundled data, no download): the ``default`` set ``camera``
(gray), ``astronaut`` and ``coffee`` (colour); the ``extra`` set of fine
texture and smooth regions ``grass``, ``gravel``, ``text``, ``page``,
``clock`` (gray), ``horse`` (a binary silhouette, as 0/1) and ``rocket``
(colour); ``--set all`` runs both. Each becomes float in [0, 1], gray (H, W)
or RGB (H, W, 3); a crop is the central 256 pixels of each side (all of a
side that is shorter).

Methods: ``ntd`` (``denoise_ntd`` defaults: ``method="guided"``, MC-SURE),
``pilot`` (the guided method's pilot alone, i.e. its
``t = 0``: shows what the NTK twicing adds), ``ntd-nystrom`` (the paper's
method, ``method="nystrom"``), ``ntd-oracle`` (the same Nystrom fit with the
oracle-best t: an upper bound for its stopping rule), skimage
``denoise_nl_means`` (fast mode, h = 0.8 sigma),
``denoise_tv_chambolle`` (weight = sigma), ``denoise_wavelet`` (BayesShrink),
and BM3D when the optional ``bm3d`` package is installed (non-commercial
licence: a baseline only, never a dependency). A new method is one function
``(noisy, clean, sigma, channel_axis, seed) -> (output, extra)`` in ``RUNNERS``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from _common import bm3d_peer, nlm_peer

IMAGE_SETS = {
    "default": ("camera", "astronaut", "coffee"),
    "extra": ("grass", "gravel", "text", "rocket", "horse", "page", "clock"),
}
IMAGE_SETS["all"] = IMAGE_SETS["default"] + IMAGE_SETS["extra"]
IMAGES = IMAGE_SETS["default"]
CROP = 256
DEFAULT = "ntd"  # the method the difference columns and the time ratio refer to


def load(name: str, size: str) -> np.ndarray:
    """A skimage image as float in [0, 1], (H, W) or (H, W, 3); ``crop``: central 256^2."""
    from skimage import data, img_as_float

    img = img_as_float(np.asarray(getattr(data, name)()))  # bool -> 0/1, uint8 -> /255
    if img.ndim == 3:
        if img.shape[-1] == 4:  # drop alpha
            img = img[..., :3]
        elif img.shape[-1] == 2:  # gray + alpha
            img = img[..., 0]
        elif img.shape[-1] == 1:
            img = img[..., 0]
    if size == "crop":
        h, w = img.shape[:2]
        top, left = max(h // 2 - CROP // 2, 0), max(w // 2 - CROP // 2, 0)
        img = img[top : top + CROP, left : left + CROP]
    return np.ascontiguousarray(img, dtype=np.float64)


# -- methods: (noisy, clean, sigma, channel_axis, seed) -> (output, extra fields) --------------


def _ntd(noisy, clean, sigma, ch, seed, method=None):
    from napari_ntd import denoise_ntd

    return denoise_ntd(noisy, sigma=sigma, channel_axis=ch, seed=seed, method=method), {}


def _ntd_nystrom(noisy, clean, sigma, ch, seed):
    return _ntd(noisy, clean, sigma, ch, seed, method="nystrom")


def _ntd_oracle_run(noisy, clean, sigma, ch, seed):
    out, t = _ntd_oracle(noisy, clean, sigma, ch, seed)
    return out, {"t": t}


def _pilot(noisy, clean, sigma, ch, seed):
    from napari_ntd._ntk._pilot import pilot

    img = noisy if ch is not None else noisy[..., None]
    out = pilot(img, sigma)
    return (out if ch is not None else out[..., 0]), {}


def _nlm(noisy, clean, sigma, ch, seed):
    return nlm_peer(noisy, sigma, ch), {}


def _tv(noisy, clean, sigma, ch, seed):
    from skimage.restoration import denoise_tv_chambolle

    return denoise_tv_chambolle(noisy, weight=sigma, channel_axis=ch), {}


def _wavelet(noisy, clean, sigma, ch, seed):
    from skimage.restoration import denoise_wavelet

    return denoise_wavelet(noisy, sigma=sigma, channel_axis=ch, rescale_sigma=True), {}


def _bm3d(noisy, clean, sigma, ch, seed):
    return bm3d_peer(noisy, sigma, ch), {}


RUNNERS = {
    "ntd": _ntd,
    "pilot": _pilot,
    "ntd-nystrom": _ntd_nystrom,
    "ntd-oracle": _ntd_oracle_run,
    "nlm": _nlm,
    "tv": _tv,
    "wavelet": _wavelet,
    "bm3d": _bm3d,
}
METHODS = tuple(RUNNERS)


def run_one(method: str, name: str, size: str, sigma255: float, seed: int) -> dict:
    import torch
    from skimage.metrics import peak_signal_noise_ratio as psnr

    torch.set_num_threads(torch.get_num_threads())
    runner = RUNNERS[method]
    clean = load(name, size)
    sigma = sigma255 / 255
    rng = np.random.default_rng(seed)
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    ch = -1 if clean.ndim == 3 else None
    start = time.perf_counter()
    out, extra = runner(noisy, clean, sigma, ch, seed)
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


# -- the driver -------------------------------------------------------------------------------


def _run_subprocess(task: tuple[str, str, str, float], seed: int) -> dict | None:
    m, name, size, s = task
    cmd = [sys.executable, __file__, "--seed", str(seed), "--one", m, name, size, str(s)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        print(f"{m} {name} {size} {s:g} failed:\n{res.stderr[-2000:]}", file=sys.stderr)
        return None
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return {"method": m, "image": name, "size": size, "sigma": s, **r}


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _f(v: float, fmt: str = ".2f") -> str:
    return "-" if v is None or not np.isfinite(v) else format(v, fmt)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _by_case(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """The runs as {(size, image, sigma): {method: run}}, in run order."""
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        cases.setdefault((r["size"], r["image"], r["sigma"]), {})[r["method"]] = r
    return cases


def per_image_table(rows: list[dict], methods: list[str]) -> list[str]:
    """PSNR per image and sigma; the default's gain over BM3D and pilot; means per sigma."""
    refs = {"bm3d": "BM3D", "pilot": "pilot"}
    refs = {m: label for m, label in refs.items() if m in methods and DEFAULT in methods}
    cases = _by_case(rows)
    header = ["image", "shape", "sigma", "noisy", *methods]
    header += [f"{DEFAULT} - {label}" for label in refs.values()]
    lines = [_row(header), "|" + "---|" * len(header)]

    def cells(runs: list[dict[str, dict]]) -> list[str]:
        noisy = _mean(next(iter(c.values()))["noisy"] for c in runs)
        out = [_f(noisy)]
        out += [_f(_mean(c[m]["psnr"] for c in runs if m in c)) for m in methods]
        for ref in refs:
            pairs = [c for c in runs if DEFAULT in c and ref in c]
            out.append(_f(_mean(c[DEFAULT]["psnr"] - c[ref]["psnr"] for c in pairs), "+.2f"))
        return out

    for (size, name, s), runs in cases.items():
        shape = "x".join(map(str, load(name, size).shape))
        lines.append(_row([name, shape, f"{s:g}", *cells([runs])]))
    sigmas = list(dict.fromkeys(key[2] for key in cases))
    for s in sigmas:
        runs = [c for key, c in cases.items() if key[2] == s]
        lines.append(_row([f"**mean ({len(runs)})**", "", f"{s:g}", *cells(runs)]))
    if len(sigmas) > 1:
        runs = list(cases.values())
        lines.append(_row([f"**mean ({len(runs)})**", "", "all", *cells(runs)]))
    return lines


def time_table(rows: list[dict], methods: list[str]) -> list[str]:
    """Mean wall time, PSNR and max peak RSS per method; the default's time over BM3D's."""
    lines = ["| method | runs | mean PSNR | mean time s | max RSS MB |", "|---|---|---|---|---|"]
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if sel:
            lines.append(
                f"| {m} | {len(sel)} | {_mean(r['psnr'] for r in sel):.2f} | "
                f"{_mean(r['time'] for r in sel):.2f} | {max(r['rss_mb'] for r in sel):.0f} |"
            )
    pairs = [c for c in _by_case(rows).values() if DEFAULT in c and "bm3d" in c]
    if pairs:
        total = sum(c[DEFAULT]["time"] for c in pairs) / sum(c["bm3d"]["time"] for c in pairs)
        ratios = [c[DEFAULT]["time"] / c["bm3d"]["time"] for c in pairs]
        lines += [
            "",
            f"Time {DEFAULT} / bm3d: {total:.2f} (total over {len(pairs)} paired runs;"
            f" per run {min(ratios):.2f} to {max(ratios):.2f})",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["crop"], choices=["crop", "full"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[15, 25, 50])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--images", nargs="+", choices=IMAGE_SETS["all"], help="default: --set")
    which.add_argument(
        "--set", dest="image_set", default="default", choices=list(IMAGE_SETS), help="image set"
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--jobs", type=int, default=1, help="runs at once (default 1: clean timing)"
    )
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

    images = args.images or list(IMAGE_SETS[args.image_set])
    try:
        import bm3d  # noqa: F401
    except ImportError:
        args.methods = [m for m in args.methods if m != "bm3d"]
    if args.jobs > 1:
        print(f"note: {args.jobs} runs at once; their times share the CPU", file=sys.stderr)
    methods = args.methods
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}; seed {args.seed}; jobs {args.jobs}",
        "",
        "PSNR dB / wall s / peak RSS MB",
        "",
        "| image | size | sigma | noisy | " + " | ".join(methods) + " |",
        "|" + "---|" * (4 + len(methods)),
    ]
    print("\n".join(lines), flush=True)
    cases = [(size, name, s) for size in args.sizes for name in images for s in args.sigmas]
    tasks = [(m, name, size, s) for size, name, s in cases for m in methods]
    rows, cells, noisy = [], [], None
    with ThreadPoolExecutor(max(args.jobs, 1)) as pool:
        results = pool.map(lambda t: _run_subprocess(t, args.seed), tasks)
        for (_, name, size, s), r in zip(tasks, results, strict=True):
            if r is None:
                cells.append("error")
            else:
                rows.append(r)
                noisy = r["noisy"]
                cells.append(f"{r['psnr']:.2f} / {r['time']:.1f} / {r['rss_mb']:.0f}")
            if len(cells) == len(methods):  # the row (size, name, s) is complete
                shape = "x".join(map(str, load(name, size).shape))
                line = f"| {name} | {shape} | {s:g} | {_f(noisy)} | " + " | ".join(cells) + " |"
                lines.append(line)
                print(line, flush=True)
                cells, noisy = [], None
    # means per method
    means = []
    for m in methods:
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
    extra = ["", f"PSNR dB per image (default = {DEFAULT})", ""]
    extra += per_image_table(rows, methods)
    extra += ["", "Per method", ""]
    extra += time_table(rows, methods)
    print("\n".join(extra), flush=True)
    lines += extra
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
