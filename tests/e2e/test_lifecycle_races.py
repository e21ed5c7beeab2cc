"""Lifecycle races on a real cluster (issue 8, items 1-3): a deleted store's data never
comes back, a push the controller never heard end from never goes live, and one batch
push runs at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import VALUE_SCHEMA, make_records, push, push_process, venice_cli, write_jsonl
from venice.cluster import LocalCluster, wait_for
from venice.pubsub import connect
from venice.push.job import push as push_job

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def three_servers(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Controller, 3 storage servers and a router on the session's Kafka broker."""
    with LocalCluster(tmp_path_factory.mktemp("races"), servers=3, pubsub_url=kafka_broker.url) as cluster:
        yield cluster


def _store_body(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "key_schema": "long", "value_schema": VALUE_SCHEMA, "partitions": 2, "replication_factor": 3, **extra}


def _push(controller: str, store: str, path: Path) -> int:
    """Push in-process (no CLI start-up between the steps); the version number."""
    summary = asyncio.run(push_job(controller, store, path, key_field="id", progress=False, timeout_s=60))
    return summary.version


def _read_all(router: str, store: str, keys: list[int], version: int) -> list[Any]:
    """Values of ``keys`` in ``version`` (None when missing), once the router knows the version."""

    def batch() -> list[Any] | None:
        answer = httpx.post(f"{router}/storage/{store}?version={version}", json={"keys": keys}, timeout=10)
        if answer.status_code == 404 and answer.json()["error"]["code"] == "VERSION_NOT_FOUND":
            return None  # the router has not long-polled the new table yet
        assert answer.status_code == 200, answer.text
        return [r.get("value") for r in answer.json()["results"]]

    result: list[Any] = wait_for(batch, 15, f"router to serve {store} v{version}")
    return result


def _expected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "id"} for r in records]


def test_delete_and_recreate_never_serves_deleted_data(three_servers: LocalCluster, tmp_path: Path) -> None:
    controller, router = three_servers.controller_url, three_servers.router_url
    old = make_records(1_000, seed=31)
    new = make_records(10, seed=32, start=5_000)  # keys disjoint from the old ones
    old_file, new_file = write_jsonl(tmp_path / "old.jsonl", old), write_jsonl(tmp_path / "new.jsonl", new)

    assert httpx.post(f"{controller}/stores", json=_store_body("reborn"), timeout=10).status_code == 201
    first = _push(controller, "reborn", old_file)
    first_incarnation = httpx.get(f"{controller}/stores/reborn", timeout=5).json().get("incarnation")
    assert httpx.delete(f"{controller}/stores/reborn", timeout=10).status_code == 200
    assert httpx.post(f"{controller}/stores", json=_store_body("reborn"), timeout=10).status_code == 201
    second = _push(controller, "reborn", new_file)

    keys = [r["id"] for r in old + new]
    values = _read_all(router, "reborn", keys, second)
    assert values[: len(old)] == [None] * len(old), "deleted data came back"
    assert values[len(old):] == _expected(new)

    description = httpx.get(f"{controller}/stores/reborn", timeout=5).json()
    assert second > first, "a re-created store must never reuse a version number"
    assert description["incarnation"] != first_incarnation
    assert description["current_version"] == second
    [version] = description["versions"]
    assert version["topic"] == f"reborn_v{second}" and version["records"] == 10 and version["status"] == "ONLINE"

    # The deleted version's topic goes; the live one stays (the janitor never takes it).
    async def topics() -> set[str]:
        async with connect(three_servers.pubsub_url) as pubsub:
            return await pubsub.list_topics()

    wait_for(lambda: f"reborn_v{first}" not in asyncio.run(topics()), 20, "the deleted version's topic to go")
    assert f"reborn_v{second}" in asyncio.run(topics())
    assert _read_all(router, "reborn", [new[0]["id"]], second) == _expected(new[:1])


def _version(controller: str, store: str, number: int) -> dict[str, Any]:
    return dict(httpx.get(f"{controller}/stores/{store}/versions/{number}", timeout=5).json())


def _opened(controller: str, store: str) -> bool:
    return bool(httpx.get(f"{controller}/stores/{store}", timeout=5).json()["versions"])


def _written(cluster: LocalCluster, topic: str) -> int:
    """Records in ``topic`` so far (data plus start- and end-of-push per partition)."""

    async def count() -> int:
        async with connect(cluster.pubsub_url) as pubsub:
            return sum((await pubsub.end_offsets(topic)).values())

    return asyncio.run(count())


