"""The controller's HTTP API (FastAPI): admin traffic only, never on the read path.

It also serves the dashboard (``/``, ``controller/dashboard/``: plain HTML, CSS and a
script that polls ``GET /overview``), its metrics (``GET /metrics``) and the overview.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.auth import AuthMiddleware, ControllerAuth
from controller.limits import DEFAULT_FORGET_AFTER_S, TOPIC_HEADROOM_BYTES
from controller.observe import ClusterObserver
from controller.openapi import install as install_openapi
from controller.overview import overview
from controller.persistence import MetadataFile
from controller.protocol import (
    SERVER_ID,
    EndOfPush,
    HybridSettings,
    StoreCreate,
    StoreUpdate,
    ValueSchemaAdd,
    VersionError,
    VersionOpen,
)
from controller.routers import RouterWatch
from controller.state import UNCHANGED, ClusterState, Hybrid, VersionStatus
from venice.auth import ANONYMOUS, Action, Principal
from venice.errors import (
    ConflictError,
    NotFoundError,
    RequestError,
    TopicNotFoundError,
    UnavailableError,
    VeniceError,
    error_body,
)
from venice.metrics import PROMETHEUS_CONTENT_TYPE
from venice.protocol import Heartbeat
from venice.pubsub import PubSub
from venice.structs import real_time_topic
from venice.supervise import supervised

__all__ = ["Controller", "create_app"]

log = logging.getLogger("venice.controller")


class Controller:
    """Owns the state, its persistence, and the background work: failover and topic deletion."""

    def __init__(
        self,
        metadata: MetadataFile,
        pubsub: PubSub,
        dead_after_s: float = 15.0,
        forget_after_s: float = DEFAULT_FORGET_AFTER_S,
        auth: ControllerAuth | None = None,
        router_urls: Sequence[str] = (),
        ca_file: Path | None = None,
    ) -> None:
        self.metadata = metadata
        self.auth = auth if auth is not None else ControllerAuth()
        # Closed routers show their metrics to the cluster secret (docs/security.md).
        self.routers = RouterWatch(router_urls, token=self.auth.secret, ca_file=ca_file)
        """The routers whose read rate and p99 the overview shows (scraped in the background)."""
        self.pubsub = pubsub
        self.state: ClusterState = metadata.load(pubsub.url, dead_after_s, forget_after_s)
        # Saved at once: a state that cannot be written shows now, not at the first change.
        self._saved = metadata.save(self.state)
        self.observer = ClusterObserver(lambda: self.state)
        self.observer.observe(time.time())
        self._changed = asyncio.Event()
        self._topics_lock = asyncio.Lock()
        """One janitor round at a time: the background loop and a request's own round."""
        self._push_ends: tuple[float, dict[str, dict[int, int]]] = (-1.0, {})
        self._push_ends_lock = asyncio.Lock()

    def commit(self) -> None:
        """Persist after a mutation and wake long-polls. Runs with no await in between
        the mutation and here, so no request sees unpersisted state it could act on.

        A change that cannot be saved is undone: the state goes back to the last one
        saved and the caller gets 503 ``UNAVAILABLE``; the next request starts afresh.
        """
        if not self.state.dirty:
            return
        try:
            self._saved = self.metadata.save(self.state)
        except (OSError, TypeError, ValueError) as exc:  # orjson's encode error is a TypeError
            log.error("could not save the metadata, undoing the change: %s", exc)
            self.state = self.state.restored(orjson.loads(self._saved), time.time())
            self._wake()
            raise UnavailableError(
                f"the controller could not save the change, so it was not made ({type(exc).__name__}: {exc}); "
                "retry later"
            ) from exc
        self._wake()
        self.observer.observe(time.time())

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout_s: float, request: Request) -> None:
        """Wait for the next commit, at most ``timeout_s``; give up early when the
        caller hangs up, so long polls never hold a shutdown."""
        changed = self._changed
        deadline = time.monotonic() + timeout_s
        while not changed.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), min(0.5, max(0.0, deadline - time.monotonic())))
            if await request.is_disconnected():
                return

    async def maintain_once(self) -> None:
        """Notice dead servers and move their replicas; fail pushes past their timeout."""
        now = time.time()
        self.state.rebalance(now)
        for store, number in self.state.expire_pushes(now):
            log.warning("version %d of %s timed out", number, store, extra={"store": store, "version": number})
        self.commit()
        self.observer.observe(now)  # servers going dead change nothing saved

    async def topics_once(self) -> None:
        """The topic janitor's round: delete the topics of failed, killed, retired and deleted
        versions and of real-time topics no store wants, then create the real-time topics
        of hybrid stores; what fails is retried next round. Apart from :meth:`maintain_once`,
        so a broker outage never delays failover."""
        async with self._topics_lock:
            await self._delete_topics()
            await self._create_topics()
        self.commit()

    async def topics_for(self, store: str) -> None:
        """Work the topic lists for ``store``'s real-time topic at once, so a store made
        hybrid answers with its topic there; a failure is left to the janitor's next round."""
        topic = real_time_topic(store)
        async with self._topics_lock:
            try:
                await self._delete_topics({topic})
                await self._create_topics({topic})
            except VeniceError as exc:
                log.warning("real-time topic %s: %s; the janitor retries", topic, exc)
        self.commit()

    async def _delete_topics(self, only: set[str] | None = None) -> None:
        """A topic a live version (or a hybrid store) uses is never deleted, whatever the list says."""
        for topic in sorted(self.state.topics_to_delete):
            if only is not None and topic not in only:
                continue
            if topic in self.state.live_topics():
                log.error("not deleting topic %s: a live version or hybrid store reads it", topic)
                self.state.topics_to_delete.discard(topic)
                self.state.dirty = True
                continue
            try:
                await self.pubsub.delete_topic(topic)
            except VeniceError as exc:
                log.warning("could not delete topic %s yet: %s", topic, exc)
                continue
            self.state.topics_to_delete.discard(topic)
            self.state.dirty = True
            log.info("deleted topic %s", topic)

    async def _create_topics(self, only: set[str] | None = None) -> None:
        """Create real-time topics; one whose name (as Kafka sees it) is still to be deleted
        waits, so a store deleted and created again never reads its predecessor's writes."""
        self.state.drop_unwanted_creations()
        for topic in sorted(self.state.topics_to_create):
            partitions = self.state.partitions_of_rt(topic)
            if (only is not None and topic not in only) or partitions is None:
                continue
            if self.state.topic_creation_waits(topic):
                log.info("real-time topic %s waits for an older topic of its name to be deleted", topic)
                continue
            try:
                try:
                    await self.pubsub.create_topic(topic, partitions)
                    log.info("created real-time topic %s (%d partitions)", topic, partitions)
                except ConflictError:
                    # Ours, created before a crash let the metadata say so: the delete list
                    # is durable, so no older topic of this name can be left.
                    if await self.pubsub.partition_count(topic) != partitions:
                        log.error("real-time topic %s exists with another partition count: deleting it", topic)
                        await self.pubsub.delete_topic(topic)
                        continue
                offsets = await self.pubsub.beginning_offsets(topic)
            except VeniceError as exc:
                log.warning("could not create real-time topic %s yet: %s", topic, exc)
                continue
            state = self.state
            if topic in state.topics_to_create and state.partitions_of_rt(topic) == partitions and not state.topic_creation_waits(topic):
                # Still wanted after the awaits, and not by a store deleted and created again
                # meanwhile (then this one is deleted first and made again next round).
                state.rt_topic_created(topic, offsets)

    async def rt_start_offsets(self, store: str, now: float) -> tuple[dict[int, int], int] | None:
        """The real-time offsets a version of ``store`` opened at ``now`` starts from, and
        the epoch of the topic they are offsets of (``None``: batch-only, or the topic is
        not created yet). Asked again when the store got a new real-time topic while the
        pub-sub answered, so the offsets returned are of the store's epoch at return (the
        caller opens the version before its next ``await``)."""
        for _ in range(3):
            plan = self.state.rt_offsets_plan(store, now)
            if plan is None:
                return None
            topic, timestamp_ms, epoch = plan
            try:
                if timestamp_ms is None:
                    offsets = await self.pubsub.beginning_offsets(topic)
                else:
                    offsets = await self.pubsub.offsets_for_time(topic, timestamp_ms)
            except TopicNotFoundError:
                log.error("real-time topic %s is missing: creating it again", topic)
                self.state.rt_topic_missing(store)
                self.commit()
                return None
            if self.state.rt_offsets_plan(store, now) == plan:
                return offsets, epoch
        log.warning("%s: its real-time topic kept changing while start offsets were asked; they come with the next topic", store)
        return None

    async def push_topic_ends(self, max_age_s: float = 1.0) -> dict[str, dict[int, int]]:
        """End offsets of the topics of pushes under way (STARTED versions), asked at most
        once per ``max_age_s`` however many dashboards poll: what a replica's ingestion
        lag is measured against. A topic the pub-sub cannot answer for is left out."""
        async with self._push_ends_lock:
            asked_at, ends = self._push_ends
            now = time.monotonic()
            if now - asked_at < max_age_s:
                return ends
            topics = sorted(
                v.topic for s in self.state.stores.values() for v in s.versions.values() if v.status == VersionStatus.STARTED.value
            )
            ends = {}
            for topic in topics:
                try:
                    async with asyncio.timeout(2.0):
                        ends[topic] = await self.pubsub.end_offsets(topic)
                except (VeniceError, TimeoutError) as exc:
                    log.debug("no end offsets for %s: %s", topic, exc)
            self._push_ends = (time.monotonic(), ends)
            return ends

    async def maintain(self, interval_s: float = 0.5) -> None:
        await supervised("maintain (failover, push timeouts)", self.maintain_once, interval_s, log=log)

    async def topics(self, interval_s: float = 1.0) -> None:
        await supervised("topics (topic janitor)", self.topics_once, interval_s, log=log)


