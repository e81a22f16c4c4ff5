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

__all__ = ["main", "build_parser"]


class _UsageError(ValueError):
    """A mistake in the command line (exit status 2, one message)."""


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


def tile_shape(text: str) -> int | tuple[int, ...]:
    """``256`` or ``256x512`` (per spatial axis)."""
    try:
        parts = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid tile {text!r}; use e.g. 256 or 256x512"
        ) from None
    return parts[0] if len(parts) == 1 else parts


def columns(text: str) -> float | int:
    """A fraction (0.02) or a count (200) of Nystrom columns."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid column count {text!r}; use a fraction like 0.02 or a count like 200"
        ) from None
    return int(value) if value >= 1 and value.is_integer() else value


def iterations(text: str) -> int | str:
    """``auto`` or a number of twicing iterations."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid iteration count {text!r}; use auto or an integer"
        ) from None


def _plan_outputs(inputs: list[Path], out: Path, dtype: str) -> list[Path]:
    """Output path of each input; OUT is a file for one input, else a folder."""
    from ._io import IMAGE_SUFFIXES, TIFF_SUFFIXES

    single_file = not out.is_dir() and out.suffix.lower() in IMAGE_SUFFIXES
    if single_file and len(inputs) > 1:
        raise _UsageError(
            f"{len(inputs)} inputs but OUTPUT {out} is a single file: give a folder instead"
        )
    if single_file:
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


def _options(args: argparse.Namespace) -> dict:
    """``denoise_ntd`` keywords from the arguments, validated (usage errors raised)."""
    from .. import NoiseModel, check_options

    params = (args.gain, args.offset, args.read_noise)
    if args.noise_model in ("auto", "gaussian"):
        if any(v is not None for v in params):
            raise _UsageError(
                "--gain/--offset/--read-noise need --noise-model poisson or poisson-gaussian"
            )
        noise = args.noise_model
    else:
        if args.sigma is not None:
            raise _UsageError(
                f"--sigma applies to Gaussian noise, not --noise-model {args.noise_model}"
            )
        try:
            noise = NoiseModel(args.noise_model, *params)
        except (ValueError, TypeError) as err:
            raise _UsageError(_flags(str(err))) from None
    options = {
        "sigma": args.sigma,
        "method": args.method,
        "n_iter": args.n_iter,
        "patch_size": args.patch_size,
        "device": args.device,
        "seed": args.seed,
        "preserve_range": True,  # the file's units
        "tile_shape": args.tile,
        "max_memory": args.max_memory,
        "noise_model": noise,
        "spatial_dims": args.spatial_dims,
    }
    if args.n_columns is not None:
        options["n_columns"] = args.n_columns
    if args.time_axis is not None:
        options["time_axis"] = args.time_axis
    if args.time_window is not None:  # the library says when it does not apply
        options["time_window"] = args.time_window
    try:
        check_options(**options)
    except (ValueError, TypeError, NotImplementedError) as err:
        raise _UsageError(_flags(str(err))) from None
    return options


#: Library keywords and the options that set them, for messages in the CLI's terms.
_FLAGS = {
    "max_memory": "--max-memory",
    "tile_shape": "--tile",
    "n_columns": "--n-columns",
    "patch_size": "--patch-size",
    "n_iter": "--n-iter",
    "spatial_dims": "--spatial-dims",
    "time_axis": "--time-axis",
    "time_window": "--time-window",
    "noise_model": "--noise-model",
    "read_noise": "--read-noise",
    "channel_axis": "--channel-axis",
    "block_pixels": "block pixels",
}


def _flags(message: str) -> str:
    for name, flag in _FLAGS.items():
        message = message.replace(name, flag)
    return message


def _denoise_one(src: Path, dst: Path, args: argparse.Namespace, options: dict, report) -> None:
    """Read ``src``, denoise it in its units, write ``dst`` (atomically)."""
    import numpy as np

    from .. import denoise_ntd
    from ._io import TIFF_SUFFIXES, read_image, to_dtype, write_image

    image = read_image(src)
    channel_axis = args.channel_axis
    if (
        channel_axis is None
        and src.suffix.lower() not in TIFF_SUFFIXES
        and image.ndim == 3
        and image.shape[-1] in (3, 4)
    ):
        channel_axis = -1  # RGB(A) picture
    result = denoise_ntd(image, channel_axis=channel_axis, progress=report, **options)
    dtype = {"float32": np.float32, "input": image.dtype}.get(args.dtype)
    if dtype is None:  # auto
        dtype = np.float32 if dst.suffix.lower() in TIFF_SUFFIXES else image.dtype
    rgb = (
        channel_axis is not None
        and channel_axis % result.ndim == result.ndim - 1
        and result.shape[-1] in (3, 4)
    )
    write_image(dst, to_dtype(result, dtype), rgb=rgb)