def test_controller_killed_during_a_push_the_push_still_succeeds(three_servers: LocalCluster, tmp_path: Path) -> None:
    controller = three_servers.controller_url
    body = {**_store_body("survivor"), "partitions": 4, "replication_factor": 1}
    assert httpx.post(f"{controller}/stores", json=body, timeout=10).status_code == 201
    path = write_jsonl(tmp_path / "big.jsonl", make_records(200_000, seed=33))
    pusher = push_process(controller, "survivor", path)
    try:
        wait_for(lambda: _opened(controller, "survivor"), 60, "the version to open")
        time.sleep(1.5)  # mid-push
        three_servers.controller.kill()
        # The push job keeps writing to Kafka without the controller; once everything is
        # in the topic its end-of-push call meets the outage for a while.
        wait_for(lambda: _written(three_servers, "survivor_v1") == 200_000 + 2 * 4, 120, "all records in the topic")
        time.sleep(3.0)
        three_servers.controller.start()
        three_servers.controller.wait_healthy()
        out, err = pusher.communicate(timeout=300)
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.communicate()
    assert pusher.returncode == 0, err
    assert "pushed survivor v1: 200000 records" in out
    info = _version(controller, "survivor", 1)
    assert info["status"] == "ONLINE" and info["records"] == 200_000 and info["current"]


def test_controller_away_past_the_push_deadline_the_push_fails_and_never_goes_live(
    three_servers: LocalCluster, tmp_path: Path
) -> None:
    controller = three_servers.controller_url
    body = {**_store_body("orphaned"), "partitions": 4, "replication_factor": 1, "push_timeout_s": 6}
    assert httpx.post(f"{controller}/stores", json=body, timeout=10).status_code == 201
    path = write_jsonl(tmp_path / "big.jsonl", make_records(200_000, seed=34))
    pusher = push_process(controller, "orphaned", path)
    try:
        wait_for(lambda: _opened(controller, "orphaned"), 60, "the version to open")
        time.sleep(1.5)
        three_servers.controller.kill()
        _, err = pusher.communicate(timeout=300)  # the controller stays away until the push job gives up
    finally:
        if pusher.poll() is None:
            pusher.kill()
            pusher.communicate()
        if not three_servers.controller.alive():
            three_servers.controller.start()
            three_servers.controller.wait_healthy()
    three_servers.wait_servers_alive(3)
    # Servers report every partition READY at once (the data is all in the topic), yet
    # without the push job's end-of-push the version must time out, not go live.
    wait_for(lambda: _version(controller, "orphaned", 1)["status"] != "STARTED", 30, "the push timeout")
    info = _version(controller, "orphaned", 1)
    assert info["status"] == "ERROR" and "timed out" in info["reason"], info
    assert httpx.get(f"{controller}/stores/orphaned", timeout=5).json()["current_version"] is None
    assert pusher.returncode != 0
    assert "orphaned" in err and "v1" in err, err


def test_one_batch_push_at_a_time(three_servers: LocalCluster, tmp_path: Path) -> None:
    controller = three_servers.controller_url
    assert httpx.post(f"{controller}/stores", json=_store_body("single"), timeout=10).status_code == 201

    async def open_ten() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(client.post(f"{controller}/stores/single/versions") for _ in range(10))))

    answers = asyncio.run(open_ten())
    assert sorted(a.status_code for a in answers) == [201] + [409] * 9
    [opened] = [a.json() for a in answers if a.status_code == 201]
    number = opened["version"]
    for refused in (a.json()["error"] for a in answers if a.status_code == 409):
        assert refused["code"] == "PUSH_IN_PROGRESS"
        assert f"version {number}" in refused["message"] and "venice version kill" in refused["message"]
        assert refused["details"] == {"version": number}
    assert [v["status"] for v in httpx.get(f"{controller}/stores/single", timeout=5).json()["versions"]] == ["STARTED"]

    result = push(controller, "single", write_jsonl(tmp_path / "two.jsonl", make_records(10, seed=35)))
    assert result.returncode != 0
    assert f"version {number}" in result.stderr and "venice version kill" in result.stderr, result.stderr

    killed = venice_cli("version", "kill", "--controller", controller, "--store", "single", "--version", str(number))
    assert killed.returncode == 0, killed.stderr
    result = push(controller, "single", write_jsonl(tmp_path / "three.jsonl", make_records(10, seed=35)))
    assert result.returncode == 0, result.stderr
    assert _version(controller, "single", number + 1)["status"] == "ONLINE"
