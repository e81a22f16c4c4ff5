"""The napari widget: adapts an image layer to ``iter_denoise_ntd`` calls.

No algorithm lives here, and only the public API is used. The widget fits
the noise of the current plane as soon as a layer is picked
(:func:`napari_ntd.estimate_noise`: the model and its parameters, in the
layer's units, are shown before Run and are what the run uses), runs
``iter_denoise_ntd`` on the current slice, the whole stack (plane by plane),
the 3D volumes or a time-lapse (the first axis is time: ``time_axis=0``,
each frame with its neighbours) in a ``thread_worker`` (a generator, so
Cancel stops it between steps) with a progress bar in the widget, and writes
the result, in the layer's units (``preserve_range``; float32), to a new
layer or into the layer (keeping the original in
``layer.metadata[ORIGINAL_KEY]`` for Restore), optionally with the noise it
removed. napari is imported lazily so that ``import napari_ntd`` does not
import it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    create_widget,
)

from .. import (
    METHODS,
    DIPConfig,
    NoiseModel,
    default_n_iter,
    default_patch_size,
    estimate_noise,
    iter_denoise_dip,
    iter_denoise_ntd,
)

if TYPE_CHECKING:
    import napari

    from .. import NoiseEstimate

__all__ = ["ORIGINAL_KEY", "DenoiseWidget"]

#: ``layer.metadata`` key holding the data replaced by an in-place run.
ORIGINAL_KEY = "napari_ntd_original"

#: Side of the central crop of the current plane the noise is fitted on.
_FIT_SIDE = 1024

#: The scope that denoises a time-lapse: the first axis is time (``time_axis=0``).
_TIMELAPSE = "time-lapse (neighbouring frames)"

#: Scope choices of the widget and the spatial dimensions each denoises.
_SCOPES = {"current slice": 2, "whole stack": 2, "3D volume": 3, _TIMELAPSE: 2}


def _time_window_default() -> int:
    """The library's default ``time_window`` (read from the public signature)."""
    default = inspect.signature(iter_denoise_ntd).parameters["time_window"].default
    return int(getattr(default, "value", default))  # a marker telling "not given" apart


_METHOD_LABELS = {
    "guided": "guided NTD (best)",
    "nystrom": "Nyström NTD (paper)",
    "exact": "exact NTD (small images)",
    "dip": "DIP",
}

_NOISE_LABELS = [
    ("auto (fitted)", "auto"),
    ("Gaussian", "gaussian"),
    ("Poisson", "poisson"),
    ("Poisson-Gaussian", "poisson-gaussian"),
]


def _devices() -> list[tuple[str, str]]:
    """Device choices as (label, value): only what this machine has."""
    import torch

    if torch.cuda.is_available():
        cuda = [(f"CUDA ({torch.cuda.get_device_name(0)})", "cuda")]
        return [("auto (CUDA)", "auto"), ("CPU", "cpu"), *cuda]
    return [("auto (CPU; no CUDA here)", "auto"), ("CPU", "cpu")]


