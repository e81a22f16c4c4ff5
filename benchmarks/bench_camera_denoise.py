"""Denoising raw camera frames of real fluorescence images (issue 14).

StarDist's nuclei images (``img2d.tif``, 512 x 512, and ``img3d.tif``, a
volume; fetched from the stardist wheel, never a dependency) become uint16
raw frames at 5, 20 and 100 photons (gain 2 ADU/e-, offset 100 ADU, read
noise 3 e-, rounding and clipping: :func:`bench_camera.make_raw_frames`).
Compared, all in ADU (``preserve_range=True``), PSNR against the noise-free
frame with its own range:

* ``default``: ``denoise_ntd(raw, preserve_range=True)`` (no other option:
  ``noise_model='auto'`` fits the model);
* ``true model``: the same with the true Poisson-Gaussian parameters;
* ``gaussian``: ``noise_model='gaussian'`` (sigma estimated; the old default);
* ``GAT + BM3D``: the same transform with the true parameters, BM3D at
  sigma = 1, the exact unbiased inverse (optional ``bm3d``);
* ``GAT + NLM``: the same with skimage's fast NLM (h = 0.8).

Volumes: the 3D default (``spatial_dims=3``) and the true model; the peers
slice by slice. Also writes ``docs/before_after.png`` (a crop at 20 photons).

Run: ``python benchmarks/bench_camera_denoise.py`` (~3 min on 2 cores).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio as psnr

from _common import save, table
from bench_camera import GAIN, OFFSET, READ_NOISE, fetch_stardist_image, make_raw_frames
from napari_ntd import NoiseModel, denoise_ntd, estimate_noise
from napari_ntd._engine._vst import gat_forward, gat_inverse

TRUE = NoiseModel("poisson-gaussian", gain=GAIN, offset=OFFSET, read_noise=READ_NOISE)


def _gat_peer(raw: np.ndarray, peer: str) -> np.ndarray:
    from skimage.restoration import denoise_nl_means

    z = gat_forward(raw.astype(np.float64), TRUE)
    if peer == "bm3d":
        import bm3d

        d = np.stack([bm3d.bm3d(s, 1.0) for s in z]) if z.ndim == 3 else bm3d.bm3d(z, 1.0)
    else:

        def nlm(s):
            return denoise_nl_means(s, h=0.8, sigma=1.0, fast_mode=True, patch_size=5,
                                    patch_distance=6)  # fmt: skip

        d = np.stack([nlm(s) for s in z]) if z.ndim == 3 else nlm(z)
    return gat_inverse(d, TRUE)


def _methods(spatial_dims: int) -> dict:
    kw = {"preserve_range": True, "seed": 0, "spatial_dims": spatial_dims}
    runs = {
        "default": lambda raw: denoise_ntd(raw, **kw),
        "true model": lambda raw: denoise_ntd(raw, noise_model=TRUE, **kw),
        "gaussian": lambda raw: denoise_ntd(raw, noise_model="gaussian", **kw),
        "GAT + NLM": lambda raw: _gat_peer(raw, "nlm"),
    }
    try:
        import bm3d  # noqa: F401

        runs["GAT + BM3D"] = lambda raw: _gat_peer(raw, "bm3d")
    except ImportError:
        print("bm3d not installed: no BM3D row")
    return runs


def _figure(frame, outputs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crop = (slice(150, 406), slice(150, 406))
    panels = [
        ("raw frame, 20 photons (uint16 ADU)", frame.frame),
        ("napari-ntd default", outputs["default"]),
        ("noise-free", frame.clean),
    ]
    lo, hi = np.percentile(frame.clean[crop], [0.5, 99.8])
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(img[crop], cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    rows = []
    images = {"nuclei 2D 512^2": (fetch_stardist_image("img2d.tif"), 2)}
    try:
        images["nuclei 3D"] = (fetch_stardist_image("img3d.tif"), 3)
    except Exception as err:
        print(f"no 3D image: {err}")
    for name, (image, nd) in images.items():
        frames = make_raw_frames(image)
        for frame in frames:
            est = estimate_noise(frame.frame)
            span = float(frame.clean.max() - frame.clean.min())
            outputs = {}
            for label, run in _methods(nd).items():
                t0 = time.perf_counter()
                out = run(frame.frame)
                dt = time.perf_counter() - t0
                outputs[label] = out
                rows.append(
                    [name, frame.photons, label, psnr(frame.clean, out, data_range=span), dt]
                )
                print(rows[-1], flush=True)
            rows.append(
                [name, frame.photons, "noisy", psnr(frame.clean, frame.frame, data_range=span), 0.0]
            )
            rows.append([name, frame.photons, f"fit: {est}", float("nan"), 0.0])
            if nd == 2 and frame.photons == 20:
                _figure(frame, outputs, Path(__file__).parents[1] / "docs" / "before_after.png")
    body = table(["image", "photons", "method", "PSNR (dB)", "time (s)"], rows)
    body += (
        f"\n\nRaw frames: gain {GAIN} ADU/e-, offset {OFFSET} ADU, read noise {READ_NOISE} ADU "
        "(3 e-), uint16; PSNR against the noise-free frame (ADU) with its own range. "
        "3D: NTD as a volume (spatial_dims=3), the GAT peers slice by slice."
    )
    save(
        "camera_denoise",
        "Raw camera frames of real nuclei images: default vs true model vs peers",
        body,
    )


if __name__ == "__main__":
    main()
