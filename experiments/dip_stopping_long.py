"""Stopping rule vs oracle on longer U-Net runs (64 x 64, up to 1500 Adam steps).

Uses :func:`dip_table.run_dip`; the numbers are recorded in ``dip_stopping_long.md``.
For ``adam+gd`` the oracle column is the best iterate of either phase, the SURE
column the chosen iterate of the GD phase (appendix I.4).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.argv = [sys.argv[0], "64", "1500"]
sys.path.insert(0, str(Path(__file__).parent))

import dip_table as D  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    for name, clean in D.images():
        if name == "coffee":
            continue
        noisy = clean + D.SIGMA * np.random.default_rng(0).standard_normal(clean.shape)
        for opt, inp in (("adam", "image"), ("adam", "noise"), ("adam+gd", "image")):
            r = D.run_dip(clean, noisy, architecture="unet", optimizer=opt, input=inp)
            print(name, opt, inp, {k: round(float(v), 2) for k, v in r.items()}, flush=True)


if __name__ == "__main__":
    main()
