"""Command line: ``napari-ntd demo`` and ``napari-ntd denoise IN... OUT``.

The CLI only adapts arguments to :func:`napari_ntd.denoise_ntd`; file
handling lives in :mod:`napari_ntd._io`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from skimage import data, img_as_float
    from skimage.metrics import peak_signal_noise_ratio

    from .. import denoise_ntd

    clean = img_as_float(data.camera())
    if not args.full:
        clean = clean[128:384, 128:384]
    sigma = args.sigma / 255.0
    rng = np.random.default_rng(args.seed)
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    start = time.perf_counter()
    out = denoise_ntd(
        noisy, sigma=sigma, seed=args.seed, device=args.device, progress=True, method=args.method
    )
    elapsed = time.perf_counter() - start
    before = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    after = peak_signal_noise_ratio(clean, out, data_range=1.0)
    h, w = clean.shape
    print(f"camera {h}x{w}, Gaussian noise sigma={args.sigma:g}/255 (seed {args.seed})")
    print(f"PSNR noisy:    {before:6.2f} dB")
    print(f"PSNR denoised: {after:6.2f} dB  ({elapsed:.1f} s, method={args.method})")
    return 0


def _tile(text: str) -> int | tuple[int, ...]:
    """``256`` or ``256x512`` (per spatial axis)."""
    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid tile {text!r}; use e.g. 256 or 256x512"
        ) from None
    return parts[0] if len(parts) == 1 else parts


def _columns(text: str) -> float | int:
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _n_iter(text: str) -> int | str:
    return text if text == "auto" else int(text)


def _plan_outputs(inputs: list[Path], out: Path, dtype: str) -> list[Path]:
    """Output path of each input; OUT is a file for one input, else a folder."""
    from ._io import IMAGE_SUFFIXES, TIFF_SUFFIXES

    to_dir = len(inputs) > 1 or out.is_dir() or out.suffix.lower() not in IMAGE_SUFFIXES
    if not to_dir:
        return [out]
    outputs = []
    for path in inputs:
        suffix = path.suffix
        if dtype == "float32" and suffix.lower() not in TIFF_SUFFIXES:
            suffix = ".tif"  # only TIFF stores float32
        outputs.append(out / (path.stem + suffix))
    return outputs


def _check_outputs(inputs: list[Path], outputs: list[Path], overwrite: bool) -> None:
    seen: dict[Path, Path] = {}
    in_set = {p.resolve() for p in inputs}
    for src, dst in zip(inputs, outputs, strict=True):
        key = dst.resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {src} would both be written to {dst}")
        seen[key] = src
        if overwrite:
            continue
        if key in in_set:
            raise ValueError(f"refusing to overwrite the input {dst} (pass --overwrite)")
        if dst.exists():
            raise ValueError(f"{dst} exists (pass --overwrite to replace it)")


def _denoise_files(args: argparse.Namespace) -> int:
    import numpy as np

    from .. import NoiseModel, denoise_ntd
    from ._io import TIFF_SUFFIXES, expand_inputs, read_image, to_dtype, write_image

    inputs = expand_inputs(args.inputs)
    out = Path(args.output)
    outputs = _plan_outputs(inputs, out, args.dtype)
    _check_outputs(inputs, outputs, args.overwrite)
    if len(outputs) > 1 or outputs[0] != out:
        out.mkdir(parents=True, exist_ok=True)
    if args.noise_model == "gaussian":
        if any(v is not None for v in (args.gain, args.offset, args.read_noise)):
            raise ValueError("--gain/--offset/--read-noise need --noise-model poisson(-gaussian)")
        noise = NoiseModel()
    else:
        noise = NoiseModel(args.noise_model, args.gain, args.offset, args.read_noise)

    from tqdm.auto import tqdm

    failures = 0
    scale = 1000
    bar = tqdm(total=scale * len(inputs), unit="", disable=args.quiet, desc="napari-ntd")
    with bar:
        for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
            bar.set_postfix_str(src.name)

            def report(done: int, total: int, i: int = i) -> None:
                bar.n = i * scale + int(scale * done / max(total, 1))
                bar.refresh()

            try:
                image = read_image(src)
                channel_axis = args.channel_axis
                if (
                    channel_axis is None
                    and src.suffix.lower() not in TIFF_SUFFIXES
                    and image.ndim == 3
                    and image.shape[-1] in (3, 4)
                ):
                    channel_axis = -1  # RGB(A) picture
                result = denoise_ntd(
                    image,
                    sigma=args.sigma,
                    method=args.method,
                    n_iter=args.n_iter,
                    channel_axis=channel_axis,
                    patch_size=args.patch_size,
                    n_columns=args.n_columns,
                    device=args.device,
                    seed=args.seed,
                    preserve_range=True,
                    progress=report,
                    tile_shape=args.tile,
                    max_memory=args.max_memory,
                    noise_model=noise,
                    spatial_dims=args.spatial_dims,
                )
                dtype = {"float32": np.float32, "input": image.dtype}.get(args.dtype)
                if dtype is None:  # auto
                    dtype = np.float32 if dst.suffix.lower() in TIFF_SUFFIXES else image.dtype
                write_image(dst, to_dtype(result, dtype))
            except Exception as err:  # one bad file must not lose the batch
                failures += 1
                known = isinstance(err, (ValueError, TypeError, NotImplementedError, OSError))
                what = str(err) if known else f"{type(err).__name__}: {err}"
                bar.write(f"napari-ntd: error: {src}: {what}", file=sys.stderr)
                if args.stop_on_error:
                    left = len(inputs) - i - 1
                    print(f"napari-ntd: stopping ({left} files not processed)", file=sys.stderr)
                    return 1
                continue
            bar.n = (i + 1) * scale
            bar.refresh()
            if not args.quiet:
                bar.write(f"{src} -> {dst}")
    if failures:
        print(f"napari-ntd: {failures} of {len(inputs)} files failed", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-ntd`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="napari-ntd", description="Neural tangent denoiser (napari-ntd)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="denoise skimage's camera with added noise, print PSNR")
    demo.add_argument("--sigma", type=float, default=25.0, help="noise std on 0-255 (25)")
    demo.add_argument("--seed", type=int, default=0, help="noise and column seed (0)")
    demo.add_argument("--full", action="store_true", help="the full 512x512 image")
    demo.add_argument(
        "--method", default="guided", choices=("guided", "nystrom"), help="guided (default)"
    )
    demo.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    demo.set_defaults(func=_demo)

    den = sub.add_parser(
        "denoise",
        help="denoise image files (TIFF, PNG, JPEG, ...) into new files",
        description="Denoise image files. INPUT: files, glob patterns or folders; OUTPUT: a "
        "file (one input) or a folder (created if needed; outputs keep the input names). "
        "Values keep the input's units (preserve_range). Inputs and existing files are "
        "never overwritten without --overwrite; each file is written atomically.",
    )
    den.add_argument("inputs", nargs="+", metavar="INPUT", help="file, glob pattern or folder")
    den.add_argument("output", metavar="OUTPUT", help="output file or folder")
    den.add_argument(
        "--dtype",
        choices=("auto", "float32", "input"),
        default="auto",
        help="output dtype: float32, the input dtype (rounded, clipped), or auto = float32 for "
        "TIFF output and the input dtype otherwise (default)",
    )
    den.add_argument("--overwrite", action="store_true", help="replace existing files/inputs")
    den.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    den.add_argument(
        "--tile", type=_tile, default=None, help="tile shape, e.g. 256 or 256x256 (default: auto)"
    )
    den.add_argument("--max-memory", default=None, help="memory budget, e.g. 4GB (default 2GiB)")
    den.add_argument(
        "--noise-model", choices=("gaussian", "poisson", "poisson-gaussian"), default="gaussian"
    )
    den.add_argument("--gain", type=float, default=None, help="units per photon (default: fit)")
    den.add_argument("--offset", type=float, default=None, help="dark level (input units)")
    den.add_argument("--read-noise", type=float, default=None, help="read-noise std (input units)")
    den.add_argument("--sigma", type=float, default=None, help="Gaussian noise std (input units)")
    den.add_argument(
        "--method",
        default=None,
        help="guided (default), nystrom (the paper's), exact",
    )
    den.add_argument("--n-iter", type=_n_iter, default="auto", help="int or auto (MC-SURE)")
    den.add_argument(
        "--patch-size", type=int, default=None, help="patch side (11; 5 for guided volumes)"
    )
    den.add_argument("--n-columns", type=_columns, default=0.02, help="fraction or count (0.02)")
    den.add_argument("--channel-axis", type=int, default=None, help="axis of the channels")
    den.add_argument(
        "--spatial-dims", type=int, choices=(2, 3), default=2, help="3: r x r x r patches"
    )
    den.add_argument("--seed", type=int, default=None, help="seed (image k of a stack: seed+k)")
    den.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    den.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first failing file (default: report it and go on)",
    )
    den.set_defaults(func=_denoise_files)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-ntd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, NotImplementedError, OSError) as err:
        print(f"napari-ntd: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
