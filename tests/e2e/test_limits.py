"""A store's limits on a real cluster on Kafka (issue 8, items 5 and 7): the value size
limit is set per store, version topics are sized for it, larger values fail the push with
their position; record keys are canonical whatever the field order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.e2e.conftest import push, venice_cli, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster

pytestmark = pytest.mark.kafka

MiB = 1 << 20


def _topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    async def describe() -> dict[str, str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            [resource] = answer.resources
            return {entry[0]: entry[1] for entry in resource[4]}
        finally:
            await admin.close()

    return asyncio.run(describe())


def _cli(*args: str) -> str:
    result = venice_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_large_values_up_to_the_stores_limit(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    _cli("store", "create", "--controller", controller, "--name", "blobs", "--key-schema", "long", "--value-schema", "string",
         "--partitions", "2", "--replication-factor", "2", "--max-value-size", str(3 * MiB))
    assert httpx.get(f"{controller}/stores/blobs", timeout=5).json()["max_value_bytes"] == 3 * MiB
    big = "v" * (3 * MiB - 8)  # with its 4-byte length: just under 3 MiB serialized
    rows: list[dict[str, Any]] = [{"id": 1, "value": big}, {"id": 2, "value": "small"}]
    assert push(controller, "blobs", write_jsonl(tmp_path / "big.jsonl", rows)).returncode == 0
    wait_router_serves(router, "blobs", 2)
    assert httpx.get(f"{router}/storage/blobs/1", timeout=30).json() == big
    bootstrap = kafka_cluster.pubsub_url.removeprefix("kafka://")
    assert _topic_config(bootstrap, "blobs_v1")["max.message.bytes"] == str(3 * MiB + 64 * 1024)

    too_big = [{"id": 1, "value": "small"}, {"id": 3, "value": "w" * (3 * MiB)}]
    result = push(controller, "blobs", write_jsonl(tmp_path / "too-big.jsonl", too_big))
    assert result.returncode == 1
    assert f"line 2: value is {3 * MiB + 4} bytes serialized; the store takes values of at most {3 * MiB} bytes" in result.stderr
    assert httpx.get(f"{controller}/stores/blobs", timeout=5).json()["current_version"] == 1

    out = _cli("store", "update", "--controller", controller, "blobs", "--max-value-size", str(4 * MiB))
    assert f"values up to {4 * MiB} bytes" in out
    assert push(controller, "blobs", write_jsonl(tmp_path / "too-big.jsonl", too_big)).returncode == 0
    assert _topic_config(bootstrap, "blobs_v3")["max.message.bytes"] == str(4 * MiB + 64 * 1024)
    refused = venice_cli("store", "update", "--controller", controller, "blobs", "--max-value-size", str(4 * MiB + 1))
    assert refused.returncode == 2 and "--max-value-size" in refused.stderr


def test_record_keys_read_the_same_whatever_the_field_order(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    key_schema = {"type": "record", "name": "PairKey", "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "long"}]}
    body = {"name": "pairs", "key_schema": key_schema, "value_schema": "string", "partitions": 4, "replication_factor": 2}
    assert httpx.post(f"{controller}/stores", json=body, timeout=10).status_code == 201
    rows = [{"a": i, "b": 2 * i, "value": f"pair-{i}"} for i in range(1, 50)]
    assert push(controller, "pairs", write_jsonl(tmp_path / "pairs.jsonl", rows)).returncode == 0
    wait_router_serves(router, "pairs", quote(orjson.dumps({"a": 1, "b": 2}).decode(), safe=""))
    for text in ('{"a":1,"b":2}', '{"b":2,"a":1}', '{"b": 2, "a": 1}'):
        assert httpx.get(f"{router}/storage/pairs/{quote(text, safe='')}", timeout=10).json() == "pair-1"
    answer = httpx.post(f"{router}/storage/pairs", json={"keys": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}, timeout=10)
    assert [r["value"] for r in answer.json()["results"]] == ["pair-1", "pair-1"]
