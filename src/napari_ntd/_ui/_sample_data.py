"""Sample data: a noisy microscopy-like image from skimage's bundled ``cell``."""

from __future__ import annotations

import numpy as np

__all__ = ["noisy_cells", "SAMPLE_SIGMA", "CROP"]

#: Standard deviation of the added Gaussian noise (on the [0, 1] scale).
SAMPLE_SIGMA = 0.08

#: The 256 x 256 crop of ``cell()`` around the cell.
CROP = (slice(240, 496), slice(294, 550))


def noisy_cells(seed: int = 0) -> list[tuple[np.ndarray, dict]]:
    """A 256 x 256 crop of ``skimage.data.cell()`` (the cell) with seeded Gaussian noise.

    No download: ``cell`` ships with scikit-image. Returns napari layer data
    tuples (float32 in about [0, 1]).
    """
    from skimage import data, img_as_float

    clean = img_as_float(data.cell())[CROP]
    rng = np.random.default_rng(seed)
    noisy = (clean + SAMPLE_SIGMA * rng.standard_normal(clean.shape)).astype(np.float32)
    return [(noisy, {"name": "noisy cells", "metadata": {"noise_sigma": SAMPLE_SIGMA}})]
