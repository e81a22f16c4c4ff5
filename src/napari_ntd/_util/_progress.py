"""Progress reporting for long runs: a callback, a tqdm bar, or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import Any

__all__ = ["counted", "make_reporter", "nested_progress", "run_to_end", "shifted"]


def run_to_end(gen: Generator[Any, None, Any], on_step: Callable[[Any], Any] | None = None) -> Any:
    """Drive a step generator to its end and return its value.

    ``on_step`` (optional) receives every yielded item, e.g. ``(done, total)``.
    """
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_step is not None:
            on_step(item)


@contextlib.contextmanager
def make_reporter(
    progress: bool | Callable[[int, int], Any] | None,
) -> Iterator[Callable[[int, int], None]]:
    """Turn the ``progress`` argument into a ``report(done, total)`` callable.

    ``None``/``False``: silent. ``True``: a tqdm bar on stderr (closed on
    exit). A callable: called as ``progress(done, total)``.
    """
    if progress is None or progress is False:
        yield lambda done, total: None
    elif progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=1, desc="denoise_ntd", unit="step")
        try:

            def report(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            yield report
        finally:
            bar.close()
    elif callable(progress):
        yield lambda done, total: progress(done, total)
    else:
        raise TypeError(f"progress must be None, a bool or a callable, got {progress!r}")


def counted(gen: Generator[None, None, Any], counter: list[int], total: int):
    """Forward a stage generator's unit steps as ``(done, total)`` progress."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
        counter[0] += 1
        yield (counter[0], total)


def shifted(gen: Generator, offset: int):
    """Forward ``(done, total)`` steps of ``gen`` after ``offset`` earlier ones."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield (offset + done, offset + total)


def nested_progress(gen: Generator, index: int, count: int):
    """Run the ``index``-th of ``count`` equal sub-jobs, rescaling its progress."""
    while True:
        try:
            done, total = next(gen)
        except StopIteration as stop:
            return stop.value
        yield (index * total + done, count * total)
