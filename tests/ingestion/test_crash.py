"""Crash safety of real-time ingestion: a real storage server process is killed with
SIGKILL while real-time writes stream in, then restarted on the same data directory.
Its final values are exact and every real-time record was applied exactly once, in
order (the checkpoint is written in the same LMDB transaction as the data).

A small stand-in answers the server's heartbeats with an assignment built here (the
contract of docs/api.md, through ``venice.protocol``), so this test controls exactly what
the server is told; the server, LMDB and the topics are real. The same crash on a whole
cluster, with the real controller and two replicas compared byte for byte, is
``tests/e2e/test_hybrid_crash.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.ingestion.helpers import VALUE_SCHEMA, VALUES, assignment, key, send_rt, value, wait_until, write_push
from tests.router.fakes import read_body, serve_in_thread
from venice.cluster import ManagedProcess, free_port
from venice.ingestion import TOMBSTONE, VersionStorage
from venice.partitioner import partition_for
from venice.protocol import Assignment, HeartbeatAnswer, ReplicaReport, ReplicaStatus, replica_get_path
from venice.pubsub import PubSub, connect
from venice.schema import AvroCodec
from venice.wire import update_headers
from venice.writecompute import ops_to_update, update_schema

VALUES_UPDATE = AvroCodec(update_schema(VALUE_SCHEMA))
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ControllerStandIn:
    """Answers heartbeats with ``assignment`` and store descriptions with its schemas;
    keeps the last replica reports."""

    def __init__(self, assignment: Assignment, pubsub_url: str) -> None:
        self.assignment = assignment
        self.pubsub_url = pubsub_url
        self.reports: list[ReplicaReport] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        path = scope["path"]
        if scope["method"] == "POST" and path.endswith("/heartbeat"):
            self.reports = [ReplicaReport.from_json(r) for r in orjson.loads(body)["replicas"]]
            answer = HeartbeatAnswer((self.assignment,), self.pubsub_url).to_json()
            status, payload = 200, orjson.dumps(answer)
        elif scope["method"] == "GET" and path == f"/stores/{self.assignment.store}":
            status, payload = 200, orjson.dumps({"name": self.assignment.store, "value_schemas": {"1": VALUE_SCHEMA}})
        else:
            status, payload = 404, b'{"error": {"code": "NOT_FOUND", "message": "no"}}'
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


@pytest.fixture
def controller_stand_in(pubsub_url: str) -> Iterator[tuple[ControllerStandIn, str]]:
    store = f"s{uuid.uuid4().hex[:8]}"
    stand_in = ControllerStandIn(assignment(store, 1, 2, hybrid=True, rt_start_offsets={0: 0, 1: 0}), pubsub_url)
    with serve_in_thread(stand_in) as url:
        yield stand_in, url


async def _caught_up(stand_in: ControllerStandIn, pubsub: PubSub, rt_topic: str) -> bool:
    ends = await pubsub.end_offsets(rt_topic)
    reports = stand_in.reports
    return len(reports) == len(ends) and all(
        r.status is ReplicaStatus.READY and r.rt_offset == ends[r.partition] for r in reports
    )


def _update(n: int) -> bytes:
    """Record n of the update stream: count += 1 and tag t{n % 5} added (removed every 7th)."""
    ops: dict[str, Any] = {"increment": {"count": 1}}
    ops["remove_from_list" if n % 7 == 6 else "add_to_list"] = {"tags": [f"t{n % 5}"]}
    return VALUES_UPDATE.encode_unchecked(ops_to_update(ops, VALUE_SCHEMA))


def _after(current: dict[str, Any] | None, n: int) -> dict[str, Any]:
    """What record n of the update stream makes of ``current``, worked out here."""
    after = {"name": "", "count": 0, "tags": []} if current is None else {**current, "tags": list(current["tags"])}
    after["count"] += 1
    tag = f"t{n % 5}"
    if n % 7 == 6:
        after["tags"] = [t for t in after["tags"] if t != tag]
    elif tag not in after["tags"]:
        after["tags"].append(tag)
    return after


@pytest.mark.parametrize("kind", ["puts", "updates"])
async def test_kill_9_mid_stream_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, pubsub_url: str, controller_stand_in: tuple[ControllerStandIn, str], kind: str
) -> None:
    stand_in, controller_url = controller_stand_in
    a = stand_in.assignment
    P, rt_topic = a.partitions_total, f"{a.store}_rt"
    port = free_port()
    server = ManagedProcess(
        "server",
        ["server", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(tmp_path / "server"),
         "--controller", controller_url, "--server-id", "crashy"],
        tmp_path / "server.log",
        f"http://127.0.0.1:{port}",
    )
    keys = 200
    writes = 12_000
    state: dict[int, dict[str, Any]] = {k: {"name": "pushed", "count": k, "tags": []} for k in range(keys)}
    produced: dict[int, list[tuple[int, bytes | None]]] = {p: [] for p in range(P)}  # per partition: (key, value) by offset
    async with connect(pubsub_url) as pubsub:
        await pubsub.create_topic(rt_topic, P)
        await write_push(pubsub, a.topic, P, {key(i): value("pushed", i) for i in range(keys)})
        server.start()
        try:
            server.wait_healthy()
            await wait_until(lambda: _caught_up(stand_in, pubsub, rt_topic), "first version ready", 120)
            killed_at = None
            async with await pubsub.producer() as producer:
                for n in range(writes):
                    k = (n * 7) % keys
                    p = partition_for(key(k), P)
                    if kind == "puts":
                        v = None if n % 17 == 0 else value(f"w{n}", n)
                        await send_rt(producer, rt_topic, P, key(k), v)
                    else:  # increments and list ops: applying one twice would show
                        await send_rt(producer, rt_topic, P, key(k), _update(n), update_headers(1))
                        state[k] = _after(state.get(k), n)
                        v = VALUES.encode(state[k])
                    produced[p].append((k, v))
                    if n % 500 == 499:
                        await producer.flush()
                        applied = sum(r.rt_offset or 0 for r in stand_in.reports)
                        if killed_at is None and applied > 2_000:
                            server.kill()  # SIGKILL, mid-stream
                            killed_at = applied
                        await asyncio.sleep(0.05)
            assert killed_at is not None and killed_at < writes
            server.start()
            server.wait_healthy()
            await wait_until(lambda: _caught_up(stand_in, pubsub, rt_topic), "caught up after the restart", 180)

            expected: dict[int, bytes | None] = {i: value("pushed", i) for i in range(keys)}
            for p in range(P):
                for k, v in produced[p]:
                    expected[k] = v
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                for k in range(keys):
                    p = partition_for(key(k), P)
                    answer = await http.get(replica_get_path(a.store, 1, p, key(k)))
                    if expected[k] is None:
                        assert answer.status_code == 404, (k, answer.text)
                    else:
                        assert answer.status_code == 200, (k, answer.text)
                        assert answer.content == expected[k], k
        finally:
            server.stop()

    # Every real-time record was applied once, in order: the change log holds each offset
    # exactly once with the value that record wrote.
    storage = VersionStorage(tmp_path / "server" / "versions" / a.topic, P, range(P))
    for p in range(P):
        changes = storage.changes(p, limit=writes + 1)
        assert [c.offset for c in changes] == list(range(len(produced[p])))
        for change, (k, v) in zip(changes, produced[p], strict=True):
            assert change.key == key(k)
            assert (change.schema_id, change.value) == ((TOMBSTONE, b"") if v is None else (1, v))
        assert storage.checkpoint(p).rt_offset == len(produced[p])
    storage.close()
