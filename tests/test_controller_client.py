"""The controller client, sync and async, against a real controller process on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from venice.cluster import ManagedProcess, free_port
from venice.controller_client import AsyncControllerClient, ControllerClient
from venice.errors import (
    NotEnoughServersError,
    RequestError,
    StoreExistsError,
    StoreNotFoundError,
    TransportError,
    VersionNotFoundError,
)
from venice.protocol import Heartbeat, ReplicaReport, ReplicaStatus

STORE = {"name": "cc", "key_schema": "long", "value_schema": "string", "partitions": 2, "replication_factor": 1}


@pytest.fixture(scope="module")
def controller_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("controller")
    port = free_port()
    process = ManagedProcess(
        "controller",
        ["controller", "--port", str(port), "--data-dir", str(data / "meta"), "--pubsub-url", f"embedded://{data / 'log'}"],
        data / "controller.log",
        f"http://127.0.0.1:{port}",
    )
    process.start()
    try:
        process.wait_healthy()
        yield process.url
    finally:
        process.stop()


def test_sync_client_store_lifecycle_and_typed_errors(controller_url: str) -> None:
    with ControllerClient(controller_url) as controller:
        assert controller.health()["status"] == "ok"
        created = controller.create_store(STORE)
        assert created["name"] == "cc" and created["partitions"] == 2
        with pytest.raises(StoreExistsError):
            controller.create_store(STORE)
        assert [s["name"] for s in controller.list_stores()] == ["cc"]
        assert controller.update_store("cc", keep_versions=3)["keep_versions"] == 3
        with pytest.raises(RequestError):
            controller.update_store("cc", keep_versions=0)
        with pytest.raises(NotEnoughServersError):
            controller.open_version("cc")  # no storage server has registered
        with pytest.raises(VersionNotFoundError):
            controller.get_version("cc", 99)
        assert controller.list_versions("cc") == []
        controller.delete_store("cc")
        with pytest.raises(StoreNotFoundError):
            controller.get_store("cc")


def test_heartbeat_and_routing_long_poll(controller_url: str) -> None:
    with ControllerClient(controller_url) as controller:
        table = controller.routing()
        assert table is not None
        assert controller.routing(table.generation, wait_s=0.2) is None  # unchanged: a 304
        controller.create_store({**STORE, "name": "routed"})
        changed = controller.routing(table.generation, wait_s=5)
        assert changed is not None and changed.generation > table.generation
        assert changed.stores["routed"].partitions == 2
        assert changed.stores["routed"].current_version is None
        report = ReplicaReport("nowhere", 1, 0, ReplicaStatus.READY)
        answer = controller.heartbeat("s-test", Heartbeat("http://127.0.0.1:9", (report,)))
        assert answer.assignment == () and answer.pubsub_url.startswith("embedded://")
        assert any(s["server_id"] == "s-test" for s in controller.cluster()["servers"])
        controller.delete_store("routed")


def test_async_twin_answers_the_same(controller_url: str) -> None:
    async def main() -> None:
        async with AsyncControllerClient(controller_url) as controller:
            created = await controller.create_store({**STORE, "name": "acc"})
            assert created == await controller.get_store("acc")
            with pytest.raises(StoreExistsError):
                await controller.create_store({**STORE, "name": "acc"})
            table = await controller.routing()
            assert table is not None and "acc" in table.stores
            assert await controller.routing(table.generation, wait_s=0.1) is None
            await controller.delete_store("acc")
            with pytest.raises(StoreNotFoundError):
                await controller.get_store("acc")

    asyncio.run(main())


def test_unreachable_controller_is_a_transport_error(tmp_path: Path) -> None:
    with ControllerClient(f"http://127.0.0.1:{free_port()}", timeout_s=2) as controller, pytest.raises(TransportError):
        controller.list_stores()
