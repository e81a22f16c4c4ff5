"""napari-ntd: the neural tangent denoiser for napari and scripts.

Importing this package does not import napari or Qt.
"""

from importlib.metadata import PackageNotFoundError, version

from ._api import (
    METHODS,
    check_options,
    default_n_iter,
    default_patch_size,
    denoise_dip,
    denoise_ntd,
    iter_denoise_dip,
    iter_denoise_ntd,
)
from ._dip._trainers import DIPConfig, DIPTrainer
from ._engine._noise_estimation import NoiseEstimate, estimate_noise
from ._engine._vst import NoiseModel

try:
    __version__ = version("napari-ntd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "METHODS",
    "DIPConfig",
    "DIPTrainer",
    "NoiseEstimate",
    "NoiseModel",
    "__version__",
    "check_options",
    "default_n_iter",
    "default_patch_size",
    "denoise_dip",
    "denoise_ntd",
    "estimate_noise",
    "iter_denoise_dip",
    "iter_denoise_ntd",
]
