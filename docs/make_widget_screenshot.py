"""Regenerate ``docs/widget.png``: the widget after a run on a raw camera frame.

The frame is StarDist's nuclei image at 20 photons as a uint16 raw frame
(``benchmarks/bench_camera.py``: the stardist wheel is downloaded, not
installed). Run: ``xvfb-run -a python docs/make_widget_screenshot.py``
(needs napari and Qt).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from bench_camera import fetch_stardist_image, make_raw_frames

    (frame,) = make_raw_frames(fetch_stardist_image("img2d.tif"), photons=(20,))
    raw = frame.frame[128:384, 128:384]
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 850)
    _, widget = viewer.window.add_plugin_dock_widget("napari-ntd", "Neural tangent denoiser")
    layer = viewer.add_image(raw, name="raw frame")
    widget.reset_choices()
    widget.image.value = layer
    widget.residual.value = True
    widget.run_button.clicked.emit()
    app = QApplication.instance()
    while widget.running:
        app.processEvents()
        time.sleep(0.01)
    viewer.layers["raw frame noise removed"].visible = False
    viewer.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    out = Path(__file__).with_name("widget.png")
    viewer.window._qt_window.grab().save(str(out))
    viewer.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
