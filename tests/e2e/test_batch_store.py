"""A store pushed and read back end to end, on Kafka and on the embedded log."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

import venice
from tests.e2e.conftest import create_store, make_records, push, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster

RECORDS = 10_000


def _check_all_keys_read_back(cluster: LocalCluster, store: str, records: list[dict[str, Any]]) -> None:
    wait_router_serves(cluster.router_url, store, records[0]["id"])
    expected = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in records}
    keys = list(expected)
    # Every key is checked through batch gets; the single-key paths (one request per key,
    # where the suite's time goes) read interleaved samples of a tenth each.
    http_keys, async_keys = keys[::10], keys[5::10]

    # Router over plain HTTP.
    async def read_all_http() -> dict[int, Any]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=cluster.router_url, limits=limits, timeout=10) as http:
            sem = asyncio.Semaphore(32)

            async def one(key: int) -> tuple[int, Any]:
                async with sem:
                    response = await http.get(f"/storage/{store}/{key}")
                    assert response.status_code == 200, response.text
                    return key, response.json()

            return dict(await asyncio.gather(*(one(k) for k in http_keys)))

    assert asyncio.run(read_all_http()) == {k: expected[k] for k in http_keys}

    # Sync SDK: batch gets over every key, single gets over a sample.
    with venice.Client(cluster.router_url) as client:
        got: list[Any] = []
        for i in range(0, len(keys), 500):
            got.extend(client.batch_get(store, keys[i : i + 500]))
        assert got == [expected[k] for k in keys]
        for key in keys[::50]:
            assert client.get(store, key) == expected[key]

    # Async SDK: a sample of single gets.
    async def read_all_async() -> list[Any]:
        async with venice.AsyncClient(cluster.router_url) as client:
            sem = asyncio.Semaphore(32)

            async def one(key: int) -> Any:
                async with sem:
                    return await client.get(store, key)

            return await asyncio.gather(*(one(k) for k in async_keys))

    assert asyncio.run(read_all_async()) == [expected[k] for k in async_keys]


@pytest.mark.kafka
def test_push_and_read_10k_on_kafka(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(kafka_cluster.controller_url, "members", partitions=4, replication_factor=2)
    records = make_records(RECORDS)
    result = push(kafka_cluster.controller_url, "members", write_jsonl(tmp_path / "members.jsonl", records))
    assert result.returncode == 0, result.stderr
    assert f"{RECORDS} records" in result.stdout
    version = httpx.get(f"{kafka_cluster.controller_url}/stores/members/versions/1").json()
    assert version["status"] == "ONLINE" and version["current"]
    assert all(len(replicas) == 2 for replicas in version["replicas"].values())
    assert sum(r["records"] for rs in version["replicas"].values() for r in rs[:1]) == RECORDS
    _check_all_keys_read_back(kafka_cluster, "members", records)


def test_push_and_read_on_embedded_log(embedded_cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(embedded_cluster.controller_url, "members", partitions=4, replication_factor=2)
    records = make_records(RECORDS)
    result = push(embedded_cluster.controller_url, "members", write_jsonl(tmp_path / "members.jsonl", records))
    assert result.returncode == 0, result.stderr
    _check_all_keys_read_back(embedded_cluster, "members", records)
