"""The npe2 manifest: valid, importable, shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from npe2 import PluginManifest

ROOT = Path(__file__).resolve().parents[1]


def test_manifest_valid_and_imports_resolve():
    manifest = PluginManifest.from_distribution("napari-ntd")
    manifest.validate_imports()
    ids = {c.id for c in manifest.contributions.commands}
    assert {"napari-ntd.denoise_ntd", "napari-ntd.make_widget", "napari-ntd.noisy_cells"} <= ids
    assert [w.display_name for w in manifest.contributions.widgets] == ["Neural tangent denoiser"]
    menu = manifest.contributions.menus["napari/layers/filter"]
    assert [m.command for m in menu] == ["napari-ntd.make_widget"]


def test_installed_manifest_equals_top_level_file():
    import napari_ntd

    installed = Path(napari_ntd.__file__).with_name("napari.yaml")
    top = ROOT / "napari.yaml"
    if top.exists():  # running from a checkout
        assert installed.read_text() == top.read_text()
    assert PluginManifest.from_file(installed).name == "napari-ntd"
