"""What a batch of topic records does to one partition: pure decisions, no I/O.

Ingestion reads a batch of records of one partition, decides here what each does, and
writes the result (data, checkpoint, change-log entries) in one LMDB transaction
(:meth:`venice.ingestion.storage.VersionStorage.write_batch`). Nothing here touches
LMDB, a broker or a clock, so every replica given the same records and the same
checkpoint decides the same thing, byte for byte, and the rules are tested without
either.

Version topic (:func:`apply_version_batch`): start-of-push, puts and deletes, then
end-of-push, which carries how many data records the push wrote to the partition; a
different count applied is a failed partition. At end-of-push of a hybrid version the
checkpoint's real-time offset is set to where this version starts reading the
real-time topic, in the same transaction.

Real-time offsets belong to one incarnation of the store's real-time topic, its
*epoch* (``Checkpoint.rt_epoch``): a partition told of another epoch starts over at that
epoch's start offset (:func:`rt_adopt`). A next offset the log no longer holds
(retention) is resolved by :func:`rt_resume`.

Real-time topic (:func:`apply_rt_batch`, docs/hybrid.md): puts, deletes (null value)
and partial updates (header ``venice-op: update``). Records no replica can apply are
*poison pills*: skipped, counted in the checkpoint and reported, never retried, so they
never stall a partition (:class:`SkipKind`). A record naming a value schema this
replica does not know stops the batch there instead (``Outcome.need_schema``): the
schema may simply be newer than what the replica was told, so the caller asks for it
and only skips the record once the schema is confirmed not to exist (``missing``).

Value layout at rest: 4-byte big-endian value schema id, then the Avro value bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

import orjson

from venice.errors import InternalError
from venice.partitioner import partition_for
from venice.structs import Message
from venice.wire import CONTROL_HEADER, ControlKind, control_kind, control_payload, is_update, parse_schema_id, schema_id_of

__all__ = [
    "TOMBSTONE",
    "Change",
    "Checkpoint",
    "Outcome",
    "RecordSchemas",
    "SkipKind",
    "Skipped",
    "UnknownSchema",
    "UnusableRecord",
    "apply_rt_batch",
    "apply_version_batch",
    "decode_stored",
    "encode_stored",
    "rt_adopt",
    "rt_resume",
]

_SCHEMA_ID = struct.Struct(">I")
_CHANGE_HEAD = struct.Struct(">Ii")
TOMBSTONE = -1
"""Schema id of a change-log entry that deleted its key."""


def encode_stored(schema_id: int, value: bytes) -> bytes:
    """A value at rest: its schema id, then its Avro bytes."""
    return _SCHEMA_ID.pack(schema_id) + value


def decode_stored(raw: bytes) -> tuple[int, bytes]:
    """Inverse of :func:`encode_stored`; InternalError for bytes too short to be one."""
    try:
        return _SCHEMA_ID.unpack_from(raw)[0], raw[4:]
    except struct.error:
        raise InternalError(f"a stored value of {len(raw)} bytes is shorter than its schema id") from None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where one partition of one store-version stands; stored with the data it covers."""

    offset: int = 0
    """Next version-topic offset to apply."""
    end_of_push: bool = False
    start_of_push: bool = False
    records: int = 0
    """Data records (puts and deletes) of the version topic applied since start-of-push."""
    rt_offset: int | None = None
    """Next real-time offset to apply; ``None`` before end-of-push and for batch-only stores."""
    skipped: int = 0
    """Real-time records skipped as poison pills."""
    failed: str | None = None
    """Why the partition failed for good (end-of-push count mismatch); kept across restarts."""
    rt_epoch: int = 0
    """Which real-time topic ``rt_offset`` is an offset of: the store's real-time epoch
    (``Assignment.rt_epoch``) when it was set. A store made batch-only and hybrid again
    gets a new topic under the same name, and offsets of the old one mean nothing in it."""
    rt_lost: int = 0
    """Real-time records never applied because the log no longer had them when this
    partition came to read them (retention deleted them): see :func:`rt_resume`."""

    def to_bytes(self) -> bytes:
        body: dict[str, Any] = {"offset": self.offset, "eop": self.end_of_push, "sop": self.start_of_push, "records": self.records}
        if self.rt_offset is not None:
            body["rt"] = self.rt_offset
        if self.rt_epoch:
            body["rt_epoch"] = self.rt_epoch
        if self.skipped:
            body["skipped"] = self.skipped
        if self.rt_lost:
            body["rt_lost"] = self.rt_lost
        if self.failed is not None:
            body["failed"] = self.failed
        return orjson.dumps(body)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Checkpoint:
        if raw is None:
            return cls()
        data = orjson.loads(raw)
        rt = data.get("rt")
        return cls(
            offset=int(data["offset"]),
            end_of_push=bool(data["eop"]),
            start_of_push=bool(data.get("sop")),
            records=int(data["records"]),
            rt_offset=None if rt is None else int(rt),
            skipped=int(data.get("skipped", 0)),
            failed=data.get("failed"),
            rt_epoch=int(data.get("rt_epoch", 0)),
            rt_lost=int(data.get("rt_lost", 0)),
        )

    def rt_next(self, epoch: int) -> int | None:
        """The next real-time offset to apply in the real-time topic of ``epoch``; ``None``
        when there is none yet or the offset belongs to another epoch's topic."""
        return self.rt_offset if self.rt_epoch == epoch else None


