"""Fused CPU evaluation of the NTK elementwise map (numba), for float32 blocks.

:func:`napari_ntd._kernel.ntk_from_gram_reference` makes about ten passes over
the ``a x b`` block with a temporary per pass (~40 M entries/s on 2 cores).
Here one compiled loop reads each inner product once and writes the kernel
value in its place, with no temporaries and no ``arccos`` call:

* ``c = <p, q> / (|p| |q|)`` is formed in float64 (the inner product itself
  stays float32), clamped to ``[-1, 1]``, and ``t = 1 - |c|`` is taken in
  float64 before rounding to float32. Near ``|c| = 1`` the kernel behaves like
  ``sqrt(1 - |c|)``, so forming ``c`` in float32 (as the eager float32 path
  does) costs ~1e-4 of the kernel's scale; this way the result agrees with the
  float64 evaluation of the same inputs to ~1e-6 of the scale everywhere;
* ``sin(phi) = sqrt(t (2 - t))`` and ``acos(|c|) = sqrt(t) P(|c|)`` with the
  degree-7 polynomial of Abramowitz & Stegun 4.4.46 (``|error| <= 2e-8``);
  ``pi - phi = acos(-c)`` is ``acos(|c|)`` for ``c < 0`` and
  ``pi - acos(|c|)`` otherwise (no cancellation: it is then ``>= pi / 2``).

The loop is compiled once per machine (``cache=True``: ~1-2 s the first time,
then loaded from numba's on-disk cache) and runs on row ranges in a small
thread pool (``torch.get_num_threads()`` threads; numba releases the GIL).
Our own pool rather than numba's ``prange``: the workqueue threading layer
aborts on concurrent calls (napari workers, dask's threaded scheduler), and an
OpenMP layer next to torch's spins against it on a busy machine.

:func:`available` is ``False`` (and callers use the eager path) when numba is
not installed or the compile fails.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = ["MAX_THREADS", "available", "ntk_from_gram_fast", "supports"]

# Abramowitz & Stegun 4.4.46: acos(x) = sqrt(1 - x) * sum_k A[k] x^k on [0, 1].
_ACOS_COEFFS = (
    1.5707963050,
    -0.2145988016,
    0.0889789874,
    -0.0501743046,
    0.0308918810,
    -0.0170881256,
    0.0066700901,
    -0.0012624911,
)

# Rows per task: at least this many entries, so that dispatch (~20 us) is noise.
_MIN_TASK_ENTRIES = 1 << 17

#: Cap on the kernel's threads (``None``: ``torch.get_num_threads()``).
MAX_THREADS: int | None = None

_state: dict = {}
_lock = threading.Lock()


def _build():
    """Compile (or load from cache) the row-range kernel; raises if numba is missing."""
    from numba import njit

    a0, a1, a2, a3, a4, a5, a6, a7 = (np.float32(v) for v in _ACOS_COEFFS)
    pi = np.float32(math.pi)
    two = np.float32(2.0)

    # No 'nnan'/'ninf': a NaN inner product gives NaN, as on the eager path.
    flags = {"contract", "afn", "arcp", "nsz", "reassoc"}

    @njit(nogil=True, fastmath=flags, cache=True, error_model="numpy", boundscheck=False)
    def ntk_rows(g, inv_a, inv_b, fac_a, fac_b, r0, r1):  # pragma: no cover - compiled
        m = g.shape[1]
        for i in range(r0, r1):
            ia = inv_a[i]
            fa = fac_a[i]
            row = g[i]
            for j in range(m):
                c = row[j] * (ia * inv_b[j])  # float64
                c = min(max(c, -1.0), 1.0)
                x = abs(c)
                t = np.float32(1.0 - x)
                xf = np.float32(x)
                cf = np.float32(c)
                p = a7 * xf + a6
                p = p * xf + a5
                p = p * xf + a4
                p = p * xf + a3
                p = p * xf + a2
                p = p * xf + a1
                p = p * xf + a0
                acos_x = math.sqrt(t) * p
                pi_minus_phi = acos_x if cf < 0 else pi - acos_x
                sin = math.sqrt(t * (two - t))
                row[j] = fa * fac_b[j] * (sin + two * pi_minus_phi * cf)

    # Compile (or load) now, on a tiny block, so that a failure shows here.
    c = np.array([[-1.0, -0.3, 0.0, 0.7, 1.0]], np.float32)
    want = [math.sqrt(1 - v * v) + 2 * (math.pi - math.acos(v)) * v for v in c[0].tolist()]
    ones = np.ones(5, np.float32)
    ntk_rows(c, np.ones(1), np.ones(5), ones[:1], ones, 0, 1)
    if not np.allclose(c[0], want, rtol=0, atol=1e-6):
        raise RuntimeError(f"fast NTK kernel self-check failed: {c[0]} != {want}")
    return ntk_rows


def _kernel():
    """The compiled kernel, or ``None`` when unavailable (decided once)."""
    try:
        return _state["kernel"]
    except KeyError:
        pass
    with _lock:
        if "kernel" not in _state:
            try:
                _state["kernel"] = _build()
            except Exception:  # no numba, no LLVM target, ...: eager fallback
                _state["kernel"] = None
    return _state["kernel"]


def available() -> bool:
    """Whether the compiled kernel can be used (compiles it on first call)."""
    return _kernel() is not None


def _pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pools = _state.setdefault("pools", {})
        if workers not in pools:
            pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="napari-ntd")
        return pools[workers]


def _after_fork_in_child():  # threads do not survive fork(): a child starts its own pool
    global _lock
    _lock = threading.Lock()
    _state.pop("pools", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def supports(gram: torch.Tensor) -> bool:
    """Whether :func:`ntk_from_gram_fast` handles this block (else use the eager path)."""
    return (
        gram.dtype == torch.float32
        and gram.device.type == "cpu"
        and gram.dim() == 2
        and gram.is_contiguous()
        and not gram.requires_grad
        and gram.layout == torch.strided
        and available()
    )


def ntk_from_gram_fast(
    gram: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, n0: int
) -> torch.Tensor:
    """:func:`napari_ntd._kernel.ntk_from_gram` in place, for :func:`supports` blocks."""
    kernel = _kernel()
    a, b = gram.shape
    tiny = torch.finfo(torch.float32).tiny
    norm_a = sq_a.detach().double().clamp_min(0.0).sqrt()
    norm_b = sq_b.detach().double().clamp_min(0.0).sqrt()
    # zero patches: <p, q> = 0, so c = 0 and the factor 0 gives Theta = 0
    inv_a = norm_a.clamp_min(tiny).reciprocal().numpy()
    inv_b = norm_b.clamp_min(tiny).reciprocal().numpy()
    fac_a = (norm_a * (2.0 / (n0 * math.pi))).float().numpy()
    fac_b = norm_b.float().numpy()
    g = gram.detach().numpy()

    threads = torch.get_num_threads() if MAX_THREADS is None else MAX_THREADS
    workers = max(1, min(threads, (a * b) // _MIN_TASK_ENTRIES, a))
    if workers == 1:
        kernel(g, inv_a, inv_b, fac_a, fac_b, 0, a)
        return gram
    # dynamic schedule: ~4 tasks per thread, pulled by the pool and the caller
    rows = max(1, -(-a // (4 * workers)), _MIN_TASK_ENTRIES // max(b, 1))
    tasks = iter(range(0, a, rows))
    take = threading.Lock()

    def work():
        while True:
            with take:
                r0 = next(tasks, None)
            if r0 is None:
                return
            kernel(g, inv_a, inv_b, fac_a, fac_b, r0, min(r0 + rows, a))

    pool = _pool(workers - 1)
    futures = [pool.submit(work) for _ in range(workers - 1)]
    work()
    for f in futures:
        f.result()
    return gram
