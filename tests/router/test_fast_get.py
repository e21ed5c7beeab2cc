"""The router's callback lane for single-key reads (``ReplicaReader.start_get``): the same
outcomes as the awaited ``ReplicaReader.get`` (values, misses, failover, hedging, the
retry budget, the deadline) against real loopback servers, and what it does to the
connections it uses."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from router.replicas import GetOutcome, ReplicaReader
from tests.router.fakes import FakeStorage, serve_in_thread
from tests.router.test_upstream import raw_server, read_request
from venice.errors import DeadlineExceededError, NoReplicaError, RequestError
from venice.replica_health import RetryBudget

STORE, VERSION, PARTITION = "s", 1, 0
KEY, VALUE = b"key-1", b"value-1"


@pytest.fixture
def servers() -> Iterator[tuple[list[FakeStorage], list[str]]]:
    fakes = [FakeStorage(hang_s=2.0), FakeStorage(hang_s=2.0)]
    for fake in fakes:
        fake.put(STORE, VERSION, PARTITION, KEY, VALUE, schema_id=3)
    with serve_in_thread(fakes[0]) as a, serve_in_thread(fakes[1]) as b:
        yield fakes, [a, b]


@contextlib.asynccontextmanager
async def reader_of(**options: object) -> AsyncIterator[ReplicaReader]:
    reader = ReplicaReader(**options)  # type: ignore[arg-type]
    try:
        yield reader
    finally:
        await reader.aclose()


async def fast_get(reader: ReplicaReader, replicas: list[str], key: bytes = KEY, *, deadline_s: float = 5.0) -> tuple[bool, GetOutcome]:
    """Start a read on the callback lane; ``(whether it took the lane, its outcome)``."""
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[GetOutcome] = loop.create_future()
    started = reader.start_get(
        replicas, STORE, VERSION, PARTITION, key, deadline_at=loop.time() + deadline_s, done=outcome.set_result
    )
    if not started:
        return False, None
    return True, await asyncio.wait_for(outcome, deadline_s + 5)


async def warm(reader: ReplicaReader, urls: list[str]) -> None:
    """One awaited read per server, so each pool holds an idle connection."""
    loop = asyncio.get_running_loop()
    for url in urls:
        assert await reader.get([url], STORE, VERSION, PARTITION, KEY, deadline_at=loop.time() + 5) == (3, VALUE)


def in_flight(reader: ReplicaReader, url: str) -> int:
    return reader.health._stats[url].in_flight


async def test_a_cold_pool_sends_nothing_then_reads_ride_the_lane(servers: tuple[list[FakeStorage], list[str]]) -> None:
    fakes, urls = servers
    async with reader_of() as reader:
        assert await fast_get(reader, urls) == (False, None)  # no idle connection yet: the caller awaits get()
        assert fakes[0].reads == 0
        await warm(reader, urls[:1])
        for _ in range(3):
            assert await fast_get(reader, urls) == (True, (3, VALUE))
        assert await fast_get(reader, urls, b"no-such-key") == (True, None)
        assert fakes[0].reads == 5 and fakes[1].reads == 0
        assert reader._upstream.pool(urls[0]).opened == 1  # one connection, reused
        assert in_flight(reader, urls[0]) == 0
        assert (reader.counts.failovers, reader.counts.hedges) == (0, 0)


async def test_a_failing_first_replica_fails_over(servers: tuple[list[FakeStorage], list[str]]) -> None:
    fakes, urls = servers
    async with reader_of() as reader:
        await warm(reader, urls)
        fakes[0].mode = "unavailable"
        assert await fast_get(reader, urls) == (True, (3, VALUE))
        assert (reader.counts.failovers, reader.counts.hedges) == (1, 0)
        assert fakes[1].reads == 2
        assert reader.order(urls, 0) == [urls[1], urls[0]]  # the failed replica goes last
        assert in_flight(reader, urls[0]) == 0 and in_flight(reader, urls[1]) == 0


async def test_a_silent_first_replica_is_hedged_and_its_connection_dropped(servers: tuple[list[FakeStorage], list[str]]) -> None:
    fakes, urls = servers
    async with reader_of(hedge_after_s=0.05) as reader:
        await warm(reader, urls)
        fakes[0].mode = "hang"
        assert await fast_get(reader, urls) == (True, (3, VALUE))
        counts = reader.counts
        assert (counts.failovers, counts.hedges, counts.hedges_won) == (0, 1, 1)
        assert in_flight(reader, urls[0]) == 0  # abandoned, not left in flight
        assert reader._upstream.pool(urls[0]).idle_connections == 0  # its answer may still come: not reused


def answering(schema_id: int, delay_s: float, *, first_at_once: bool = False):  # type: ignore[no-untyped-def]
    """A raw server's handler: every request answered ``ok`` after ``delay_s`` (the very
    first one at once with ``first_at_once``)."""
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        nonlocal served
        while True:
            await read_request(reader)
            served += 1
            if not (first_at_once and served == 1):
                await asyncio.sleep(delay_s)
            writer.write(b"HTTP/1.1 200 OK\r\nx-venice-schema-id: %d\r\ncontent-length: 2\r\n\r\nok" % schema_id)
            await writer.drain()

    return handler


async def test_a_slow_first_replica_can_still_win_after_the_hedge() -> None:
    """The hedge goes to a replica slower still: the first replica's late answer wins."""
    async with raw_server(answering(7, 0.2, first_at_once=True)) as (first, _), raw_server(answering(8, 0.6)) as (second, _):
        async with reader_of(hedge_after_s=0.05) as reader:
            loop = asyncio.get_running_loop()
            assert await reader.get([first], STORE, VERSION, PARTITION, KEY, deadline_at=loop.time() + 5) == (7, b"ok")
            assert await fast_get(reader, [first, second]) == (True, (7, b"ok"))
            assert (reader.counts.hedges, reader.counts.hedges_won) == (1, 0)
            assert in_flight(reader, first) == 0 and in_flight(reader, second) == 0


