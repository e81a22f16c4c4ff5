"""Tiled vs untiled PSNR on skimage's 512 x 512 camera (sigma = 25/255).

Run: ``python benchmarks/bench_tiling.py`` (~3 min on 2 CPU cores).
"""

from __future__ import annotations

import time

import numpy as np
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

from _common import save, table
from napari_ntd import denoise_ntd


def main() -> None:
    clean = img_as_float(data.camera())
    sigma = 25 / 255
    noisy = (clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)).astype(
        np.float32
    )
    rows = [["noisy", "-", psnr(clean, noisy, data_range=1), "-"]]
    results = {}
    for label, tile in [("untiled", None), ("tiled 256x256", 256)]:
        t0 = time.perf_counter()
        out = denoise_ntd(noisy, sigma=sigma, seed=0, tile_shape=tile)
        dt = time.perf_counter() - t0
        results[label] = psnr(clean, out, data_range=1)
        rows.append([label, "auto (MC-SURE)", results[label], dt])
    diff = results["tiled 256x256"] - results["untiled"]
    body = table(["run", "t", "PSNR (dB)", "time (s)"], rows)
    body += f"\n\nTiled minus untiled: {diff:+.2f} dB (target: within 0.3 dB)."
    save("tiling", "Tiled vs untiled (camera 512x512, sigma 25/255, seed 0)", body)


if __name__ == "__main__":
    main()
