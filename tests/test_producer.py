"""The nearline-write SDK (venice.Producer / venice.AsyncProducer) against a stand-in
controller (real HTTP, tests/router/fakes.py) and each real pub-sub backend.

What lands on the real-time topic is read back with a plain consumer and checked with
fastavro and mmh3 (the contract's formula), not with the code under test."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import fastavro
import mmh3
import pytest

import venice
from tests.router.fakes import MEMBER_SCHEMA, FakeController, refused_url, serve_in_thread, store_description
from venice.controller_client import AsyncControllerClient
from venice.errors import (
    InvalidKeyError,
    InvalidValueError,
    NotHybridError,
    RequestError,
    SchemaError,
    StoreNotFoundError,
    TransportError,
    UnavailableError,
    WriteComputeDisabledError,
)
from venice.producer import StoreWriters
from venice.pubsub import connect
from venice.structs import Message, TopicPartition

COUNTER: dict[str, Any] = {
    "type": "record",
    "name": "Counter",
    "fields": [
        {"name": "hits", "type": "long", "default": 0},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    ],
}
COUNTER_V2: dict[str, Any] = {**COUNTER, "fields": [*COUNTER["fields"], {"name": "note", "type": "string", "default": ""}]}


def avro(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


def unavro(schema: Any, data: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(data), fastavro.parse_schema(schema), None)


def partition_of(key: bytes, partitions: int) -> int:
    return int(mmh3.hash(key, signed=False) % partitions)


def read_topic(pubsub_url: str, topic: str, count: int) -> list[Message]:
    """The first ``count`` records of every partition of ``topic``, by partition then offset."""

    async def read() -> list[Message]:
        pubsub = connect(pubsub_url)
        consumer = await pubsub.consumer()
        try:
            partitions = await pubsub.partition_count(topic)
            await consumer.assign({TopicPartition(topic, p): 0 for p in range(partitions)})
            found: list[Message] = []
            for _ in range(200):
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    found += messages
                if len(found) >= count:
                    break
            return sorted(found, key=lambda m: (m.partition, m.offset))
        finally:
            await consumer.close()
            await pubsub.close()

    return asyncio.run(read())


def create_topic(pubsub_url: str, topic: str, partitions: int) -> None:
    async def create() -> None:
        pubsub = connect(pubsub_url)
        try:
            await pubsub.create_topic(topic, partitions)
        finally:
            await pubsub.close()

    asyncio.run(create())


class Setup:
    def __init__(self, controller: FakeController, controller_url: str, pubsub_url: str, prefix: str) -> None:
        self.controller = controller
        self.url = controller_url
        self.pubsub_url = pubsub_url
        self.prefix = prefix

    def store(self, name: str, key: Any, schemas: dict[int, Any], partitions: int = 4, *, topic: bool = True, **options: Any) -> str:
        """A store on the controller (and its real-time topic unless ``topic=False``); returns its name."""
        full = f"{self.prefix}{name}"
        self.controller.descriptions[full] = store_description(full, key, schemas, partitions, **options)
        if topic:
            create_topic(self.pubsub_url, f"{full}_rt", partitions)
        return full


@pytest.fixture
def setup(pubsub_url: str, request: pytest.FixtureRequest) -> Iterator[Setup]:
    controller = FakeController(pubsub_url=pubsub_url)
    prefix = "".join(c for c in request.node.name if c.isalnum())[-40:] + "_"  # Kafka topics are shared by tests
    with serve_in_thread(controller) as url:
        yield Setup(controller, url, pubsub_url, prefix)


def test_puts_deletes_and_updates_follow_the_wire_contract(setup: Setup) -> None:
    members = setup.store("members", "long", {1: MEMBER_SCHEMA}, 4)
    counters = setup.store("counters", "string", {1: COUNTER}, 3, write_compute=True)
    ann = {"name": "Ann", "age": 41, "avatar": b"\x00\xff"}
    with venice.Producer(setup.url) as producer:
        producer.put(members, 42, ann)
        producer.delete(members, -7)
        producer.update(counters, "home", {"increment": {"hits": 5}, "add_to_list": {"tags": ["new"]}})
        producer.put(counters, "about", {"hits": 1, "tags": []})

    found = read_topic(setup.pubsub_url, f"{members}_rt", 2)
    assert len(found) == 2
    by_key = {m.key: m for m in found}
    put = by_key[avro("long", 42)]
    assert put.partition == partition_of(avro("long", 42), 4)
    assert put.headers == (("schema-id", b"1"),)
    assert unavro(MEMBER_SCHEMA, put.value or b"") == ann
    delete = by_key[avro("long", -7)]
    assert delete.value is None and delete.partition == partition_of(avro("long", -7), 4)

    found = read_topic(setup.pubsub_url, f"{counters}_rt", 2)
    update = next(m for m in found if m.key == avro("string", "home"))
    assert update.partition == partition_of(avro("string", "home"), 3)
    assert dict(update.headers) == {"schema-id": b"1", "venice-op": b"update"}
    update_schema = {"type": "record", "name": "CounterUpdate", "fields": [
        {"name": "hits", "type": [{"type": "record", "name": "NoOp", "fields": []}, "long",
                                  {"type": "record", "name": "hits_Increment", "fields": [{"name": "by", "type": "long"}]}]},
        {"name": "tags", "type": ["NoOp", {"type": "array", "items": "string"},
                                  {"type": "record", "name": "tags_ListOps", "fields": [
                                      {"name": "add", "type": {"type": "array", "items": "string"}},
                                      {"name": "remove", "type": {"type": "array", "items": "string"}}]}]},
    ]}  # fmt: skip  (the update schema docs/hybrid.md derives, written out by hand)
    assert unavro(update_schema, update.value or b"") == {"hits": {"by": 5}, "tags": {"add": ["new"], "remove": []}}


async def test_async_producer(setup: Setup) -> None:
    store = await asyncio.to_thread(setup.store, "counts", "string", {1: "long"}, 2)
    async with venice.AsyncProducer(setup.url) as producer:
        await asyncio.gather(*(producer.put(store, f"k{i}", i) for i in range(50)))
        await producer.delete(store, "k0")
        await producer.flush()
    found = await asyncio.to_thread(read_topic, setup.pubsub_url, f"{store}_rt", 51)
    assert len(found) == 51
    values = {unavro("string", m.key): (None if m.value is None else unavro("long", m.value)) for m in found if m.value is not None}
    assert values == {f"k{i}": i for i in range(50)}
    deletes = [m for m in found if m.value is None]
    assert [unavro("string", m.key) for m in deletes] == ["k0"]
    k0 = [m for m in found if m.key == avro("string", "k0")]
    assert [m.value is None for m in k0] == [False, True]  # the put, then the delete: one partition, in order


def test_bad_writes_raise_at_once_and_send_nothing(setup: Setup) -> None:
    store = setup.store("strict", "string", {1: COUNTER}, 2, max_value_bytes=64, write_compute=True)
    plain = setup.store("plain", "string", {1: COUNTER}, 2)
    with venice.Producer(setup.url) as producer:
        with pytest.raises(InvalidValueError, match="hits"):
            producer.put(store, "k", {"hits": "many"})
        with pytest.raises(InvalidValueError, match="nope"):
            producer.put(store, "k", {"hits": 1, "nope": 2})
        with pytest.raises(InvalidValueError, match="at most 64 bytes"):
            producer.put(store, "k", {"hits": 1, "tags": ["x" * 70]})
        with pytest.raises(InvalidKeyError):
            producer.put(store, 12, {"hits": 1})
        with pytest.raises(InvalidKeyError, match="511"):
            producer.delete(store, "k" * 512)
        with pytest.raises(SchemaError, match="no value schema 9"):
            producer.put(store, "k", {"hits": 1}, schema_id=9)
        with pytest.raises(InvalidValueError):
            producer.update(store, "k", {"increment": {"tags": 1}})
        with pytest.raises(InvalidValueError, match="unknown update op"):
            producer.update(store, "k", {"bump": {"hits": 1}})
        with pytest.raises(WriteComputeDisabledError):
            producer.update(plain, "k", {"increment": {"hits": 1}})
        with pytest.raises(StoreNotFoundError):
            producer.put(f"{setup.prefix}absent", "k", 1)
        producer.put(store, "good", {"hits": 1})
    found = read_topic(setup.pubsub_url, f"{store}_rt", 1)
    assert [m.key for m in found] == [avro("string", "good")]
    assert read_topic(setup.pubsub_url, f"{plain}_rt", 0) == []


def test_batch_only_store_refuses_writes(setup: Setup) -> None:
    store = setup.store("batch", "string", {1: "string"}, 2, hybrid=False, topic=False)
    with venice.Producer(setup.url) as producer:
        with pytest.raises(NotHybridError) as caught:
            producer.put(store, "k", "v")
        assert caught.value.code == "NOT_HYBRID" and caught.value.http_status == 409
        with pytest.raises(NotHybridError):
            producer.delete(store, "k")


def test_a_schema_registered_later_is_fetched_when_first_used(setup: Setup) -> None:
    store = setup.store("evolving", "string", {1: COUNTER}, 2)
    with venice.Producer(setup.url) as producer:
        producer.put(store, "a", {"hits": 1})
        assert setup.controller.describes == 1
        setup.controller.descriptions[store] = store_description(store, "string", {1: COUNTER, 2: COUNTER_V2}, 2)
        producer.put(store, "b", {"hits": 2, "note": "v2"}, schema_id=2)  # unknown id: the producer asks again
        assert setup.controller.describes == 2
        producer.put(store, "c", {"hits": 3})  # the newest schema is 2 now
        assert setup.controller.describes == 2
        with pytest.raises(SchemaError, match="no value schema 3"):
            producer.put(store, "d", {"hits": 4}, schema_id=3)
        assert setup.controller.describes == 3  # asked again, then refused
    found = {m.key: m for m in read_topic(setup.pubsub_url, f"{store}_rt", 3)}
    assert found[avro("string", "a")].headers == (("schema-id", b"1"),)
    assert found[avro("string", "b")].headers == (("schema-id", b"2"),)
    assert unavro(COUNTER_V2, found[avro("string", "b")].value or b"") == {"hits": 2, "tags": [], "note": "v2"}
    assert found[avro("string", "c")].headers == (("schema-id", b"2"),)


def test_many_threads_share_one_producer(setup: Setup) -> None:
    store = setup.store("threads", "string", {1: "long"}, 3)
    threads, per_thread = 8, 150
    with venice.Producer(setup.url) as producer:

        def work(t: int) -> None:
            for i in range(per_thread):
                producer.put(store, f"t{t}", i)  # one key per thread: its values must land in order

        workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        producer.flush()
    found = read_topic(setup.pubsub_url, f"{store}_rt", threads * per_thread)
    assert len(found) == threads * per_thread
    for t in range(threads):
        values = [unavro("long", m.value or b"") for m in found if m.key == avro("string", f"t{t}")]
        assert values == list(range(per_thread))


def test_a_missing_topic_fails_at_flush(setup: Setup) -> None:
    store = setup.store("no_topic_yet", "string", {1: "string"}, 2, topic=False)
    producer = venice.Producer(setup.url)
    try:
        producer.put(store, "k", "v")  # queued: checked, not yet sent
        with pytest.raises(UnavailableError, match=f"{store}_rt") as caught:
            producer.flush()
        assert caught.value.retriable
        producer.flush()  # the failure was reported once
    finally:
        producer.close()


def test_closed_producer_and_unreachable_controller(setup: Setup) -> None:
    producer = venice.Producer(setup.url)
    producer.close()
    producer.close()  # twice is fine
    with pytest.raises(RequestError, match="closed"):
        producer.put("x", "k", "v")
    with refused_url() as url, venice.Producer(url) as unreachable, pytest.raises(TransportError):
        unreachable.put("x", "k", "v")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_store_writers_recheck_at_most_once_a_second_and_survive_an_outage() -> None:
    controller = FakeController()
    controller.descriptions["s"] = store_description("s", "string", {1: "string"}, 2, hybrid=False)
    clock = Clock()
    with serve_in_thread(controller) as url:
        async with AsyncControllerClient(url) as client:
            writers = StoreWriters(client, max_age_s=10.0, clock=clock)
            with pytest.raises(NotHybridError):
                await writers.build("s", lambda w: w.put("k", "v"))
            controller.descriptions["s"] = store_description("s", "string", {1: "string"}, 2, hybrid=True)
            with pytest.raises(NotHybridError):  # fetched less than a second ago: believed
                await writers.build("s", lambda w: w.put("k", "v"))
            assert controller.describes == 1
            clock.now += 1.0
            record = await writers.build("s", lambda w: w.put("k", "v"))
            assert record.topic == "s_rt" and controller.describes == 2
            controller.available = False
            clock.now += 10.0  # expired, and the controller is down: the last description serves
            assert (await writers.get("s")).hybrid is not None
            assert controller.describes == 3
            assert (await writers.get("s")).hybrid is not None  # not asked again at once
            assert controller.describes == 3
            controller.available = True
            with pytest.raises(StoreNotFoundError):
                await writers.get("missing")
            with pytest.raises(StoreNotFoundError):
                await writers.get("missing")  # remembered for a second
            assert controller.describes == 4
            gets = await asyncio.gather(*(writers.get("other") for _ in range(20)), return_exceptions=True)
            assert all(isinstance(g, StoreNotFoundError) for g in gets)
            assert controller.describes == 5  # twenty concurrent asks, one request


def test_importing_venice_stays_light() -> None:
    """The producer (fastavro, pub-sub clients) loads on first use, not with ``import venice``."""
    code = (
        "import sys, venice\n"
        "heavy = ('fastavro', 'aiokafka', 'lmdb', 'fastapi', 'uvicorn')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "print(venice.Producer.__module__, venice.AsyncProducer.__module__, 'Producer' in venice.__all__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == ["[]", "venice.producer venice.producer True"]