async def test_a_definitive_error_is_final() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        body = b'{"error": {"code": "BAD_REQUEST", "message": "no"}}'
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async with raw_server(handler) as (bad, _), raw_server(handler) as (other, connections):
        async with reader_of() as reader:
            loop = asyncio.get_running_loop()
            with pytest.raises(RequestError):
                await reader.get([bad], STORE, VERSION, PARTITION, KEY, deadline_at=loop.time() + 5)
            started, outcome = await fast_get(reader, [bad, other])
            assert started and isinstance(outcome, RequestError)
            assert reader.counts.failovers == 0 and connections == []


async def test_a_connection_closed_at_reuse_is_retried_on_a_new_one() -> None:
    """The server answers once per connection, then hangs up when the next request comes:
    the request never reached it, so it is sent again (not a failover)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-venice-schema-id: 5\r\ncontent-length: 3\r\n\r\nyes")
        await writer.drain()
        await read_request(reader)

    async with raw_server(handler) as (url, connections):
        async with reader_of() as reader:
            loop = asyncio.get_running_loop()
            assert await reader.get([url], STORE, VERSION, PARTITION, KEY, deadline_at=loop.time() + 5) == (5, b"yes")
            assert await fast_get(reader, [url]) == (True, (5, b"yes"))
            assert len(connections) == 2
            assert reader.counts.failovers == 0 and in_flight(reader, url) == 0


async def test_a_spent_retry_budget_makes_a_failure_final(servers: tuple[list[FakeStorage], list[str]]) -> None:
    fakes, urls = servers
    async with reader_of(budget=RetryBudget(ratio=0, floor_per_s=0, burst=0)) as reader:
        await warm(reader, urls)
        fakes[0].mode = "unavailable"
        started, outcome = await fast_get(reader, urls)
        assert started and isinstance(outcome, NoReplicaError)
        assert reader.counts.budget_refusals == 1 and fakes[1].reads == 1  # only the warm-up


async def test_the_deadline_bounds_a_silent_replica(servers: tuple[list[FakeStorage], list[str]]) -> None:
    fakes, urls = servers
    async with reader_of() as reader:
        await warm(reader, urls[:1])
        fakes[0].mode = "hang"
        started, outcome = await fast_get(reader, urls[:1], deadline_s=0.2)
        assert started and isinstance(outcome, DeadlineExceededError)
        assert in_flight(reader, urls[0]) == 0
        assert reader._upstream.pool(urls[0]).idle_connections == 0
