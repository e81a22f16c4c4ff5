"""The napari widget in a real viewer (Qt under Xvfb via pytest-xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio as psnr

pytest.importorskip("napari")
from napari_ntd._ui._widget import ORIGINAL_KEY

pytestmark = pytest.mark.gui

SIGMA = 0.1


@pytest.fixture
def clean():
    return img_as_float(data.camera())[100:148, 200:248]


@pytest.fixture
def noisy(clean):
    return clean + SIGMA * np.random.default_rng(0).standard_normal(clean.shape)


@pytest.fixture
def viewer_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-ntd", "Neural tangent denoiser")
    widget.iter_auto.value = True
    return viewer, widget


def _run(qtbot, widget, layer):
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    assert widget.running and not widget.run_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert widget.run_button.enabled


def test_widget_denoises_into_new_layer(qtbot, viewer_widget, clean, noisy):
    viewer, widget = viewer_widget
    layer = viewer.add_image(noisy, name="cam", scale=(2.0, 3.0), translate=(5.0, 7.0))
    _run(qtbot, widget, layer)
    out = viewer.layers["cam denoised"]
    assert psnr(clean, out.data, data_range=1) > psnr(clean, noisy, data_range=1) + 2
    np.testing.assert_array_equal(out.scale, layer.scale)
    np.testing.assert_array_equal(out.translate, layer.translate)
    np.testing.assert_array_equal(layer.data, noisy)  # source untouched
    assert abs(widget.sigma.value - SIGMA) < 0.02  # the estimate is shown


def test_widget_rgb(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    clean = img_as_float(data.astronaut())[30:70, 180:220]
    noisy = np.clip(clean + SIGMA * np.random.default_rng(1).standard_normal(clean.shape), 0, 1)
    layer = viewer.add_image(noisy, name="rgb", rgb=True)
    _run(qtbot, widget, layer)
    out = viewer.layers["rgb denoised"]
    assert out.rgb and out.data.shape == noisy.shape
    assert psnr(clean, out.data, data_range=1) > psnr(clean, noisy, data_range=1) + 2


def test_widget_stack_slice_by_slice_and_current_slice(qtbot, viewer_widget, clean, noisy):
    viewer, widget = viewer_widget
    stack = np.stack([noisy, noisy[::-1], noisy[:, ::-1]])
    truth = np.stack([clean, clean[::-1], clean[:, ::-1]])
    layer = viewer.add_image(stack, name="stack", scale=(4.0, 1.0, 1.0))
    steps = []
    widget.scope.value = "whole stack"
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    widget._worker.yielded.connect(steps.append)
    bar = []  # the widget's own progress bar (percent)
    widget.progress_bar.changed.connect(bar.append)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    out = viewer.layers["stack denoised"]
    assert out.data.shape == stack.shape
    np.testing.assert_array_equal(out.scale, layer.scale)
    for k in range(3):
        assert (
            psnr(truth[k], out.data[k], data_range=1) > psnr(truth[k], stack[k], data_range=1) + 2
        )
    assert steps and steps[-1][0] == steps[-1][1] and len(steps) >= 3  # per-slice progress
    # the bar moves through several values up to 100 %
    assert len(set(bar)) >= 3 and max(bar) == 100 == widget.progress_bar.value

    viewer.layers.remove(out)
    viewer.dims.set_point(0, 8.0)  # world z = 8 -> slice 2 with scale 4
    widget.scope.value = "current slice"
    _run(qtbot, widget, layer)
    one = viewer.layers["stack denoised"]
    assert one.data.shape == clean.shape
    assert psnr(truth[2], one.data, data_range=1) > psnr(truth[2], stack[2], data_range=1) + 2


def test_widget_3d_volume_scope(qtbot, viewer_widget):
    """Scope "3D volume": the last three axes as one volume (the 3D guided method)."""
    from scipy import ndimage
    from skimage.data import binary_blobs

    from napari_ntd import denoise_ntd

    viewer, widget = viewer_widget
    blobs = binary_blobs(length=32, n_dim=3, volume_fraction=0.3, blob_size_fraction=0.2, rng=1)
    clean = ndimage.gaussian_filter(blobs.astype(np.float64), 1.5)[:12]
    vol = clean + 0.15 * np.random.default_rng(0).standard_normal(clean.shape)
    layer = viewer.add_image(vol, name="vol", scale=(3.0, 1.0, 1.0))
    assert widget.patch_size.value == 11
    widget.scope.value = "3D volume"
    assert widget.patch_size.value == 5  # the volume default follows the scope
    widget.scope.value = "whole stack"
    assert widget.patch_size.value == 11
    widget.scope.value = "3D volume"
    widget.sigma_auto.value = False
    widget.sigma.value = 0.15
    _run(qtbot, widget, layer)
    out = viewer.layers["vol denoised"]
    np.testing.assert_array_equal(out.scale, layer.scale)
    expected = denoise_ntd(vol, sigma=0.15, spatial_dims=3, seed=0)  # the library's default
    np.testing.assert_allclose(out.data, expected)
    slices = denoise_ntd(vol, sigma=0.15, seed=0)
    assert psnr(clean, out.data, data_range=1) > psnr(clean, slices, data_range=1) + 1


def test_widget_3d_volume_needs_three_axes(qtbot, viewer_widget, noisy):
    viewer, widget = viewer_widget
    layer = viewer.add_image(noisy, name="flat")
    widget.scope.value = "3D volume"
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    assert not widget.running
    assert [lay.name for lay in viewer.layers] == ["flat"]


def _movie(n_frames=4, seed=0):
    """A small noisy time-lapse (T, 48, 48): the camera crop drifting by a pixel a frame."""
    clean = img_as_float(data.camera())[100 : 148 + n_frames, 200:248]
    frames = np.stack([clean[t : t + 48] for t in range(n_frames)])
    noisy = frames + SIGMA * np.random.default_rng(seed).standard_normal(frames.shape)
    return frames, noisy.astype(np.float32)


def test_widget_time_lapse_scope(qtbot, viewer_widget, monkeypatch):
    """Scope "time-lapse": the whole stack with time_axis=0 and the library's defaults."""
    from napari_ntd import denoise_ntd
    from napari_ntd._ui import _widget

    calls = []
    real = _widget.iter_denoise_ntd

    def recording(image, **kwargs):
        calls.append((np.shape(image), kwargs))
        return (yield from real(image, **kwargs))

    monkeypatch.setattr(_widget, "iter_denoise_ntd", recording)
    viewer, widget = viewer_widget
    clean, movie = _movie()
    layer = viewer.add_image(movie, name="movie", scale=(5.0, 2.0, 2.0), translate=(1, 2, 3))
    assert not widget.time_window.enabled  # only for the time-lapse scope
    widget.scope.value = "time-lapse (neighbouring frames)"
    assert widget.time_window.enabled and widget.time_window.value == 2  # the library's
    assert widget.patch_size.value == 11 and "pilot alone" in widget.iter_auto.text
    widget.sigma_auto.value = False
    widget.sigma.value = SIGMA
    steps = []
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    assert "time-lapse" in widget.status.value
    widget._worker.yielded.connect(steps.append)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)

    (shape, kwargs), *more = calls
    assert not more and shape == movie.shape  # one call on the whole stack
    assert kwargs["time_axis"] == 0 and kwargs["time_window"] == 2
    assert kwargs["n_iter"] is None and kwargs["spatial_dims"] == 2  # the library's default t
    out = viewer.layers["movie denoised"]
    assert out.data.shape == movie.shape and out.data.dtype == np.float32
    np.testing.assert_array_equal(out.scale, layer.scale)
    np.testing.assert_array_equal(out.translate, layer.translate)
    expected = denoise_ntd(movie, sigma=SIGMA, time_axis=0, seed=0, preserve_range=True)
    np.testing.assert_allclose(out.data, expected, atol=1e-6)
    assert psnr(clean, out.data, data_range=1) > psnr(clean, movie, data_range=1) + 2
    assert steps and steps[-1][0] == steps[-1][1] and widget.progress_bar.value == 100

    # a window and an iteration count of the user's, in place, then Restore
    widget.time_window.value = 1
    widget.iter_auto.value = False
    widget.n_iter.value = 3
    widget.output.value = "in place"
    _run(qtbot, widget, layer)
    assert calls[-1][1]["time_window"] == 1 and calls[-1][1]["n_iter"] == 3
    assert layer.data.shape == movie.shape and ORIGINAL_KEY in layer.metadata
    widget.restore_button.clicked.emit()
    np.testing.assert_array_equal(layer.data, movie)


