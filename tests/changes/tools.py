"""Nearline writes, their expected results, and readers of what change capture emits:
shared by the change-capture tests on the hybrid harness and on a real cluster."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastavro
import orjson

import venice
from tests.ingestion.helpers import send_rt
from venice.pubsub import connect
from venice.schema import AvroCodec
from venice.wire import data_headers, update_headers
from venice.writecompute import ops_to_update, update_schema

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Event",
    "fields": [
        {"name": "seq", "type": "long", "default": 0},
        {"name": "source", "type": "string", "default": ""},
        {"name": "hits", "type": "long", "default": 0},
    ],
}
KEYS = AvroCodec("long", kind="key")
VALUES = AvroCodec(SCHEMA)


def update_bytes(ops: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(update_schema(SCHEMA)), ops_to_update(ops, SCHEMA))
    return buf.getvalue()


class Writer:
    """Nearline writes on a thread: puts, deletes and increments of keys 0..keys-1, each one
    carrying (or, for a delete, recorded under) a global sequence number."""

    def __init__(self, pubsub_url: str, store: str, partitions: int, start: int, keys: int = 40) -> None:
        self.pubsub_url, self.topic, self.partitions, self.keys = pubsub_url, f"{store}_rt", partitions, keys
        self.next = start
        self.written: dict[int, tuple[int, Any]] = {}
        """seq -> (key, value after it: a dict, None for a delete, "update" for an increment)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        async with connect(self.pubsub_url) as pubsub:
            async with await pubsub.producer() as producer:
                while not self._stop.is_set():
                    seq = self.next
                    key = seq % self.keys
                    if seq % 11 == 0:
                        await send_rt(producer, self.topic, self.partitions, KEYS.encode(key), None)
                        self.written[seq] = (key, None)
                    elif seq % 7 == 0:
                        await send_rt(producer, self.topic, self.partitions, KEYS.encode(key),
                                      update_bytes({"set": {"seq": seq}, "increment": {"hits": 1}}), update_headers(1))
                        self.written[seq] = (key, "update")
                    else:
                        value = {"seq": seq, "source": "nearline", "hits": 0}
                        await send_rt(producer, self.topic, self.partitions, KEYS.encode(key), VALUES.encode(value), data_headers(1))
                        self.written[seq] = (key, value)
                    await producer.flush()
                    self.next += 1
                    await asyncio.sleep(0.005)


def collect(consumer: venice.ChangeConsumer, until: Any, timeout_s: float = 120.0) -> list[Any]:
    events: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while not until(events):
        assert time.monotonic() < deadline, f"timed out with {len(events)} events"
        event = consumer.poll(timeout=0.5)
        if event is not None:
            events.append(event)
    return events


def sequences(events: list[Any], written: dict[int, tuple[int, Any]]) -> list[int]:
    """The sequence number of each change, from its value (puts and updates) or, for a
    delete, from the key and the order of that key's deletes."""
    deletes: dict[int, list[int]] = {}
    for seq, (key, value) in sorted(written.items()):
        if value is None:
            deletes.setdefault(key, []).append(seq)
    out = []
    for event in events:
        if not isinstance(event, venice.Change):
            continue
        if event.value is not None:
            out.append(event.value["seq"])
        else:
            out.append(deletes[event.key].pop(0))
    return out


def model(base: dict[int, Any], writes: list[tuple[int, Any]]) -> dict[int, Any]:
    """What a replica holds after ``writes`` (in order) on ``base``: the second answer."""
    state = dict(base)
    for key, op in writes:
        if op is None:
            state[key] = None
        elif isinstance(op, dict) and "increment" in op:
            current = state.get(key) or {"seq": 0, "source": "", "hits": 0}
            state[key] = {**current, **op["set"], "hits": current["hits"] + op["increment"]["hits"]}
        else:
            state[key] = op
    return state


def write(pubsub_url: str, store: str, partitions: int, writes: list[tuple[int, Any]]) -> None:
    """Nearline writes, in order: a dict is a put, ``None`` a delete, ``{"set", "increment"}`` an update."""

    async def send() -> None:
        async with connect(pubsub_url) as pubsub:
            async with await pubsub.producer() as producer:
                for key, op in writes:
                    if op is None:
                        await send_rt(producer, f"{store}_rt", partitions, KEYS.encode(key), None)
                    elif "increment" in op:
                        await send_rt(producer, f"{store}_rt", partitions, KEYS.encode(key), update_bytes(op), update_headers(1))
                    else:
                        await send_rt(producer, f"{store}_rt", partitions, KEYS.encode(key), VALUES.encode(op), data_headers(1))

    asyncio.run(send())


@dataclass
class Sse:
    event: str
    id: str | None
    data: Any


def read_events(lines: Iterator[str], count: int, *, comments: list[str] | None = None) -> list[Sse]:
    """``count`` events of an SSE stream (comments collected aside)."""
    events: list[Sse] = []
    fields: dict[str, str] = {}
    for line in lines:
        if line.startswith(":"):
            if comments is not None:
                comments.append(line)
            continue
        if line == "":
            if "data" in fields:
                events.append(Sse(fields.get("event", "message"), fields.get("id"), orjson.loads(fields["data"])))
                if len(events) == count:
                    return events
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    raise AssertionError(f"the stream ended after {len(events)} of {count} events")


