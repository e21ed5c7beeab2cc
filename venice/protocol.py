"""What the parts of the platform say to each other, typed once for both sides.

* Enums: :class:`ReplicaStatus`, :class:`VersionStatus`.
* Storage-server read paths and headers: :func:`replica_get_path`,
  :func:`replica_batch_path`, :data:`SCHEMA_ID_HEADER`, key encoding in paths.
* Batch frames (binary; see :func:`encode_batch_request`), read-compute requests
  (:func:`encode_compute_request`) and change-log pages (:class:`ChangeLogPage`).
* Payloads between servers and the controller (:class:`Heartbeat`,
  :class:`ReplicaReport`, :class:`HeartbeatAnswer`, :class:`Assignment`) and the routing
  table routers and clients read (:class:`RoutingTable`, :class:`StoreRouting`), and the
  controller's store description as embedded clients read it (:class:`StoreDescription`).

Every payload is a frozen dataclass with ``to_json()`` (plain JSON-able dicts, the
shape documented in docs/api.md) and ``from_json()``, which checks types and bounds and
raises :class:`venice.errors.RequestError` naming the offending field: a malformed
heartbeat is a 400, never a crash of whoever reads it. The module does no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar
from urllib.parse import quote

from venice.errors import RequestError, UnavailableError

__all__ = [
    "BATCH_FRAME_BYTES",
    "COMPUTE_FOUND",
    "DELETED_SCHEMA_ID",
    "MAX_PARTITIONS",
    "MAX_REASON_CHARS",
    "MISSING_SCHEMA_ID",
    "SCHEMA_ID_HEADER",
    "Assignment",
    "ChangeEntry",
    "ChangeLogPage",
    "Heartbeat",
    "HeartbeatAnswer",
    "Hit",
    "HybridConfig",
    "ReplicaReport",
    "ReplicaStatus",
    "RoutingTable",
    "StoreDescription",
    "StoreRouting",
    "VersionDescription",
    "VersionStatus",
    "b64url_decode",
    "decode_batch_request",
    "decode_batch_response",
    "decode_changes_response",
    "decode_compute_request",
    "decode_key_segment",
    "encode_batch_request",
    "encode_batch_response",
    "encode_changes_response",
    "encode_compute_request",
    "encode_key_segment",
    "replica_batch_path",
    "replica_changes_path",
    "replica_compute_path",
    "replica_get_path",
]

MAX_PARTITIONS = 1024
_MAX_ID = 1 << 62
"""Upper bound for counts, offsets and version numbers in payloads (fits every int type we use)."""
_MAX_TEXT = 4096
MAX_REASON_CHARS = 2000
"""Reasons (free text from a server) are cut to this many characters."""
_BASE_URL = re.compile(r"https?://[^\s/?#@]{1,2040}")
"""Where a server is reached: scheme, host and port, nothing else (it is joined with paths)."""


class ReplicaStatus(str, Enum):
    """State of one replica (a partition of a store-version on one server)."""

    STARTED = "STARTED"
    """Ingesting; not served."""
    READY = "READY"
    """Applied end-of-push (and, for hybrid stores, caught up with the real-time topic); served."""
    ERROR = "ERROR"
    """Failed; ``reason`` says why."""


class VersionStatus(str, Enum):
    """State of a store-version (see docs/lifecycle.md)."""

    STARTED = "STARTED"
    ONLINE = "ONLINE"
    ERROR = "ERROR"
    KILLED = "KILLED"
    RETIRED = "RETIRED"


# -- storage-server read paths ---------------------------------------------------------

SCHEMA_ID_HEADER = "x-venice-schema-id"
"""Header of a storage server's single-key answer: the value schema id of the body."""


def encode_key_segment(key: bytes) -> str:
    """Serialized key bytes as one URL path segment: base64url without padding."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


_FROM_BASE64URL = bytes.maketrans(b"-_+/", b"+/!!")
"""base64url's two letters to standard base64's; standard base64's own two become invalid."""


def b64url_decode(raw: bytes) -> bytes:
    """Unpadded base64url, strictly: any byte outside its alphabet is a ``binascii.Error``
    (the standard library's decoder skips such bytes, so ``!!!`` would be an empty key)."""
    return binascii.a2b_base64(raw.translate(_FROM_BASE64URL) + b"=" * (-len(raw) % 4), strict_mode=True)


