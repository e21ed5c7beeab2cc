"""The ``venice store`` commands and pushes of every input format, on a real cluster."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import venice
from tests.e2e.conftest import venice_cli
from venice.cluster import LocalCluster, wait_for
from venice.pubsub import connect

pytestmark = pytest.mark.kafka

CSV = """id,name,score,visits
1,ada,0.5,10
2,bob,NA,20
3,cy,1.25,
4,dee,2.0,40
"""


def _cli_ok(*args: str) -> str:
    result = venice_cli(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _versions(controller: str, store: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{controller}/stores/{store}").json()["versions"])


def test_store_commands_and_every_format(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    controller, router = kafka_cluster.controller_url, kafka_cluster.router_url
    csv_path = tmp_path / "people.csv"
    csv_path.write_text(CSV)

    _cli_ok("store", "create", "--controller", controller, "--name", "people", "--infer-from", str(csv_path),
            "--key-field", "id", "--partitions", "2", "--replication-factor", "2")
    described = orjson.loads(_cli_ok("store", "describe", "--controller", controller, "people", "--json"))
    assert described["key_schema"] == "long"
    fields = {f["name"]: f["type"] for f in described["value_schemas"]["1"]["fields"]}
    assert fields == {"name": "string", "score": ["null", "double"], "visits": ["null", "long"]}
    assert "people" in _cli_ok("store", "list", "--controller", controller)

    # CSV: missing markers become nulls.
    _cli_ok("push", "--controller", controller, "--store", "people", "--input", str(csv_path), "--key-field", "id")
    with venice.Client(router) as client:
        wait_for(lambda: client.get("people", 2) is not None, 15, "router to serve people v1")
        assert client.batch_get("people", [1, 2, 3]) == [
            {"name": "ada", "score": 0.5, "visits": 10},
            {"name": "bob", "score": None, "visits": 20},
            {"name": "cy", "score": 1.25, "visits": None},
        ]

    # Avro container file as version 2.
    schema = {"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "long"}, {"name": "name", "type": "string"},
        {"name": "score", "type": ["null", "double"]}, {"name": "visits", "type": ["null", "long"]}]}
    rows = [{"id": i, "name": f"avro-{i}", "score": i / 2, "visits": i} for i in range(1, 6)]
    with open(tmp_path / "people.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), rows)
    _cli_ok("push", "--controller", controller, "--store", "people", "--input", str(tmp_path / "people.avro"),
            "--key-field", "id")

    # Parquet as version 3.
    table = pa.table({"id": [1, 2, 7], "name": ["pq-1", "pq-2", "pq-7"], "score": [None, 1.5, 2.5], "visits": [1, None, 3]})
    pq.write_table(table, tmp_path / "people.parquet")
    out = _cli_ok("push", "--controller", controller, "--store", "people", "--input", str(tmp_path / "people.parquet"),
                  "--key-field", "id")
    assert "v3" in out and "3 records" in out
    with venice.Client(router) as client:
        wait_for(lambda: (client.get("people", 7) or {}).get("name") == "pq-7", 15, "router to serve v3")
        assert client.batch_get("people", [1, 2, 5]) == [
            {"name": "pq-1", "score": None, "visits": 1},
            {"name": "pq-2", "score": 1.5, "visits": None},
            None,  # only in the Avro version: v3 replaced the whole dataset
        ]
    assert [v["status"] for v in _versions(controller, "people")] == ["RETIRED", "ONLINE", "ONLINE"]

    # Delete: the store disappears from the router, its topics from Kafka, its files from servers.
    _cli_ok("store", "delete", "--controller", controller, "people", "--yes")
    wait_for(lambda: httpx.get(f"{router}/storage/people/1").status_code == 404, 15, "router to forget people")
    assert httpx.get(f"{router}/storage/people/1").json()["error"]["code"] == "STORE_NOT_FOUND"

    async def topics() -> set[str]:
        async with connect(kafka_cluster.pubsub_url) as pubsub:
            return await pubsub.list_topics()

    wait_for(lambda: not {t for t in asyncio.run(topics()) if t.startswith("people_v")}, 15, "topics deleted")
    for server in kafka_cluster.servers:
        versions_dir = kafka_cluster.data_dir / server.name / "versions"
        wait_for(lambda d=versions_dir: not list(d.glob("people_v*")), 15, f"{server.name} to drop people")


def test_cli_errors_are_messages_not_tracebacks(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    result = venice_cli("store", "describe", "--controller", kafka_cluster.controller_url, "nope")
    assert result.returncode == 1 and "nope" in result.stderr and "Traceback" not in result.stderr
    result = venice_cli("store", "create", "--controller", kafka_cluster.controller_url, "--name", "bad",
                        "--key-schema", "long", "--value-schema", '{"type": "recrd"}')
    assert result.returncode == 1 and "schema" in result.stderr.lower() and "Traceback" not in result.stderr
    result = venice_cli("store", "list", "--controller", "http://127.0.0.1:9")
    assert result.returncode == 1 and "Traceback" not in result.stderr
