"""Router answers for missing things, batch order, and pushes of bad input that must
fail with the file position and leave the served data unchanged."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import venice
from tests.e2e.conftest import create_store, current_version, make_records, push, wait_router_serves, write_jsonl
from venice.cluster import LocalCluster

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def served(kafka_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Store ``served`` with version 1 holding 200 records."""
    create_store(kafka_cluster.controller_url, "served", partitions=4, replication_factor=2)
    records = make_records(200, seed=3)
    result = push(kafka_cluster.controller_url, "served", write_jsonl(tmp_path_factory.mktemp("in") / "a.jsonl", records))
    assert result.returncode == 0, result.stderr
    wait_router_serves(kafka_cluster.router_url, "served", records[0]["id"])
    return records


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return str(body["error"]["code"])


class TestRouterAnswers:
    def test_value_as_json(self, kafka_cluster: LocalCluster, served: list[dict[str, Any]]) -> None:
        record = served[0]
        response = httpx.get(f"{kafka_cluster.router_url}/storage/served/{record['id']}")
        assert response.status_code == 200
        assert response.json() == {k: v for k, v in record.items() if k != "id"}

    def test_missing_key_is_404(self, kafka_cluster: LocalCluster, served: list[dict[str, Any]]) -> None:
        response = httpx.get(f"{kafka_cluster.router_url}/storage/served/1")
        assert response.status_code == 404 and _error(response) == "KEY_NOT_FOUND"

    def test_unknown_store_is_404_with_another_code(self, kafka_cluster: LocalCluster) -> None:
        response = httpx.get(f"{kafka_cluster.router_url}/storage/no-such-store/1")
        assert response.status_code == 404 and _error(response) == "STORE_NOT_FOUND"

    def test_store_without_version_is_400(self, kafka_cluster: LocalCluster) -> None:
        create_store(kafka_cluster.controller_url, "empty-store")

        def answer() -> httpx.Response | None:
            response = httpx.get(f"{kafka_cluster.router_url}/storage/empty-store/1")
            return response if response.status_code == 400 else None

        from venice.cluster import wait_for

        response = wait_for(answer, 10, "router to learn about empty-store")
        assert _error(response) == "NO_CURRENT_VERSION"
        assert "push" in response.json()["error"]["message"]

    def test_key_that_is_not_a_long_is_400(self, kafka_cluster: LocalCluster, served: list[dict[str, Any]]) -> None:
        response = httpx.get(f"{kafka_cluster.router_url}/storage/served/not-a-number")
        assert response.status_code == 400 and _error(response) == "INVALID_KEY"

    def test_batch_get_keeps_caller_order_and_marks_missing(
        self, kafka_cluster: LocalCluster, served: list[dict[str, Any]]
    ) -> None:
        keys = [served[5]["id"], 1, served[0]["id"], served[100]["id"], 2]
        response = httpx.post(f"{kafka_cluster.router_url}/storage/served", json={"keys": keys})
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["key"] for r in results] == keys
        assert [r["found"] for r in results] == [True, False, True, True, False]
        by_id = {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in served}
        assert [r.get("value") for r in results] == [by_id.get(k) for k in keys]

    def test_sdk_errors_are_typed(self, kafka_cluster: LocalCluster, served: list[dict[str, Any]]) -> None:
        with venice.Client(kafka_cluster.router_url) as client:
            assert client.get("served", 1) is None
            with pytest.raises(venice.StoreNotFoundError):
                client.get("no-such-store", 1)
            with pytest.raises(venice.VeniceError):
                client.get("served", "x")


def _bad_files(tmp: Path, served: list[dict[str, Any]]) -> dict[str, tuple[Path, str]]:
    """Each kind of bad input, with the position the error must name."""
    good = [orjson.dumps({**r, "name": "v2-" + r["name"]}).decode() for r in make_records(50, seed=9, start=10_000)]
    files: dict[str, tuple[Path, str]] = {}

    def write(name: str, lines: list[str], where: str) -> None:
        path = tmp / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        files[name] = (path, where)

    write("malformed", good[:10] + ['{"id": 5, "name": '] + good[10:], "line 11")
    write("missing_key", good[:3] + [orjson.dumps({k: v for k, v in orjson.loads(good[3]).items() if k != "id"}).decode()], "line 4")
    bad_value = {**orjson.loads(good[7]), "visits": "many"}
    write("wrong_type", good[:7] + [orjson.dumps(bad_value).decode()] + good[8:], "line 8")
    dup = {**orjson.loads(good[2]), "score": -1.0}
    write("duplicate_key", good + [orjson.dumps(dup).decode()], "line 51")
    return files


@pytest.mark.parametrize("kind", ["malformed", "missing_key", "wrong_type", "duplicate_key"])
def test_bad_input_fails_with_position_and_keeps_serving(
    kind: str, kafka_cluster: LocalCluster, served: list[dict[str, Any]], tmp_path: Path
) -> None:
    path, where = _bad_files(tmp_path, served)[kind]
    before = current_version(kafka_cluster.controller_url, "served")
    result = push(kafka_cluster.controller_url, "served", path)
    assert result.returncode != 0
    assert where in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert current_version(kafka_cluster.controller_url, "served") == before
    versions = httpx.get(f"{kafka_cluster.controller_url}/stores/served").json()["versions"]
    assert versions[-1]["status"] == "ERROR"
    with venice.Client(kafka_cluster.router_url) as client:
        keys = [r["id"] for r in served]
        assert client.batch_get("served", keys) == [{k: v for k, v in r.items() if k != "id"} for r in served]


def test_unknown_store_push_fails_cleanly(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", make_records(3))
    result = push(kafka_cluster.controller_url, "never-created", path)
    assert result.returncode != 0
    assert "never-created" in result.stderr and "Traceback" not in result.stderr


def test_gzip_jsonl_push(kafka_cluster: LocalCluster, tmp_path: Path) -> None:
    create_store(kafka_cluster.controller_url, "gz", partitions=2, replication_factor=1)
    records = make_records(100, seed=11)
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records)))
    assert push(kafka_cluster.controller_url, "gz", path).returncode == 0
    wait_router_serves(kafka_cluster.router_url, "gz", records[42]["id"])
    with venice.Client(kafka_cluster.router_url) as client:
        assert client.get("gz", records[42]["id"]) == {k: v for k, v in records[42].items() if k != "id"}
