"""release_free_heap: free C-heap pages held after a burst go back to the OS (glibc)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from venice.ingestion.heap import release_free_heap


def _rss_anon_kib() -> int:
    match = re.search(r"RssAnon:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert match is not None
    return int(match.group(1))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_pages_freed_in_the_middle_of_the_heap_are_returned() -> None:
    # 64 MiB in 2 KiB blocks (malloc'd, below the mmap threshold, so on the heap), then all
    # freed but the last: the block on top pins the heap's end, so glibc's own trimming
    # (which only cuts the top) gives nothing back, and the freed pages stay resident.
    blocks = [bytes(2048) for _ in range(32 * 1024)]
    pinned = blocks[-1] + b"x"  # a fresh block above the others
    del blocks
    before = _rss_anon_kib()
    if not release_free_heap():
        pytest.skip("no malloc_trim here (not glibc)")
    after = _rss_anon_kib()
    assert len(pinned) == 2049
    assert before - after >= 32 * 1024, (before, after)  # at least half of the 64 MiB came back


def test_calling_it_again_is_harmless() -> None:
    first = release_free_heap()
    assert release_free_heap() == first