def decode_key_segment(text: str | bytes) -> bytes:
    """Inverse of :func:`encode_key_segment`; RequestError when it is not base64url."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    try:
        return b64url_decode(raw)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"key segment is not base64url: {exc}") from None


def replica_get_path(store: str, version: int, partition: int, key: bytes) -> str:
    """``/v1/{store}/{version}/{partition}/{key}``: one key from a storage server."""
    return f"/v1/{quote(store, safe='')}/{version}/{partition}/{encode_key_segment(key)}"


def replica_batch_path(store: str, version: int) -> str:
    """``/v1/batch/{store}/{version}``: many keys from a storage server (binary frames)."""
    return f"/v1/batch/{quote(store, safe='')}/{version}"


def replica_compute_path(store: str, version: int) -> str:
    """``/v1/compute/{store}/{version}``: read compute on a storage server (:func:`encode_compute_request`)."""
    return f"/v1/compute/{quote(store, safe='')}/{version}"


def replica_changes_path(
    store: str, version: int, partition: int, start: int | None = None, *, limit: int = 1000, wait_s: float = 0.0
) -> str:
    """``/v1/changes/{store}/{version}?partition=P[&from=N]&limit=L&wait_s=W``: a page of a
    partition's change log from position ``start`` (``None``: the tail's position only),
    waiting up to ``wait_s`` for an entry (answer :class:`ChangeLogPage`)."""
    query = f"partition={partition}&limit={limit}&wait_s={wait_s:g}"
    if start is not None:
        query += f"&from={start}"
    return f"/v1/changes/{quote(store, safe='')}/{version}?{query}"


# -- batch frames -------------------------------------------------------------------------
# Request: per key ``u32 partition, u32 key length, key bytes``. Answer: per key, in the
# same order, ``i32 schema id (-1 = missing), u32 length, value bytes``. All big-endian.
# Binary because a batch may carry thousands of keys and JSON would force base64 of
# every key and value.

MISSING_SCHEMA_ID = -1
_REQUEST_HEAD = struct.Struct(">II")
_ANSWER_HEAD = struct.Struct(">iI")
_MISSING_FRAME = _ANSWER_HEAD.pack(MISSING_SCHEMA_ID, 0)
BATCH_FRAME_BYTES = _ANSWER_HEAD.size
"""Bytes of framing per key in a batch (or compute) answer, besides the value."""

Hit = tuple[int, bytes]
"""``(value schema id, value bytes)`` of a found key."""


def encode_batch_request(items: Iterable[tuple[int, bytes]]) -> bytes:
    """Frames for ``(partition, key bytes)`` pairs."""
    parts: list[bytes] = []
    for partition, key in items:
        parts.append(_REQUEST_HEAD.pack(partition, len(key)))
        parts.append(key)
    return b"".join(parts)


def decode_batch_request(body: bytes) -> list[tuple[int, bytes]]:
    """``(partition, key bytes)`` pairs of a batch request; RequestError when malformed."""
    items: list[tuple[int, bytes]] = []
    pos, size, head = 0, len(body), _REQUEST_HEAD.size
    unpack = _REQUEST_HEAD.unpack_from
    while pos < size:
        if pos + head > size:
            raise RequestError(f"malformed batch body: {size - pos} trailing byte(s) are not a frame")
        partition, length = unpack(body, pos)
        pos += head
        if pos + length > size:
            raise RequestError(f"malformed batch body: key of {length} bytes runs past the end")
        items.append((partition, body[pos : pos + length]))
        pos += length
    return items


def encode_batch_response(hits: Iterable[Hit | None]) -> bytes:
    """Answer frames, one per requested key, in request order."""
    parts: list[bytes] = []
    append = parts.append
    pack = _ANSWER_HEAD.pack
    for hit in hits:
        if hit is None:
            append(_MISSING_FRAME)
        else:
            append(pack(hit[0], len(hit[1])))
            append(hit[1])
    return b"".join(parts)


def decode_batch_response(body: bytes, count: int) -> list[Hit | None]:
    """One entry per requested key: its hit, or ``None`` when missing.

    A truncated or overlong body means a broken replica, so it raises a retriable
    UnavailableError and the caller reads the keys elsewhere.
    """
    results: list[Hit | None] = []
    append = results.append
    unpack = _ANSWER_HEAD.unpack_from
    offset, size = 0, len(body)
    head = _ANSWER_HEAD.size
    for index in range(count):
        end = offset + head
        if end > size:
            raise UnavailableError(f"batch answer truncated after {index} of {count} keys")
        schema_id, length = unpack(body, offset)
        offset = end + length
        if offset > size:
            raise UnavailableError(f"batch answer truncated inside key {index} of {count}")
        append(None if schema_id == MISSING_SCHEMA_ID else (schema_id, body[end:offset]))
    if offset != size:
        raise UnavailableError(f"batch answer has {size - offset} unexpected trailing bytes")
    return results


# -- read compute ---------------------------------------------------------------------------
# Request: ``u32 spec length, spec (JSON: the compute spec without keys), batch request
# frames``. Answer: batch answer frames, one per key in order, whose schema-id slot is
# :data:`COMPUTE_FOUND` (the bytes are the key's result as a JSON object) or
# :data:`MISSING_SCHEMA_ID`.

COMPUTE_FOUND = 1
MAX_COMPUTE_SPEC_BYTES = 4 << 20
_SPEC_HEAD = struct.Struct(">I")


def encode_compute_request(spec_json: bytes, items: Iterable[tuple[int, bytes]]) -> bytes:
    """A read-compute request: the spec (JSON bytes), then ``(partition, key bytes)`` frames."""
    return _SPEC_HEAD.pack(len(spec_json)) + spec_json + encode_batch_request(items)


def decode_compute_request(body: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
    """``(spec JSON bytes, items)``; RequestError when malformed."""
    if len(body) < _SPEC_HEAD.size:
        raise RequestError("malformed compute body: no spec length")
    (length,) = _SPEC_HEAD.unpack_from(body)
    if length > MAX_COMPUTE_SPEC_BYTES or _SPEC_HEAD.size + length > len(body):
        raise RequestError(f"malformed compute body: a spec of {length} bytes does not fit")
    end = _SPEC_HEAD.size + length
    return body[_SPEC_HEAD.size : end], decode_batch_request(body[end:])


# -- change-log pages ---------------------------------------------------------------------------
# ``u8 flags (1 = consuming real-time writes, 2 = hybrid version), i64 next, i64 start,
# u32 count``, then per entry ``i64 offset, i32 schema id (-1 = deleted), u32 key length,
# u32 value length, key, value``. Positions are real-time offsets (see docs/clients.md).

_PAGE_HEAD = struct.Struct(">BqqI")
_ENTRY_HEAD = struct.Struct(">qiII")
DELETED_SCHEMA_ID = -1


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One change-log entry: the value of ``key`` after the real-time record at ``offset``."""

    offset: int
    key: bytes
    schema_id: int
    """:data:`DELETED_SCHEMA_ID` when the record deleted the key."""
    value: bytes


