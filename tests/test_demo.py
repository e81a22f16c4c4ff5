"""The README's main command: ``napari-ntd demo`` on built-in sample data."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points


def test_console_script_registered():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("napari-ntd") == "napari_ntd._ui._cli:main"


def test_demo_runs_and_improves_psnr():
    res = subprocess.run(
        [sys.executable, "-m", "napari_ntd", "demo"], capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr
    noisy = float(re.search(r"PSNR noisy:\s+([\d.]+)", res.stdout).group(1))
    den = float(re.search(r"PSNR denoised:\s+([\d.]+)", res.stdout).group(1))
    assert den > noisy + 4, res.stdout
