"""The npe2 manifest: valid, importable, shipped inside the package."""

from __future__ import annotations

import subprocess
import sys
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


def test_packaged_manifest_is_the_top_level_symlink():
    packaged = ROOT / "src" / "napari_ntd" / "napari.yaml"
    assert packaged.is_symlink() and packaged.resolve() == (ROOT / "napari.yaml").resolve()


def test_import_does_not_import_napari_or_qt():
    gui = "napari magicgui qtpy PyQt5 PyQt6 PySide2 PySide6 superqt vispy".split()
    code = (
        "import sys, napari_ntd, napari_ntd._ui._sample_data\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {set(gui)!r})\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
