"""Where the heavy work runs: a process-wide pool of single-threaded torch workers.

Why. torch's CPU ops run on an OpenMP team whose idle threads spin-wait. On a
quiet machine that is cheap; next to other work (napari's threads, a dask
scheduler, another job) a team member is often descheduled, and every small
parallel region then waits for it: a float64 ``eigh`` of an 82 x 82 matrix
went from 0.7 ms to ~100 ms with one busy process beside it (issue 13).

What. The guided method's work is many independent small pieces (tiles,
pilot passes), so it runs them as tasks on :func:`compute_pool`: one worker
per available core, each running torch with **one** intra-op thread. The
other methods (the paper's Nystrom and exact NTD, the DIP trainers) run
their steps one after the other on a worker (:func:`iter_in_pool`). No
OpenMP team, nothing spins, and the operating system shares the cores
fairly with whatever else runs. All ``denoise_ntd`` calls of a process share
the pool, so two calls at once (two napari layers, dask's threaded
scheduler) never run more compute threads than there are cores.

How, without touching the caller's settings. ``torch.set_num_threads`` sets
the calling thread's OpenMP and MKL thread counts (thread-local) *and* the
default that threads starting to use torch later pick up (process-wide).
The workers set their own count to one and immediately put the process-wide
default back, from a short-lived helper thread, so the caller's thread,
napari's threads and any thread created later see the settings they had.
No environment variable is needed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

__all__ = [
    "available_cores",
    "compute_pool",
    "in_worker",
    "iter_in_pool",
    "run",
    "submit_all",
    "torch_threads",
]

T = TypeVar("T")

_lock = threading.Lock()
_state: dict[str, Any] = {}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _fresh_thread_default() -> int:
    """The torch thread count a thread starting now would get (the process default)."""
    out: list[int] = []
    t = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    t.start()
    t.join()
    return out[0]


def _set_process_default(n: int) -> None:
    """Put the process-wide default back to ``n`` without touching this thread's count."""
    t = threading.Thread(target=torch.set_num_threads, args=(n,))
    t.start()
    t.join()


def _set_this_thread(n: int) -> int:
    """Set this thread's torch thread count to ``n``, keep the process default.

    Returns the count the thread had. torch initialises a thread's count
    lazily, on its first query or parallel op, from the process default: the
    query below does that first, so that ``n`` is not overridden later.
    """
    with _lock:
        default = _fresh_thread_default()
        before = torch.get_num_threads()
        if before != n:
            torch.set_num_threads(n)
            _set_process_default(default)
    return before


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads in *this* thread only, for the block.

    The thread's own count and the process-wide default for new threads are
    restored on exit (and the default right away on entry).
    """
    before = _set_this_thread(n)
    try:
        yield
    finally:
        _set_this_thread(before)


def _init_worker() -> None:
    _set_this_thread(1)


def compute_pool() -> ThreadPoolExecutor:
    """The process-wide pool of single-threaded torch workers (one per core)."""
    with _lock:
        pool = _state.get("pool")
        if pool is None:
            pool = ThreadPoolExecutor(
                available_cores(), thread_name_prefix="napari-ntd-compute", initializer=_init_worker
            )
            _state["pool"] = pool
        return pool


def _after_fork_in_child() -> None:  # threads do not survive fork(): the child makes its own
    global _lock
    _lock = threading.Lock()
    _state.pop("pool", None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def in_worker() -> bool:
    """Whether the current thread is one of the compute pool's workers."""
    return threading.current_thread().name.startswith("napari-ntd-compute")


def submit_all(fn: Callable[..., T], jobs: Iterable[tuple]) -> list[Future[T]]:
    """Submit ``fn(*job)`` for every job to the compute pool (run inline in a worker).

    Called from a worker (nested work), the jobs run right there: a worker
    waiting on the pool it belongs to could deadlock it.
    """
    if in_worker():
        futures = []
        for job in jobs:
            f: Future = Future()
            try:
                f.set_result(fn(*job))
            except Exception as err:  # re-raised by .result()
                f.set_exception(err)
            futures.append(f)
        return futures
    pool = compute_pool()
    return [pool.submit(fn, *job) for job in jobs]


def iter_in_pool(gen: Generator[Any, None, T]) -> Generator[Any, None, T]:
    """Run each step of a step generator on a compute worker; forward what it yields.

    The generator's work (between two yields) runs single-threaded on the
    pool, its values reach the caller unchanged; closing the wrapper closes
    ``gen``. Called on a worker, ``gen`` simply runs there.
    """
    if in_worker():
        return (yield from gen)

    def step() -> tuple[bool, Any]:
        try:
            return False, next(gen)
        except StopIteration as stop:
            return True, stop.value

    try:
        while True:
            finished, value = run(step)
            if finished:
                return value
            yield value
    finally:
        gen.close()


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a compute worker, waiting for the result."""
    return submit_all(fn, [args])[0].result()