@dataclass(frozen=True, slots=True)
class Change:
    """One real-time record as applied: the key and its value *after* the write."""

    offset: int
    """Real-time topic offset of the record (the change log is keyed by it)."""
    key: bytes
    schema_id: int
    """Value schema id of ``value``, or :data:`TOMBSTONE` when the key was deleted."""
    value: bytes
    """Avro bytes after the write (the after-image of an update); empty for a tombstone."""

    def encode(self) -> bytes:
        """Change-log value: ``u32 key length, i32 schema id, key, value`` (big-endian)."""
        return _CHANGE_HEAD.pack(len(self.key), self.schema_id) + self.key + self.value

    @classmethod
    def decode(cls, offset: int, raw: bytes) -> Change:
        key_length, schema_id = _CHANGE_HEAD.unpack_from(raw)
        start = _CHANGE_HEAD.size
        return cls(offset, raw[start : start + key_length], schema_id, raw[start + key_length :])

    @property
    def deleted(self) -> bool:
        return self.schema_id == TOMBSTONE


class SkipKind(str, Enum):
    """Why a real-time record was skipped (a poison pill)."""

    WRONG_PARTITION = "WRONG_PARTITION"
    """The key hashes to another partition: applying it would hide it from reads."""
    BAD_KEY = "BAD_KEY"
    """The key does not decode with the key schema, or LMDB cannot store it (empty, too long)."""
    UNDECODABLE = "UNDECODABLE"
    """The value (or the ``schema-id`` header) does not decode with its schema."""
    UNKNOWN_SCHEMA = "UNKNOWN_SCHEMA"
    """The controller confirmed the value schema id does not exist."""
    UPDATE_FAILED = "UPDATE_FAILED"
    """A partial update that cannot apply (e.g. a field with no default, not set, on a missing key)."""
    CONTROL_MESSAGE = "CONTROL_MESSAGE"
    """A control message: only push jobs write them, and only to version topics."""


@dataclass(frozen=True, slots=True)
class Skipped:
    kind: SkipKind
    offset: int
    detail: str


