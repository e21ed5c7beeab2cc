"""Handing the C heap's free memory back to the operating system after an ingestion burst.

Ingesting a push moves megabytes through the C allocator (Kafka fetch buffers, record
bytes, LMDB write batches), much of it in blocks above glibc's mmap threshold, which
glibc raises to the largest block freed so far: later big blocks come from the heap, and
what they leave behind stays in the process when the burst is over. Measured on a
storage server after three pushes of 100k records: 50 MB anonymous resident memory,
41 MB after ``malloc_trim(0)``; nothing of it was in use.

:func:`release_free_heap` asks glibc to return free pages (``malloc_trim(0)``, which
also releases free pages in the middle of the heap). Elsewhere (musl, macOS) it does
nothing. It costs about a millisecond, so it runs when a burst ends, not per batch.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

__all__ = ["release_free_heap"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: libc's where it is glibc
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS; whether the platform could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
