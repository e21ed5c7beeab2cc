"""Change capture, Da Vinci, ``venice tail`` and the router's SSE stream on real storage
server processes, the real Kafka broker and LMDB, with a hybrid store handed out by
tests/hybrid_harness.py, whose controller the test steers (version openings with chosen
real-time offsets, swaps, rollbacks, a version of another start): every nearline write
comes out once, in order per partition, across a push that swaps in while writes flow, a
rollback and a storage server killed while reading; positions resume exactly; hostile
positions are refused. tests/e2e/test_hybrid_clients.py runs the same on the real controller."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import venice
from tests.changes.tools import KEYS, SCHEMA, VALUES, Writer, collect, model, read_events, sequences, write
from tests.hybrid_harness import HybridController, router_process, server_process
from tests.ingestion.helpers import write_push
from tests.rawhttp import connect as raw_connect
from tests.rawhttp import header, read_until, read_until_close
from tests.router.fakes import serve_in_thread
from venice.changes import Position, store_tag
from venice.cluster import ManagedProcess, wait_for
from venice.httpserver import HttpLimits, HttpServer
from venice.protocol import ChangeLogPage, decode_changes_response
from venice.pubsub import connect
from venice.structs import Message, TopicPartition
from venice.wire import OP_HEADER

pytestmark = pytest.mark.kafka

STORE = "feed"
P = 3


@dataclass
class Hybrid:
    controller: HybridController
    controller_url: str
    servers: list[ManagedProcess]
    router: ManagedProcess
    pubsub_url: str
    work: Path

    def run(self, coroutine: Any) -> Any:
        return asyncio.run(coroutine)

    def rt_ends(self) -> dict[int, int]:
        async def ends() -> dict[int, int]:
            async with connect(self.pubsub_url) as pubsub:
                return await pubsub.end_offsets(f"{STORE}_rt")

        return dict(self.run(ends()))

    def push(self, version: int, records: dict[int, dict[str, Any]]) -> None:
        """Open the version at the real-time topic's current end (rewind 0), push, swap in."""
        self.controller.open_version(version, self.rt_ends())

        async def write() -> None:
            async with connect(self.pubsub_url) as pubsub:
                await write_push(pubsub, f"{STORE}_v{version}", P, {KEYS.encode(k): VALUES.encode(v) for k, v in records.items()})

        self.run(write())
        self.controller.wait_ready(version)
        self.controller.swap(version)


@pytest.fixture(scope="module")
def hybrid(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hybrid]:
    work = tmp_path_factory.mktemp("hybrid")
    controller = HybridController(kafka_broker.url, STORE, partitions=P, key_schema="long", value_schema=SCHEMA, offset_lag=50)

    async def create_rt() -> None:
        async with connect(kafka_broker.url) as pubsub:
            await pubsub.create_topic(f"{STORE}_rt", P)

    asyncio.run(create_rt())
    with serve_in_thread(HttpServer(controller, port=0, graceful_shutdown_s=0.5)) as controller_url:
        servers = [server_process(work, controller_url, i) for i in range(2)]
        router = router_process(work, controller_url)
        try:
            for process in (*servers, router):
                process.start()
            for process in (*servers, router):
                process.wait_healthy()
            setup = Hybrid(controller, controller_url, servers, router, kafka_broker.url, work)
            setup.push(1, {k: {"seq": -1, "source": "push1", "hits": 0} for k in range(40)})
            yield setup
        finally:
            for process in (router, *servers):
                process.stop()


