"""Speed of the default denoiser: s/megapixel, peak RSS, PSNR and kernel throughput.

Issue 8's table. Each (method, image) runs in a fresh subprocess (own peak
RSS; wall time excludes imports and the numba JIT warm-up of the kernel).
Images: camera mosaics of 256^2, 512^2, 1024^2 (gray) and a 256^2 astronaut
crop (RGB), Gaussian noise sigma = 25/255, seed 0. Methods: ``ntd``
(``denoise_ntd`` defaults: the guided NTD), ``ntd-nystrom`` (the paper's
method, default options), skimage NLM (fast, h = 0.8 sigma, 5x5 patches,
13x13 window) and BM3D (``bm3d``/``bm3d_rgb``, optional). Kernel columns:
entries of the NTK evaluated (all ``ntk_block`` calls) and their rate
(entries / time inside ``ntk_block``, matrix product included).

Run: ``python benchmarks/bench_speed.py`` (~10 min on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from _common import bm3d_peer, nlm_peer, save, table

SIGMA = 25 / 255
CASES = [("camera", 256), ("camera", 512), ("camera", 1024), ("astronaut-rgb", 256)]
METHODS = ("ntd", "ntd-nystrom", "nlm", "bm3d")


def make(name: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, img_as_float

    if name == "camera":
        cam = img_as_float(data.camera())
        reps = -(-size // 512)
        clean = np.tile(cam, (reps, reps))[:size, :size]
    else:
        img = img_as_float(data.astronaut())
        clean = img[128 : 128 + size, 128 : 128 + size]
    noisy = clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
    return clean.astype(np.float32), noisy.astype(np.float32)


def child(method: str, name: str, size: int) -> None:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean, noisy = make(name, size)
    ch = -1 if clean.ndim == 3 else None
    stats = {"entries": 0, "kernel_s": 0.0}
    if method.startswith("ntd"):
        import torch

        from napari_ntd import _kernel, _nystrom, denoise_ntd

        real = _kernel.ntk_block

        def counted(rows, cols, *args, **kwargs):
            t = time.perf_counter()
            out = real(rows, cols, *args, **kwargs)
            stats["kernel_s"] += time.perf_counter() - t
            stats["entries"] += rows.shape[0] * cols.shape[0]
            return out

        _nystrom.ntk_block = counted
        p = torch.randn(64, 121)  # JIT warm-up of the fused kernel (not timed)
        _kernel.ntk_block(p, p, (p * p).sum(1), (p * p).sum(1))
    t0 = time.perf_counter()
    if method == "ntd":
        out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=ch)
    elif method == "ntd-nystrom":
        out = denoise_ntd(noisy, sigma=SIGMA, seed=0, channel_axis=ch, method="nystrom")
    elif method == "nlm":
        out = nlm_peer(noisy, SIGMA, ch)
    else:
        out = bm3d_peer(noisy, SIGMA, ch)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB
    res = {"time": dt, "rss": rss, "psnr": psnr(clean, np.clip(out, 0, 1), data_range=1)}
    print(json.dumps({**res, **stats}))


def main() -> None:
    try:
        import bm3d  # noqa: F401

        methods = list(METHODS)
    except ImportError:
        methods = [m for m in METHODS if m != "bm3d"]
    rows, times = [], {}
    for name, size in CASES:
        for method in methods:
            proc = subprocess.run(
                [sys.executable, __file__, "--child", method, name, str(size)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            times[method, name, size] = r["time"]
            mp = size * size / 1e6
            rate = r["entries"] / r["kernel_s"] / 1e6 if r["kernel_s"] else float("nan")
            rows.append(
                [
                    method,
                    f"{name} {size}^2",
                    r["time"],
                    r["time"] / mp,
                    r["rss"],
                    r["psnr"],
                    f"{r['entries'] / 1e6:.0f} M" if r["entries"] else "-",
                    "-" if rate != rate else f"{rate:.0f}",
                ]
            )
            print(rows[-1], flush=True)
    header = [
        "method",
        "image",
        "time (s)",
        "s/MP",
        "peak RSS (GiB)",
        "PSNR (dB)",
        "kernel entries",
        "kernel M entries/s",
    ]
    body = table(header, rows)
    if "bm3d" in methods:
        ratios = [
            f"{name} {size}^2: {times['ntd', name, size] / times['bm3d', name, size]:.2f}"
            for name, size in CASES
        ]
        body += "\n\nDefault NTD time / BM3D time (same run): " + ", ".join(ratios) + "."
    save("bench_speed", "Speed: default NTD vs the paper's NTD, NLM and BM3D", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
