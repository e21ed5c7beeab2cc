"""The one thread that runs a host's LMDB writes.

LMDB allows one write transaction per environment at a time and a commit may wait on
the disk; reads never block. So writes (and the record decisions made inside their
transactions) run on this thread, in submission order, and the event loop that serves
reads only awaits them. Submission order is also what makes teardown safe: once a
no-op submitted after the last write of a version has run, nothing touches its files.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Writer"]

T = TypeVar("T")


def _nothing() -> None:
    return None


class Writer:
    """Runs callables on one dedicated thread, first in, first out."""

    def __init__(self, name: str = "lmdb-writer") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the writer thread and return its result.

        Cancelling the caller cancels a job that has not started; a started one finishes.
        """
        call = functools.partial(fn, *args, **kwargs) if kwargs else (lambda: fn(*args))
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def barrier(self) -> None:
        """Return once every job submitted before this call has finished."""
        await self.run(_nothing)

    def close(self) -> None:
        """Finish queued jobs and stop the thread."""
        self._pool.shutdown(wait=True)
