"""A hybrid store on real storage servers, with a controller the test steers.

:class:`HybridController` speaks the controller's HTTP contracts (docs/api.md) for one
hybrid store, so a test can decide what the real controller decides by its own rules
(when a version opens and with which real-time start offsets, when it swaps, a rollback
at any moment): it answers real storage servers' heartbeats with hybrid
:class:`~venice.protocol.Assignment` entries (real-time start offsets, ``consume_rt`` by
the controller's rule), serves ``GET /routing`` (with long polls), ``GET /stores/{store}``
and ``GET /cluster``. Everything else is real: storage server
processes, the Kafka broker, LMDB, the router. Pushes and nearline writes are written to
the topics the way the push job and any producer write them (tests/ingestion/helpers.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from venice.cluster import ManagedProcess, free_port, wait_for
from venice.protocol import (
    Assignment,
    Heartbeat,
    HeartbeatAnswer,
    HybridConfig,
    ReplicaStatus,
    RoutingTable,
    StoreRouting,
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class _Version:
    number: int
    status: str = "STARTED"
    rt_start_offsets: dict[int, int] = field(default_factory=dict)


class HybridController:
    """See the module docstring. One store, every partition on every server."""

    def __init__(self, pubsub_url: str, store: str, *, partitions: int, key_schema: Any, value_schema: Any,
                 offset_lag: int = 1000, incarnation: str = "hybrid-test") -> None:
        self.pubsub_url = pubsub_url
        self.store = store
        self.partitions = partitions
        self.key_schema = key_schema
        self.value_schemas = {1: value_schema}
        self.incarnation = incarnation
        self.hybrid = HybridConfig(rewind_seconds=0, offset_lag=offset_lag, real_time_topic=f"{store}_rt")
        self.versions: dict[int, _Version] = {}
        self.current: int | None = None
        self.servers: dict[str, str] = {}
        self.ready: dict[tuple[str, int, int], bool] = {}
        self.generation = 1
        self._changed: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- what the test decides -----------------------------------------------------------------
    def open_version(self, number: int, rt_start_offsets: dict[int, int]) -> None:
        self._call(lambda: self.versions.__setitem__(number, _Version(number, "STARTED", dict(rt_start_offsets))))

    def swap(self, number: int) -> None:
        """ONLINE and current (the old current stays ONLINE: a backup)."""

        def change() -> None:
            self.versions[number].status = "ONLINE"
            self.current = number

        self._call(change)

    def retire(self, number: int) -> None:
        self._call(lambda: setattr(self.versions[number], "status", "RETIRED"))

    def wait_ready(self, number: int, timeout_s: float = 60.0) -> None:
        def ready() -> bool:
            return all(
                any(self.ready.get((server, number, p)) for server in self.servers) for p in range(self.partitions)
            )

        wait_for(ready, timeout_s, f"every partition of v{number} READY on a server")

    def _call(self, change: Callable[[], None]) -> None:
        change()
        self._bump()

    def _bump(self) -> None:
        self.generation += 1
        loop, event = self._loop, self._changed
        if loop is not None and event is not None:
            loop.call_soon_threadsafe(event.set)

    # -- the controller's rules ------------------------------------------------------------------
    def consume_rt(self, version: _Version) -> bool:
        if version.status == "STARTED":
            return True
        return version.status == "ONLINE" and (self.current is None or version.number >= self.current)

    def assignments(self) -> list[Assignment]:
        return [
            Assignment(
                store=self.store, version=v.number, topic=f"{self.store}_v{v.number}", partitions_total=self.partitions,
                partitions=tuple(range(self.partitions)), key_schema=self.key_schema, value_schemas=self.value_schemas,
                incarnation=self.incarnation, hybrid=self.hybrid, rt_start_offsets=v.rt_start_offsets,
                consume_rt=self.consume_rt(v),
            )
            for v in self.versions.values()
            if v.status in ("STARTED", "ONLINE")
        ]

    def routing(self) -> RoutingTable:
        versions = {
            v.number: {
                p: tuple(url for server, url in self.servers.items() if self.ready.get((server, v.number, p)))
                for p in range(self.partitions)
            }
            for v in self.versions.values()
            if v.status == "ONLINE"
        }
        entry = StoreRouting(self.key_schema, self.value_schemas, self.partitions, self.current, versions,
                             frozenset(v.number for v in self.versions.values() if v.status == "RETIRED"), self.hybrid)
        return RoutingTable(self.generation, {self.store: entry})

    def description(self) -> dict[str, Any]:
        return {
            "name": self.store, "incarnation": self.incarnation, "key_schema": self.key_schema,
            "value_schemas": {str(k): v for k, v in self.value_schemas.items()}, "partitions": self.partitions,
            "replication_factor": len(self.servers), "current_version": self.current, "hybrid": self.hybrid.to_json(),
            "versions": [
                {"version": v.number, "topic": f"{self.store}_v{v.number}", "partitions": self.partitions, "status": v.status,
                 "rt_start_offsets": {str(p): o for p, o in v.rt_start_offsets.items()}, "consume_rt": self.consume_rt(v)}
                for v in sorted(self.versions.values(), key=lambda v: v.number)
            ],
        }

    # -- HTTP ---------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                self._loop = asyncio.get_running_loop()
                self._changed = asyncio.Event()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.startswith("/servers/") and path.endswith("/heartbeat"):
            server_id = path.split("/")[2]
            heartbeat = Heartbeat.from_json(orjson.loads(body))
            changed = self.servers.get(server_id) != heartbeat.url
            self.servers[server_id] = heartbeat.url
            for report in heartbeat.replicas:
                key = (server_id, report.version, report.partition)
                ready = report.status is ReplicaStatus.READY
                changed |= self.ready.get(key) != ready
                self.ready[key] = ready
            if changed:
                self._bump()
            answer = HeartbeatAnswer(tuple(self.assignments()), self.pubsub_url).to_json()
            await _json(send, 200, answer)
        elif path == "/routing":
            query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
            seen = int(query["generation"]) if "generation" in query else None
            deadline = time.monotonic() + min(float(query.get("wait_s", "0")), 30.0)
            while seen == self.generation and time.monotonic() < deadline:
                assert self._changed is not None
                self._changed.clear()
                try:
                    async with asyncio.timeout(deadline - time.monotonic()):
                        await self._changed.wait()
                except TimeoutError:
                    break
            if seen == self.generation:
                await send({"type": "http.response.start", "status": 304, "headers": [(b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await _json(send, 200, self.routing().to_json())
        elif path == f"/stores/{self.store}":
            await _json(send, 200, self.description())
        elif path.startswith("/stores/"):
            await _json(send, 404, {"error": {"code": "STORE_NOT_FOUND", "message": "no such store"}})
        elif path == "/cluster":
            await _json(send, 200, {"pubsub_url": self.pubsub_url, "servers": [{"id": s, "url": u, "alive": True} for s, u in self.servers.items()]})
        elif path == "/health":
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(send, 404, {"error": {"code": "NOT_FOUND", "message": path}})


async def _json(send: Send, status: int, body: Any) -> None:
    data = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def server_process(work: Path, controller_url: str, index: int) -> ManagedProcess:
    port = free_port()
    return ManagedProcess(
        f"server-{index}",
        ["server", "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(work / f"server-{index}"),
         "--controller", controller_url, "--server-id", f"server-{index}"],
        work / "logs" / f"server-{index}.log",
        f"http://127.0.0.1:{port}",
    )


def router_process(work: Path, controller_url: str) -> ManagedProcess:
    port = free_port()
    return ManagedProcess("router", ["router", "--host", "127.0.0.1", "--port", str(port), "--controller", controller_url],
                          work / "logs" / "router.log", f"http://127.0.0.1:{port}")