HEARTBEAT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["url"],
                "properties": {
                    "url": {"type": "string", "maxLength": 2048},
                    "replicas": {"type": "array", "items": {"type": "object"}},
                    "draining": {"type": "boolean"},
                },
            }
        }
    },
}
"""Documented by hand: the body is read raw and typed by :class:`venice.protocol.Heartbeat`."""

MAX_HEARTBEAT_BYTES = 64 << 20
"""A heartbeat lists every replica of a server (at most 100,000, a few hundred bytes each)."""


async def _json_body(request: Request, limit: int) -> Any:
    """The request body as JSON; 400 when it is larger than ``limit`` bytes or not JSON
    (orjson also refuses nesting deeper than 1024)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(f"request body larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"request body is not JSON: {exc}") from None


def _hybrid(settings: HybridSettings | None) -> Hybrid | None:
    return None if settings is None else Hybrid(settings.rewind_seconds, settings.offset_lag)


def _error_response(exc: VeniceError) -> Response:
    return Response(error_body(exc), status_code=exc.http_status, media_type="application/json")


DASHBOARD_DIR = Path(__file__).parent / "dashboard"
DASHBOARD_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"), "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8")}
DASHBOARD_HEADERS = {
    # Nothing from elsewhere: no CDN, no inline script, no framing.
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


def _dashboard_route(app: FastAPI, path: str, file: str, media_type: str) -> None:
    body = (DASHBOARD_DIR / file).read_bytes()

    @app.get(path, include_in_schema=False)
    async def dashboard_file() -> Response:
        return Response(body, media_type=media_type, headers=DASHBOARD_HEADERS)


def create_app(controller: Controller) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(controller.maintain()),
            asyncio.create_task(controller.topics()),
            asyncio.create_task(controller.routers.run()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await controller.pubsub.close()

    app = FastAPI(title="venice controller", default_response_class=ORJSONResponse, lifespan=lifespan)

    def state() -> ClusterState:
        return controller.state  # looked up per call: the state object is replaced on load

    def private(name: str) -> bool:
        store = state().stores.get(name)
        return store is not None and store.private

    app.add_middleware(AuthMiddleware, auth=controller.auth, private=private)
    install_openapi(app)

    def principal(request: Request) -> Principal:
        found = getattr(request.state, "principal", ANONYMOUS)
        return found if isinstance(found, Principal) else ANONYMOUS

    @app.exception_handler(VeniceError)
    async def venice_error(request: Request, exc: VeniceError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error_response(RequestError(f"invalid request: {problems}"))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        return _error_response(NotFoundError(f"no such endpoint: {request.method} {request.url.path}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI's own refusals (a body that is not JSON, a wrong method) in our error shape.
        body = RequestError(str(exc.detail)).to_dict()
        return ORJSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "generation": state().generation}

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text/plain (the Prometheus format)
    async def metrics() -> Response:
        return Response(controller.observer.render(time.time()), media_type=PROMETHEUS_CONTENT_TYPE)

    for path, (file, media_type) in DASHBOARD_FILES.items():
        _dashboard_route(app, path, file, media_type)

    @app.get("/overview")
    async def cluster_overview() -> dict[str, Any]:
        ends = await controller.push_topic_ends()
        return overview(state(), time.time(), routers=controller.routers.view(), topic_ends=ends)

    @app.get("/cluster")
    async def cluster() -> dict[str, Any]:
        now = time.time()
        return {
            "pubsub_url": state().pubsub_url,
            "servers": [
                {
                    "server_id": s.server_id,
                    "url": s.url,
                    "alive": now - s.last_heartbeat <= state().dead_after_s,
                    "draining": s.draining,
                }
                for s in state().servers.values()
            ],
        }

    @app.post("/stores", status_code=201)
    async def create_store(body: StoreCreate) -> dict[str, Any]:
        state().create_store(
            body.name,
            body.key_schema,
            body.value_schema,
            body.partitions,
            body.replication_factor,
            keep_versions=body.keep_versions,
            push_timeout_s=body.push_timeout_s,
            max_value_bytes=body.max_value_bytes,
            hybrid=_hybrid(body.hybrid),
            write_compute=body.write_compute,
        )
        controller.commit()
        if body.hybrid is not None:
            await controller.topics_for(body.name)
        return state().describe_store(state().store(body.name))

    @app.get("/stores")
    async def list_stores(request: Request) -> dict[str, Any]:
        caller, policy = principal(request), controller.auth.policy()
        return {
            "stores": [
                state().describe_store(s)
                for s in state().stores.values()
                if not policy.required(Action.READ, private=s.private) or caller.may(Action.READ, s.name)
            ]
        }

    @app.get("/stores/{name}")
    async def get_store(name: str) -> dict[str, Any]:
        return state().describe_store(state().store(name))

    @app.patch("/stores/{name}")
    async def update_store(name: str, body: StoreUpdate) -> dict[str, Any]:
        state().update_store(
            name,
            keep_versions=body.keep_versions,
            push_timeout_s=body.push_timeout_s,
            max_value_bytes=body.max_value_bytes,
            hybrid=_hybrid(body.hybrid) if body.hybrid_given else UNCHANGED,
            write_compute=body.write_compute,
            private=body.private,
            read_quota=body.read_quota if body.read_quota_given else UNCHANGED,
        )
        controller.commit()
        if body.hybrid_given:
            await controller.topics_for(name)
        return state().describe_store(state().store(name))

    @app.post("/stores/{name}/value-schemas")
    async def add_value_schema(name: str, body: ValueSchemaAdd, response: Response) -> dict[str, Any]:
        schema_id, created = state().add_value_schema(name, body.schema_)
        controller.commit()
        response.status_code = 201 if created else 200
        return {"id": schema_id, "schema": state().store(name).value_schemas[schema_id]}

    @app.get("/stores/{name}/versions")
    async def list_versions(name: str) -> dict[str, Any]:
        return {"versions": state().describe_store(state().store(name))["versions"]}

    @app.post("/stores/{name}/versions/{number}/swap")
    async def swap(name: str, number: int) -> dict[str, Any]:
        store = state().swap(name, number)
        controller.commit()
        return state().describe_store(store)

    @app.post("/stores/{name}/rollback")
    async def rollback(name: str) -> dict[str, Any]:
        store = state().rollback(name)
        controller.commit()
        return state().describe_store(store)

    @app.post("/stores/{name}/versions/{number}/kill")
    async def kill(name: str, number: int) -> dict[str, Any]:
        version = state().kill_version(name, number)
        controller.commit()
        return state().describe_version(state().store(name), version)

    @app.delete("/stores/{name}")
    async def delete_store(name: str) -> dict[str, Any]:
        state().delete_store(name)
        controller.commit()
        return {"deleted": name}

    @app.post("/stores/{name}/versions", status_code=201)
    async def open_version(name: str, body: VersionOpen | None = None) -> dict[str, Any]:
        now = time.time()
        state().store(name)  # 404 before asking the pub-sub anything
        starts = await controller.rt_start_offsets(name, now)
        offsets, epoch = starts if starts is not None else (None, None)
        version = state().open_version(
            name, now, defer_swap=bool(body and body.defer_swap), rt_start_offsets=offsets, rt_epoch=epoch
        )
        # Persisted before the topic exists, so the version number is taken for good.
        controller.commit()
        max_message_bytes = state().store(name).max_value_bytes + TOPIC_HEADROOM_BYTES
        try:
            try:
                await controller.pubsub.create_topic(version.topic, version.partitions, max_message_bytes=max_message_bytes)
            except ConflictError:
                # Only metadata lost after the topic was made leaves one behind (numbers are
                # never reused): its records belong to no live version; start it afresh.
                await controller.pubsub.delete_topic(version.topic)
                await controller.pubsub.create_topic(version.topic, version.partitions, max_message_bytes=max_message_bytes)
        except VeniceError as exc:
            with contextlib.suppress(VeniceError):
                state().fail_version(name, version.number, f"could not create topic: {exc.message}")
                controller.commit()
            raise
        return {
            "version": version.number,
            "topic": version.topic,
            "partitions": version.partitions,
            "pubsub_url": state().pubsub_url,
        }

    @app.get("/stores/{name}/versions/{number}")
    async def get_version(name: str, number: int) -> dict[str, Any]:
        store = state().store(name)
        return state().describe_version(store, state().version(name, number))

    @app.post("/stores/{name}/versions/{number}/end")
    async def end_of_push(name: str, number: int, body: EndOfPush) -> dict[str, Any]:
        version = state().end_of_push(name, number, body.records)
        controller.commit()
        return state().describe_version(state().store(name), version)

    @app.post("/stores/{name}/versions/{number}/error")
    async def version_error(name: str, number: int, body: VersionError) -> dict[str, Any]:
        version = state().fail_version(name, number, body.reason)
        controller.commit()
        return state().describe_version(state().store(name), version)

    @app.post("/servers/{server_id}/heartbeat", openapi_extra={"requestBody": HEARTBEAT_BODY})
    async def heartbeat(server_id: str, request: Request) -> dict[str, Any]:
        if not SERVER_ID.fullmatch(server_id):
            raise RequestError(f"invalid server id {server_id[:40]!r}: 1 to 200 ASCII letters, digits, '.', '_', ':' or '-'")
        body = Heartbeat.from_json(await _json_body(request, MAX_HEARTBEAT_BYTES))
        state().heartbeat(server_id, body.url, body.replicas, time.time(), draining=body.draining)
        controller.commit()
        return {"assignment": state().assignment_for(server_id), "pubsub_url": state().pubsub_url}

    @app.delete("/servers/{server_id}")
    async def remove_server(server_id: str) -> dict[str, Any]:
        state().remove_server(server_id, time.time())
        controller.commit()
        return {"removed": server_id}

    @app.get("/auth/tokens")
    async def tokens(generation: int | None = None) -> Response:
        """The token table (digests only) for routers and storage servers, which hold the cluster secret."""
        table = controller.auth.table()  # reads the file again first when it changed
        if generation is not None and generation == controller.auth.generation:
            return Response(status_code=304)
        tokens = None if controller.auth.file is None else table.to_json(public=True)  # null: no token file, writes open
        return ORJSONResponse({"generation": controller.auth.generation, "tokens": tokens})

    @app.get("/routing")
    async def routing(request: Request, generation: int | None = None, wait_s: float = 0.0) -> Response:
        if generation is not None and generation == state().generation and wait_s > 0:
            await controller.wait_changed(min(wait_s, 30.0), request)
        if generation is not None and generation == state().generation:
            return Response(status_code=304)
        return ORJSONResponse(state().routing_table(time.time()))

    return app
