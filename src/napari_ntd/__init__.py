"""napari-ntd: the neural tangent denoiser for napari and scripts.

Importing this package does not import napari or Qt.
"""

from importlib.metadata import PackageNotFoundError, version

from ._denoise import denoise_ntd, iter_denoise_ntd
from ._trainers import DIPConfig, DIPTrainer

try:
    __version__ = version("napari-ntd")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["DIPConfig", "DIPTrainer", "__version__", "denoise_ntd", "iter_denoise_ntd"]
