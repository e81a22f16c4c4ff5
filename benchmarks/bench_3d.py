"""A synthetic 3D volume: slice-wise 2D patches vs true r x r x r patches.

Run: ``python benchmarks/bench_3d.py`` (~2 min on 2 CPU cores).
"""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage
from skimage.data import binary_blobs
from skimage.metrics import peak_signal_noise_ratio as psnr

from _common import save, table
from napari_ntd import denoise_ntd
from napari_ntd._ntk._pilot import pilot


def main() -> None:
    clean = binary_blobs(length=48, n_dim=3, volume_fraction=0.3, blob_size_fraction=0.15, rng=1)
    clean = ndimage.gaussian_filter(clean.astype(np.float64), 1.5)[:32]
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    sigma = 0.15
    noisy = clean + sigma * np.random.default_rng(0).standard_normal(clean.shape)
    runs = [
        ("guided 3D, 5x5x5 (default for volumes)", {"spatial_dims": 3}),
        ("guided 3D, 7x7x7", {"spatial_dims": 3, "patch_size": 7}),
        ("guided 2D slice-wise, 11x11 (default for stacks)", {}),
        ("nystrom 2D slice-wise, 11x11", {"method": "nystrom"}),
        ("nystrom 3D, 5x5x5", {"method": "nystrom", "patch_size": 5, "spatial_dims": 3}),
        ("nystrom 3D, 7x7x7", {"method": "nystrom", "patch_size": 7, "spatial_dims": 3}),
    ]
    rows = [["noisy", psnr(clean, noisy, data_range=1), "-"]]
    t0 = time.perf_counter()
    vol_pilot = pilot(noisy[..., None], sigma)[..., 0]
    rows.append(
        ["its 3D pilot alone", psnr(clean, vol_pilot, data_range=1), time.perf_counter() - t0]
    )
    for name, opts in runs:
        t0 = time.perf_counter()
        out = denoise_ntd(noisy, sigma=sigma, seed=0, **opts)
        dt = time.perf_counter() - t0
        rows.append([name, psnr(clean, out, data_range=1), dt])
        print(rows[-1], flush=True)
    body = table(["method", "PSNR (dB)", "time (s)"], rows)
    body += (
        f"\n\nVolume {clean.shape} (skimage `binary_blobs` 3D, Gaussian-smoothed, sigma 1.5), "
        f"Gaussian noise sigma = {sigma}, seed 0; default columns (guided: 1/64 of a tile, "
        "nystrom: 2 %) and MC-SURE (guided: one t per channel from sample tiles, per slice "
        "for 2D; nystrom: per slice or volume)."
    )
    save("3d", "3D volume: guided and paper's NTD, slice-wise vs r x r x r patches", body)


if __name__ == "__main__":
    main()