class _Failed:
    """A worker's result when ``iter_denoise_ntd`` raised: shown, never raised."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class DenoiseWidget(Container):
    """Denoise an image layer with the neural tangent denoiser."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self._worker = None
        self._dims = 2
        #: The noise fitted on the current plane of the selected layer (or None).
        self.noise_estimate: NoiseEstimate | None = None
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        methods = [m for m in METHODS if m in _METHOD_LABELS]
        self.method = ComboBox(
            label="method", choices=[(_METHOD_LABELS[m], m) for m in methods], value="guided"
        )
        self.noise_model = ComboBox(label="noise", choices=_NOISE_LABELS, value="auto")
        self.noise_info = Label(value="pick an image layer")
        self.sigma_auto = CheckBox(text="estimate sigma (shown below)", value=True)
        self.sigma = FloatSpinBox(
            label="sigma (layer units)", value=0.0, min=0.0, max=1e9, step=0.005
        )
        self.sigma.enabled = False
        self.iter_auto = CheckBox(text="default iterations", value=True)
        self.n_iter = SpinBox(label="iterations", value=50, min=0, max=100_000)
        self.n_iter.enabled = False
        self.patch_size = SpinBox(label="patch size", value=default_patch_size(), min=1, max=31)
        self.patch_size.step = 2
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.scope = ComboBox(label="planes", choices=list(_SCOPES))
        self.time_window = SpinBox(
            label="time window (frames each side)", value=_time_window_default(), min=0, max=50
        )
        self.time_window.enabled = False
        self.output = ComboBox(label="output", choices=["new layer", "in place"])
        self.residual = CheckBox(text="also add the noise removed (input - output)", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel")
        self.cancel_button.enabled = False
        self.restore_button = PushButton(text="Restore original")
        self.restore_button.enabled = False
        self.progress_bar = ProgressBar(label="progress", value=0, min=0, max=100)
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.method,
                self.noise_model,
                self.noise_info,
                self.sigma_auto,
                self.sigma,
                self.iter_auto,
                self.n_iter,
                self.patch_size,
                self.device,
                self.seed,
                self.scope,
                self.time_window,
                self.output,
                self.residual,
                self.run_button,
                self.cancel_button,
                self.restore_button,
                self.progress_bar,
                self.status,
            ]
        )
        self.sigma_auto.changed.connect(self._refresh_noise)
        self.noise_model.changed.connect(self._refresh_noise)
        self.image.changed.connect(self._on_layer)
        self.iter_auto.changed.connect(lambda v: setattr(self.n_iter, "enabled", not v))
        self.scope.changed.connect(self._on_scope)
        self.method.changed.connect(
            lambda m: setattr(self.patch_size, "enabled", m != "dip")  # the U-Net: 3 x 3
        )
        self.method.changed.connect(self._refresh_iter_label)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.restore_button.changed.connect(self.restore)
        viewer.dims.events.current_step.connect(self._on_slice)
        self._refresh_iter_label()
        self._on_layer()

    # -- state ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a denoising worker is active."""
        return self._worker is not None

    @property
    def spatial_dims(self) -> int:
        """3 when the scope is ``"3D volume"`` (the last three axes), else 2."""
        return _SCOPES[self.scope.value]

    @property
    def timelapse(self) -> bool:
        """Whether the scope is the time-lapse one (the first axis is time)."""
        return self.scope.value == _TIMELAPSE

    def _data(self, layer: Any) -> Any:
        return layer.data[0] if layer.multiscale else layer.data

    def _n_lead(self, layer: Any, spatial_dims: int | None = None) -> int:
        nd = self.spatial_dims if spatial_dims is None else spatial_dims
        return self._data(layer).ndim - nd - layer.rgb

    def _on_layer(self, *_: Any) -> None:
        if not self.running:
            self.status.value = ""
            self.progress_bar.value = 0
        self._update_restore()
        self._fit_noise()

    def _on_slice(self, *_: Any) -> None:
        layer = self.image.value
        if layer is not None and self._n_lead(layer, 2) > 0:
            self._fit_noise()

    def _on_scope(self, scope: str) -> None:
        """Swap the patch-size default when the dimension changes (11 in 2D, 5 in 3D)."""
        method = self.method.value
        new = _SCOPES[scope]
        if new != self._dims and self.patch_size.value == default_patch_size(method, self._dims):
            self.patch_size.value = default_patch_size(method, new)
        self._dims = new
        self.time_window.enabled = scope == _TIMELAPSE
        self._refresh_iter_label()

    def _refresh_iter_label(self, *_: Any) -> None:
        """Say what "default iterations" means for this method and scope (the library's)."""
        time_axis = 0 if self.timelapse else None
        n = default_n_iter(self.method.value, self.spatial_dims, time_axis)
        what = {"auto": "SURE", 0: "0, the pilot alone"}.get(n, n)
        self.iter_auto.text = f"default iterations ({what})"

    def _update_restore(self) -> None:
        layer = self.image.value
        self.restore_button.enabled = (
            layer is not None and ORIGINAL_KEY in layer.metadata and not self.running
        )

    def _current_index(self, layer: Any, n_lead: int) -> tuple[int, ...]:
        pos = layer.world_to_data(self._viewer.dims.point)
        idx = np.round(np.asarray(pos)[:n_lead]).astype(int)
        return tuple(int(np.clip(i, 0, s - 1)) for i, s in zip(idx, layer.data.shape, strict=False))

    def _fit_noise(self) -> None:
        """Fit the noise of the current 2D plane and show it (before any run)."""
        layer = self.image.value
        self.noise_estimate = None
        if layer is None:
            self.noise_info.value = "pick an image layer"
            self._refresh_noise()
            return
        n_lead = self._n_lead(layer, 2)
        if n_lead < 0:
            self.noise_info.value = f"not an image (shape {self._data(layer).shape})"
            self._refresh_noise()
            return
        plane = self._data(layer)[self._current_index(layer, n_lead) if n_lead else ()]
        # at most the central _FIT_SIDE^2 pixels: plenty for the fit, and the GUI
        # thread stays responsive while the user scrolls through a large stack
        spatial = plane.shape[:2]
        crop = tuple(
            slice(max(0, (n - _FIT_SIDE) // 2), max(0, (n - _FIT_SIDE) // 2) + _FIT_SIDE)
            for n in spatial
        )
        try:
            self.noise_estimate = estimate_noise(
                np.asarray(plane[crop]), channel_axis=-1 if layer.rgb else None
            )
            # one parameter a line: the dock stays narrow
            self.noise_info.value = "fit: " + str(self.noise_estimate).replace(", ", "\n")
        except (ValueError, TypeError) as err:
            self.noise_info.value = f"no fit: {err}"
        self._refresh_noise()

    def _refresh_noise(self, *_: Any) -> None:
        """Sigma box state from the noise choice: Gaussian only, the fitted value when auto."""
        gaussian = self._effective_kind() == "gaussian"
        self.sigma_auto.visible = self.sigma.visible = gaussian  # only Gaussian noise has one
        self.sigma_auto.enabled = gaussian
        self.sigma.enabled = gaussian and not self.sigma_auto.value
        est = self.noise_estimate
        if gaussian and self.sigma_auto.value and est is not None and est.kind == "gaussian":
            self.sigma.value = float(est.sigma)

    def _effective_kind(self) -> str:
        choice = self.noise_model.value
        if choice != "auto":
            return choice
        est = self.noise_estimate
        return "gaussian" if est is None else est.kind

    def _noise_options(self) -> dict[str, Any]:
        """``noise_model`` and ``sigma`` for the library, in the layer's units."""
        choice, est = self.noise_model.value, self.noise_estimate
        fitted = est is not None and est.kind == "poisson-gaussian"
        kind = self._effective_kind()
        if kind == "gaussian":
            if not self.sigma_auto.value:
                return {"noise_model": "gaussian", "sigma": float(self.sigma.value)}
            if est is not None and est.kind == "gaussian":
                return {"noise_model": "gaussian", "sigma": float(est.sigma)}
            return {"noise_model": "gaussian", "sigma": None}  # estimated per plane
        if choice == "auto" or (kind == "poisson-gaussian" and fitted):
            return {"noise_model": est, "sigma": None}
        if kind == "poisson" and fitted:
            model = NoiseModel("poisson", gain=float(est.gain), offset=float(est.offset))
            return {"noise_model": model, "sigma": None}
        return {"noise_model": kind, "sigma": None}  # fitted by the library

    def _options(self, layer: Any) -> dict[str, Any]:
        timelapse = (
            {"time_axis": 0, "time_window": int(self.time_window.value)} if self.timelapse else {}
        )
        return {
            "spatial_dims": self.spatial_dims,
            "method": self.method.value,
            "n_iter": None if self.iter_auto.value else int(self.n_iter.value),
            "channel_axis": -1 if layer.rgb else None,
            "patch_size": int(self.patch_size.value),
            "device": None if self.device.value == "auto" else self.device.value,
            "seed": int(self.seed.value),
            "preserve_range": True,  # the layer's units
            **timelapse,
            **self._noise_options(),
        }

    # -- actions --------------------------------------------------------------

    def run(self) -> None:
        """Start denoising the selected layer in a worker thread."""
        from napari.qt.threading import thread_worker

        layer = self.image.value
        if layer is None:
            self._fail("select an image layer to denoise")
            return
        if self.running:
            return
        data = self._data(layer)
        nd = self.spatial_dims
        n_lead = self._n_lead(layer)
        if n_lead < 0:
            kind = "a 2D image" if nd == 2 else "a 3D volume"
            self._fail(f"layer {layer.name!r} is not {kind} (shape {data.shape})")
            return
        if self.timelapse and n_lead < 1:
            self._fail(
                f"layer {layer.name!r} is not a time-lapse (shape {data.shape}): the "
                "time-lapse scope needs frames along the first axis"
            )
            return
        if self.timelapse and self.method.value != "guided":
            self._fail("the time-lapse scope works with guided NTD only")
            return
        if layer.multiscale and self.output.value == "in place":
            self._fail("in-place output is not supported for multiscale layers")
            return
        index = None
        if self.scope.value == "current slice" and n_lead > 0:
            index = self._current_index(layer, n_lead)
        source = np.asarray(data if index is None else data[index])
        options = self._options(layer)
        denoise = iter_denoise_ntd
        if options["method"] == "dip":  # the trainers: their own function and options
            if nd != 2:
                self._fail("DIP denoises 2D planes: pick 'current slice' or 'whole stack'")
                return
            for key in ("method", "patch_size", "spatial_dims"):
                options.pop(key)
            options["config"] = DIPConfig()
            denoise = iter_denoise_dip

        @thread_worker(ignore_errors=True)
        def job():
            try:
                result = yield from denoise(source, **options)
            except Exception as err:  # one clean notification, no traceback dialog
                return _Failed(err)
            return result

        worker = job()
        self._worker = worker
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda res: self._on_done(layer, data, source, index, res))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.restore_button.enabled = False
        self.progress_bar.value = 0
        what = "time-lapse" if self.timelapse else "stack"
        what = "slice" if index is not None or n_lead == 0 else what
        self.status.value = f"denoising {layer.name} ({what})…"
        worker.start()

    def cancel(self) -> None:
        """Stop the running worker at its next step; the layer is left untouched."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelling…"

    def restore(self) -> None:
        """Put back the data replaced by the last in-place run of the selected layer."""
        layer = self.image.value
        if layer is None or ORIGINAL_KEY not in layer.metadata:
            self._update_restore()
            return
        layer.data = layer.metadata.pop(ORIGINAL_KEY)
        layer.reset_contrast_limits()
        self.status.value = f"restored {layer.name}"
        self._update_restore()
        self._fit_noise()

    # -- worker callbacks (main thread) ----------------------------------------

    def _fail(self, message: str) -> None:
        from napari.utils.notifications import show_error

        show_error(f"napari-ntd: {message}")
        self.status.value = f"error: {message}"

    def _on_step(self, step: tuple[int, int]) -> None:
        done, total = step
        self.progress_bar.value = round(100 * done / max(total, 1))

    def _on_done(self, layer, data, source, index, result) -> None:
        if isinstance(result, _Failed):
            self._fail(str(result.error))
            return
        out = np.asarray(result, dtype=np.float32)
        meta = {"scale": layer.scale, "translate": layer.translate, "units": layer.units}
        n_lead = self._n_lead(layer)
        if index is not None:  # one slice: a 2D layer placed on the layer's spatial axes
            meta = {k: tuple(v)[n_lead:] for k, v in meta.items()}
        noise = source.astype(np.float32) - out if self.residual.value else None
        self.progress_bar.value = 100
        if self.output.value == "in place":
            new = np.array(data, dtype=np.float32)
            new[() if index is None else index] = out
            layer.metadata.setdefault(ORIGINAL_KEY, layer.data)
            layer.data = new
            layer.reset_contrast_limits()
            self.status.value = f"denoised {layer.name} in place (Restore to undo)"
        else:
            self._viewer.add_image(
                out, name=f"{layer.name} denoised", rgb=layer.rgb, colormap=layer.colormap, **meta
            )
            self.status.value = f"added {layer.name} denoised"
        if noise is not None:
            self._viewer.add_image(
                noise, name=f"{layer.name} noise removed", rgb=layer.rgb, colormap="gray", **meta
            )

    def _on_aborted(self) -> None:
        self.status.value = "cancelled; layer unchanged"
        self.progress_bar.value = 0

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        self._update_restore()
