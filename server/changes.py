"""``GET /v1/changes/{store}/{version}?partition=P[&from=N][&limit=L][&wait_s=W]``: a page of
one partition's change log, for change capture (docs/clients.md).

Positions are real-time offsets: ``from`` is the next offset the reader wants (entries at
or above it come back, oldest first, at most ``limit``); without ``from`` the answer only
says where the tail is (``next``). With ``wait_s`` an empty page waits (polling LMDB) up
to that long for an entry, and ends early when the version stops consuming real-time
writes or the server drains. A position older than what the log can give without a gap
(entries trimmed, or from before this version started applying real-time writes) is a
410 ``POSITION_EXPIRED``: never a silent skip. The answer is a binary
:class:`venice.protocol.ChangeLogPage`, which also says whether the version still
consumes real-time writes, so a reader knows when a backup's log is exhausted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from urllib.parse import parse_qsl, unquote_to_bytes

from venice.errors import PositionExpiredError, ReplicaNotReadyError, RequestError
from venice.ingestion import HostedVersion, IngestionHost
from venice.protocol import ChangeEntry, ChangeLogPage, encode_changes_response
from venice.schema import parse_integer

__all__ = ["MAX_LIMIT", "MAX_WAIT_S", "ChangesEndpoint"]

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1000
MAX_WAIT_S = 30.0
POLL_S = 0.025
"""How often a waiting page looks at the log again (an LMDB read: microseconds)."""


class ChangesEndpoint:
    def __init__(self, host: IngestionHost, draining: Callable[[], bool] = lambda: False) -> None:
        self.host = host
        self.draining = draining

    async def answer(self, raw_path: bytes, query: bytes) -> bytes:
        store, version = _path(raw_path)
        partition, start, limit, wait_s = _query(query)
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            page = self._page(store, version, partition, start, limit)
            if page.entries or start is None or not page.consuming or self.draining():
                return encode_changes_response(page)
            if asyncio.get_running_loop().time() >= deadline:
                return encode_changes_response(page)
            await asyncio.sleep(POLL_S)

    def _hosted(self, store: str, version: int) -> HostedVersion:
        for hosted in self.host.hosted.values():
            if hosted.assignment.store == store and hosted.assignment.version == version:
                return hosted
        raise ReplicaNotReadyError(f"{store} v{version} is not hosted here")

    def _page(self, store: str, version: int, partition: int, start: int | None, limit: int) -> ChangeLogPage:
        storage = self.host.ready(store, version, partition)  # 503 unless READY here
        hosted = self._hosted(store, version)
        assignment = hosted.assignment
        state = hosted.ingestion.partitions.get(partition)
        next_offset = None if state is None else state.checkpoint.rt_offset
        hybrid = assignment.hybrid is not None
        if not hybrid:
            return ChangeLogPage(consuming=False, hybrid=False, next=None, start=None)
        floor = assignment.rt_start_offsets.get(partition)
        trimmed = storage.changelog_trimmed(partition)
        if trimmed is not None:
            floor = trimmed + 1 if floor is None else max(floor, trimmed + 1)
        consuming = hosted.ingestion.consumes_rt
        if start is None:
            return ChangeLogPage(consuming, True, next_offset, floor)
        if floor is not None and start < floor:
            raise PositionExpiredError(
                f"position {start} of {store} v{version} partition {partition} is older than its change log "
                f"reaches ({floor}): start again from a newer position",
                partition=partition, position=start, oldest=floor,
            )
        changes = storage.changes(partition, after=start - 1, limit=limit)
        entries = tuple(ChangeEntry(c.offset, c.key, c.schema_id, c.value) for c in changes)
        return ChangeLogPage(consuming, True, next_offset, floor, entries)


def _path(raw_path: bytes) -> tuple[str, int]:
    parts = [unquote_to_bytes(p).decode("utf-8", "replace") for p in raw_path[len(b"/v1/changes/") :].split(b"/")]
    if len(parts) != 2:
        raise RequestError("a change-log path is /v1/changes/{store}/{version}")
    try:
        return parts[0], parse_integer(parts[1])
    except ValueError:
        raise RequestError(f"malformed version {parts[1][:40]!r}") from None


def _query(query: bytes) -> tuple[int, int | None, int, float]:
    """``(partition, from, limit, wait_s)``; RequestError naming a bad parameter."""
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    unknown = sorted(set(params) - {"partition", "from", "limit", "wait_s"})
    if unknown:
        raise RequestError(f"unknown parameter {unknown[0][:40]!r}")

    def integer(name: str, low: int, high: int, default: int | None) -> int | None:
        text = params.get(name)
        if text is None:
            return default
        try:
            value = parse_integer(text)
        except ValueError:
            raise RequestError(f"{name} must be an integer, got {text[:40]!r}") from None
        if not low <= value <= high:
            raise RequestError(f"{name} must be in {low}..{high}, got {value}")
        return value

    partition = integer("partition", 0, 1023, None)
    if partition is None:
        raise RequestError("partition is required")
    start = integer("from", 0, (1 << 63) - 1, None)
    limit = integer("limit", 1, MAX_LIMIT, DEFAULT_LIMIT)
    assert limit is not None
    wait_text = params.get("wait_s", "0")
    try:
        wait_s = float(wait_text)
    except ValueError:
        raise RequestError(f"wait_s must be a number of seconds, got {wait_text[:40]!r}") from None
    if not math.isfinite(wait_s) or wait_s < 0:
        raise RequestError(f"wait_s must be a finite number of seconds >= 0, got {wait_text[:40]!r}")
    return partition, start, limit, min(wait_s, MAX_WAIT_S)