@dataclass(frozen=True, slots=True)
class ChangeLogPage:
    """A storage server's answer to ``GET /v1/changes/...``."""

    consuming: bool
    """The version still applies real-time writes (a backup does not: once read past,
    its log is exhausted)."""
    hybrid: bool
    """The version has a real-time topic at all (batch-only versions have no change log)."""
    next: int | None
    """The next real-time offset the version will apply (``None`` before end-of-push): the
    position of the tail."""
    start: int | None
    """The lowest position readable without a gap (older entries were trimmed, or the
    version started consuming later); ``None`` when unknown."""
    entries: tuple[ChangeEntry, ...] = ()


def encode_changes_response(page: ChangeLogPage) -> bytes:
    flags = (1 if page.consuming else 0) | (2 if page.hybrid else 0)
    parts = [_PAGE_HEAD.pack(flags, -1 if page.next is None else page.next, -1 if page.start is None else page.start, len(page.entries))]
    for entry in page.entries:
        parts.append(_ENTRY_HEAD.pack(entry.offset, entry.schema_id, len(entry.key), len(entry.value)))
        parts.append(entry.key)
        parts.append(entry.value)
    return b"".join(parts)


def decode_changes_response(body: bytes) -> ChangeLogPage:
    """The page; a malformed body is a broken replica: a retriable UnavailableError."""
    size = len(body)
    if size < _PAGE_HEAD.size:
        raise UnavailableError("change-log answer shorter than its header")
    flags, next_offset, start, count = _PAGE_HEAD.unpack_from(body)
    pos = _PAGE_HEAD.size
    entries: list[ChangeEntry] = []
    for index in range(count):
        if pos + _ENTRY_HEAD.size > size:
            raise UnavailableError(f"change-log answer truncated at entry {index} of {count}")
        offset, schema_id, key_len, value_len = _ENTRY_HEAD.unpack_from(body, pos)
        pos += _ENTRY_HEAD.size
        end = pos + key_len + value_len
        if end > size:
            raise UnavailableError(f"change-log answer truncated inside entry {index} of {count}")
        entries.append(ChangeEntry(offset, body[pos : pos + key_len], schema_id, body[pos + key_len : end]))
        pos = end
    if pos != size:
        raise UnavailableError(f"change-log answer has {size - pos} unexpected trailing bytes")
    return ChangeLogPage(
        consuming=bool(flags & 1),
        hybrid=bool(flags & 2),
        next=None if next_offset < 0 else next_offset,
        start=None if start < 0 else start,
        entries=tuple(entries),
    )


