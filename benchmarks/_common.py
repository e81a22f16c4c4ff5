"""Shared helpers of the benchmarks (tables, result files)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def nlm_peer(noisy, sigma: float, channel_axis: int | None, patch_distance: int = 6):
    """The benchmarks' NLM: skimage fast mode, h = 0.8 sigma, 5x5 patches, 13x13 window
    (``patch_distance`` 6; any number of spatial axes)."""
    from skimage.restoration import denoise_nl_means

    return denoise_nl_means(
        noisy,
        h=0.8 * sigma,
        sigma=sigma,
        fast_mode=True,
        patch_size=5,
        patch_distance=patch_distance,
        channel_axis=channel_axis,
    )


def bm3d_peer(noisy, sigma: float, channel_axis: int | None):
    """BM3D (optional ``bm3d`` package; ``bm3d_rgb`` for colour, channels last)."""
    import bm3d

    return bm3d.bm3d_rgb(noisy, sigma) if channel_axis is not None else bm3d.bm3d(noisy, sigma)


def table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def save(name: str, title: str, body: str) -> None:
    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
    machine += f"{torch.get_num_threads()} threads"
    text = f"# {title}\n\n{body}\n\nMachine: {machine}.\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