def test_widget_time_lapse_rgb(qtbot, viewer_widget):
    """An RGB time-lapse (T, H, W, 3): channels as for the other scopes."""
    viewer, widget = viewer_widget
    clean = img_as_float(data.astronaut())[30:70, 180:220]
    frames = np.stack([clean, clean, clean])
    noisy = np.clip(frames + SIGMA * np.random.default_rng(1).standard_normal(frames.shape), 0, 1)
    layer = viewer.add_image(noisy, name="rgb movie", rgb=True)
    widget.scope.value = "time-lapse (neighbouring frames)"
    _run(qtbot, widget, layer)
    out = viewer.layers["rgb movie denoised"]
    assert out.rgb and out.data.shape == noisy.shape
    assert psnr(frames, out.data, data_range=1) > psnr(frames, noisy, data_range=1) + 2


def test_widget_time_lapse_needs_frames_and_the_guided_method(qtbot, viewer_widget, noisy):
    from napari.utils.notifications import notification_manager

    viewer, widget = viewer_widget
    start = len(notification_manager.records)
    flat = viewer.add_image(noisy, name="flat")
    widget.scope.value = "time-lapse (neighbouring frames)"
    widget.reset_choices()
    widget.image.value = flat
    widget.run_button.clicked.emit()
    assert not widget.running
    assert "not a time-lapse" in widget.status.value and "first axis" in widget.status.value
    _, movie = _movie(3)
    layer = viewer.add_image(movie, name="movie")
    widget.method.value = "nystrom"
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    assert not widget.running and "guided" in widget.status.value
    assert len(_errors(start)) == 2
    assert [lay.name for lay in viewer.layers] == ["flat", "movie"]


