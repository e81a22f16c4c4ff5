"""The napari widget's time against the library call on the same image (issue 13).

Opens a real viewer (needs a display: run under ``xvfb-run``), adds a noisy
512^2 camera layer, presses Run in the widget and waits for the result layer
(the viewer's event loop keeps running, as for a user); then times
``denoise_ntd`` on the same array in the same process. Three rounds each,
alternating; prints the medians and their ratio, writes
``results/bench_widget.md``.

``--load``: the same next to another multi-threaded torch job (as in
``bench_speed.py``), both results in the table.

Run: ``xvfb-run -a python benchmarks/bench_widget.py [--load]``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from _common import save, table

SIGMA = 25 / 255
ROUNDS = 3


def rounds(viewer, widget, layer, noisy, denoise_ntd, app) -> tuple[float, float]:
    """Median times of the widget run and of the library call (alternating)."""
    widget_times, library_times = [], []
    for _ in range(ROUNDS):
        widget.reset_choices()
        widget.image.value = layer
        t0 = time.perf_counter()
        widget.run_button.clicked.emit()
        while widget.running:
            app.processEvents()
            time.sleep(0.005)
        widget_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        denoise_ntd(noisy, seed=0, sigma=widget.noise_estimate.sigma)
        library_times.append(time.perf_counter() - t0)
        print(f"widget {widget_times[-1]:.2f} s, library {library_times[-1]:.2f} s", flush=True)
    return float(np.median(widget_times)), float(np.median(library_times))


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication
    from skimage import data, img_as_float

    from napari_ntd import denoise_ntd

    clean = img_as_float(data.camera())
    noisy = (clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)).astype(
        np.float32
    )
    denoise_ntd(noisy[:64, :64], sigma=SIGMA, seed=0)  # kernel load, pool start
    viewer = napari.Viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-ntd", "Neural tangent denoiser")
    layer = viewer.add_image(noisy, name="camera")
    app = QApplication.instance()
    rows = []
    loads = ["quiet", "torch"] if "--load" in sys.argv else ["quiet"]
    for load in loads:
        neighbour = None
        if load == "torch":
            from bench_speed import _TORCH_JOB

            neighbour = subprocess.Popen([sys.executable, "-c", _TORCH_JOB])
            time.sleep(1.0)
        try:
            w, lib = rounds(viewer, widget, layer, noisy, denoise_ntd, app)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
        rows.append([load, w, lib, w / lib])
    viewer.close()
    save(
        "bench_widget",
        "Widget vs library call, camera 512^2 float32, defaults",
        table(["load", "widget: Run to result (s)", "denoise_ntd (s)", "ratio"], rows)
        + f"\n\nMedians of {ROUNDS} rounds, alternating; the library call gets the sigma the "
        "widget shows (its fit).",
    )


if __name__ == "__main__":
    main()
