"""Read counts of a storage server's read workers, for the ingesting process's ``/metrics``.

A read worker (server/readworker.py) answers reads the ingesting process never sees, so
its counts cannot come from that process's memory. Each worker counts like the
ingesting process does (attribute increments on the read-only ``VersionStorage`` it
reads from, refusals into a bounded :class:`venice.metrics.Counter`) and every
:data:`PUBLISH_INTERVAL_S` writes what it counted to ``{data_dir}/read-counts/{pid}.json``
(a whole new file, renamed into place: a reader never sees half of one). The ingesting
process adds the files up when it is scraped, for the store-versions it hosts, so a
scrape lags the workers' reads by at most that interval. The ingesting process empties
the directory before it starts its workers; a worker's file stays when it stops (its
reads were served).

File: ``{"reads": [[store, version, hits, misses, batches, batch_keys], ...],
"refused": [[store, version, kind, code, count], ...]}`` (``store``/``version`` of a
refusal are ``_other`` unless the worker holds that store-version).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["COUNTS_DIR", "PUBLISH_INTERVAL_S", "WorkerCounts", "clear", "read_all", "write"]

COUNTS_DIR = "read-counts"
PUBLISH_INTERVAL_S = 1.0
_MAX_FILE_BYTES = 4 * 1024 * 1024
"""A file larger than this is not ours (1,000 refusal series and hosted versions are far less)."""

log = logging.getLogger("venice.server")


class WorkerCounts:
    """What one worker file says, checked."""

    __slots__ = ("reads", "refused")

    def __init__(self) -> None:
        self.reads: dict[tuple[str, int], tuple[int, int, int, int]] = {}
        self.refused: dict[tuple[str, str, str, str], int] = {}


def clear(data_dir: Path) -> None:
    """Remove earlier workers' files (before starting new workers)."""
    shutil.rmtree(data_dir / COUNTS_DIR, ignore_errors=True)


def write(data_dir: Path, pid: int, reads: list[list[Any]], refused: list[list[Any]]) -> None:
    folder = data_dir / COUNTS_DIR
    folder.mkdir(exist_ok=True)
    final = folder / f"{pid}.json"
    temporary = folder / f".{pid}.json.tmp"
    temporary.write_bytes(orjson.dumps({"reads": reads, "refused": refused}))
    os.replace(temporary, final)


def read_all(data_dir: Path) -> Iterator[WorkerCounts]:
    """Every worker file that parses; others are skipped (and logged)."""
    folder = data_dir / COUNTS_DIR
    try:
        paths = sorted(folder.glob("*.json"))
    except OSError:
        return
    for path in paths:
        try:
            if path.stat().st_size > _MAX_FILE_BYTES:
                raise ValueError("too large")
            yield _parse(orjson.loads(path.read_bytes()))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
            log.warning("ignoring read counts %s: %s", path, exc)


def _count(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def _text(value: Any) -> str:
    if type(value) is not str or len(value) > 255:
        raise ValueError(f"not a label: {value!r}")
    return value


def _parse(raw: Any) -> WorkerCounts:
    if type(raw) is not dict or type(raw.get("reads")) is not list or type(raw.get("refused")) is not list:
        raise ValueError("not a read-counts object")
    counts = WorkerCounts()
    for row in raw["reads"]:
        if type(row) is not list or len(row) != 6:
            raise ValueError(f"bad reads row {row!r}")
        store, version = _text(row[0]), _count(row[1])
        counts.reads[(store, version)] = (_count(row[2]), _count(row[3]), _count(row[4]), _count(row[5]))
    for row in raw["refused"]:
        if type(row) is not list or len(row) != 5:
            raise ValueError(f"bad refused row {row!r}")
        counts.refused[(_text(row[0]), _text(row[1]), _text(row[2]), _text(row[3]))] = _count(row[4])
    return counts