def test_widget_in_place_and_restore(qtbot, viewer_widget, clean, noisy):
    viewer, widget = viewer_widget
    original = (np.clip(noisy, 0, 1) * 255).astype(np.uint8)
    layer = viewer.add_image(original.copy(), name="u8")
    widget.output.value = "in place"
    _run(qtbot, widget, layer)
    assert len(viewer.layers) == 1
    assert layer.data.dtype == np.float32  # in the layer's units (0-255), not [0, 1]
    assert (
        psnr(clean * 255, layer.data, data_range=255)
        > psnr(clean * 255, original.astype(float), data_range=255) + 2
    )
    assert 100 < layer.contrast_limits[1] <= 300
    assert widget.restore_button.enabled and "in place" in widget.status.value
    widget.restore_button.clicked.emit()
    np.testing.assert_array_equal(layer.data, original)
    assert not widget.restore_button.enabled  # nothing left to restore


def test_widget_cancel_leaves_layer_unchanged(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    stack = np.random.default_rng(2).random((8, 64, 64)).astype(np.float32)
    layer = viewer.add_image(stack.copy(), name="big")
    widget.scope.value = "whole stack"
    widget.output.value = "in place"
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    first = []
    widget._worker.yielded.connect(lambda s: first.append(s) or widget.cancel())
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert first  # it had started
    np.testing.assert_array_equal(layer.data, stack)
    assert [lay.name for lay in viewer.layers] == ["big"]
    assert "cancelled" in widget.status.value


def _errors(since: int) -> list:
    from napari.utils.notifications import NotificationSeverity, notification_manager

    records = notification_manager.records[since:]
    return [r for r in records if r.severity == NotificationSeverity.ERROR]


def test_widget_errors_become_notifications(qtbot, viewer_widget):
    from napari.utils.notifications import ErrorNotification, notification_manager

    viewer, widget = viewer_widget
    start = len(notification_manager.records)
    assert widget.image.value is None  # no layer yet
    widget.run_button.clicked.emit()
    assert not widget.running
    assert [str(e.message) for e in _errors(start)] == [
        "napari-ntd: select an image layer to denoise"
    ]
    layer = viewer.add_image(np.random.default_rng(3).random((8, 8)), name="tiny")
    _run(qtbot, widget, layer)  # fails inside the worker
    errors = _errors(start)
    assert len(errors) == 2 and "smaller than the patch" in str(errors[1].message)
    assert not any(isinstance(e, ErrorNotification) for e in errors)  # no traceback dialog
    assert [lay.name for lay in viewer.layers] == ["tiny"]
    widget.patch_size.value = 5
    widget.sigma_auto.value = False
    _run(qtbot, widget, layer)  # now valid: no new error, a result layer
    assert len(_errors(start)) == 2 and "tiny denoised" in viewer.layers


def test_widget_multiscale_in_place_is_refused(qtbot, viewer_widget, noisy):
    from napari.utils.notifications import notification_manager

    viewer, widget = viewer_widget
    layer = viewer.add_image([noisy, noisy[::2, ::2]], multiscale=True, name="pyramid")
    widget.output.value = "in place"
    widget.reset_choices()
    widget.image.value = layer
    start = len(notification_manager.records)
    widget.run_button.clicked.emit()
    assert not widget.running
    assert "multiscale" in str(_errors(start)[-1].message)
    np.testing.assert_array_equal(layer.data[0], noisy)


def test_sample_data_opens_and_shows_sigma_estimate(viewer_widget):
    from napari_ntd._ui._sample_data import SAMPLE_SIGMA

    viewer, widget = viewer_widget
    viewer.open_sample("napari-ntd", "noisy_cells")
    layer = viewer.layers["noisy cells"]
    assert layer.data.shape == (256, 256)
    widget.reset_choices()
    widget.image.value = layer
    assert not widget.sigma.enabled
    assert abs(widget.sigma.value - SAMPLE_SIGMA) < 0.01  # shown before any run


def test_widget_multiscale_uses_full_resolution_and_keeps_units(qtbot, viewer_widget, clean, noisy):
    viewer, widget = viewer_widget
    layer = viewer.add_image(
        [noisy, noisy[::2, ::2]], multiscale=True, name="pyramid", units=("um", "um")
    )
    _run(qtbot, widget, layer)
    out = viewer.layers["pyramid denoised"]
    assert out.data.shape == noisy.shape
    assert tuple(str(u) for u in out.units) == tuple(str(u) for u in layer.units)
    assert psnr(clean, out.data, data_range=1) > psnr(clean, noisy, data_range=1) + 2


@pytest.mark.parametrize("method", ["nystrom", "guided"])
def test_cancel_on_256_stops_within_one_step(qtbot, viewer_widget, method):
    """Cancel on a 256^2 image: the run stops early and the layer is unchanged.

    Nystrom steps take ~0.1 s: at most one more step runs. Guided steps are
    ~5 ms (tiles), so a few more may run before the GUI thread's cancel
    lands; the run must still stop well before its end.
    """
    viewer, widget = viewer_widget
    img = np.random.default_rng(4).random((256, 256)).astype(np.float32)
    layer = viewer.add_image(img.copy(), name="256")
    widget.output.value = "in place"
    widget.method.value = method
    widget.reset_choices()
    widget.image.value = layer
    widget.run_button.clicked.emit()
    seen = []

    def on_step(step):
        seen.append(step)
        if len(seen) == 2:
            widget.cancel()

    widget._worker.yielded.connect(on_step)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    total = seen[0][1]
    if method == "nystrom":
        assert 2 <= len(seen) <= 3 < total  # stopped at the next step, long before the end
    else:
        assert 2 <= len(seen) < total // 2, (len(seen), total)
    np.testing.assert_array_equal(layer.data, img)
    assert ORIGINAL_KEY not in layer.metadata


def test_two_viewers_run_at_once_without_interference(qtbot, make_napari_viewer, clean, noisy):
    from napari_ntd import denoise_ntd

    images = [noisy, noisy[::-1].copy()]
    widgets, layers = [], []
    for k, img in enumerate(images):
        viewer = make_napari_viewer()
        _, widget = viewer.window.add_plugin_dock_widget("napari-ntd", "Neural tangent denoiser")
        widget.seed.value = k
        layers.append(viewer.add_image(img, name=f"v{k}"))
        widget.reset_choices()
        widget.image.value = layers[-1]
        widgets.append((viewer, widget))
    for _, widget in widgets:
        widget.run_button.clicked.emit()
    assert all(w.running for _, w in widgets)
    qtbot.waitUntil(lambda: not any(w.running for _, w in widgets), timeout=120_000)
    for k, (viewer, _) in enumerate(widgets):
        out = viewer.layers[f"v{k} denoised"].data
        # the widget runs with the sigma it shows (the fit of the plane)
        solo = denoise_ntd(images[k], seed=k, sigma=widgets[k][1].noise_estimate.sigma)
        np.testing.assert_allclose(out, solo, atol=1e-6)


def _raw_counts(n=96, photons=20, seed=0):
    """A raw camera frame: gain 2 ADU/e-, offset 100 ADU, read noise 6 ADU, uint16."""
    clean = img_as_float(data.camera())[150 : 150 + n, 200 : 200 + n] * photons
    rng = np.random.default_rng(seed)
    raw = 2.0 * rng.poisson(clean) + 100 + 6.0 * rng.standard_normal(clean.shape)
    return np.clip(np.round(raw), 0, 65535).astype(np.uint16), 2.0 * clean + 100


def test_widget_raw_counts_fit_shown_before_run_and_units_kept(qtbot, viewer_widget):
    viewer, widget = viewer_widget
    raw, expected = _raw_counts()
    layer = viewer.add_image(raw, name="raw")
    widget.reset_choices()
    widget.image.value = layer
    # before Run: the fitted model, in the layer's units
    assert "Poisson-Gaussian" in widget.noise_info.value and "ADU" in widget.noise_info.value
    assert abs(widget.noise_estimate.gain - 2.0) < 0.4
    assert not widget.sigma.enabled  # no Gaussian sigma for this model
    widget.residual.value = True
    _run(qtbot, widget, layer)
    out = viewer.layers["raw denoised"].data
    noise = viewer.layers["raw noise removed"].data
    assert out.dtype == np.float32 and out.shape == raw.shape
    assert abs(float(np.median(out)) - float(np.median(expected))) < 5  # counts, not [0, 1]
    span = float(expected.max() - expected.min())
    assert psnr(expected, out, data_range=span) > psnr(expected, raw.astype(float), data_range=span)
    np.testing.assert_allclose(noise, raw.astype(np.float32) - out, atol=1e-3)
    assert abs(float(noise.mean())) < 1.0  # only noise was taken
    assert widget.progress_bar.value == 100


def test_widget_status_and_buttons_follow_what_happened(qtbot, viewer_widget, noisy):
    viewer, widget = viewer_widget
    assert not widget.restore_button.enabled  # nothing to restore yet
    tiny = viewer.add_image(np.random.default_rng(3).random((8, 8)), name="tiny")
    _run(qtbot, widget, tiny)  # fails in the worker
    assert widget.status.value.startswith("error")
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    other = viewer.add_image(noisy, name="other")
    widget.reset_choices()
    widget.image.value = other
    assert widget.status.value == ""  # no stale error for another layer
    assert "Gaussian" in widget.noise_info.value
    assert not widget.restore_button.enabled