# -- JSON payload checking ---------------------------------------------------------------

_E = TypeVar("_E", bound=Enum)


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RequestError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _int(obj: Mapping[str, Any], name: str, where: str, *, low: int = 0, high: int = _MAX_ID, default: int | None = None) -> int:
    value = obj.get(name, default)
    if value is None and default is None and name not in obj:
        raise RequestError(f"{where}.{name}: missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{where}.{name}: expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise RequestError(f"{where}.{name}: {value} is outside {low}..{high}")
    return value


def _opt_int(obj: Mapping[str, Any], name: str, where: str, *, low: int = 0, high: int = _MAX_ID) -> int | None:
    if obj.get(name) is None:
        return None
    return _int(obj, name, where, low=low, high=high)


def _str(obj: Mapping[str, Any], name: str, where: str, *, max_len: int = _MAX_TEXT, default: str | None = None) -> str:
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise RequestError(f"{where}.{name}: expected a string, got {type(value).__name__}")
    if len(value) > max_len:
        raise RequestError(f"{where}.{name}: longer than {max_len} characters")
    return value


def _opt_str(obj: Mapping[str, Any], name: str, where: str, *, max_len: int = _MAX_TEXT) -> str | None:
    if obj.get(name) is None:
        return None
    return _str(obj, name, where, max_len=max_len)


def _clipped(obj: Mapping[str, Any], name: str, where: str, *, max_len: int = MAX_REASON_CHARS) -> str | None:
    """Free text (a failure's reason) kept, but never longer than fits in a log line: a
    server whose error message is long must still be heard."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{where}.{name}: expected a string, got {type(value).__name__}")
    return value[:max_len]


def _bool(obj: Mapping[str, Any], name: str, where: str, default: bool = False) -> bool:
    value = obj.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(f"{where}.{name}: expected true or false, got {type(value).__name__}")
    return value


def _enum(obj: Mapping[str, Any], name: str, where: str, kind: type[_E]) -> _E:
    value = obj.get(name)
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        raise RequestError(f"{where}.{name}: {value!r} is not one of {choices}") from None


def _list(value: Any, where: str, *, max_len: int = 1_000_000) -> Sequence[Any]:
    if not isinstance(value, list):
        raise RequestError(f"{where}: expected a JSON array, got {type(value).__name__}")
    if len(value) > max_len:
        raise RequestError(f"{where}: more than {max_len} entries")
    return value


def is_base_url(url: str) -> bool:
    """``http(s)://HOST[:PORT]`` and nothing more (what servers and routers are reached at)."""
    return _BASE_URL.fullmatch(url) is not None


def _url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")) or len(value) > 2048:
        raise RequestError(f"{where}: {str(value)[:100]!r} is not an http(s) URL")
    return value.rstrip("/")


def _schemas(value: Any, where: str) -> dict[int, Any]:
    """``{"1": schema, ...}`` -> ``{1: schema}``; the schemas themselves are checked by their codecs."""
    obj = _object(value, where)
    out: dict[int, Any] = {}
    for sid, schema in obj.items():
        number = _id_key(sid, where)
        if number < 1:
            raise RequestError(f"{where}: schema ids start at 1, got {sid!r}")
        out[number] = schema
    if not out:
        raise RequestError(f"{where}: no schema")
    return out


def _id_key(text: Any, where: str) -> int:
    """A JSON object key naming a number (ASCII digits only)."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > 18:
        raise RequestError(f"{where}: key {text!r} is not a non-negative integer")
    return int(text)


# -- servers <-> controller --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """The state of one replica, as its server reports it in every heartbeat."""

    store: str
    version: int
    partition: int
    status: ReplicaStatus
    offset: int = 0
    """Next version-topic offset to apply."""
    records: int = 0
    """Data records applied since start-of-push."""
    reason: str | None = None
    """Why the replica is in ERROR."""
    rt_offset: int | None = None
    """Hybrid stores: next real-time-topic offset to apply (``None`` before end-of-push)."""
    rt_lag: int | None = None
    """Hybrid stores: real-time records not applied yet."""
    skipped: int = 0
    """Records skipped as unreadable (poison pills): unknown schema, bad bytes, wrong partition."""
    incarnation: str | None = None
    """The store incarnation this copy belongs to (the controller ignores a report of another)."""
    rt_lost: int = 0
    """Hybrid stores: real-time records this copy never applied because retention had
    deleted them when it came to read them (a rewind, or a paused backup, reaching past
    retention)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "store": self.store,
            "version": self.version,
            "partition": self.partition,
            "status": self.status.value,
            "offset": self.offset,
            "records": self.records,
            "reason": self.reason,
        }
        if self.rt_offset is not None:
            out["rt_offset"] = self.rt_offset
        if self.rt_lag is not None:
            out["rt_lag"] = self.rt_lag
        if self.skipped:
            out["skipped"] = self.skipped
        if self.rt_lost:
            out["rt_lost"] = self.rt_lost
        if self.incarnation is not None:
            out["incarnation"] = self.incarnation
        return out

    @classmethod
    def from_json(cls, value: Any, where: str = "replica") -> ReplicaReport:
        obj = _object(value, where)
        return cls(
            store=_str(obj, "store", where, max_len=255),
            version=_int(obj, "version", where, low=1),
            partition=_int(obj, "partition", where, high=MAX_PARTITIONS - 1),
            status=_enum(obj, "status", where, ReplicaStatus),
            offset=_int(obj, "offset", where, default=0),
            records=_int(obj, "records", where, default=0),
            reason=_clipped(obj, "reason", where),
            rt_offset=_opt_int(obj, "rt_offset", where),
            rt_lag=_opt_int(obj, "rt_lag", where),
            skipped=_int(obj, "skipped", where, default=0),
            incarnation=_opt_str(obj, "incarnation", where, max_len=64),
            rt_lost=_int(obj, "rt_lost", where, default=0),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``POST /servers/{id}/heartbeat``: a server's address and the full state of its replicas."""

    url: str
    replicas: tuple[ReplicaReport, ...] = ()
    draining: bool = False
    """Shutting down: route no reads here, place no new replicas here."""

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "replicas": [r.to_json() for r in self.replicas], "draining": self.draining}

    @classmethod
    def from_json(cls, value: Any) -> Heartbeat:
        obj = _object(value, "heartbeat")
        url = _str(obj, "url", "heartbeat", max_len=2048)
        if not _BASE_URL.fullmatch(url):
            raise RequestError(f"heartbeat.url: {url[:100]!r} is not a base URL http(s)://HOST[:PORT]")
        replicas = _list(obj.get("replicas", []), "heartbeat.replicas", max_len=100_000)
        return cls(
            url=url,
            replicas=tuple(ReplicaReport.from_json(r, f"heartbeat.replicas[{i}]") for i, r in enumerate(replicas)),
            draining=_bool(obj, "draining", "heartbeat"),
        )


