"""Metrics of a hybrid store on real processes (embedded log): real-time records applied,
real-time lag back to 0, poison pills counted, and the JSON log line of the first one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.conftest import VALUE_SCHEMA, make_records, push, write_jsonl
from tests.e2e.scrape import Samples, scrape, total
from venice.cluster import LocalCluster, wait_for
from venice.partitioner import partition_for
from venice.pubsub import connect
from venice.schema import AvroCodec
from venice.wire import data_headers

STORE = "hybrid-metered"
PARTITIONS = 2
PUSHED = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("metrics-hybrid"), servers=1)
    cluster.servers[0].env["VENICE_LOG_FORMAT"] = "json"
    with cluster:
        yield cluster


async def _write_rt(pubsub_url: str, records: list[tuple[bytes, bytes]]) -> None:
    pubsub = connect(pubsub_url)
    producer = await pubsub.producer()
    try:
        for key_bytes, value_bytes in records:
            await producer.send(f"{STORE}_rt", partition_for(key_bytes, PARTITIONS), key_bytes, value_bytes, data_headers(1))
        await producer.flush()
    finally:
        await producer.close()
        await pubsub.close()


def test_real_time_records_lag_and_poison_pills(cluster: LocalCluster, tmp_path: Path) -> None:
    created = httpx.post(f"{cluster.controller_url}/stores", timeout=30, json={
        "name": STORE, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": PARTITIONS,
        "replication_factor": 1, "hybrid": {"rewind_seconds": 3600, "offset_lag": 1000}})
    assert created.status_code == 201, created.text
    result = push(cluster.controller_url, STORE, write_jsonl(tmp_path / "in.jsonl", make_records(PUSHED)))
    assert result.returncode == 0, result.stderr

    keys, values = AvroCodec("long"), AvroCodec(VALUE_SCHEMA)
    value_fields = {k: v for k, v in make_records(1)[0].items() if k != "id"}
    good = [(keys.encode(10_000 + i), values.encode(value_fields)) for i in range(5)]
    bad = [(keys.encode(20_000 + i), b"\xff\xff not avro") for i in range(2)]  # undecodable values
    asyncio.run(_write_rt(cluster.pubsub_url, good + bad))

    def settled() -> Samples | None:
        samples = scrape(cluster.servers[0].url)
        labels = {"store": STORE, "version": "1"}
        done = (
            total(samples, "venice_server_poison_pills_total", **labels) == 2
            and total(samples, "venice_server_ingested_records_total", **labels) == PUSHED + 5
        )
        return samples if done else None

    samples = wait_for(settled, 60, "the real-time records to be applied or skipped")
    # The lag is polled about once a second: wait for the poll that sees every record read.
    def caught_up() -> Samples | None:
        s = scrape(cluster.servers[0].url)
        lags = [
            s.get(("venice_server_offset_lag", frozenset({"store": STORE, "version": "1", "partition": str(p), "topic": "realtime"}.items())))
            for p in range(PARTITIONS)
        ]
        return s if lags == [0.0] * PARTITIONS else None

    samples = wait_for(caught_up, 30, "the real-time lag of every partition to read 0")
    assert total(samples, "venice_server_lmdb_entries", store=STORE, version="1") == PUSHED + 5

    lines = [orjson.loads(line) for line in cluster.servers[0].log_path.read_text().splitlines() if line.strip()]
    pills = [e for e in lines if e.get("event") == "poison_pill"]
    # One line per kind of poison pill per partition (the rest are counted): both bad values
    # are UNDECODABLE, logged once for each partition they landed in.
    bad_partitions = {partition_for(k, PARTITIONS) for k, _ in bad}
    assert sorted(e["partition"] for e in pills) == sorted(bad_partitions)
    assert {(e["store"], e["version"], e["kind"]) for e in pills} == {(STORE, 1, "UNDECODABLE")}
