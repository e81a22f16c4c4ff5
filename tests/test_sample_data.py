"""The sample-data contribution: seeded, local, noisy."""

from __future__ import annotations

import numpy as np
from skimage import data, img_as_float

from napari_ntd._ui._sample_data import CROP, SAMPLE_SIGMA, noisy_cells


def test_noisy_cells_seeded_and_noisy():
    ((a, meta),) = noisy_cells()
    ((b, _),) = noisy_cells()
    np.testing.assert_array_equal(a, b)
    assert a.shape == (256, 256) and a.dtype == np.float32
    clean = img_as_float(data.cell())[CROP]
    assert abs(np.std(a - clean) - SAMPLE_SIGMA) < 0.005
    assert meta["name"] == "noisy cells"