@dataclass(frozen=True, slots=True)
class HybridConfig:
    """A hybrid store's real-time settings (docs/hybrid.md)."""

    rewind_seconds: int
    """A new version replays real-time writes from this long before its push started."""
    offset_lag: int
    """A replica is ready once fewer real-time records than this are left to apply."""
    real_time_topic: str
    """``<store>_rt``."""

    def to_json(self) -> dict[str, Any]:
        return {"rewind_seconds": self.rewind_seconds, "offset_lag": self.offset_lag, "real_time_topic": self.real_time_topic}

    @classmethod
    def from_json(cls, value: Any, where: str = "hybrid") -> HybridConfig:
        obj = _object(value, where)
        return cls(
            rewind_seconds=_int(obj, "rewind_seconds", where),
            offset_lag=_int(obj, "offset_lag", where),
            real_time_topic=_str(obj, "real_time_topic", where, max_len=255),
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    """One store-version a server must host, with what it needs to ingest it."""

    store: str
    version: int
    topic: str
    partitions_total: int
    partitions: tuple[int, ...]
    key_schema: Any
    value_schemas: Mapping[int, Any]
    incarnation: str = ""
    """Changes when a store is deleted and created again: data of another incarnation is never reused."""
    hybrid: HybridConfig | None = None
    rt_start_offsets: Mapping[int, int] = field(default_factory=dict)
    """Hybrid stores: per partition, the real-time offset this version starts from after end-of-push."""
    consume_rt: bool = False
    """Hybrid stores: whether this version applies real-time writes now (current and future
    versions do; backups do not)."""
    rt_epoch: int = 0
    """Hybrid stores: which incarnation of the real-time topic ``rt_start_offsets`` are
    offsets of. It grows whenever the controller makes the store a new real-time topic
    under the same name (made batch-only and hybrid again, or its topic found missing);
    a replica whose real-time checkpoint is of another epoch starts over at these start
    offsets instead of resuming at an offset of a topic that is gone."""
    private: bool = False
    """The store's reads need a token or the cluster secret (docs/security.md)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "store": self.store,
            "version": self.version,
            "topic": self.topic,
            "incarnation": self.incarnation,
            "partitions_total": self.partitions_total,
            "partitions": list(self.partitions),
            "key_schema": self.key_schema,
            "value_schemas": {str(k): v for k, v in self.value_schemas.items()},
        }
        if self.hybrid is not None:
            out["hybrid"] = self.hybrid.to_json()
            out["rt_start_offsets"] = {str(p): o for p, o in self.rt_start_offsets.items()}
            out["consume_rt"] = self.consume_rt
            out["rt_epoch"] = self.rt_epoch
        if self.private:
            out["private"] = True
        return out

    @classmethod
    def from_json(cls, value: Any, where: str = "assignment") -> Assignment:
        obj = _object(value, where)
        total = _int(obj, "partitions_total", where, low=1, high=MAX_PARTITIONS)
        partitions = tuple(sorted({_int({"p": p}, "p", f"{where}.partitions", high=total - 1) for p in _list(obj.get("partitions"), f"{where}.partitions")}))
        hybrid_raw = obj.get("hybrid")
        starts = _object(obj.get("rt_start_offsets") or {}, f"{where}.rt_start_offsets")
        return cls(
            store=_str(obj, "store", where, max_len=255),
            version=_int(obj, "version", where, low=1),
            topic=_str(obj, "topic", where, max_len=255),
            incarnation=_str(obj, "incarnation", where, max_len=64, default=""),
            partitions_total=total,
            partitions=partitions,
            key_schema=obj.get("key_schema"),
            value_schemas=_schemas(obj.get("value_schemas"), f"{where}.value_schemas"),
            hybrid=None if hybrid_raw is None else HybridConfig.from_json(hybrid_raw, f"{where}.hybrid"),
            rt_start_offsets={_id_key(p, f"{where}.rt_start_offsets"): _int(starts, p, f"{where}.rt_start_offsets") for p in starts},
            consume_rt=_bool(obj, "consume_rt", where),
            rt_epoch=_int(obj, "rt_epoch", where, default=0),
            private=_bool(obj, "private", where),
        )


@dataclass(frozen=True, slots=True)
class HeartbeatAnswer:
    """The controller's answer to a heartbeat: everything the server must host."""

    assignment: tuple[Assignment, ...]
    pubsub_url: str

    def to_json(self) -> dict[str, Any]:
        return {"assignment": [a.to_json() for a in self.assignment], "pubsub_url": self.pubsub_url}

    @classmethod
    def from_json(cls, value: Any) -> HeartbeatAnswer:
        obj = _object(value, "heartbeat answer")
        entries = _list(obj.get("assignment"), "heartbeat answer.assignment")
        return cls(
            assignment=tuple(Assignment.from_json(a, f"assignment[{i}]") for i, a in enumerate(entries)),
            pubsub_url=_str(obj, "pubsub_url", "heartbeat answer", max_len=2048),
        )


# -- routing table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreRouting:
    """One store's entry in the routing table."""

    key_schema: Any
    value_schemas: Mapping[int, Any]
    partitions: int
    current_version: int | None
    """``None`` until the first push completes."""
    versions: Mapping[int, Mapping[int, tuple[str, ...]]]
    """Version -> partition -> base URLs of the READY replicas (ONLINE versions only)."""
    retired_versions: frozenset[int] = frozenset()
    hybrid: HybridConfig | None = None
    write_compute: bool = False
    """Partial updates are accepted (only meaningful for hybrid stores)."""
    private: bool = False
    """Reads need a reader token (or the cluster secret): docs/security.md."""
    read_quota: int | None = None
    """Reads per second each router serves of this store (``None``: no quota)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key_schema": self.key_schema,
            "value_schemas": {str(k): v for k, v in self.value_schemas.items()},
            "partitions": self.partitions,
            "current_version": self.current_version,
            "versions": {
                str(v): {"partitions": {str(p): list(urls) for p, urls in parts.items()}} for v, parts in self.versions.items()
            },
            "retired_versions": sorted(self.retired_versions),
        }
        if self.hybrid is not None:
            out["hybrid"] = self.hybrid.to_json()
            out["write_compute"] = self.write_compute
        if self.private:
            out["private"] = True
        if self.read_quota is not None:
            out["read_quota"] = self.read_quota
        return out

    @classmethod
    def from_json(cls, value: Any, where: str) -> StoreRouting:
        obj = _object(value, where)
        partitions = _int(obj, "partitions", where, low=1, high=MAX_PARTITIONS)
        versions: dict[int, dict[int, tuple[str, ...]]] = {}
        for v, body in _object(obj.get("versions") or {}, f"{where}.versions").items():
            number = _id_key(v, f"{where}.versions")
            parts = _object(_object(body, f"{where}.versions.{v}").get("partitions") or {}, f"{where}.versions.{v}.partitions")
            replicas: dict[int, tuple[str, ...]] = {}
            for p, urls in parts.items():
                partition = _id_key(p, f"{where}.versions.{v}.partitions")
                listed = tuple(_url(u, f"{where}.versions.{v}.partitions.{p}") for u in _list(urls, f"{where}.versions.{v}.partitions.{p}"))
                if listed:
                    replicas[partition] = listed
            versions[number] = replicas
        current = _opt_int(obj, "current_version", where, low=1)
        hybrid_raw = obj.get("hybrid")
        return cls(
            key_schema=obj.get("key_schema"),
            value_schemas=_schemas(obj.get("value_schemas"), f"{where}.value_schemas"),
            partitions=partitions,
            current_version=current,
            versions=versions,
            retired_versions=frozenset(_int({"v": v}, "v", f"{where}.retired_versions", low=1) for v in _list(obj.get("retired_versions") or [], f"{where}.retired_versions")),
            hybrid=None if hybrid_raw is None else HybridConfig.from_json(hybrid_raw, f"{where}.hybrid"),
            write_compute=_bool(obj, "write_compute", where),
            private=_bool(obj, "private", where),
            read_quota=_opt_int(obj, "read_quota", where, low=1),
        )


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """``GET /routing``: store -> current version -> partition -> ready replicas.

    ``generation`` grows with every change; ``GET /routing?generation=G&wait_s=W``
    answers 304 while the table is still at G (after waiting up to W seconds for a change).
    """

    generation: int
    stores: Mapping[str, StoreRouting]

    def to_json(self) -> dict[str, Any]:
        return {"generation": self.generation, "stores": {name: s.to_json() for name, s in self.stores.items()}}

    @classmethod
    def from_json(cls, value: Any) -> RoutingTable:
        obj = _object(value, "routing")
        stores = _object(obj.get("stores"), "routing.stores")
        return cls(
            generation=_int(obj, "generation", "routing"),
            stores={str(name): StoreRouting.from_json(entry, f"routing.stores.{name}") for name, entry in stores.items()},
        )



# -- the controller's store description, as embedded clients read it ---------------------------


@dataclass(frozen=True, slots=True)
class VersionDescription:
    """The part of a version description (``GET /stores/{store}``) that a client hosting
    the version itself needs (docs/api.md has the whole description)."""

    version: int
    topic: str
    partitions: int
    status: VersionStatus
    rt_start_offsets: Mapping[int, int] = field(default_factory=dict)
    """Hybrid stores: per partition, the real-time offset this version applies from."""
    consume_rt: bool | None = None
    """Whether the version applies real-time writes now, when the controller says;
    ``None`` when it does not (then :meth:`StoreDescription.consumes_rt` applies its rule)."""

    @classmethod
    def from_json(cls, value: Any, where: str = "version") -> VersionDescription:
        obj = _object(value, where)
        partitions = _int(obj, "partitions", where, low=1, high=MAX_PARTITIONS)
        starts = _object(obj.get("rt_start_offsets") or {}, f"{where}.rt_start_offsets")
        consume = obj.get("consume_rt")
        return cls(
            version=_int(obj, "version", where, low=1),
            topic=_str(obj, "topic", where, max_len=255),
            partitions=partitions,
            status=_enum(obj, "status", where, VersionStatus),
            rt_start_offsets={
                _id_key(p, f"{where}.rt_start_offsets"): _int(starts, p, f"{where}.rt_start_offsets") for p in starts
            },
            consume_rt=None if consume is None else _bool(obj, "consume_rt", where),
        )


@dataclass(frozen=True, slots=True)
class StoreDescription:
    """The part of ``GET /stores/{store}`` an embedded (Da Vinci) client follows."""

    name: str
    incarnation: str
    key_schema: Any
    value_schemas: Mapping[int, Any]
    partitions: int
    current_version: int | None
    versions: tuple[VersionDescription, ...]
    hybrid: HybridConfig | None = None

    @classmethod
    def from_json(cls, value: Any) -> StoreDescription:
        obj = _object(value, "store")
        versions = _list(obj.get("versions") or [], "store.versions", max_len=10_000)
        hybrid_raw = obj.get("hybrid")
        return cls(
            name=_str(obj, "name", "store", max_len=255),
            incarnation=_str(obj, "incarnation", "store", max_len=64, default=""),
            key_schema=obj.get("key_schema"),
            value_schemas=_schemas(obj.get("value_schemas"), "store.value_schemas"),
            partitions=_int(obj, "partitions", "store", low=1, high=MAX_PARTITIONS),
            current_version=_opt_int(obj, "current_version", "store", low=1),
            versions=tuple(VersionDescription.from_json(v, f"store.versions[{i}]") for i, v in enumerate(versions)),
            hybrid=None if hybrid_raw is None else HybridConfig.from_json(hybrid_raw, "store.hybrid"),
        )

    def version(self, number: int) -> VersionDescription | None:
        for version in self.versions:
            if version.version == number:
                return version
        return None

    def consumes_rt(self, version: VersionDescription) -> bool:
        """Whether ``version`` applies real-time writes now: what the controller says, or
        its rule (docs/hybrid.md): the current version, a push in progress and an ONLINE
        version newer than the current one do; backups do not."""
        if self.hybrid is None:
            return False
        if version.consume_rt is not None:
            return version.consume_rt
        if version.status is VersionStatus.STARTED:
            return True
        if version.status is not VersionStatus.ONLINE:
            return False
        return self.current_version is None or version.version >= self.current_version

    def assignment(self, version: VersionDescription, partitions: Sequence[int], *, consume_rt: bool | None = None) -> Assignment:
        """The :class:`Assignment` a storage server would get for ``partitions`` of ``version``
        (``consume_rt`` overrides the controller's rule)."""
        return Assignment(
            store=self.name,
            version=version.version,
            topic=version.topic,
            partitions_total=version.partitions,
            partitions=tuple(sorted(set(partitions))),
            key_schema=self.key_schema,
            value_schemas=dict(self.value_schemas),
            incarnation=self.incarnation,
            hybrid=self.hybrid,
            rt_start_offsets=dict(version.rt_start_offsets) if self.hybrid is not None else {},
            consume_rt=self.consumes_rt(version) if consume_rt is None else (consume_rt and self.hybrid is not None),
        )
