"""File input/output for the command line: TIFF (tifffile) and common formats.

Writes are atomic: the data go to a temporary file in the destination
folder, which is renamed over the final name only when complete, so a
failed or interrupted run never leaves a partial file under that name.
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "TIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "expand_inputs",
    "read_image",
    "write_image",
    "to_dtype",
]

TIFF_SUFFIXES = (".tif", ".tiff")
#: Suffixes read from folders and accepted for output.
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png", ".jpg", ".jpeg", ".bmp")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_inputs(specs: Iterable[str]) -> list[Path]:
    """Files named by paths, glob patterns and folders (their images, sorted).

    Raises ``FileNotFoundError`` for a path or pattern that matches nothing.
    Duplicates are dropped, order is kept.
    """
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image(p))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if _is_image(Path(p)))
        elif path.is_file():
            matches = [path]
        else:
            raise FileNotFoundError(f"no such file or folder: {spec}")
        if not matches:
            raise FileNotFoundError(f"no images found for {spec!r} (suffixes {IMAGE_SUFFIXES})")
        found.extend(matches)
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p.resolve(), None)
    return list(unique)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a TIFF with tifffile (all pages/axes) or another format with imageio."""
    path = Path(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        return tifffile.imread(path)
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


def can_store(suffix: str, dtype: np.dtype) -> bool:
    """Whether a file format stores this dtype (TIFF: any; PNG: uint8/16; others: uint8)."""
    suffix = suffix.lower()
    dtype = np.dtype(dtype)
    if suffix in TIFF_SUFFIXES:
        return True
    if suffix == ".png":
        return dtype in (np.uint8, np.uint16)
    return dtype == np.uint8


def write_image(path: str | os.PathLike, image: np.ndarray, *, rgb: bool = False) -> None:
    """Write atomically (temporary file in the same folder, then rename).

    TIFF: ``rgb=True`` stores a trailing axis of 3 or 4 as colour samples;
    otherwise every axis is a grey plane (a 3- or 4-frame stack stays a
    stack, where tifffile would guess RGB).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not can_store(suffix, image.dtype):
        raise ValueError(f"{suffix} files cannot store {image.dtype} data; write a .tif")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, image, photometric="rgb" if rgb else "minisblack")
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, image, extension=suffix)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float result (in the input's value range) to ``dtype``.

    Integer types are rounded and clipped to their range.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    if dtype.kind == "b":
        return image > 0.5
    return image.astype(dtype)
