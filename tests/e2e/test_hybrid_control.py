"""The controller's side of hybrid stores and value-schema evolution, end to end on real
processes (controller, storage servers, routers) on the real Kafka broker and on the
embedded log: real-time topics made and removed, a store created again never reading
its predecessor's nearline writes, schemas registered with the CLI and pushes with
either schema read back in the newest, and which versions apply nearline writes.

The nearline writes here are produced the way any Kafka producer would (venice/wire.py:
Avro key and value, ``schema-id`` header, the partitioner), not through Venice's SDK."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest

from tests.e2e.conftest import push, venice_cli, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster, wait_for
from venice.errors import TopicNotFoundError
from venice.partitioner import partition_for
from venice.pubsub import connect
from venice.structs import TopicPartition

MEMBER = {
    "type": "record",
    "name": "Member",
    "fields": [{"name": "name", "type": "string"}, {"name": "visits", "type": "int"}],
}
MEMBER_V2 = {
    "type": "record",
    "name": "Member",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "visits", "type": "int"},
        {"name": "city", "type": ["null", "string"], "default": None},
        {"name": "level", "type": "int", "default": 1},
    ],
}


def _cluster(request: pytest.FixtureRequest, backend: str) -> LocalCluster:
    cluster: LocalCluster = request.getfixturevalue("kafka_cluster" if backend == "kafka" else "embedded_cluster")
    return cluster


BACKENDS = ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # clusters are shared by the session


def _cli(*args: str) -> str:
    result = venice_cli(*args)
    assert result.returncode == 0, f"venice {' '.join(args)}: {result.stderr}"
    return result.stdout


def _avro(schema: Any, datum: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), datum)
    return buffer.getvalue()


def _create(controller: str, store: str, *, hybrid: dict[str, int] | None = None, partitions: int = 3) -> dict[str, Any]:
    body: dict[str, Any] = {"name": store, "key_schema": "long", "value_schema": MEMBER, "partitions": partitions,
                            "replication_factor": 2}
    if hybrid is not None:
        body["hybrid"] = hybrid
    response = httpx.post(f"{controller}/stores", json=body, timeout=60)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _rt_partitions(pubsub_url: str, topic: str) -> int | None:
    async def count() -> int | None:
        async with connect(pubsub_url) as pubsub:
            try:
                return await pubsub.partition_count(topic)
            except TopicNotFoundError:
                return None

    return asyncio.run(count())


def _write_rt(pubsub_url: str, store: str, partitions: int, records: dict[int, dict[str, Any] | None], schema_id: int = 1,
              schema: Any = MEMBER) -> None:
    """Nearline puts (and deletes, for ``None``) as any Kafka producer writes them."""

    async def write() -> None:
        async with connect(pubsub_url) as pubsub, await pubsub.producer() as producer:
            for key, value in records.items():
                key_bytes = _avro("long", key)
                value_bytes = None if value is None else _avro(schema, value)
                headers = [("schema-id", str(schema_id).encode())]
                await producer.send(f"{store}_rt", partition_for(key_bytes, partitions), key_bytes, value_bytes, headers)

    asyncio.run(write())


def _rt_values(pubsub_url: str, topic: str) -> list[bytes | None]:
    """Every record value of a real-time topic, from the beginning."""

    async def read() -> list[bytes | None]:
        async with connect(pubsub_url) as pubsub:
            beginning, ends = await pubsub.beginning_offsets(topic), await pubsub.end_offsets(topic)
            wanted = sum(ends[p] - beginning[p] for p in ends)
            got: list[bytes | None] = []
            async with await pubsub.consumer() as consumer:
                await consumer.assign({TopicPartition(topic, p): o for p, o in beginning.items()})
                deadline = time.monotonic() + 20
                while len(got) < wanted and time.monotonic() < deadline:
                    for messages in (await consumer.getmany(timeout_ms=200)).values():
                        got.extend(m.value for m in messages)
            return got

    return asyncio.run(read())


def _read(router: str, store: str, key: int, version: int | None = None) -> httpx.Response:
    params = {} if version is None else {"version": version}
    return httpx.get(f"{router}/storage/{store}/{key}", params=params, timeout=10)


def _members(start: int, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": i, "name": f"m{i}", "visits": i, **extra} for i in range(start, start + count)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_made_hybrid_gets_its_real_time_topic(request: pytest.FixtureRequest, backend: str) -> None:
    cluster = _cluster(request, backend)
    controller, store = cluster.controller_url, _name("made-hybrid")
    _create(controller, store, partitions=3)
    assert _rt_partitions(cluster.pubsub_url, f"{store}_rt") is None
    out = _cli("store", "update", "--controller", controller, store, "--hybrid-rewind-seconds", "600",
               "--hybrid-offset-lag", "5")
    assert f"hybrid: rewind 600 s, offset lag 5, real-time topic {store}_rt" in out
    assert _rt_partitions(cluster.pubsub_url, f"{store}_rt") == 3
    described = _cli("store", "describe", "--controller", controller, store)
    assert f"hybrid:             rewind 600 s, offset lag 5, real-time topic {store}_rt" in described
    assert "write compute:      off" in described
    info = orjson.loads(_cli("store", "describe", "--controller", controller, store, "--json"))
    assert info["hybrid"] == {"rewind_seconds": 600, "offset_lag": 5, "real_time_topic": f"{store}_rt"}
    _cli("store", "update", "--controller", controller, store, "--write-compute")
    info = orjson.loads(_cli("store", "describe", "--controller", controller, store, "--json"))
    assert info["write_compute"] is True and set(info["update_schemas"]) == {"1"}
    _cli("store", "update", "--controller", controller, store, "--no-hybrid")
    wait_for(lambda: _rt_partitions(cluster.pubsub_url, f"{store}_rt") is None, 30, "the real-time topic to be deleted")
    info = orjson.loads(_cli("store", "describe", "--controller", controller, store, "--json"))
    assert info["hybrid"] is None and info["write_compute"] is False


def test_hybrid_flags_are_checked_by_the_cli(embedded_cluster: LocalCluster) -> None:
    controller, store = embedded_cluster.controller_url, _name("flags")
    half = venice_cli("store", "create", "--controller", controller, "--name", store, "--key-schema", "long",
                      "--value-schema", orjson.dumps(MEMBER).decode(), "--hybrid-rewind-seconds", "60")
    assert half.returncode == 2 and "together" in half.stderr
    wc = venice_cli("store", "create", "--controller", controller, "--name", store, "--key-schema", "long",
                    "--value-schema", orjson.dumps(MEMBER).decode(), "--write-compute")
    assert wc.returncode == 2 and "--write-compute needs a hybrid store" in wc.stderr
    for bad in (["--hybrid-rewind-seconds", "-1", "--hybrid-offset-lag", "1"],
                ["--hybrid-rewind-seconds", "2592001", "--hybrid-offset-lag", "1"],
                ["--hybrid-rewind-seconds", "60", "--hybrid-offset-lag", "1e3"]):
        result = venice_cli("store", "create", "--controller", controller, "--name", store, "--key-schema", "long",
                            "--value-schema", orjson.dumps(MEMBER).decode(), *bad)
        assert result.returncode == 2, result.stderr
    assert httpx.get(f"{controller}/stores/{store}", timeout=5).status_code == 404
    created = _cli("store", "create", "--controller", controller, "--name", store, "--key-schema", "long",
                   "--value-schema", orjson.dumps(MEMBER).decode(), "--hybrid-rewind-seconds", "60",
                   "--hybrid-offset-lag", "0", "--write-compute", "--partitions", "2")
    assert f"hybrid: rewind 60 s, offset lag 0, real-time topic {store}_rt; write compute on" in created
    both = venice_cli("store", "update", "--controller", controller, store, "--no-hybrid", "--hybrid-rewind-seconds", "1",
                      "--hybrid-offset-lag", "1")
    assert both.returncode == 2 and "not both" in both.stderr
    nothing = venice_cli("store", "update", "--controller", controller, store)
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_store_deleted_and_created_again_never_reads_the_old_writes(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    cluster = _cluster(request, backend)
    controller, router, store = cluster.controller_url, cluster.router_url, _name("again")
    _create(controller, store, hybrid={"rewind_seconds": 3600, "offset_lag": 100}, partitions=2)
    _write_rt(cluster.pubsub_url, store, 2, {k: {"name": f"old{k}", "visits": k} for k in range(1, 6)})
    assert len(_rt_values(cluster.pubsub_url, f"{store}_rt")) == 5
    _cli("store", "delete", "--controller", controller, store, "--yes")
    _create(controller, store, hybrid={"rewind_seconds": 3600, "offset_lag": 100}, partitions=2)
    assert _rt_values(cluster.pubsub_url, f"{store}_rt") == []
    # A version of the new store replays its real-time topic from the beginning: none of
    # the old store's writes may come back.
    result = push(controller, store, write_jsonl(tmp_path / "new.jsonl", _members(100, 3)))
    assert result.returncode == 0, result.stderr
    wait_router_serves(router, store, 100)
    assert all(_read(router, store, k).status_code == 404 for k in range(1, 6))
    assert _read(router, store, 101).json() == {"name": "m101", "visits": 101}


@pytest.mark.kafka
def test_schema_evolution_end_to_end(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("evolve")
    _create(controller, store, partitions=2)
    first = _members(1, 50)
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", first)).returncode == 0

    # A file with a field schema 1 lacks: refused before any version opens, with the schema to add.
    second = _members(1, 50, city="Oslo")
    second[7]["city"] = None
    refused = push(controller, store, write_jsonl(tmp_path / "v2.jsonl", second))
    assert refused.returncode == 1
    assert "field(s) not in the value schema: city" in refused.stderr
    assert f"venice store add-value-schema --controller {controller} {store} --value-schema @{store}-v2.avsc" in refused.stderr
    proposal = orjson.loads(refused.stderr[refused.stderr.index("{"): refused.stderr.rindex("}") + 1])
    assert proposal["fields"][-1] == {"name": "city", "type": ["null", "string"], "default": None}
    assert [v["version"] for v in httpx.get(f"{controller}/stores/{store}", timeout=5).json()["versions"]] == [1]

    # Incompatible schemas are refused, naming the field; the compatible one gets id 2, once.
    no_default = {**MEMBER, "fields": [*MEMBER["fields"], {"name": "age", "type": "int"}]}
    (tmp_path / "bad.avsc").write_text(orjson.dumps(no_default).decode())
    bad = venice_cli("store", "add-value-schema", "--controller", controller, store, "--value-schema", f"@{tmp_path / 'bad.avsc'}")
    assert bad.returncode == 1 and "field age" in bad.stderr and "cannot read data written with value schema 1" in bad.stderr
    (tmp_path / "v2.avsc").write_text(orjson.dumps(MEMBER_V2).decode())
    assert _cli("store", "add-value-schema", "--controller", controller, store, "--value-schema", f"@{tmp_path / 'v2.avsc'}").strip() == "2"
    again = venice_cli("store", "add-value-schema", "--controller", controller, store, "--value-schema", f"@{tmp_path / 'v2.avsc'}")
    assert again.returncode == 0 and again.stdout.strip() == "2" and "already has this schema" in again.stderr

    # The same file pushes with schema 2 (the newest, by default).
    assert push(controller, store, write_jsonl(tmp_path / "v2.jsonl", second)).returncode == 0
    wait_for(lambda: httpx.get(f"{controller}/stores/{store}", timeout=5).json()["current_version"] == 2, 30, "v2 current")
    wait_for(lambda: _read(router, store, 1).json().get("city") == "Oslo", 30, "the router to read v2")

    # Both versions read back in schema 2: version 1's values with the new fields' defaults.
    for key in (1, 8, 50):
        old = _read(router, store, key, version=1)
        assert old.status_code == 200 and old.json() == {"name": f"m{key}", "visits": key, "city": None, "level": 1}
        assert _read(router, store, key).json() == {"name": f"m{key}", "visits": key, "city": None if key == 8 else "Oslo",
                                                    "level": 1}
    batch = httpx.post(f"{router}/storage/{store}", params={"version": 1}, json={"keys": [3, 999]}, timeout=10).json()
    assert batch["results"] == [{"key": 3, "found": True, "value": {"name": "m3", "visits": 3, "city": None, "level": 1}},
                                {"key": 999, "found": False}]

    # An older schema may still be pushed with; its values read back in schema 2 too.
    third = _members(200, 5)
    with_old = push(controller, store, write_jsonl(tmp_path / "v3.jsonl", third), "--value-schema-id", "1")
    assert with_old.returncode == 0, with_old.stderr
    wait_router_serves(router, store, 200)
    assert _read(router, store, 200).json() == {"name": "m200", "visits": 200, "city": None, "level": 1}
    unknown = push(controller, store, write_jsonl(tmp_path / "v4.jsonl", third), "--value-schema-id", "9")
    assert unknown.returncode == 1 and "has no value schema 9 (it has 1, 2)" in unknown.stderr

    # Pushing schema 1 a file schema 2 already covers says so.
    covered = push(controller, store, write_jsonl(tmp_path / "v5.jsonl", second), "--value-schema-id", "1")
    assert covered.returncode == 1 and "value schema 2 of store" in covered.stderr and "has every field of this file" in covered.stderr


# -- nearline writes reaching versions (needs the ingestion side: servers applying <store>_rt) --


def _replicas(controller: str, store: str, version: int) -> dict[str, list[dict[str, Any]]]:
    return dict(httpx.get(f"{controller}/stores/{store}/versions/{version}", timeout=5).json()["replicas"])


def _versions(controller: str, store: str) -> dict[int, dict[str, Any]]:
    return {v["version"]: v for v in httpx.get(f"{controller}/stores/{store}", timeout=5).json()["versions"]}


def _eventually_reads(router: str, store: str, key: int, value: Any, version: int | None = None, timeout_s: float = 30) -> None:
    def seen() -> bool:
        response = _read(router, store, key, version)
        return response.status_code == 200 and response.json() == value

    wait_for(seen, timeout_s, f"{store}/{key} to read {value!r}")


@pytest.mark.kafka
def test_writes_made_before_the_first_push_apply_once_a_version_exists(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("early")
    _create(controller, store, hybrid={"rewind_seconds": 0, "offset_lag": 10}, partitions=2)
    _write_rt(kafka_cluster.pubsub_url, store, 2, {1: {"name": "rt1", "visits": 1}, 2: {"name": "rt2", "visits": 2}})
    # Even with no rewind at all: the first version starts at the topic's beginning.
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", _members(10, 2))).returncode == 0
    assert _versions(controller, store)[1]["rt_start_offsets"] == {"0": 0, "1": 0}
    _eventually_reads(router, store, 1, {"name": "rt1", "visits": 1})
    _eventually_reads(router, store, 2, {"name": "rt2", "visits": 2})
    assert _read(router, store, 10).json() == {"name": "m10", "visits": 10}


@pytest.mark.kafka
def test_a_store_made_hybrid_applies_writes_to_its_current_version(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("later")
    _create(controller, store, partitions=2)
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", _members(1, 3))).returncode == 0
    wait_router_serves(router, store, 1)
    _cli("store", "update", "--controller", controller, store, "--hybrid-rewind-seconds", "60", "--hybrid-offset-lag", "10")
    wait_for(lambda: _versions(controller, store)[1]["rt_start_offsets"] == {"0": 0, "1": 0}, 30, "v1's start offsets")
    _write_rt(kafka_cluster.pubsub_url, store, 2, {1: {"name": "changed", "visits": 11}, 3: None})
    _eventually_reads(router, store, 1, {"name": "changed", "visits": 11})
    wait_for(lambda: _read(router, store, 3).status_code == 404, 30, "the nearline delete")


@pytest.mark.kafka
def test_rewind_decides_what_a_new_version_replays_and_backups_do_not_consume(
    kafka_cluster: LocalCluster, tmp_path: Path
) -> None:
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("rewind")
    _create(controller, store, hybrid={"rewind_seconds": 0, "offset_lag": 10}, partitions=2)
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", _members(1, 2))).returncode == 0
    _write_rt(kafka_cluster.pubsub_url, store, 2, {7: {"name": "rt7", "visits": 7}})
    _eventually_reads(router, store, 7, {"name": "rt7", "visits": 7})
    # Rewind 0: version 2 replays only writes made after it was opened; key 7 came before.
    assert push(controller, store, write_jsonl(tmp_path / "v2.jsonl", _members(1, 2))).returncode == 0
    wait_for(lambda: httpx.get(f"{controller}/stores/{store}", timeout=5).json()["current_version"] == 2, 30, "v2 current")
    wait_for(lambda: _read(router, store, 7).status_code == 404, 30, "the router to read v2")
    versions = _versions(controller, store)
    assert (versions[1]["consume_rt"], versions[2]["consume_rt"]) == (False, True)
    # Servers learn that version 1 is a backup from their next heartbeat answers (every
    # 0.5 s); give them a few before writing.
    time.sleep(3)
    # A write now reaches the current version, not the backup.
    _write_rt(kafka_cluster.pubsub_url, store, 2, {8: {"name": "rt8", "visits": 8}})
    _eventually_reads(router, store, 8, {"name": "rt8", "visits": 8})
    assert _read(router, store, 8, version=1).status_code == 404
    # An hour of rewind: version 3 replays both writes.
    _cli("store", "update", "--controller", controller, store, "--hybrid-rewind-seconds", "3600", "--hybrid-offset-lag", "10")
    assert push(controller, store, write_jsonl(tmp_path / "v3.jsonl", _members(1, 2))).returncode == 0
    _eventually_reads(router, store, 7, {"name": "rt7", "visits": 7}, version=3)
    _eventually_reads(router, store, 8, {"name": "rt8", "visits": 8}, version=3)
    described = _cli("store", "describe", "--controller", controller, store)
    assert "v3 ONLINE (current); real-time lag 0, applying real-time writes" in described


@pytest.mark.kafka
def test_a_store_made_hybrid_again_applies_writes_to_its_new_topic(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    """Batch-only and then hybrid again: the live version starts over at the new topic's
    beginning (the old topic and its offsets are gone: a new real-time epoch)."""
    controller, router, store = kafka_cluster.controller_url, kafka_cluster.router_url, _name("again-rt")
    _create(controller, store, hybrid={"rewind_seconds": 60, "offset_lag": 10}, partitions=2)
    assert push(controller, store, write_jsonl(tmp_path / "v1.jsonl", _members(1, 2))).returncode == 0
    _write_rt(kafka_cluster.pubsub_url, store, 2, {k: {"name": f"first{k}", "visits": k} for k in range(10, 20)})
    _eventually_reads(router, store, 19, {"name": "first19", "visits": 19})
    _cli("store", "update", "--controller", controller, store, "--no-hybrid")
    wait_for(lambda: _rt_partitions(kafka_cluster.pubsub_url, f"{store}_rt") is None, 30, "the old real-time topic to go")
    _cli("store", "update", "--controller", controller, store, "--hybrid-rewind-seconds", "60", "--hybrid-offset-lag", "10")
    wait_for(lambda: _versions(controller, store)[1]["rt_start_offsets"] == {"0": 0, "1": 0}, 30, "the new topic's offsets")
    assert _versions(controller, store)[1]["rt_epoch"] == 2
    _write_rt(kafka_cluster.pubsub_url, store, 2, {1: {"name": "second", "visits": 1}, 19: None})
    _eventually_reads(router, store, 1, {"name": "second", "visits": 1})
    wait_for(lambda: _read(router, store, 19).status_code == 404, 30, "the nearline delete in the new topic")
    assert _read(router, store, 18).json() == {"name": "first18", "visits": 18}  # applied from the old topic, kept
    # Every replica reads the new topic from its beginning: its offsets are the new topic's.
    ends = {"0": 0, "1": 0}
    for partition in (0, 1):
        ends[str(partition)] = sum(1 for k in (1, 19) if partition_for(_avro("long", k), 2) == partition)
    wait_for(lambda: all(r["rt_offset"] == ends[p] for p, rs in _replicas(controller, store, 1).items() for r in rs),
             30, "both replicas at the new topic's end")