def _denoise_files(args: argparse.Namespace) -> int:
    import warnings

    from tqdm.auto import tqdm

    from ._io import expand_inputs

    options = _options(args)  # every option checked before any file is read
    inputs = expand_inputs(args.inputs)
    out = Path(args.output)
    outputs = _plan_outputs(inputs, out, args.dtype)
    _check_outputs(inputs, outputs, args.overwrite)
    if len(outputs) > 1 or outputs[0] != out:
        out.mkdir(parents=True, exist_ok=True)

    failures = 0
    scale = 1000
    bar = tqdm(total=scale * len(inputs), unit="", disable=args.quiet, desc="napari-ntd")
    with bar:  # every message goes through bar.write: printed above the bar
        for i, (src, dst) in enumerate(zip(inputs, outputs, strict=True)):
            bar.set_postfix_str(src.name)

            def report(done: int, total: int, i: int = i) -> None:
                bar.n = i * scale + int(scale * done / max(total, 1))
                bar.refresh()

            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    _denoise_one(src, dst, args, options, report)
            except Exception as err:  # one bad file must not lose the batch
                failures += 1
                known = isinstance(err, (ValueError, TypeError, NotImplementedError, OSError))
                what = _flags(str(err)) if known else f"{type(err).__name__}: {err}"
                bar.write(f"napari-ntd: error: {src}: {what}", file=sys.stderr)
                if args.stop_on_error:
                    left = len(inputs) - i - 1
                    bar.write(f"napari-ntd: stopping ({left} files not processed)", file=sys.stderr)
                    return 1
                continue
            finally:
                for w in caught:
                    bar.write(f"napari-ntd: warning: {src}: {w.message}", file=sys.stderr)
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
        "--tile",
        type=tile_shape,
        default=None,
        help="tile shape, e.g. 256 or 256x256 (default: auto)",
    )
    den.add_argument("--max-memory", default=None, help="memory budget, e.g. 4GB (default 2GiB)")
    den.add_argument(
        "--noise-model",
        choices=("auto", "gaussian", "poisson", "poisson-gaussian"),
        default="auto",
        help="auto (default): fitted from each file; raw camera counts get Poisson-Gaussian",
    )
    den.add_argument("--gain", type=float, default=None, help="units per photon (default: fit)")
    den.add_argument("--offset", type=float, default=None, help="dark level (input units)")
    den.add_argument("--read-noise", type=float, default=None, help="read-noise std (input units)")
    den.add_argument("--sigma", type=float, default=None, help="Gaussian noise std (input units)")
    den.add_argument(
        "--method",
        default=None,
        choices=("guided", "nystrom", "exact"),
        help="guided (default), nystrom (the paper's), exact (small images)",
    )
    den.add_argument(
        "--n-iter",
        type=iterations,
        default=None,
        help="int or auto (MC-SURE); default auto, 0 with --time-axis (the pilot alone)",
    )
    den.add_argument(
        "--patch-size", type=int, default=None, help="patch side (11; 5 for guided volumes)"
    )
    den.add_argument(
        "--n-columns",
        type=columns,
        default=None,
        help="fraction or count (default: 1/64 for guided, 0.02 for nystrom)",
    )
    den.add_argument("--channel-axis", type=int, default=None, help="axis of the channels")
    den.add_argument(
        "--spatial-dims", type=int, choices=(2, 3), default=2, help="3: r x r x r patches"
    )
    den.add_argument(
        "--time-axis",
        type=int,
        default=None,
        help="axis of time in a time-lapse: each 2D frame is denoised with its neighbouring "
        "frames (guided method, 2D frames; default: none, the frames independently)",
    )
    den.add_argument(
        "--time-window",
        type=int,
        default=None,
        help="neighbouring frames on each side of a frame (needs --time-axis; default 2)",
    )
    den.add_argument("--seed", type=int, default=None, help="seed (image k of a stack: seed+k)")
    den.add_argument("--quiet", action="store_true", help="no progress bar or per-file lines")
    den.add_argument(
        "--stop-on-error",
        action="store_true",
        help="stop at the first failing file (default: report it and go on)",
    )
    den.set_defaults(func=_denoise_files, parser=den)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-ntd`` console script.

    Exit status: 0 done; 1 some files failed; 2 a usage error (bad arguments
    or options, found before any file is read) or nothing could start.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _UsageError as err:  # as argparse reports its own: usage line, one message
        getattr(args, "parser", parser).print_usage(sys.stderr)
        print(f"napari-ntd: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, NotImplementedError, OSError) as err:
        print(f"napari-ntd: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
