"""Command line: ``napari-ntd demo`` (and, later, batch denoising).

The CLI only adapts arguments to :func:`napari_ntd.denoise_ntd`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    import numpy as np
    from skimage import data, img_as_float
    from skimage.metrics import peak_signal_noise_ratio

    from ._denoise import denoise_ntd

    clean = img_as_float(data.camera())
    if not args.full:
        clean = clean[128:384, 128:384]
    sigma = args.sigma / 255.0
    rng = np.random.default_rng(args.seed)
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    start = time.perf_counter()
    out = denoise_ntd(noisy, sigma=sigma, seed=args.seed, device=args.device, progress=True)
    elapsed = time.perf_counter() - start
    before = peak_signal_noise_ratio(clean, noisy, data_range=1.0)
    after = peak_signal_noise_ratio(clean, out, data_range=1.0)
    h, w = clean.shape
    print(f"camera {h}x{w}, Gaussian noise sigma={args.sigma:g}/255 (seed {args.seed})")
    print(f"PSNR noisy:    {before:6.2f} dB")
    print(f"PSNR denoised: {after:6.2f} dB  ({elapsed:.1f} s, method=nystrom)")
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
    demo.add_argument("--full", action="store_true", help="the full 512x512 image (~1.5 min)")
    demo.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``napari-ntd`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, NotImplementedError) as err:
        print(f"napari-ntd: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