def test_every_write_once_in_order_across_a_push_a_rollback_and_a_killed_server(hybrid: Hybrid) -> None:
    with venice.ChangeConsumer(hybrid.controller_url, STORE, since=None) as consumer:
        start_position = consumer.position
        with Writer(hybrid.pubsub_url, STORE, P, start=1) as writer:
            wait_for(lambda: writer.next > 60, 60, "writes to flow")
            hybrid.push(2, {k: {"seq": -2, "source": "push2", "hits": 0} for k in range(40)})
            wait_for(lambda: writer.next > 160, 60, "more writes")
            hybrid.servers[0].kill()  # reads fail over to the other replica
            wait_for(lambda: writer.next > 220, 60, "writes with a server down")
            hybrid.servers[0].start()
            hybrid.servers[0].wait_healthy()
            hybrid.controller.swap(1)  # rollback: v1 (a backup, stopped at the swap) catches up and is current again
            wait_for(lambda: writer.next > 300, 60, "writes after the rollback")
        last = writer.next - 1
        events = collect(consumer, lambda evs: len(set(sequences(evs, writer.written))) >= last
                         and sum(isinstance(e, venice.VersionSwap) for e in evs) == 2)
        assert consumer.poll(timeout=2.0) is None  # nothing more, nothing twice
        mid_position = next(e.position for i, e in enumerate(events) if i == len(events) // 2)
        mid_index = len(events) // 2

    changes = [e for e in events if isinstance(e, venice.Change)]
    swaps = [(e.old, e.new) for e in events if isinstance(e, venice.VersionSwap)]
    assert swaps == [(1, 2), (2, 1)]
    seqs = sequences(events, writer.written)
    assert sorted(seqs) == list(range(1, last + 1))  # every write, none twice
    for partition in range(P):  # in log order per partition
        offsets = [c.offset for c in changes if c.partition == partition]
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    swap_at = [i for i, e in enumerate(events) if isinstance(e, venice.VersionSwap)]
    assert {c.version for c in events[: swap_at[0]] if isinstance(c, venice.Change)} <= {1}
    assert {c.version for c in events[swap_at[0] : swap_at[1]] if isinstance(c, venice.Change)} <= {2}
    assert {c.version for c in events[swap_at[1] :] if isinstance(c, venice.Change)} <= {1}
    for change in changes:  # after-images: a put's value, an update's result, None for a delete
        key, written = writer.written[sequences([change], writer.written)[0]] if change.value is not None else (change.key, None)
        assert key == change.key
        if isinstance(written, dict):
            assert change.value == written
        elif written == "update":
            assert change.value["seq"] == sequences([change], writer.written)[0] and change.value["hits"] >= 1

    # Resuming from a position gives exactly what came after it.
    with venice.ChangeConsumer(hybrid.controller_url, STORE, since=mid_position) as resumed:
        rest = [e for e in events[mid_index + 1 :] if isinstance(e, venice.Change)]
        again = collect(resumed, lambda evs: len([e for e in evs if isinstance(e, venice.Change)]) >= len(rest))
        for partition in range(P):  # the same changes, in the same order per partition
            assert [(c.offset, c.key, c.value) for c in again if isinstance(c, venice.Change) and c.partition == partition] == \
                [(c.offset, c.key, c.value) for c in rest if c.partition == partition]
        assert resumed.poll(timeout=1.0) is None
    # And from the very start position, every change again.
    with venice.ChangeConsumer(hybrid.controller_url, STORE, since=start_position) as replay:
        everything = collect(replay, lambda evs: len([e for e in evs if isinstance(e, venice.Change)]) >= len(changes))
        assert sorted(sequences(everything, writer.written)) == sorted(seqs)


def test_hostile_positions(hybrid: Hybrid) -> None:
    incarnation = hybrid.controller.incarnation
    with pytest.raises(venice.RequestError, match="another store"):
        venice.ChangeConsumer(hybrid.controller_url, STORE, since=Position(store_tag("other", incarnation), {0: 1}).token())
    with pytest.raises(venice.RequestError, match="another store"):
        venice.ChangeConsumer(hybrid.controller_url, STORE, since=Position(store_tag(STORE, "deleted-one"), {0: 1}).token())
    for bad in ("", "!!!", "AAAA", "x" * 70_000, "é", Position(store_tag(STORE, incarnation), {P: 1}).token(),
                Position(store_tag(STORE, incarnation), {0: 1}).token() + "AA"):
        with pytest.raises(venice.RequestError):
            venice.ChangeConsumer(hybrid.controller_url, STORE, since=bad)
    # A position from before the current version started applying real-time writes: 410.
    ends = hybrid.rt_ends()
    if any(ends.values()):
        old = Position(store_tag(STORE, incarnation), dict.fromkeys(range(P), 0)).token()
        hybrid.push(9, {1: {"seq": 0, "source": "push9", "hits": 0}})
        try:
            with pytest.raises(venice.PositionExpiredError):
                venice.ChangeConsumer(hybrid.controller_url, STORE, since=old)
        finally:
            hybrid.controller.swap(1)
    with pytest.raises(venice.StoreNotFoundError):
        venice.ChangeConsumer(hybrid.controller_url, "nope")


def test_server_endpoint_refuses_hostile_queries(hybrid: Hybrid) -> None:
    server = hybrid.servers[1].url
    for query in ("", "partition=x", "partition=-1", "partition=9999", "partition=0&from=-1", "partition=0&from=x",
                  "partition=0&limit=0", "partition=0&limit=999999", "partition=0&wait_s=nan", "partition=0&wait_s=-1",
                  "partition=0&bogus=1"):
        answer = httpx.get(f"{server}/v1/changes/{STORE}/1?{query}", timeout=10)
        assert answer.status_code == 400, (query, answer.text)
    assert httpx.get(f"{server}/v1/changes/{STORE}/x?partition=0", timeout=10).status_code == 400
    assert httpx.get(f"{server}/v1/changes/{STORE}/77?partition=0", timeout=10).status_code == 503
    expired = httpx.get(f"{server}/v1/changes/{STORE}/1?partition=0&from=0", timeout=10)
    if hybrid.controller.versions[1].rt_start_offsets.get(0):
        assert expired.status_code == 410 and expired.json()["error"]["code"] == "POSITION_EXPIRED"


def test_davinci_applies_nearline_writes_by_the_servers_rules(hybrid: Hybrid, tmp_path: Path) -> None:
    """The embedded client ingests the same hybrid versions: after nearline writes and a
    push (rewind 0: writes before it are in the pushed data), it holds what the model
    says, as do the servers (read through the router)."""
    current = hybrid.controller.current
    assert current is not None
    keys = list(range(100, 130))
    first = [(k, {"seq": k, "source": "a", "hits": 0}) for k in keys] + [(k, None) for k in keys[:5]] + \
        [(k, {"set": {"seq": 1000 + k}, "increment": {"hits": 2}}) for k in keys[3:10]]
    with venice.DaVinciClient(hybrid.controller_url, STORE, data_dir=tmp_path / "dv", start_timeout_s=120) as dv, \
            venice.Client(hybrid.router.url) as client:
        assert dv.version == current
        write(hybrid.pubsub_url, STORE, P, first)
        expected = model(dict.fromkeys(keys), first)
        wait_for(lambda: dv.batch_get(keys) == [expected[k] for k in keys], 60, "the client to apply the writes")
        wait_for(lambda: client.batch_get(STORE, keys) == [expected[k] for k in keys], 60, "the servers to apply them")

        pushed = {k: {"seq": -3, "source": "push3", "hits": 5} for k in keys}
        hybrid.push(3, pushed)
        wait_for(lambda: dv.version == 3, 60, "the client to swap to v3")
        second = [(k, {"set": {"seq": 2000 + k}, "increment": {"hits": 1}}) for k in keys[::2]] + [(keys[1], None)]
        write(hybrid.pubsub_url, STORE, P, second)
        expected = model(pushed, second)
        wait_for(lambda: dv.batch_get(keys) == [expected[k] for k in keys], 60, "v3 with the new writes")
        wait_for(lambda: client.batch_get(STORE, keys) == [expected[k] for k in keys], 60, "the servers' v3")
    hybrid.controller.swap(current)


def replica_pages(hybrid: Hybrid, version: int) -> list[ChangeLogPage]:
    """What every storage server says of each partition of ``version``'s change log (its tail)."""
    return [decode_changes_response(httpx.get(f"{server.url}/v1/changes/{STORE}/{version}?partition={p}", timeout=10)
                                    .raise_for_status().content)
            for server in hybrid.servers for p in range(P)]


def settle(hybrid: Hybrid) -> None:
    """Wait until every replica of the current version has applied the real-time topic to
    its end: a version rolled back to (by the test before) catches up on the writes it
    missed as a backup, and those are changes a consumer starting now would (rightly) get."""
    current = hybrid.controller.current
    assert current is not None

    def applied() -> bool:
        ends = hybrid.rt_ends()
        return [page.next for page in replica_pages(hybrid, current)] == [ends[p] for _ in hybrid.servers for p in range(P)]

    wait_for(applied, 60, f"v{current} to apply every real-time write")


def rt_records(hybrid: Hybrid, start: dict[int, int], end: dict[int, int]) -> list[tuple[int, int, Any, Any]]:
    """The second answer: the real-time records at offsets ``start[p] <= offset < end[p]``,
    read from the broker, as ``(partition, offset, key, value)`` — a put's value, None for a
    delete (only puts and deletes are written where this is used)."""
    wanted = sum(end[p] - start[p] for p in range(P))

    async def read() -> list[Message]:
        got: list[Message] = []
        async with connect(hybrid.pubsub_url) as pubsub, await pubsub.consumer() as consumer:
            await consumer.assign({TopicPartition(f"{STORE}_rt", p): start[p] for p in range(P) if end[p] > start[p]})
            for _ in range(600):
                if len(got) >= wanted:
                    break
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(m for m in messages if m.offset < end[m.partition])
        return got

    records = hybrid.run(read())
    assert len(records) == wanted, f"{len(records)} of {wanted} real-time records read back"
    assert all(m.header(OP_HEADER) is None for m in records), "an update where only puts and deletes were written"
    return sorted((m.partition, m.offset, KEYS.decode(m.key), None if m.value is None else VALUES.decode(m.value))
                  for m in records)


def test_venice_tail_prints_json_lines_and_refuses_bad_positions(hybrid: Hybrid) -> None:
    """A consumer from the tail and ``venice tail`` from its position get exactly the
    changes after that position: no more, no fewer, none twice. It starts right after a
    rollback to a version that missed writes as a backup: its tail is what that version has
    applied, so the writes it still catches up on come out too, as changes it applies
    after the consumer started (the old test counted 11 events and missed one of its own)."""
    settle(hybrid)
    current = hybrid.controller.current
    assert current is not None
    hybrid.push(5, {k: {"seq": -5, "source": "push5", "hits": 0} for k in range(40)})
    wait_for(lambda: not any(page.consuming for page in replica_pages(hybrid, current)), 30,
             f"v{current} to stop applying real-time writes as a backup")
    pending = [(k, {"seq": k, "source": "pending", "hits": 0}) for k in range(210, 216)] + [(211, None)]
    write(hybrid.pubsub_url, STORE, P, pending)
    hybrid.controller.swap(current)  # rollback: v{current} catches up on `pending`, maybe after the consumer starts
    keys = list(range(200, 210))
    writes = [(k, {"seq": k, "source": "tail", "hits": 0}) for k in keys] + [(keys[0], None)]
    with venice.ChangeConsumer(hybrid.controller_url, STORE) as consumer:
        start = consumer.position
        start_offsets = dict(Position.parse(start, store=STORE, incarnation=hybrid.controller.incarnation, partitions=P).offsets)
        write(hybrid.pubsub_url, STORE, P, writes)
        end = hybrid.rt_ends()
        expected = rt_records(hybrid, start_offsets, end)
        assert sorted((k, orjson.dumps(v)) for _, _, k, v in expected if k in keys) == \
            sorted((k, orjson.dumps(v)) for k, v in writes)  # every write of this test is after the position
        events = collect(consumer, lambda evs: len(evs) >= len(expected))
        assert consumer.poll(timeout=2.0) is None  # nothing more, nothing twice
    assert all(isinstance(e, venice.Change) and e.version == current for e in events)
    assert sorted((e.partition, e.offset, e.key, e.value) for e in events) == expected
    for partition in range(P):  # in log order, every offset from the position to the end once
        assert [e.offset for e in events if e.partition == partition] == list(range(start_offsets[partition], end[partition]))
    result = subprocess.run(
        [sys.executable, "-m", "venice", "tail", "--controller", hybrid.controller_url, "--store", STORE, "--since", start,
         "--max-events", str(len(expected))],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    # The same changes, in the same order per partition (partitions interleave as they come).
    assert sorted((line["partition"], line["offset"], line["key"], line["value"]) for line in lines) == expected
    for partition in range(P):
        assert [line["offset"] for line in lines if line["partition"] == partition] == \
            list(range(start_offsets[partition], end[partition]))
    final = Position.parse(lines[-1]["position"], store=STORE, incarnation=hybrid.controller.incarnation, partitions=P)
    assert final.offsets == Position.parse(consumer.position, store=STORE, incarnation=hybrid.controller.incarnation, partitions=P).offsets \
        == end
    idle = subprocess.run(
        [sys.executable, "-m", "venice", "tail", "--controller", hybrid.controller_url, "--store", STORE, "--since",
         lines[-1]["position"], "--idle-timeout", "1"],
        capture_output=True, text=True, timeout=120,
    )
    assert idle.returncode == 0 and idle.stdout == "", idle.stderr
    for bad in ("garbage!", Position(store_tag("other", "x"), {0: 1}).token()):
        refused = subprocess.run(
            [sys.executable, "-m", "venice", "tail", "--controller", hybrid.controller_url, "--store", STORE, "--since", bad],
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode != 0 and "position token" in refused.stderr and "Traceback" not in refused.stderr


# -- Server-Sent Events through the router ----------------------------------------------------------


@dataclass
class SseRouter:
    app: Any
    url: str


@pytest.fixture(scope="module")
def sse_router(hybrid: Hybrid) -> Iterator[SseRouter]:
    """The router app on the platform's own HTTP server (venice/httpserver.py, as
    ``venice router`` runs it), in this process so tests can tune and watch its streams.
    Its keep-alive timeout is shorter than the stream heartbeat: a stream being answered
    is not an idle connection."""
    from router.main import RouterConfig, build_app, build_server

    config = RouterConfig(port=0, controller_url=hybrid.controller_url, graceful_shutdown_s=1.0,
                          http=HttpLimits(keepalive_s=0.2))
    app = build_app(config)
    app.changes.heartbeat_s = 0.3
    with serve_in_thread(build_server(config, app)) as url:
        wait_for(lambda: httpx.get(f"{url}/routing", timeout=5).status_code == 200, 30, "the router's routing table")
        yield SseRouter(app, url)


def test_sse_stream_resumes_with_last_event_id_and_shows_swaps(hybrid: Hybrid, sse_router: SseRouter) -> None:
    settle(hybrid)  # from the tail on means after every write so far only once the current version applied them
    keys = list(range(300, 306))
    with httpx.Client(timeout=60) as http, http.stream("GET", f"{sse_router.url}/changes/{STORE}") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"] == "text/event-stream"
        lines = stream.iter_lines()
        comments: list[str] = []
        [start] = read_events(lines, 1, comments=comments)
        assert start.event == "position" and start.id and start.data == {"version": hybrid.controller.current}
        write(hybrid.pubsub_url, STORE, P, [(k, {"seq": k, "source": "sse", "hits": 0}) for k in keys] + [(keys[0], None)])
        events = read_events(lines, len(keys) + 1, comments=comments)
        assert sorted((e.data["key"], orjson.dumps(e.data["value"])) for e in events) == sorted(
            [(k, orjson.dumps({"seq": k, "source": "sse", "hits": 0})) for k in keys] + [(keys[0], b"null")])
        assert all(e.event == "message" and e.id for e in events)
        last_id = events[-1].id
        assert next(line for line in lines if line.startswith(":")) == ": keep-alive"  # nothing happens: a heartbeat
    assert comments and comments[0] == ": connected"

    # Reconnect as EventSource does: from the last id on, nothing again, the new writes only.
    write(hybrid.pubsub_url, STORE, P, [(k, {"seq": 1000 + k, "source": "sse2", "hits": 0}) for k in keys[:2]])
    with httpx.Client(timeout=60) as http, http.stream(
        "GET", f"{sse_router.url}/changes/{STORE}", headers={"Last-Event-ID": last_id or ""}
    ) as stream:
        lines = stream.iter_lines()
        read_events(lines, 1)  # the position event
        again = read_events(lines, 2)
        assert sorted(e.data["key"] for e in again) == keys[:2]
        assert {e.data["value"]["source"] for e in again} == {"sse2"}
        # A push swaps in: the stream says so.
        current = hybrid.controller.current
        assert current is not None
        hybrid.push(current + 20, {k: {"seq": 0, "source": "push", "hits": 0} for k in keys})
        try:
            [swap] = read_events(lines, 1)
            assert swap.event == "version-swap" and swap.data == {"old": current, "new": current + 20} and swap.id
        finally:
            hybrid.controller.swap(current)
    # ?since= does what Last-Event-ID does.
    with httpx.Client(timeout=60) as http, http.stream("GET", f"{sse_router.url}/changes/{STORE}", params={"since": last_id}) as stream:
        lines = stream.iter_lines()
        read_events(lines, 1)
        assert sorted(e.data["key"] for e in read_events(lines, 2)) == keys[:2]


def test_sse_hostile_clients(hybrid: Hybrid, sse_router: SseRouter) -> None:
    url = f"{sse_router.url}/changes/{STORE}"
    for params, headers in (({"since": "garbage!"}, {}), ({}, {"Last-Event-ID": "AAAA"}),
                            ({"since": Position(store_tag("other", "x"), {0: 1}).token()}, {})):
        answer = httpx.get(url, params=params, headers=headers, timeout=30)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "BAD_REQUEST"
    # Positions too long for the server's limits are refused before the app sees them.
    for params, headers, status, code in (({}, {"Last-Event-ID": "A" * 70_000}, 431, "HEADERS_TOO_LARGE"),
                                          ({"since": "A" * 9000}, {}, 414, "URL_TOO_LONG")):
        answer = httpx.get(url, params=params, headers=headers, timeout=30)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code
    # A body on the stream's GET is read within the body limit (and ignored), not a way around it.
    with raw_connect(sse_router.url, timeout=30) as sock:
        sock.sendall(f"GET /changes/{STORE} HTTP/1.1\r\nHost: x\r\nContent-Length: {(16 << 20) + 1}\r\n\r\n".encode())
        refused = read_until_close(sock)
    assert refused.startswith(b"HTTP/1.1 413 ") and b"BODY_TOO_LARGE" in refused
    assert httpx.get(f"{sse_router.url}/changes/nope", timeout=30).status_code == 404
    assert httpx.get(f"{sse_router.url}/changes/%FF", timeout=30).status_code == 400

    # A vanishing client: its stream (and its reads of the change logs) end.
    import socket

    host, port = sse_router.url[len("http://"):].split(":")
    for _ in range(5):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"GET /changes/{STORE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert b"text/event-stream" in sock.recv(4096)
        sock.close()
    wait_for(lambda: sse_router.app.changes.active == 0, 30, "streams of vanished clients to end")

    # A slow client: it stops reading while many changes happen, then reads them all, in order.
    slow = socket.create_connection((host, int(port)))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.sendall(f"GET /changes/{STORE} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    slow.settimeout(60)
    # The stream starts at the tail it found: write only once its position is out.
    pending = bytearray()
    received = read_until(slow, b"event: position", pending) + bytes(pending)
    keys = list(range(400, 1400))
    write(hybrid.pubsub_url, STORE, P, [(k, {"seq": k, "source": "x" * 200, "hits": 0}) for k in keys])
    while received.count(b"\ndata: {\"key\"") < len(keys):
        chunk = slow.recv(65536)
        assert chunk, "the stream ended early"
        received += chunk
    slow.close()
    got = [orjson.loads(line[len(b"data: "):])["key"] for line in received.split(b"\n") if line.startswith(b'data: {"key"')]
    assert sorted(got) == keys

    # Too many streams at once: the next one is refused, not queued.
    sse_router.app.changes.max_streams = 1
    try:
        with httpx.Client(timeout=30) as http, http.stream("GET", url) as first:
            assert first.status_code == 200
            refused = httpx.get(url, timeout=30)
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "UNAVAILABLE"
    finally:
        sse_router.app.changes.max_streams = 64


def test_the_router_process_streams_each_event_as_it_happens(hybrid: Hybrid) -> None:
    """``venice router`` (a real process on venice/httpserver.py) writes each SSE event as
    it is produced, chunked: the first events arrive over a raw socket while the stream is
    open, and a change written afterwards arrives on the same open stream. (When the
    server buffered answers, nothing arrived until the stream ended.)"""
    with raw_connect(hybrid.router.url, timeout=60) as sock:
        sock.sendall(f"GET /changes/{STORE} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        buffer = bytearray()
        head = read_until(sock, b"\r\n\r\n", buffer)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert header(head, b"content-type") == b"text/event-stream"
        assert header(head, b"transfer-encoding") == b"chunked" and header(head, b"content-length") is None
        first = read_until(sock, b"\n\n", buffer) + read_until(sock, b"\n\n", buffer)
        assert b": connected\n\n" in first and b"event: position\nid: " in first
        assert b'data: {"version":%d}' % hybrid.controller.current in first
        key = 777_001
        write(hybrid.pubsub_url, STORE, P, [(key, {"seq": key, "source": "raw", "hits": 0})])
        change = read_until(sock, b'"source":"raw"', buffer)
        assert b'data: {"key":%d,' % key in change
        assert b"\r\n0\r\n\r\n" not in bytes(buffer) + change  # the stream has not ended


def after_images(base: dict[int, Any], writes: list[tuple[int, Any]]) -> dict[int, list[Any]]:
    """Per key, the value after each of its writes, in order (the model's answer)."""
    state, out = dict(base), {}
    for key, op in writes:
        state = model(state, [(key, op)])
        out.setdefault(key, []).append(state[key])
    return out


async def test_async_consumer_gets_exactly_the_writes_after_its_position_across_a_push(hybrid: Hybrid) -> None:
    """``AsyncChangeConsumer`` (docs/clients.md): from the tail, each nearline write once
    as its after-image, a ``VersionSwap`` when a push swaps in, the writes after it from the
    new version (read with ``async for``), and a resumed consumer gets exactly those."""
    await asyncio.to_thread(settle, hybrid)  # the helpers block: off the event loop
    current = hybrid.controller.current
    assert current is not None
    new = max(hybrid.controller.versions) + 1
    keys = list(range(5000, 5008))
    first = [(k, {"seq": k, "source": "async", "hits": 0}) for k in keys] + [(keys[0], None)] + \
        [(k, {"set": {"seq": 6000 + k}, "increment": {"hits": 3}}) for k in keys[1:4]]
    pushed = {k: {"seq": -7, "source": "push-async", "hits": 1} for k in keys}
    second = [(k, {"set": {"seq": 7000 + k}, "increment": {"hits": 2}}) for k in keys[::2]] + [(keys[1], None)]
    try:
        async with venice.AsyncChangeConsumer(hybrid.controller_url, STORE) as consumer:
            await asyncio.to_thread(write, hybrid.pubsub_url, STORE, P, first)
            events = [await consumer.next_event(timeout=60) for _ in first]
            assert all(isinstance(e, venice.Change) and e.version == current for e in events), events
            changes = [e for e in events if isinstance(e, venice.Change)]
            assert {k: [c.value for c in changes if c.key == k] for k in keys} == after_images({}, first)
            assert await consumer.next_event(timeout=1.0) is None  # nothing more, nothing twice

            await asyncio.to_thread(hybrid.push, new, pushed)
            swap = await consumer.next_event(timeout=60)
            assert isinstance(swap, venice.VersionSwap) and (swap.old, swap.new) == (current, new)
            await asyncio.to_thread(write, hybrid.pubsub_url, STORE, P, second)
            after: list[venice.Change] = []
            async with asyncio.timeout(120):
                async for event in consumer:
                    assert isinstance(event, venice.Change) and event.version == new, event
                    after.append(event)
                    if len(after) == len(second):
                        break
            expected = after_images(pushed, second)
            assert {k: [c.value for c in after if c.key == k] for k in keys} == {k: expected.get(k, []) for k in keys}
            assert await consumer.next_event(timeout=1.0) is None

        async with venice.AsyncChangeConsumer(hybrid.controller_url, STORE, since=swap.position) as resumed:
            again = [await resumed.next_event(timeout=60) for _ in second]
            assert await resumed.next_event(timeout=1.0) is None
        assert sorted((e.partition, e.offset, e.key, e.value) for e in again if isinstance(e, venice.Change)) == \
            sorted((e.partition, e.offset, e.key, e.value) for e in after)
    finally:
        hybrid.controller.swap(current)
