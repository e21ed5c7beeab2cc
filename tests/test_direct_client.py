"""The direct client (``venice.Client(..., direct=True)`` and ``AsyncClient``) against
the real router in front of fake storage servers: the same answers as through the
router, reads that keep working with the router gone, and the fall back to the router
when no replica answers in time."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from router.main import RouterConfig, build_server
from tests.router.fakes import (
    BIG_LONG_KEYS,
    MEMBER_SCHEMA,
    TAG_RECORDS,
    FakeController,
    FakeStorage,
    SampleCluster,
    load,
    member,
    sample_cluster,
    serve_in_thread,
    store_entry,
)
from venice.client import AsyncClient, Client
from venice.cluster import wait_for
from venice.errors import (
    InvalidKeyError,
    NoCurrentVersionError,
    NoReplicaError,
    StoreNotFoundError,
    VersionNotFoundError,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[SampleCluster]:
    with sample_cluster() as running:
        yield running


@pytest.fixture(scope="module")
def client(cluster: SampleCluster) -> Iterator[Client]:
    with Client(cluster.router_url, direct=True) as sdk:
        wait_for(lambda: sdk._direct.routing.table is not None, 10, "the routing table")
        yield sdk


def json_member(key: int, version: int = 2) -> dict[str, Any]:
    value = member(key, version)
    return {**value, "avatar": base64.b64encode(value["avatar"]).decode()}


class TestSameAnswersAsTheRouter:
    def test_values(self, client: Client) -> None:
        for key in (0, 42, 99, *BIG_LONG_KEYS):
            assert client.get("members", key) == json_member(key)
        for key, value in TAG_RECORDS.items():
            assert client.get("tags", key) == value
        assert client.get("pairs", {"a": 2, "b": "y/z"}) == 20
        assert client.get("pairs", {"b": "y/z", "a": 2}) == 20

    def test_missing_versions_and_batches(self, client: Client) -> None:
        assert client.get("members", 123456) is None
        assert client.get("members", 3, version=1) == json_member(3, 1)
        keys = [2, 123456, 1, 2, *range(10, 60)]
        assert client.batch_get("members", keys) == [None if k == 123456 else json_member(k) for k in keys]
        assert client.batch_get("members", [3, 4], version=1) == [json_member(3, 1), json_member(4, 1)]
        assert client.batch_get("members", []) == []

    def test_typed_errors(self, client: Client) -> None:
        with pytest.raises(StoreNotFoundError):
            client.get("nope", 1)
        with pytest.raises(NoCurrentVersionError):
            client.get("fresh", "x")
        with pytest.raises(VersionNotFoundError):
            client.get("members", 3, version=9)
        for bad in ("abc", 2**63, 1.5, None, [1]):
            with pytest.raises(InvalidKeyError):
                client.get("members", bad)
        with pytest.raises(InvalidKeyError):
            client.batch_get("members", [1, "abc"])
        with pytest.raises(NoReplicaError):
            client.get("down", "k")

    async def test_async_twin(self, cluster: SampleCluster) -> None:
        async with AsyncClient(cluster.router_url, direct=True) as sdk:
            assert await sdk.get("members", 7) == json_member(7)
            assert await sdk.get("members", 123456) is None
            assert await sdk.get("tags", "a/b c") == "slash and space"
            assert await sdk.batch_get("members", [123456, 7, *range(20)]) == [None, json_member(7), *map(json_member, range(20))]
            with pytest.raises(StoreNotFoundError):
                await sdk.get("nope", 1)
            with pytest.raises(InvalidKeyError):
                await sdk.get("members", "abc")
            with pytest.raises(NoReplicaError):
                await sdk.get("down", "k")


class SlowStorage(FakeStorage):
    """Answers like a healthy server, ``delay_s`` late."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            await asyncio.sleep(self.delay_s)
        await super().__call__(scope, receive, send)


