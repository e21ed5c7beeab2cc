"""Shared by the ingestion tests: a store's schemas, records written to real topics the way
the push job and any real-time producer write them, and assignments built by hand (the
controller side of hybrid stores is not what these tests are about)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from venice.partitioner import partition_for
from venice.protocol import Assignment, HybridConfig
from venice.pubsub import Producer, PubSub
from venice.schema import AvroCodec
from venice.structs import Message
from venice.wire import ControlKind, control_headers, data_headers, encode_control

VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Counter",
    "fields": [
        {"name": "name", "type": "string", "default": ""},
        {"name": "count", "type": "long", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}
VALUE_SCHEMA_V2: dict[str, Any] = {
    "type": "record",
    "name": "Counter",
    "fields": [*VALUE_SCHEMA["fields"], {"name": "note", "type": ["null", "string"], "default": None}],
}
KEYS = AvroCodec("long", kind="key")
VALUES = AvroCodec(VALUE_SCHEMA)
VALUES_V2 = AvroCodec(VALUE_SCHEMA_V2)


def key(n: int) -> bytes:
    return KEYS.encode(n)


def value(name: str, count: int = 0, tags: Iterable[str] = ()) -> bytes:
    return VALUES.encode({"name": name, "count": count, "tags": list(tags)})


def keys_of_partition(partition: int, partitions: int, count: int, start: int = 0) -> list[int]:
    """The first ``count`` integer keys from ``start`` on that hash to ``partition``."""
    found: list[int] = []
    n = start
    while len(found) < count:
        if partition_for(key(n), partitions) == partition:
            found.append(n)
        n += 1
    return found


def message(offset: int, key_bytes: bytes, value_bytes: bytes | None, headers: Iterable[tuple[str, bytes]] = (), *, partition: int = 0) -> Message:
    return Message("t", partition, offset, key_bytes, value_bytes, tuple(headers))


async def write_push(pubsub: PubSub, topic: str, partitions: int, records: Mapping[bytes, bytes | None], *, create: bool = True) -> None:
    """A push as the push job writes it: start-of-push, the records on their partitions,
    end-of-push with each partition's count."""
    if create:
        await pubsub.create_topic(topic, partitions)
    counts = dict.fromkeys(range(partitions), 0)
    async with await pubsub.producer() as producer:
        for p in range(partitions):
            await producer.send(topic, p, b"", encode_control({}), control_headers(ControlKind.START_OF_PUSH))
        for k, v in records.items():
            p = partition_for(k, partitions)
            counts[p] += 1
            await producer.send(topic, p, k, v, data_headers(1))
        for p in range(partitions):
            await producer.send(topic, p, b"", encode_control({"records": counts[p]}), control_headers(ControlKind.END_OF_PUSH))


async def send_rt(
    producer: Producer,
    topic: str,
    partitions: int,
    key_bytes: bytes,
    value_bytes: bytes | None,
    headers: Iterable[tuple[str, bytes]] = (),
    *,
    timestamp_ms: int | None = None,
    partition: int | None = None,
) -> None:
    """A record as any producer writes it to a real-time topic (partition by the contract)."""
    p = partition_for(key_bytes, partitions) if partition is None else partition
    await producer.send(topic, p, key_bytes, value_bytes, list(headers), timestamp_ms=timestamp_ms)


def assignment(
    store: str,
    version: int,
    partitions_total: int,
    partitions: Iterable[int] | None = None,
    *,
    hybrid: bool = False,
    rt_start_offsets: Mapping[int, int] | None = None,
    consume_rt: bool = True,
    offset_lag: int = 0,
    incarnation: str = "",
    value_schemas: Mapping[int, Any] | None = None,
    rt_epoch: int = 0,
) -> Assignment:
    return Assignment(
        store=store,
        version=version,
        topic=f"{store}_v{version}",
        partitions_total=partitions_total,
        partitions=tuple(sorted(range(partitions_total) if partitions is None else partitions)),
        key_schema="long",
        value_schemas=dict(value_schemas or {1: VALUE_SCHEMA}),
        incarnation=incarnation,
        hybrid=HybridConfig(rewind_seconds=60, offset_lag=offset_lag, real_time_topic=f"{store}_rt") if hybrid else None,
        rt_start_offsets=dict(rt_start_offsets or {}),
        consume_rt=consume_rt if hybrid else False,
        rt_epoch=rt_epoch if hybrid else 0,
    )


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout_s: float = 60.0) -> None:
    """Poll ``condition`` until true; TimeoutError naming ``what`` (a bound on waiting, not a speed check)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