class UnusableRecord(Exception):
    """Raised by :class:`RecordSchemas` when a record cannot be applied; ``kind`` says why."""

    def __init__(self, kind: SkipKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class UnknownSchema(Exception):
    """Raised by :class:`RecordSchemas` for a value schema id it does not know (yet)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"unknown value schema id {schema_id}")
        self.schema_id = schema_id


class RecordSchemas(Protocol):
    """What applying real-time records needs to know about a store's value schemas
    (implemented by :class:`venice.ingestion.schemas.StoreCodecs`)."""

    def check_key(self, key: bytes) -> None:
        """Raise :class:`UnusableRecord` when ``key`` is not one datum of the key schema
        that the storage can hold."""

    def check_value(self, schema_id: int, value: bytes) -> None:
        """Raise :class:`UnknownSchema`, or :class:`UnusableRecord` when ``value`` is not
        exactly one datum of schema ``schema_id``."""

    def apply_update(self, schema_id: int, update: bytes, current: tuple[int, bytes] | None) -> tuple[int, bytes]:
        """``(schema id, Avro bytes)`` of the value after applying ``update`` (Avro of the
        update schema derived from value schema ``schema_id``) to ``current`` (``(schema
        id, bytes)``, or ``None`` for a key with no value). Raises :class:`UnknownSchema`
        or :class:`UnusableRecord`."""


@dataclass
class Outcome:
    """What one batch does to a partition; written in one transaction."""

    checkpoint: Checkpoint
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    """In log order: ``(key, stored value)`` puts and ``(key, None)`` deletes."""
    changes: list[Change] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    applied: int = 0
    """Data records applied by this batch."""
    end_of_push: bool = False
    """This batch applied end-of-push."""
    need_schema: int | None = None
    """The batch stopped before a record whose value schema id is unknown; ask for it."""
    clear_changes: bool = False
    """Empty the partition's change log first (it is keyed by offsets of a real-time
    topic this partition no longer reads)."""


def apply_version_batch(
    checkpoint: Checkpoint, messages: Iterable[Message], *, rt_start: int | None = None, rt_epoch: int = 0
) -> Outcome:
    """Apply version-topic records from ``checkpoint`` on (earlier offsets are redeliveries).

    Stops after end-of-push; then the checkpoint's ``rt_offset`` becomes ``rt_start``
    (``None`` for a batch-only version), an offset of the real-time topic of ``rt_epoch``,
    and a record count that differs from the one end-of-push announces sets ``failed``.
    """
    sop, eop, records, failed = checkpoint.start_of_push, checkpoint.end_of_push, checkpoint.records, checkpoint.failed
    rt_offset, epoch = checkpoint.rt_offset, checkpoint.rt_epoch
    offset = checkpoint.offset
    outcome = Outcome(checkpoint)
    writes = outcome.writes
    for message in messages:
        if message.offset < offset or eop:
            continue
        offset = message.offset + 1
        kind = control_kind(message) if message.headers else None
        if kind is None:
            value = message.value
            writes.append((message.key, None if value is None else encode_stored(schema_id_of(message), value)))
            records += 1
        elif kind is ControlKind.START_OF_PUSH:
            sop = True
        elif kind is ControlKind.END_OF_PUSH:
            eop = outcome.end_of_push = True
            rt_offset = rt_start
            epoch = rt_epoch if rt_start is not None else 0
            expected = control_payload(message).get("records", records)
            if expected != records:
                failed = f"end-of-push says {expected} records, applied {records}"
    outcome.applied = records - checkpoint.records
    outcome.checkpoint = replace(
        checkpoint, offset=offset, end_of_push=eop, start_of_push=sop, records=records, rt_offset=rt_offset, failed=failed,
        rt_epoch=epoch,
    )
    return outcome


def apply_rt_batch(
    checkpoint: Checkpoint,
    messages: Sequence[Message],
    *,
    partition: int,
    partitions_total: int,
    schemas: RecordSchemas,
    read: Callable[[bytes], bytes | None],
    missing: frozenset[int] = frozenset(),
) -> Outcome:
    """Apply real-time records from ``checkpoint.rt_offset`` on.

    ``read(key)`` returns the stored value (as :func:`encode_stored` made it) before this
    batch; the batch's own writes are seen on top of it. ``missing``: schema ids the
    controller confirmed do not exist (records naming them are skipped).
    """
    if checkpoint.rt_offset is None:
        raise ValueError("real-time records before end-of-push")
    offset = checkpoint.rt_offset
    skipped_total = checkpoint.skipped
    outcome = Outcome(checkpoint)
    pending: dict[bytes, bytes | None] = {}

    def current(key: bytes) -> tuple[int, bytes] | None:
        raw = pending[key] if key in pending else read(key)
        return None if raw is None else decode_stored(raw)

    for message in messages:
        if message.offset < offset:
            continue
        try:
            change = _rt_change(message, partition, partitions_total, schemas, current, missing)
        except UnknownSchema as exc:
            outcome.need_schema = exc.schema_id
            break
        except UnusableRecord as exc:
            outcome.skipped.append(Skipped(exc.kind, message.offset, exc.detail))
            skipped_total += 1
        else:
            stored = None if change.deleted else encode_stored(change.schema_id, change.value)
            pending[change.key] = stored
            outcome.writes.append((change.key, stored))
            outcome.changes.append(change)
            outcome.applied += 1
        offset = message.offset + 1
    outcome.checkpoint = replace(checkpoint, rt_offset=offset, skipped=skipped_total)
    return outcome


def rt_adopt(checkpoint: Checkpoint, epoch: int, start: int) -> Outcome:
    """A partition past end-of-push starts reading the real-time topic of ``epoch`` at
    ``start`` (the controller's start offset for it): it had no real-time offset yet, or
    one of an earlier epoch's topic. In the latter case its change log (keyed by offsets
    of that topic) is emptied in the same transaction."""
    stale = checkpoint.rt_offset is not None and checkpoint.rt_epoch != epoch
    return Outcome(replace(checkpoint, rt_offset=start, rt_epoch=epoch), clear_changes=stale)


def rt_resume(checkpoint: Checkpoint, beginning: int, end: int) -> Checkpoint | None:
    """Where a partition goes on when the real-time log does not hold its next offset
    (the consumer reported it out of range); ``None`` when it does after all (the caller
    retries). ``beginning`` and ``end`` are the partition's oldest offset still kept and
    the offset of the next record to be written.

    * Below ``beginning`` (retention deleted the records before this partition read
      them: a rewind reaching past retention, or a backup paused longer than retention):
      go on at ``beginning``; the records in between are counted in ``rt_lost``.
    * Beyond ``end`` (the topic holds fewer records than this partition already read:
      it is not the topic the offset was read from, or the broker lost records): go on
      at ``beginning`` too, counting nothing lost, so every record the topic holds is
      applied rather than an unknown number skipped.

    A pure function of the checkpoint and the log's bounds, so replicas that find the
    same log decide alike.
    """
    offset = checkpoint.rt_offset
    if offset is None or beginning <= offset <= end:
        return None
    lost = beginning - offset if offset < beginning else 0
    return replace(checkpoint, rt_offset=beginning, rt_lost=checkpoint.rt_lost + lost)


def _rt_change(
    message: Message,
    partition: int,
    partitions_total: int,
    schemas: RecordSchemas,
    current: Callable[[bytes], tuple[int, bytes] | None],
    missing: frozenset[int],
) -> Change:
    """The change one real-time record makes, or UnusableRecord / UnknownSchema."""
    if message.header(CONTROL_HEADER) is not None:
        raise UnusableRecord(SkipKind.CONTROL_MESSAGE, "control message on the real-time topic")
    key = message.key
    schemas.check_key(key)
    if partition_for(key, partitions_total) != partition:
        raise UnusableRecord(
            SkipKind.WRONG_PARTITION, f"key hashes to partition {partition_for(key, partitions_total)}, written to {partition}"
        )
    if message.value is None:
        return Change(message.offset, key, TOMBSTONE, b"")
    schema_id = parse_schema_id(message.header("schema-id"))
    if schema_id is None:
        raise UnusableRecord(SkipKind.UNDECODABLE, f"schema-id header {message.header('schema-id')!r} is not an id")
    if schema_id in missing:
        raise UnusableRecord(SkipKind.UNKNOWN_SCHEMA, f"value schema id {schema_id} does not exist")
    if is_update(message):
        try:
            new_id, new_value = schemas.apply_update(schema_id, message.value, current(key))
        except UnknownSchema as exc:
            if exc.schema_id in missing:  # the stored value's schema: confirmed gone, cannot resolve it
                raise UnusableRecord(SkipKind.UPDATE_FAILED, f"stored value has schema id {exc.schema_id}, which does not exist") from None
            raise
        return Change(message.offset, key, new_id, new_value)
    schemas.check_value(schema_id, message.value)
    return Change(message.offset, key, schema_id, message.value)