@contextlib.contextmanager
def small_cluster(*, hang_s: float | None = None) -> Iterator[tuple[str, list[FakeStorage], contextlib.ExitStack]]:
    """One store ``members`` on two fake servers (or one that answers after ``hang_s``),
    its controller and a router, which the caller may stop (``stack.close()``)."""
    storages = [SlowStorage(hang_s)] if hang_s is not None else [FakeStorage(), FakeStorage()]
    controller = FakeController()
    with contextlib.ExitStack() as outer:
        urls = [outer.enter_context(serve_in_thread(s)) for s in storages]
        load(storages, "members", 1, "long", MEMBER_SCHEMA, 4, {k: member(k, 1) for k in range(50)})
        controller.set_store("members", store_entry("long", {1: MEMBER_SCHEMA}, 4, 1, {1: urls}))
        controller_url = outer.enter_context(serve_in_thread(controller))
        router = contextlib.ExitStack()
        config = RouterConfig(port=0, controller_url=controller_url, deadline_s=3.0, hedge_after_s=2.0, graceful_shutdown_s=0.5)
        router_url = router.enter_context(serve_in_thread(build_server(config)))
        with router:
            yield router_url, storages, router


def test_reads_go_straight_to_the_servers_and_outlive_the_router() -> None:
    with small_cluster() as (router_url, storages, router):
        with Client(router_url, direct=True) as sdk:
            wait_for(lambda: sdk._direct.routing.table is not None, 10, "the routing table")
            assert sdk.get("members", 5) == json_member(5, 1)
            router.close()  # the router is gone: the table it handed out is enough
            before = [s.reads for s in storages]
            assert [sdk.get("members", k) for k in range(50)] == [json_member(k, 1) for k in range(50)]
            # One client keeps to its preferred replica while both are equally healthy.
            assert sorted(s.reads - b for s, b in zip(storages, before, strict=True)) == [0, 50]
            before = [s.reads for s in storages]
            assert sdk.batch_get("members", [9, 99, 8]) == [json_member(9, 1), None, json_member(8, 1)]
            assert 1 <= sum(s.reads - b for s, b in zip(storages, before, strict=True)) <= 2  # 1 or 2 batch requests


def test_no_replica_in_time_falls_back_to_the_router() -> None:
    with small_cluster(hang_s=0.4) as (router_url, [slow], _):
        with Client(router_url, direct=True, direct_deadline_s=0.1) as sdk:
            wait_for(lambda: sdk._direct.routing.table is not None, 10, "the routing table")
            before = slow.reads
            assert sdk.get("members", 7) == json_member(7, 1)
            # Once directly (given up after 0.1 s), once through the router, which waited.
            assert slow.reads == before + 2
            before = slow.reads
            assert sdk.batch_get("members", [7, 8]) == [json_member(7, 1), json_member(8, 1)]
            assert slow.reads > before


async def test_async_fall_back() -> None:
    with small_cluster(hang_s=0.4) as (router_url, [slow], _):
        async with AsyncClient(router_url, direct=True, direct_deadline_s=0.1) as sdk:
            assert await sdk.get("members", 7) == json_member(7, 1)
            assert slow.reads == 2  # given up directly, then answered through the router
            assert await sdk.batch_get("members", [7, 8]) == [json_member(7, 1), json_member(8, 1)]


def test_clients_prefer_different_replicas_and_each_keeps_its_own() -> None:
    from venice.direct import DirectCore

    replicas = ("http://127.0.0.1:7001", "http://127.0.0.1:7002", "http://127.0.0.1:7003")
    clients = [DirectCore() for _ in range(60)]
    firsts = [replicas[c.preference(replicas)] for c in clients]
    assert set(firsts) == set(replicas)  # over many clients, every replica is someone's first
    for client in clients:
        first = replicas[client.preference(replicas)]
        assert all(replicas[client.preference(replicas)] == first for _ in range(5))
        # The same server first whatever order the partition lists its replicas in.
        shuffled = (replicas[2], replicas[0], replicas[1])
        assert shuffled[client.preference(shuffled)] == first
