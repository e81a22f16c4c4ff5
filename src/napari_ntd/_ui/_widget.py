"""The napari widget: adapts an image layer to ``iter_denoise_ntd`` calls.

No algorithm lives here: the widget picks the 2D planes of a layer (the
current slice or every slice of a stack) or its 3D volumes (the last three
axes, scope "3D volume"), runs ``iter_denoise_ntd`` on each
in a ``thread_worker`` (a generator, so Cancel stops it between steps), and
writes the result to a new layer or into the layer (keeping the original in
``layer.metadata[ORIGINAL_KEY]`` for Restore). napari is imported lazily so
that ``import napari_ntd`` does not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
    create_widget,
)

from .._api import GUIDED_PATCH_3D, METHODS, _prepare, iter_denoise_ntd
from .._engine._image import estimate_sigma as _estimate_sigma
from .._util._progress import nested_progress

if TYPE_CHECKING:
    import napari

__all__ = ["ORIGINAL_KEY", "DenoiseWidget", "layer_planes", "plane_sigma"]

#: ``layer.metadata`` key holding the data replaced by an in-place run.
ORIGINAL_KEY = "napari_ntd_original"

#: Scope choices of the widget and the spatial dimensions each denoises.
_SCOPES = {"current slice": 2, "whole stack": 2, "3D volume": 3}

_METHOD_LABELS = {
    "guided": "guided NTD (best)",
    "nystrom": "Nyström NTD (paper)",
    "exact": "exact NTD (small images)",
    "dip": "DIP",
}


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


def layer_planes(
    data: Any, rgb: bool, index: tuple[int, ...] | None, spatial_dims: int = 2
) -> tuple[list[tuple[int, ...]], int]:
    """The leading-axis indices of the 2D planes (or 3D volumes) to denoise, and
    the number of leading axes.

    ``index=None``: every plane of the stack; else only that one.
    """
    n_lead = data.ndim - spatial_dims - rgb
    if index is not None:
        return [tuple(index)], n_lead
    return [tuple(i) for i in np.ndindex(*data.shape[:n_lead])], n_lead


def plane_sigma(plane: Any, rgb: bool, spatial_dims: int = 2) -> float:
    """The noise estimate ``denoise_ntd(sigma=None)`` uses for one plane or volume."""
    img, _, _ = _prepare(np.asarray(plane), -1 if rgb else None, False, spatial_dims)
    return _estimate_sigma(img)


class DenoiseWidget(Container):
    """Denoise an image layer with the neural tangent denoiser."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = viewer
        self._worker = None
        self._progress = None
        self._dims = 2
        self.image = create_widget(annotation="napari.layers.Image", label="image")
        methods = [m for m in METHODS if m in _METHOD_LABELS]
        self.method = ComboBox(
            label="method", choices=[(_METHOD_LABELS[m], m) for m in methods], value="guided"
        )
        self.sigma_auto = CheckBox(text="estimate sigma (shown below)", value=True)
        self.sigma = FloatSpinBox(label="sigma", value=0.05, min=0.0, max=1e6, step=0.005)
        self.sigma.enabled = False
        self.iter_auto = CheckBox(text="iterations by SURE", value=True)
        self.n_iter = SpinBox(label="iterations", value=50, min=0, max=100_000)
        self.n_iter.enabled = False
        self.patch_size = SpinBox(label="patch size", value=11, min=1, max=31, step=2)
        self.device = ComboBox(label="device", choices=_devices(), value="auto")
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.scope = ComboBox(label="planes", choices=list(_SCOPES))
        self.output = ComboBox(label="output", choices=["new layer", "in place"])
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel")
        self.cancel_button.enabled = False
        self.restore_button = PushButton(text="Restore original")
        self.status = Label(value="")
        self.extend(
            [
                self.image,
                self.method,
                self.sigma_auto,
                self.sigma,
                self.iter_auto,
                self.n_iter,
                self.patch_size,
                self.device,
                self.seed,
                self.scope,
                self.output,
                self.run_button,
                self.cancel_button,
                self.restore_button,
                self.status,
            ]
        )
        self.sigma_auto.changed.connect(self._on_sigma_auto)
        self.image.changed.connect(self._show_estimate)
        self.iter_auto.changed.connect(lambda v: setattr(self.n_iter, "enabled", not v))
        self.scope.changed.connect(self._on_scope)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.restore_button.changed.connect(self.restore)

    # -- state ----------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether a denoising worker is active."""
        return self._worker is not None

    @property
    def spatial_dims(self) -> int:
        """3 when the scope is ``"3D volume"`` (the last three axes), else 2."""
        return _SCOPES[self.scope.value]

    def _on_scope(self, scope: str) -> None:
        """Swap the patch-size default when the dimension changes (11 in 2D, 5 in 3D)."""
        defaults = {2: 11, 3: GUIDED_PATCH_3D}
        new = _SCOPES[scope]
        if new != self._dims and self.patch_size.value == defaults[self._dims]:
            self.patch_size.value = defaults[new]
        self._dims = new
        self._show_estimate()

    def _options(self, layer: Any) -> dict[str, Any]:
        return {
            "spatial_dims": self.spatial_dims,
            "sigma": None if self.sigma_auto.value else float(self.sigma.value),
            "method": self.method.value,
            "n_iter": "auto" if self.iter_auto.value else int(self.n_iter.value),
            "channel_axis": -1 if layer.rgb else None,
            "patch_size": int(self.patch_size.value),
            "device": None if self.device.value == "auto" else self.device.value,
            "seed": int(self.seed.value),
        }

    def _on_sigma_auto(self, auto: bool) -> None:
        self.sigma.enabled = not auto
        if auto:
            self._show_estimate()

    def _show_estimate(self, *_: Any) -> None:
        """Put the sigma estimate of the current plane in the (disabled) sigma box."""
        layer = self.image.value
        if not self.sigma_auto.value or layer is None:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        n_lead = data.ndim - self.spatial_dims - layer.rgb
        if n_lead < 0:
            return
        plane = self._current_index(layer, n_lead) if n_lead else ()
        try:
            self.sigma.value = round(plane_sigma(data[plane], layer.rgb, self.spatial_dims), 4)
        except (ValueError, TypeError, NotImplementedError):
            return  # the run reports the problem

    def _current_index(self, layer: Any, n_lead: int) -> tuple[int, ...]:
        pos = layer.world_to_data(self._viewer.dims.point)
        idx = np.round(np.asarray(pos)[:n_lead]).astype(int)
        return tuple(int(np.clip(i, 0, s - 1)) for i, s in zip(idx, layer.data.shape, strict=False))

    # -- actions --------------------------------------------------------------

    def run(self) -> None:
        """Start denoising the selected layer in a worker thread."""
        from napari.qt.threading import thread_worker
        from napari.utils import progress
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error("napari-ntd: select an image layer to denoise")
            return
        if self.running:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        nd = self.spatial_dims
        n_lead = data.ndim - nd - layer.rgb
        if n_lead < 0:
            kind = "a 2D image" if nd == 2 else "a 3D volume"
            show_error(f"napari-ntd: layer {layer.name!r} is not {kind} (shape {data.shape})")
            return
        if layer.multiscale and self.output.value == "in place":
            show_error("napari-ntd: in-place output is not supported for multiscale layers")
            return
        index = None
        if self.scope.value == "current slice" and n_lead > 0:
            index = self._current_index(layer, n_lead)
        planes, _ = layer_planes(data, layer.rgb, index, nd)
        options = self._options(layer)
        if options["sigma"] is None:  # show the estimate (each plane uses its own)
            try:
                self.sigma.value = round(plane_sigma(data[planes[0]], layer.rgb, nd), 4)
            except (ValueError, TypeError, NotImplementedError) as err:
                show_error(f"napari-ntd: {err}")
                return

        @thread_worker(ignore_errors=True)
        def job():
            results = []
            try:
                for i, plane in enumerate(planes):
                    gen = iter_denoise_ntd(np.asarray(data[plane]), **options)
                    results.append((yield from nested_progress(gen, i, len(planes))))
            except Exception as err:  # one clean notification, no traceback dialog
                return _Failed(err)
            return results

        worker = job()
        self._worker = worker
        self._progress = progress(total=0, desc=f"napari-ntd: {layer.name}")
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda res: self._on_done(layer, data, planes, index, res, nd))
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.status.value = f"denoising {len(planes)} {'plane' if nd == 2 else 'volume'}(s)…"
        worker.start()

    def cancel(self) -> None:
        """Stop the running worker at its next step; the layer is left untouched."""
        if self._worker is not None:
            self._worker.quit()
            self.status.value = "cancelling…"

    def restore(self) -> None:
        """Put back the data replaced by the last in-place run of the selected layer."""
        from napari.utils.notifications import show_info

        layer = self.image.value
        if layer is None or ORIGINAL_KEY not in layer.metadata:
            show_info("napari-ntd: nothing to restore for this layer")
            return
        layer.data = layer.metadata.pop(ORIGINAL_KEY)
        layer.reset_contrast_limits()
        self.status.value = f"restored {layer.name}"

    # -- worker callbacks (main thread) ----------------------------------------

    def _on_step(self, step: tuple[int, int]) -> None:
        done, total = step
        if self._progress is not None:
            if self._progress.total != total:
                self._progress.total = total
            self._progress.update(done - self._progress.n)  # emits the bar's value event

    def _on_done(self, layer, data, planes, index, results, nd=2) -> None:
        if isinstance(results, _Failed):
            self._on_error(results.error)
            return
        n_lead = data.ndim - nd - layer.rgb
        meta = {"scale": layer.scale, "translate": layer.translate, "units": layer.units}
        if self.output.value == "in place":
            new = np.array(data, dtype=np.result_type(results[0].dtype, np.float32))
            for plane, res in zip(planes, results, strict=True):
                new[plane] = res
            layer.metadata.setdefault(ORIGINAL_KEY, layer.data)
            layer.data = new
            layer.reset_contrast_limits()
            self.status.value = f"denoised {layer.name} in place (Restore to undo)"
            return
        if index is None:
            out = np.stack(results).reshape(data.shape) if n_lead else results[0]
        else:  # one slice: a 2D layer placed on the layer's spatial axes
            out = results[0]
            meta = {k: tuple(v)[n_lead:] for k, v in meta.items()}
        self._viewer.add_image(
            out, name=f"{layer.name} denoised", rgb=layer.rgb, colormap=layer.colormap, **meta
        )
        self.status.value = f"added {layer.name} denoised"

    def _on_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        show_error(f"napari-ntd: {exc}")
        self.status.value = f"error: {exc}"

    def _on_aborted(self) -> None:
        self.status.value = "cancelled; layer unchanged"

    def _on_finished(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
