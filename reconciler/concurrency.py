"""Work of one flow run on a few threads: a backup's parts, a restore's artifacts.

The work waits on other processes (restic, the engine, the database server),
so threads are enough. Every task ends before the first failure is raised:
nothing is still writing when an error is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")
T = TypeVar("T")


def concurrently(tasks: list[Callable[[], T]], *, workers: int, name: str) -> list[T]:
    """Run ``tasks`` on ``workers`` threads named ``name``; results in task order."""
    if len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        futures = [pool.submit(task) for task in tasks]
        wait(futures)
    _raise_first_failure(futures)
    return [future.result() for future in futures]


def both(first: Callable[[], A], second: Callable[[], B], *, name: str) -> tuple[A, B]:
    """Run ``first`` and ``second`` at once; both results, or the first failure (in that order)."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=name) as pool:
        one, two = pool.submit(first), pool.submit(second)
        futures: list[Future[Any]] = [one, two]
        wait(futures)
    _raise_first_failure(futures)
    return one.result(), two.result()


def _raise_first_failure(futures: Sequence[Future[Any]]) -> None:
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
