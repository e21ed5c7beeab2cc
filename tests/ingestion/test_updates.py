"""Partial updates on the real-time topic, applied by ingestion: every op, updates of
missing keys, updates that cannot apply (skipped as poison pills), updates across value
schemas, and the same on real topics and LMDB. Expected values are literals worked out
by hand; records are encoded with fastavro from the published update schema."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from tests.ingestion.helpers import keys_of_partition, message, send_rt, wait_until, write_push
from venice.ingestion import IngestionHost, SkipKind, StoreCodecs, decode_stored
from venice.ingestion.records import Checkpoint, Outcome, apply_rt_batch
from venice.partitioner import partition_for
from venice.protocol import ReplicaStatus
from venice.pubsub import PubSub, connect
from venice.schema import AvroCodec
from venice.structs import Message
from venice.wire import data_headers, update_headers
from venice.writecompute import ops_to_update, update_schema

PROFILE: dict[str, Any] = {
    "type": "record",
    "name": "Profile",
    "namespace": "test",
    "fields": [
        {"name": "name", "type": "string", "default": ""},
        {"name": "visits", "type": "long", "default": 0},
        {"name": "score", "type": "double", "default": 0.0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "attrs", "type": {"type": "map", "values": "long"}, "default": {}},
    ],
}
PROFILE_V2: dict[str, Any] = {**PROFILE, "fields": [*PROFILE["fields"], {"name": "note", "type": ["null", "string"], "default": None}]}
STRICT: dict[str, Any] = {  # "name" has no default: an update of a missing key must set it
    "type": "record",
    "name": "Strict",
    "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "long", "default": 0}],
}
KEYS = AvroCodec("long", kind="key")
P = 2
K0, K1, K2 = keys_of_partition(0, P, 3)


def encode(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), datum)
    return buf.getvalue()


def decode(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def profile(**fields: Any) -> dict[str, Any]:
    return {"name": "", "visits": 0, "score": 0.0, "tags": [], "attrs": {}, **fields}


def update_bytes(ops: Any, value_schema: Any = PROFILE) -> bytes:
    return encode(update_schema(value_schema), ops_to_update(ops, value_schema))


def upd(offset: int, k: int, ops: Any, schema_id: int = 1, value_schema: Any = PROFILE) -> Message:
    return message(offset, KEYS.encode(k), update_bytes(ops, value_schema), update_headers(schema_id))


def put(offset: int, k: int, datum: Any, schema_id: int = 1, value_schema: Any = PROFILE) -> Message:
    return message(offset, KEYS.encode(k), encode(value_schema, datum), data_headers(schema_id))


def run(messages: list[Message], store: dict[bytes, bytes], schemas: StoreCodecs, checkpoint: Checkpoint | None = None) -> Outcome:
    outcome = apply_rt_batch(
        checkpoint or Checkpoint(0, True, True, 0, rt_offset=0), messages, partition=0, partitions_total=P, schemas=schemas, read=store.get
    )
    for k, v in outcome.writes:
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v
    return outcome


def stored(store: dict[bytes, bytes], k: int, schema: Any = PROFILE) -> tuple[int, Any]:
    schema_id, data = decode_stored(store[KEYS.encode(k)])
    return schema_id, decode(schema, data)


class TestEveryOp:
    def test_each_op_on_a_stored_value(self) -> None:
        store: dict[bytes, bytes] = {}
        schemas = StoreCodecs({1: PROFILE})
        start = profile(name="ann", visits=5, score=1.5, tags=["a", "b", "c"], attrs={"x": 1, "y": 2})
        run([put(0, K0, start)], store, schemas)
        run(
            [
                upd(1, K0, {"set": {"name": "bea"}}),
                upd(2, K0, {"increment": {"visits": 3, "score": 0.25}}),
                upd(3, K0, {"add_to_list": {"tags": ["b", "d", "d"]}}),
                upd(4, K0, {"remove_from_list": {"tags": ["a", "zzz"]}}),
                upd(5, K0, {"put_in_map": {"attrs": {"y": 20, "z": 3}}}),
                upd(6, K0, {"remove_from_map": {"attrs": ["x", "nope"]}}),
            ],
            store,
            schemas,
        )
        assert stored(store, K0) == (1, profile(name="bea", visits=8, score=1.75, tags=["b", "c", "d"], attrs={"y": 20, "z": 3}))

    def test_an_update_of_a_missing_key_starts_from_the_defaults(self) -> None:
        store: dict[bytes, bytes] = {}
        outcome = run([upd(0, K1, {"increment": {"visits": 2}, "add_to_list": {"tags": ["t"]}})], store, StoreCodecs({1: PROFILE}))
        assert stored(store, K1) == (1, profile(visits=2, tags=["t"]))
        assert outcome.changes[0].value == encode(PROFILE, profile(visits=2, tags=["t"]))  # the after-image

    def test_updates_that_cannot_apply_are_skipped_and_the_rest_flows(self) -> None:
        store: dict[bytes, bytes] = {}
        schemas = StoreCodecs({1: STRICT})
        messages = [
            upd(0, K0, {"increment": {"visits": 1}}, value_schema=STRICT),  # missing key, "name" has no default
            message(1, KEYS.encode(K1), b"\x02\x02", update_headers(1)),  # not an update datum
            message(2, KEYS.encode(K1), update_bytes({"set": {"name": "n"}}, STRICT) + b"\x00", update_headers(1)),  # trailing byte
            upd(3, K2, {"set": {"name": "ok"}, "increment": {"visits": 4}}, value_schema=STRICT),
            upd(4, K2, {"increment": {"visits": (1 << 63) - 1}}, value_schema=STRICT),  # overflows
        ]
        outcome = run(messages, store, schemas)
        assert [(s.kind, s.offset) for s in outcome.skipped] == [
            (SkipKind.UPDATE_FAILED, 0), (SkipKind.UNDECODABLE, 1), (SkipKind.UNDECODABLE, 2), (SkipKind.UPDATE_FAILED, 4),
        ]
        assert stored(store, K2, STRICT) == (1, {"name": "ok", "visits": 4})
        assert list(store) == [KEYS.encode(K2)]
        assert outcome.checkpoint.rt_offset == 5 and outcome.checkpoint.skipped == 4


    def test_a_value_schema_that_is_not_a_record_takes_no_updates(self) -> None:
        store: dict[bytes, bytes] = {}
        outcome = run([message(0, KEYS.encode(K0), b"\x00", update_headers(1)), message(1, KEYS.encode(K1), b"\x02a", data_headers(1))], store, StoreCodecs({1: "string"}))
        assert [(s.kind, s.offset) for s in outcome.skipped] == [(SkipKind.UPDATE_FAILED, 0)]
        assert store == {KEYS.encode(K1): b"\x00\x00\x00\x01\x02a"}


class TestAcrossSchemas:
    def test_a_newer_update_on_an_older_value_is_stored_with_the_newer_schema(self) -> None:
        store: dict[bytes, bytes] = {}
        schemas = StoreCodecs({1: PROFILE, 2: PROFILE_V2})
        run([put(0, K0, profile(name="old", visits=1)), upd(1, K0, {"set": {"note": "hi"}, "increment": {"visits": 1}}, 2, PROFILE_V2)], store, schemas)
        assert stored(store, K0, PROFILE_V2) == (2, {**profile(name="old", visits=2), "note": "hi"})

    def test_an_older_update_on_a_newer_value_keeps_the_newer_fields(self) -> None:
        store: dict[bytes, bytes] = {}
        schemas = StoreCodecs({1: PROFILE, 2: PROFILE_V2})
        run([put(0, K0, {**profile(name="new"), "note": "kept"}, 2, PROFILE_V2), upd(1, K0, {"increment": {"visits": 5}}, 1)], store, schemas)
        assert stored(store, K0, PROFILE_V2) == (2, {**profile(name="new", visits=5), "note": "kept"})

    def test_an_update_naming_an_unknown_schema_waits_for_it(self) -> None:
        store: dict[bytes, bytes] = {}
        schemas = StoreCodecs({1: PROFILE})
        outcome = run([upd(0, K0, {"set": {"note": "x"}}, 2, PROFILE_V2)], store, schemas)
        assert (outcome.need_schema, store) == (2, {})
        schemas.add({2: PROFILE_V2})
        run([upd(0, K0, {"set": {"note": "x"}}, 2, PROFILE_V2)], store, schemas)
        assert stored(store, K0, PROFILE_V2) == (2, {**profile(), "note": "x"})


@pytest.fixture
async def pubsub(pubsub_url: str) -> Any:
    async with connect(pubsub_url) as ps:
        yield ps


async def test_increments_and_list_ops_on_real_topics(tmp_path: Path, pubsub: PubSub) -> None:
    """Many updates of a few keys through a real topic and LMDB; the final values are the
    sums and sets worked out here."""
    from tests.ingestion.helpers import assignment

    store = f"s{uuid.uuid4().hex[:8]}"
    rt_topic = f"{store}_rt"
    await pubsub.create_topic(rt_topic, P)
    keys = 10
    await write_push(pubsub, f"{store}_v1", P, {KEYS.encode(k): encode(PROFILE, profile(name=f"k{k}", visits=100)) for k in range(keys)})
    expected = {k: profile(name=f"k{k}", visits=100) for k in range(keys)}
    async with await pubsub.producer() as producer:
        for n in range(600):
            k = n % (keys + 3)  # keys >= `keys` start missing: defaults
            tag = f"t{n % 7}"
            ops: dict[str, Any] = {"increment": {"visits": n}, "add_to_list": {"tags": [tag]}}
            if n % 10 == 9:
                ops = {"remove_from_list": {"tags": [tag]}, "put_in_map": {"attrs": {f"n{n % 4}": n}}}
            await send_rt(producer, rt_topic, P, KEYS.encode(k), update_bytes(ops), update_headers(1))
            current = expected.setdefault(k, profile())
            if "increment" in ops:
                current["visits"] += n
                if tag not in current["tags"]:
                    current["tags"].append(tag)
            else:
                current["tags"] = [t for t in current["tags"] if t != tag]
                current["attrs"][f"n{n % 4}"] = n
    host = IngestionHost(tmp_path / "h", pubsub=pubsub, schema_refresh=lambda s, i: None)  # type: ignore[arg-type,return-value]
    a = assignment(store, 1, P, hybrid=True, rt_start_offsets={0: 0, 1: 0}, value_schemas={1: PROFILE})
    await host.reconcile([a])

    async def caught_up() -> bool:
        ends = await pubsub.end_offsets(rt_topic)
        return all(r.status is ReplicaStatus.READY and r.rt_offset == ends[r.partition] for r in host.reports())

    await wait_until(caught_up, "caught up")
    for k, want in expected.items():
        p = partition_for(KEYS.encode(k), P)
        raw = host.ready(store, 1, p).get(p, KEYS.encode(k))
        assert raw is not None
        assert decode(PROFILE, decode_stored(raw)[1]) == want, k
    assert all(r.skipped == 0 for r in host.reports())
    await host.close()
