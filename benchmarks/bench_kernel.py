"""Micro-benchmark of the NTK kernel evaluation (issue 8): elementwise map and block.

For each block shape ``(a x b, n0)`` of :func:`napari_ntd._ntk._nystrom.nystrom_from_patches`
(rows: a slab of ``block_pixels`` pixels; columns: the ``m`` sampled patches),
with real patches of noisy skimage images (camera, astronaut for ``n0 = 363``):

* entries/s of the eager reference elementwise map
  (:func:`~napari_ntd._ntk._kernel.ntk_from_gram_reference`) and of the fast one
  (:mod:`napari_ntd._ntk._fast_kernel`), both in place on a fresh copy of the Gram block;
* GFLOP/s of the plain ``torch.matmul`` of the Gram block (``2 a b n0`` flops);
* :func:`~napari_ntd._ntk._kernel.ntk_block` (matmul + elementwise) with each path,
  and the fast block's time over the matmul's;
* the fast kernel's first-call time in a fresh process: compile (empty numba
  cache) and load (warm cache);
* the Nystrom row-block loop (kernel rows times the ``m x k`` projection) at
  512^2, m = 2%, k = 128, for several ``block_pixels`` (and the reference
  kernel once at the default 4096).

Competitors run interleaved in the same rounds (the machine may be shared);
the table gives medians over the rounds. Run: ``python benchmarks/bench_kernel.py
[rounds]`` (default 5; ~5 min on 2 shared cores).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import save, table
from napari_ntd._ntk import _fast_kernel
from napari_ntd._ntk._kernel import ntk_block, ntk_from_gram_reference, patch_matrix
from napari_ntd._ntk._nystrom import _row_slabs

SHAPES = [(4096, 5242, 121), (4096, 1024, 121), (4096, 1024, 363)]


def noisy_image(rgb: bool) -> torch.Tensor:
    from skimage import data, img_as_float

    img = img_as_float(data.astronaut()) if rgb else img_as_float(data.camera())[..., None]
    img = img.transpose(2, 0, 1)
    noisy = img + (25 / 255) * np.random.default_rng(0).standard_normal(img.shape)
    return torch.from_numpy((noisy - noisy.mean(axis=(1, 2), keepdims=True)).astype(np.float32))


def block_data(a: int, b: int, n0: int):
    rgb = n0 == 3 * 121
    p = patch_matrix(noisy_image(rgb), 11)
    rows = p[20_000 : 20_000 + a].contiguous()
    cols = p[torch.from_numpy(np.random.default_rng(1).choice(p.shape[0], b, replace=False))]
    return rows, cols, (rows * rows).sum(1), (cols * cols).sum(1)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_shape(a: int, b: int, n0: int, rounds: int) -> list:
    rows, cols, sq_r, sq_c = block_data(a, b, n0)
    gram = rows @ cols.T
    t: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, fn in [
            ("ref", lambda g: ntk_from_gram_reference(g, sq_r, sq_c, n0)),
            ("fast", lambda g: _fast_kernel.ntk_from_gram_fast(g, sq_r, sq_c, n0)),
        ]:
            g = gram.clone()
            t.setdefault(name, []).append(timed(lambda fn=fn, g=g: fn(g)))
        for name, fn in [
            ("matmul", lambda: rows @ cols.T),
            ("block_fast", lambda: ntk_block(rows, cols, sq_r, sq_c, fast=True)),
            ("block_ref", lambda: ntk_block(rows, cols, sq_r, sq_c, fast=False)),
        ]:
            t.setdefault(name, []).append(timed(fn))
    med = {k: statistics.median(v) for k, v in t.items()}
    n = a * b
    return [
        f"{a} x {b}, n0={n0}",
        n / med["ref"] / 1e6,
        n / med["fast"] / 1e6,
        med["ref"] / med["fast"],
        2 * n * n0 / med["matmul"] / 1e9,
        med["matmul"] * 1e3,
        med["block_ref"] * 1e3,
        med["block_fast"] * 1e3,
        med["block_fast"] / med["matmul"],
    ]


FIRST_CALL = (
    "import json, time\n"
    "t0 = time.perf_counter()\n"
    "from napari_ntd import _fast_kernel\n"
    "t1 = time.perf_counter()\n"
    "ok = _fast_kernel.available()\n"
    "print(json.dumps({'import': t1 - t0, 'first': time.perf_counter() - t1, 'ok': ok}))\n"
)


def first_call_times() -> list:
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("compile (empty numba cache)", "load (warm numba cache)"):
            proc = subprocess.run(
                [sys.executable, "-c", FIRST_CALL], env=env, capture_output=True, text=True
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append([label, r["import"], r["first"], str(r["ok"])])
    return out


def row_loop(block_pixels: list[int], rounds: int) -> list:
    """Kernel rows times the projection over a 512^2 image, as in nystrom_from_patches."""
    x = noisy_image(rgb=False)
    _, h, w = x.shape
    r, pad, d = 11, 5, h * w
    m, k = round(0.02 * d), 128
    xpad = F.pad(x, (pad, pad, pad, pad))
    p_m = patch_matrix(x, r)[torch.from_numpy(np.random.default_rng(1).choice(d, m, False))]
    sq_m = (p_m * p_m).sum(1)
    proj = torch.randn(m, k, generator=torch.Generator().manual_seed(0)) / m
    out = torch.empty(d, k)

    def run(bp: int, fast: bool = True) -> None:
        for r0, r1 in _row_slabs(h, w, bp):
            p_b = F.unfold(xpad[None, :, r0 : r1 + 2 * pad], kernel_size=r)[0].T
            sq_b = (p_b * p_b).sum(1)
            out[r0 * w : r1 * w] = ntk_block(p_b, p_m, sq_b, sq_m, fast=fast) @ proj

    t: dict[tuple[int, str], list[float]] = {}
    for i in range(rounds):
        for bp in block_pixels:
            t.setdefault((bp, "fast"), []).append(timed(lambda bp=bp: run(bp)))
        if i == 0:  # the reference once (~1 min), at the default block size
            t[(4096, "reference")] = [timed(lambda: run(4096, fast=False))]
    return [
        [bp, path, statistics.median(v), min(v), d * m / statistics.median(v) / 1e6]
        for (bp, path), v in t.items()
    ]


def main(rounds: int) -> None:
    if not _fast_kernel.available():
        sys.exit("the fast kernel is unavailable (numba missing?)")
    load = os.getloadavg()[0]
    rows = [bench_shape(a, b, n0, rounds) for a, b, n0 in SHAPES]
    body = table(
        [
            "block (a x b, n0)",
            "ref elementwise (M entries/s)",
            "fast elementwise (M entries/s)",
            "speed-up",
            "matmul (GFLOP/s)",
            "matmul (ms)",
            "ntk_block ref (ms)",
            "ntk_block fast (ms)",
            "fast ntk_block / matmul",
        ],
        rows,
    )
    body += (
        f"\n\nMedians over {rounds} interleaved rounds, float32, "
        f"{torch.get_num_threads()} threads; 1-min load average before the run: {load:.1f}."
        "\n\nFirst call of the fast kernel, fresh process (s):\n\n"
    )
    body += table(
        [
            "case",
            "import napari_ntd._ntk._fast_kernel (s)",
            "first call: numba import + JIT (s)",
            "ok",
        ],
        first_call_times(),
    )
    loop = row_loop([1024, 2048, 4096, 8192, 16384], max(2, rounds // 2))
    body += (
        "\n\nNystrom row-block loop (fast kernel rows @ projection, 512^2 camera, "
        "m = 5243, k = 128; the block_pixels default is 4096):\n\n"
    )
    body += table(
        ["block_pixels", "kernel", "median (s)", "best (s)", "kernel entries / loop time (M/s)"],
        loop,
    )
    save("bench_kernel", "NTK kernel evaluation: reference vs fast path", body)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
