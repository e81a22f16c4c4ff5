"""Shared helpers of the benchmarks (tables, result files)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


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
