"""Small real HTTP stand-ins for the controller and storage servers, for router and SDK tests.

They implement the contracts of docs/api.md over in-memory dicts and run under uvicorn
on loopback in a background thread each, so the code under test talks real HTTP and
nothing is patched. The batch frames are coded here independently of
``venice.protocol`` so a misreading of the contract on one side shows up as a failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn

from venice.httpserver import HttpServer
from venice.partitioner import partition_for
from venice.schema import AvroCodec

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

Replica = tuple[str, int, int]
"""``(store, version, partition)`` held by a fake storage server."""


def _error(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})


async def _respond(send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    """The whole body of an ASGI request."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class FakeStorage:
    """A storage server's read API over ``{(store, version, partition, key): (schema id, value)}``.

    ``mode`` makes it misbehave for failover tests: ``"unavailable"`` answers 503 to
    every read, ``"hang"`` sleeps ``hang_s`` before answering.
    """

    def __init__(self, mode: str = "ok", *, hang_s: float = 30.0) -> None:
        self.mode = mode
        self.hang_s = hang_s
        self.data: dict[tuple[str, int, int, bytes], tuple[int, bytes]] = {}
        self.hosted: set[Replica] = set()
        self.reads = 0
        self.batch_requests = 0

    def host(self, store: str, version: int, partitions: int) -> None:
        self.hosted.update((store, version, p) for p in range(partitions))

    def put(self, store: str, version: int, partition: int, key: bytes, value: bytes, schema_id: int = 1) -> None:
        self.hosted.add((store, version, partition))
        self.data[(store, version, partition, key)] = (schema_id, value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        parts = scope["path"].strip("/").split("/")
        if parts == ["health"]:
            await _respond(send, 200, b'{"status": "ok", "server_id": "fake"}')
            return
        self.reads += 1
        if self.mode == "hang":
            await asyncio.sleep(self.hang_s)
        if self.mode != "ok":
            await _respond(send, 503, _error("UNAVAILABLE", f"fake server is {self.mode}"))
            return
        if scope["method"] == "GET" and len(parts) == 5 and parts[0] == "v1":
            await self._single(send, parts[1], int(parts[2]), int(parts[3]), parts[4])
        elif scope["method"] == "POST" and len(parts) == 4 and parts[:2] == ["v1", "batch"]:
            self.batch_requests += 1
            await self._batch(send, parts[2], int(parts[3]), await read_body(receive))
        else:
            await _respond(send, 404, _error("NOT_FOUND", "no such route"))

    async def _single(self, send: Send, store: str, version: int, partition: int, key_b64: str) -> None:
        if (store, version, partition) not in self.hosted:
            await _respond(send, 503, _error("REPLICA_NOT_READY", "not hosted here"))
            return
        key = base64.urlsafe_b64decode(key_b64 + "=" * (-len(key_b64) % 4))
        hit = self.data.get((store, version, partition, key))
        if hit is None:
            await _respond(send, 404, _error("KEY_NOT_FOUND", "no such key"))
            return
        await _respond(send, 200, hit[1], [(b"x-venice-schema-id", str(hit[0]).encode())])

    async def _batch(self, send: Send, store: str, version: int, body: bytes) -> None:
        answer, offset = [], 0
        while offset < len(body):
            partition, length = struct.unpack(">II", body[offset : offset + 8])
            key = body[offset + 8 : offset + 8 + length]
            offset += 8 + length
            if (store, version, partition) not in self.hosted:
                await _respond(send, 503, _error("REPLICA_NOT_READY", f"partition {partition} not hosted here"))
                return
            schema_id, value = self.data.get((store, version, partition, key), (-1, b""))
            answer.append(struct.pack(">iI", schema_id, len(value)) + value)
        await _respond(send, 200, b"".join(answer))


class FakeController:
    """Serves ``GET /routing`` with generations, long polls (``wait_s``) and 304s, like
    the real controller; tests edit the stores in place."""

    def __init__(self, *, pubsub_url: str = "embedded:///nonexistent") -> None:
        self.generation = 1
        self.stores: dict[str, dict[str, Any]] = {}
        self.descriptions: dict[str, dict[str, Any]] = {}
        """``GET /stores/{store}`` answers (see :func:`store_description`)."""
        self.pubsub_url = pubsub_url
        """What ``GET /cluster`` says."""
        self.describes = 0
        self.available = True
        self.fetches = 0
        self.not_modified = 0
        self.woken_long_polls = 0
        """Long polls answered early, with a new table, because it changed while they waited."""
        self.wakes_long_polls = True
        """False: hold every long poll for its whole ``wait_s`` even when the table
        changes, so a router learns of a change only when it asks anew (early refresh)."""

    def set_store(self, name: str, entry: dict[str, Any]) -> None:
        self.stores[name] = entry
        self.generation += 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/stores/") and scope["method"] == "GET":
            await self._describe(send, urllib.parse.unquote(scope["path"][len("/stores/") :]))
            return
        if scope["path"] == "/cluster" and scope["method"] == "GET":
            await _respond(send, 200, orjson.dumps({"pubsub_url": self.pubsub_url}), [(b"content-type", b"application/json")])
            return
        if scope["path"] != "/routing":
            await _respond(send, 404, _error("NOT_FOUND", "no such route"))
            return
        self.fetches += 1
        query = urllib.parse.parse_qs(scope["query_string"].decode())
        seen = int(query["generation"][0]) if "generation" in query else None
        deadline = time.monotonic() + float(query.get("wait_s", ["0"])[0])
        waited = False
        while self.available and time.monotonic() < deadline and (seen == self.generation or not self.wakes_long_polls):
            waited = True
            await asyncio.sleep(0.01)
        if waited and self.available and seen != self.generation and time.monotonic() < deadline:
            self.woken_long_polls += 1
        if not self.available:
            await _respond(send, 503, _error("UNAVAILABLE", "controller is down"))
            return
        if seen == self.generation:
            self.not_modified += 1
            await _respond(send, 304, b"")
            return
        body = orjson.dumps({"generation": self.generation, "stores": self.stores})
        await _respond(send, 200, body, [(b"content-type", b"application/json")])


    async def _describe(self, send: Send, name: str) -> None:
        self.describes += 1
        if not self.available:
            await _respond(send, 503, _error("UNAVAILABLE", "controller is down"))
            return
        description = self.descriptions.get(name)
        if description is None:
            await _respond(send, 404, _error("STORE_NOT_FOUND", f"store {name!r} does not exist"))
            return
        await _respond(send, 200, orjson.dumps(description), [(b"content-type", b"application/json")])


def store_description(
    name: str,
    key_schema: Any,
    value_schemas: Mapping[int, Any],
    partitions: int,
    *,
    hybrid: bool = True,
    write_compute: bool = False,
    max_value_bytes: int = 1024 * 1024,
) -> dict[str, Any]:
    """A ``GET /stores/{store}`` answer as docs/api.md describes it (the fields writers read)."""
    return {
        "name": name,
        "key_schema": key_schema,
        "value_schemas": {str(sid): schema for sid, schema in value_schemas.items()},
        "partitions": partitions,
        "replication_factor": 1,
        "max_value_bytes": max_value_bytes,
        "current_version": None,
        "hybrid": {"rewind_seconds": 60, "offset_lag": 100, "real_time_topic": f"{name}_rt"} if hybrid else None,
        "write_compute": write_compute,
        "versions": [],
    }


def store_entry(
    key_schema: Any,
    value_schemas: Mapping[int, Any],
    partitions: int,
    current_version: int | None,
    versions: Mapping[int, Sequence[str]],
    *,
    hybrid: bool = False,
    write_compute: bool = False,
    store: str = "store",
) -> dict[str, Any]:
    """A routing-table entry where every partition of a version has the same replicas
    (``hybrid``: with the real-time settings of ``store_description``)."""
    entry: dict[str, Any] = {
        "key_schema": key_schema,
        "value_schemas": {str(sid): schema for sid, schema in value_schemas.items()},
        "partitions": partitions,
        "current_version": current_version,
        "versions": {
            str(v): {"partitions": {str(p): list(urls) for p in range(partitions)}} for v, urls in versions.items()
        },
    }
    if hybrid:
        entry["hybrid"] = {"rewind_seconds": 60, "offset_lag": 100, "real_time_topic": f"{store}_rt"}
        entry["write_compute"] = write_compute
    return entry


def load(
    servers: Sequence[FakeStorage],
    store: str,
    version: int,
    key_schema: Any,
    value_schema: Any,
    partitions: int,
    records: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
    schema_id: int = 1,
) -> None:
    """Serialize ``records`` (a mapping or key-value pairs) like a push would; every server gets every partition."""
    key_codec, value_codec = AvroCodec(key_schema, kind="key"), AvroCodec(value_schema)
    for server in servers:
        server.host(store, version, partitions)
    for key, value in records.items() if isinstance(records, Mapping) else records:
        key_bytes = key_codec.encode(key)
        partition = partition_for(key_bytes, partitions)
        for server in servers:
            server.put(store, version, partition, key_bytes, value_codec.encode(value), schema_id)


@contextmanager
def serve_in_thread(target: App | uvicorn.Config | HttpServer, *, graceful_s: float = 0.5) -> Iterator[str]:
    """Run an ASGI app (or a prepared uvicorn config, or an HttpServer as the router and
    storage servers run) on a free loopback port; yields its base URL."""
    if isinstance(target, HttpServer):
        with _http_server_in_thread(target) as url:
            yield url
        return
    if isinstance(target, uvicorn.Config):
        config = target
    else:
        config = uvicorn.Config(
            target, lifespan="auto", log_level="warning", access_log=False, timeout_graceful_shutdown=graceful_s
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until(lambda: server.started, thread, what="server start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def _http_server_in_thread(server: HttpServer) -> Iterator[str]:
    import uvloop

    started = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    def ready(port: int) -> None:
        loops.append(asyncio.get_running_loop())
        started.set()

    thread = threading.Thread(target=lambda: uvloop.run(server.serve(ready=ready)), daemon=True)
    thread.start()
    try:
        _wait_until(started.is_set, thread, what="server start")
        yield f"http://127.0.0.1:{server.port}"
    finally:
        if loops:
            loops[0].call_soon_threadsafe(server.request_exit)
        # Graceful shutdown may take its grace period plus the app's own (a router waits up to
        # its write timeout for writes in flight); on a loaded machine more. A server left
        # running would leak its connections into later tests: say so here instead.
        thread.join(timeout=60)
        if thread.is_alive():
            raise RuntimeError("a test server did not stop within 60 s of being asked to")


@contextmanager
def refused_url() -> Iterator[str]:
    """A loopback URL that refuses connections: the port is bound (so nobody takes it) but not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def _wait_until(condition: Callable[[], bool], thread: threading.Thread, *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if not thread.is_alive() or time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- A ready-made cluster: fake controller + fake servers + the real router -------------

MEMBER_SCHEMA = {
    "type": "record",
    "name": "Member",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "age", "type": "int"},
        {"name": "avatar", "type": "bytes"},
    ],
}
PAIR_SCHEMA = {
    "type": "record",
    "name": "Pair",
    "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}],
}
BIG_LONG_KEYS = (2**62 + 1, -(2**63), 9007199254740993)
"""Longs beyond a double's precision and at the bottom of the range: parsing must be exact."""
TAG_RECORDS = {"a/b c": "slash and space", "plain": "p", "ünï/cödé?&#%": "unicode", "": "empty key"}
PAIR_RECORDS = {(1, "x"): 10, (2, "y/z"): 20}


def member(key: int, version: int = 2) -> dict[str, Any]:
    """The value of member ``key`` in ``version``: versions differ so tests see which was read."""
    return {"name": f"member-{key}-v{version}", "age": abs(key) % 100, "avatar": b"\x00\xff" + str(key).encode()}


@dataclass
class SampleCluster:
    router_url: str
    controller: FakeController
    controller_url: str
    servers: list[FakeStorage]
    """The three healthy servers; every partition of every healthy store is on each."""
    deadline_s: float


@contextmanager
def sample_cluster(*, deadline_s: float = 1.0, hedge_after_s: float = 0.1) -> Iterator[SampleCluster]:
    """Three healthy fake servers, three broken ones and a real router in front.

    Stores: ``members`` (long -> Member record, versions 1 and 2, current 2),
    ``tags`` (string -> string), ``pairs`` (Pair record -> long), ``fresh`` (no
    current version), ``flaky`` (replicas: refused, 503, hanging, healthy),
    ``down`` (refused and 503 only), ``stuck`` (one hanging replica).
    """
    from router.main import RouterConfig, build_server

    healthy = [FakeStorage() for _ in range(3)]
    unavailable, hanging = FakeStorage("unavailable"), FakeStorage("hang")
    controller = FakeController()
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serve_in_thread(s)) for s in healthy]
        refused = stack.enter_context(refused_url())
        unavailable_url = stack.enter_context(serve_in_thread(unavailable))
        hanging_url = stack.enter_context(serve_in_thread(hanging))
        _fill_sample(controller, healthy, urls, refused=refused, unavailable=unavailable_url, hanging=hanging_url)
        controller_url = stack.enter_context(serve_in_thread(controller))
        config = RouterConfig(
            port=0,
            controller_url=controller_url, deadline_s=deadline_s, hedge_after_s=hedge_after_s, graceful_shutdown_s=0.5
        )
        router_url = stack.enter_context(serve_in_thread(build_server(config)))
        yield SampleCluster(router_url, controller, controller_url, healthy, deadline_s)


def _fill_sample(
    controller: FakeController,
    healthy: list[FakeStorage],
    urls: list[str],
    *,
    refused: str,
    unavailable: str,
    hanging: str,
) -> None:
    members = {k: member(k) for k in (*range(100), *BIG_LONG_KEYS)}
    load(healthy, "members", 1, "long", MEMBER_SCHEMA, 4, {k: member(k, 1) for k in range(10)})
    load(healthy, "members", 2, "long", MEMBER_SCHEMA, 4, members)
    controller.set_store("members", store_entry("long", {1: MEMBER_SCHEMA}, 4, 2, {1: urls, 2: urls}))
    load(healthy, "tags", 1, "string", "string", 3, TAG_RECORDS)
    controller.set_store("tags", store_entry("string", {1: "string"}, 3, 1, {1: urls}))
    pairs = [(_pair(k), v) for k, v in PAIR_RECORDS.items()]
    load(healthy, "pairs", 1, PAIR_SCHEMA, "long", 2, pairs)
    controller.set_store("pairs", store_entry(PAIR_SCHEMA, {1: "long"}, 2, 1, {1: urls}))
    controller.set_store("fresh", store_entry("string", {1: "string"}, 2, None, {}))
    load(healthy[:1], "flaky", 1, "string", "string", 1, {"k": "v", "k2": "v2"})
    flaky_replicas = [refused, unavailable, hanging, urls[0]]
    controller.set_store("flaky", store_entry("string", {1: "string"}, 1, 1, {1: flaky_replicas}))
    controller.set_store("down", store_entry("string", {1: "string"}, 1, 1, {1: [refused, unavailable]}))
    controller.set_store("stuck", store_entry("string", {1: "string"}, 1, 1, {1: [hanging]}))


def _pair(key: tuple[int, str]) -> dict[str, Any]:
    return {"a": key[0], "b": key[1]}
