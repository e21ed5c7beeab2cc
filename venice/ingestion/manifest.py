"""The hosting manifest: what a data directory holds, for processes that only read it.

The process that ingests (a storage server, an embedded client) publishes
``DATA_DIR/hosting.json`` whenever the set of hosted store-versions or their ready
partitions changes, replacing it atomically (write a temporary file, rename). Other
processes on the machine open the same LMDB files READ-ONLY and serve from them:
:class:`HostingView` watches the manifest, opens what it lists and answers
:meth:`HostingView.ready` like the ingesting host does. LMDB allows any number of
reader processes beside its one writer; readers never block it, nor each other.

Format (version 1)::

    {"format": 1, "pid": 1234, "versions": [
      {"store": "members", "version": 3, "incarnation": "a1b2c3", "topic": "members_v3",
       "dir": "members_v3-a1b2c3", "partitions_total": 4, "ready": [0, 2],
       "key_schema": "long", "value_schemas": {"1": {...}}}]}

``dir`` is a directory name under ``DATA_DIR/versions`` (one path component). A
manifest that does not parse, or an entry that breaks these rules, is ignored (the
reader keeps what it had) and logged: the file may be hand-edited or torn.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from venice.errors import ReplicaNotReadyError, RequestError, VeniceError
from venice.ingestion.storage import VersionStorage
from venice.protocol import MAX_PARTITIONS

__all__ = ["MANIFEST_NAME", "HostedEntry", "HostingView", "parse_manifest", "render_manifest", "write_manifest"]

log = logging.getLogger("venice.ingestion.manifest")

MANIFEST_NAME = "hosting.json"
VERSIONS_DIR = "versions"
FORMAT = 1
MAX_MANIFEST_BYTES = 64 << 20
_DIR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,299}")
RETIRE_GRACE_S = 5.0
"""How long a reader keeps an environment open after the manifest stopped listing it,
so a read that fetched it just before is never cut short."""


@dataclass(frozen=True, slots=True)
class HostedEntry:
    """One store-version in the manifest."""

    store: str
    version: int
    incarnation: str
    topic: str
    dir: str
    partitions_total: int
    ready: tuple[int, ...]
    key_schema: Any = None
    value_schemas: Mapping[int, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "version": self.version,
            "incarnation": self.incarnation,
            "topic": self.topic,
            "dir": self.dir,
            "partitions_total": self.partitions_total,
            "ready": list(self.ready),
            "key_schema": self.key_schema,
            "value_schemas": {str(k): v for k, v in (self.value_schemas or {}).items()},
        }


def is_dir_name(name: str) -> bool:
    """A safe directory name: one path component, no ``..``, no separators."""
    return bool(_DIR_NAME.fullmatch(name)) and ".." not in name


def render_manifest(entries: list[HostedEntry]) -> bytes:
    body = {"format": FORMAT, "pid": os.getpid(), "versions": [e.to_json() for e in entries]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def write_manifest(data_dir: Path, content: bytes) -> None:
    """Replace the manifest atomically: readers see the old one or the new one, never a mix."""
    path = data_dir / MANIFEST_NAME
    tmp = path.with_name(f".{MANIFEST_NAME}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def _entry(raw: Any, where: str) -> HostedEntry:
    if not isinstance(raw, dict):
        raise RequestError(f"{where}: not an object")

    def text(name: str, limit: int = 255) -> str:
        value = raw.get(name)
        if not isinstance(value, str) or len(value) > limit:
            raise RequestError(f"{where}.{name}: not a string of at most {limit} characters")
        return value

    def number(name: str, low: int, high: int) -> int:
        value = raw.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise RequestError(f"{where}.{name}: not an integer in {low}..{high}")
        return value

    total = number("partitions_total", 1, MAX_PARTITIONS)
    ready = raw.get("ready")
    if not isinstance(ready, list) or len(ready) > total:
        raise RequestError(f"{where}.ready: not a list of partitions")
    for p in ready:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < total:
            raise RequestError(f"{where}.ready: {p!r} is not a partition of {total}")
    directory = text("dir", 300)
    if not is_dir_name(directory):
        raise RequestError(f"{where}.dir: {directory[:100]!r} is not a directory name")
    schemas = raw.get("value_schemas")
    if schemas is not None and not isinstance(schemas, dict):
        raise RequestError(f"{where}.value_schemas: not an object")
    value_schemas: dict[int, Any] = {}
    for sid, schema in (schemas or {}).items():
        if not sid.isascii() or not sid.isdigit() or len(sid) > 9:
            raise RequestError(f"{where}.value_schemas: {sid[:20]!r} is not a schema id")
        value_schemas[int(sid)] = schema
    return HostedEntry(
        store=text("store"),
        version=number("version", 1, 1 << 62),
        incarnation=text("incarnation", 64),
        topic=text("topic"),
        dir=directory,
        partitions_total=total,
        ready=tuple(sorted(set(ready))),
        key_schema=raw.get("key_schema"),
        value_schemas=value_schemas,
    )


def parse_manifest(content: bytes) -> list[HostedEntry]:
    """The entries of a manifest; :class:`RequestError` naming what is wrong."""
    if len(content) > MAX_MANIFEST_BYTES:
        raise RequestError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"manifest is not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise RequestError(f"manifest is not format {FORMAT}")
    versions = body.get("versions")
    if not isinstance(versions, list):
        raise RequestError("manifest.versions: not a list")
    entries = [_entry(raw, f"versions[{i}]") for i, raw in enumerate(versions)]
    keys = [(e.store, e.version) for e in entries]
    if len(set(keys)) != len(keys):
        raise RequestError("manifest lists a store-version twice")
    return entries


class HostingView:
    """Read-only access to the store-versions another process ingests into ``data_dir``.

    ``ready(store, version, partition)`` is a dictionary lookup; the manifest is checked
    by :meth:`refresh`, which a background thread calls every ``poll_s`` seconds (pass
    ``poll_s=None`` to call it yourself). Environments the manifest stops listing are
    closed :data:`RETIRE_GRACE_S` later.
    """

    def __init__(self, data_dir: Path, *, poll_s: float | None = 0.1) -> None:
        self.data_dir = Path(data_dir)
        self.entries: dict[tuple[str, int], HostedEntry] = {}
        self._open: dict[str, VersionStorage] = {}
        self._ready: dict[tuple[str, int, int], VersionStorage] = {}
        self._retiring: list[tuple[float, VersionStorage]] = []
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if poll_s is not None:
            self._thread = threading.Thread(target=self._poll, args=(poll_s,), name="hosting-view", daemon=True)
            self._thread.start()

    def ready(self, store: str, version: int, partition: int) -> VersionStorage:
        storage = self._ready.get((store, version, partition))
        if storage is None:
            raise ReplicaNotReadyError(f"{self.data_dir} does not hold {store} v{version} partition {partition} ready")
        return storage

    @property
    def ready_set(self) -> object:
        """The current ready set, as an object replaced (never changed in place) on every
        reload: a reader cache keyed on it is right while it is the same object."""
        return self._ready

    def versions(self) -> list[HostedEntry]:
        return list(self.entries.values())

    def storages(self) -> list[tuple[str, int, VersionStorage]]:
        """``(store, version, storage)`` of every store-version the manifest lists now."""
        opened = self._open
        return [(e.store, e.version, opened[e.dir]) for e in list(self.entries.values()) if e.dir in opened]

    def refresh(self) -> bool:
        """Re-read the manifest if it changed; True when it did (and parsed)."""
        with self._lock:
            self._close_retired()
            path = self.data_dir / MANIFEST_NAME
            try:
                stat = path.stat()
            except FileNotFoundError:
                seen = None
            else:
                seen = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if seen == self._seen:
                return False
            self._seen = seen
            try:
                entries = parse_manifest(path.read_bytes()) if seen is not None else []
            except (OSError, VeniceError) as exc:
                log.warning("ignoring %s: %s", path, exc)
                return False
            self._load(entries)
            return True

    def _load(self, entries: list[HostedEntry]) -> None:
        ready: dict[tuple[str, int, int], VersionStorage] = {}
        opened: dict[str, VersionStorage] = {}
        for entry in entries:
            storage = self._open.get(entry.dir)
            try:
                if storage is None:
                    storage = VersionStorage(
                        self.data_dir / VERSIONS_DIR / entry.dir, entry.partitions_total, (), readonly=True
                    )
                storage.open_partitions(entry.ready)
            except VeniceError as exc:
                log.warning("cannot open %s read-only: %s", entry.dir, exc)
                continue
            opened[entry.dir] = storage
            for partition in entry.ready:
                ready[(entry.store, entry.version, partition)] = storage
        now = time.monotonic()
        for name, storage in self._open.items():
            if name not in opened:
                self._retiring.append((now + RETIRE_GRACE_S, storage))
        self._open = opened
        self._ready = ready
        self.entries = {(e.store, e.version): e for e in entries if e.dir in opened}

    def _close_retired(self, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for deadline, storage in self._retiring:
            if force or deadline <= now:
                storage.close()
            else:
                keep.append((deadline, storage))
        self._retiring = keep

    def _poll(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.refresh()
            except Exception:
                log.exception("hosting view refresh failed")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._ready = {}
            for storage in self._open.values():
                storage.close()
            self._open = {}
            self._close_retired(force=True)

    def __enter__(self) -> HostingView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
