"""Scaling with pixel count, peak memory, and s/megapixel next to skimage NLM / BM3D.

Each size runs in a fresh subprocess so that its peak RSS is its own. The
images are tiled mosaics of skimage's camera with Gaussian noise (float32).
Run: ``python benchmarks/bench_scale.py [sizes...]`` (default 512 1024 2048;
4096 takes ~3 min on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

from _common import bm3d_peer, nlm_peer, save, table


def make(size: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, img_as_float

    cam = img_as_float(data.camera())
    reps = -(-size // 512)
    clean = np.tile(cam, (reps, reps))[:size, :size]
    noisy = clean + (25 / 255) * np.random.default_rng(0).standard_normal(clean.shape)
    return clean.astype(np.float32), noisy.astype(np.float32)


def child(method: str, size: int) -> None:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean, noisy = make(size)
    t0 = time.perf_counter()
    if method == "ntd":
        from napari_ntd import denoise_ntd

        out = denoise_ntd(noisy, sigma=25 / 255, seed=0)  # the default (guided, 64^2 tiles)
    elif method == "nlm":
        out = nlm_peer(noisy, 25 / 255, None)
    else:
        out = bm3d_peer(noisy, 25 / 255, None)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # GiB (ru_maxrss in KiB)
    print(json.dumps({"time": dt, "rss": rss, "psnr": psnr(clean, out, data_range=1)}))


def run(method: str, size: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, str(size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(sizes: list[int]) -> None:
    try:
        import bm3d  # noqa: F401

        methods = ["ntd", "nlm", "bm3d"]
    except ImportError:
        methods = ["ntd", "nlm"]
    rows = []
    ntd = {}
    for size in sizes:
        for method in methods:
            if method != "ntd" and size > 1024:
                continue
            r = run(method, size)
            mp = size * size / 1e6
            rows.append([method, f"{size}^2", r["time"], r["time"] / mp, r["rss"], r["psnr"]])
            if method == "ntd":
                ntd[size] = r
            print(rows[-1], flush=True)
    body = table(["method", "size", "time (s)", "s/MP", "peak RSS (GiB)", "PSNR (dB)"], rows)
    small = min(ntd)
    notes = []
    for size in sorted(ntd):
        if size > small:
            ratio = ntd[size]["time"] / ntd[small]["time"]
            linear = (size / small) ** 2
            notes.append(f"time({size}^2)/time({small}^2) = {ratio:.1f} (linear: {linear:.0f})")
    body += "\n\n" + "; ".join(notes) + "."
    body += (
        "\n\nNTD: `denoise_ntd` defaults (the guided method: pilot, 64^2 tiles, MC-SURE), "
        "float32. NLM (fast, h = 0.8 sigma, 5x5 patches, 13x13 window) and BM3D: sizes "
        "<= 1024^2 only."
    )
    save("scale", "Scaling with image size (camera mosaic, sigma 25/255)", body)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
    else:
        main([int(s) for s in sys.argv[1:]] or [512, 1024, 2048])
