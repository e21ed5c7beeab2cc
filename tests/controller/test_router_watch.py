"""controller.routers: read rate, failovers and p99 between two scrapes of a router's metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest

from controller.routers import MAX_SCRAPE_BYTES, RouterWatch, figures, parse_sample


def router_text(single: int, batch: int, errors: int, failovers: int, buckets: dict[str, int]) -> str:
    """A router's /metrics as the Prometheus text format has it (written out by hand)."""
    lines = [
        "# TYPE venice_router_requests_total counter",
        f'venice_router_requests_total{{store="a",endpoint="single",status="200"}} {single}',
        f'venice_router_requests_total{{store="a",endpoint="single",status="404"}} {errors}',
        f'venice_router_requests_total{{store="a",endpoint="batch",status="200"}} {batch}',
        'venice_router_requests_total{store="a",endpoint="health",status="200"} 1000',
        "# TYPE venice_router_replica_failovers_total counter",
        f"venice_router_replica_failovers_total {failovers}",
        "# TYPE venice_router_request_seconds histogram",
    ]
    for le, count in buckets.items():
        lines.append(f'venice_router_request_seconds_bucket{{endpoint="single",le="{le}"}} {count}')
        lines.append(f'venice_router_request_seconds_bucket{{endpoint="batch",le="{le}"}} 999999')
    lines.append('venice_router_request_seconds_count{endpoint="single"} 0')
    lines.append('venice_router_request_seconds_sum{endpoint="single"} 0')
    return "\n".join(lines) + "\n"


def test_rates_and_p99_come_from_the_interval() -> None:
    before = parse_sample(router_text(100, 10, 0, 1, {"0.001": 90, "0.01": 100, "+Inf": 100}), at=10.0)
    # 2 s later: 200 more reads (single 180 + 1 error... + batch 20); 4 more failovers;
    # of the 181 new single reads, 170 under 1 ms, 9 under 10 ms, 2 above: p99 is "above 10 ms".
    after = parse_sample(router_text(280, 30, 1, 5, {"0.001": 260, "0.01": 279, "+Inf": 281}), at=12.0)
    assert after.reads == 280 + 30 + 1
    assert figures(before, after) == {"reads_per_s": 100.5, "failovers_per_s": 2.0, "p99_ms": None}
    # 181 new reads, 180 under 10 ms: 99.4 % -> p99 is the 10 ms bucket.
    after2 = parse_sample(router_text(280, 30, 1, 5, {"0.001": 260, "0.01": 280, "+Inf": 281}), at=12.0)
    assert figures(before, after2)["p99_ms"] == 10.0


def test_no_figures_without_two_scrapes_or_after_a_restart() -> None:
    sample = parse_sample(router_text(100, 0, 0, 0, {"0.001": 100, "+Inf": 100}), at=1.0)
    empty = {"reads_per_s": None, "failovers_per_s": None, "p99_ms": None}
    assert figures(None, sample) == empty
    restarted = parse_sample(router_text(5, 0, 0, 0, {"0.001": 5, "+Inf": 5}), at=3.0)
    assert figures(sample, restarted) == empty
    idle = parse_sample(router_text(100, 0, 0, 0, {"0.001": 100, "+Inf": 100}), at=3.0)
    assert figures(sample, idle) == {"reads_per_s": 0.0, "failovers_per_s": 0.0, "p99_ms": None}


@pytest.mark.parametrize("text", ["not metrics at all {", 'venice_router_requests_total{endpoint="single"} abc'])
def test_unreadable_metrics_are_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sample(text, at=0.0)


# -- scraping real (hostile) routers over loopback ------------------------------------------
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A one-handler HTTP server on loopback; every connection is closed on the way out."""
    handlers: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        writers.append(writer)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def answering(status: int, body: bytes) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n" % (status, len(body)) + body)
        await writer.drain()

    return handle


async def hanging(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(30)  # never answers; the scrape times out first


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (answering(200, b"x" * (MAX_SCRAPE_BYTES + 1)), "larger than"),
        (answering(200, b"garbage {{{ not metrics"), "ValueError"),
        (answering(500, b"oops"), "HTTP 500"),
        (hanging, "Timeout"),
    ],
)
async def test_a_hostile_router_shows_as_down(handler: Handler, error: str) -> None:
    good_text = router_text(10, 0, 0, 0, {"0.001": 10, "+Inf": 10}).encode()
    async with serving(handler) as bad_url, serving(answering(200, good_text)) as good_url:
        watch = RouterWatch([bad_url, good_url])
        async with httpx.AsyncClient() as client:
            await watch.scrape_once(client)
            await watch.scrape_once(client)
        bad, good = watch.view()
        assert (bad["url"], bad["up"], bad["reads_per_s"]) == (bad_url, False, None)
        assert error in bad["error"]
        assert (good["url"], good["up"], good["reads_per_s"]) == (good_url, True, 0.0)
