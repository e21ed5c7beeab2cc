"""The controller's HTTP API (FastAPI): admin traffic only, never on the read path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from pydantic import BaseModel, Field

from controller.persistence import MetadataFile
from controller.state import ClusterState
from venice.errors import ConflictError, RequestError, VeniceError, error_body
from venice.pubsub import PubSub

__all__ = ["Controller", "create_app"]

log = logging.getLogger("venice.controller")


class StoreCreate(BaseModel):
    name: str
    key_schema: Any
    value_schema: Any
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)


class StoreUpdate(BaseModel):
    keep_versions: int | None = Field(default=None, ge=1)
    push_timeout_s: float | None = Field(default=None, gt=0)


class VersionOpen(BaseModel):
    defer_swap: bool = False


class EndOfPush(BaseModel):
    records: int = Field(ge=0)


class VersionError(BaseModel):
    reason: str


class Heartbeat(BaseModel):
    url: str
    replicas: list[dict[str, Any]] = []
    draining: bool = False


class Controller:
    """Owns the state, its persistence, and the background work: failover and topic deletion."""

    def __init__(self, metadata: MetadataFile, pubsub: PubSub, dead_after_s: float = 15.0) -> None:
        self.metadata = metadata
        self.pubsub = pubsub
        self.state: ClusterState = metadata.load(pubsub.url, dead_after_s)
        self._changed = asyncio.Event()

    def commit(self) -> None:
        """Persist after a mutation and wake long-polls. Runs with no await in between
        the mutation and here, so no request sees unpersisted state it could act on."""
        if self.state.dirty:
            self.metadata.save(self.state)
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

    async def maintain(self, interval_s: float = 0.5) -> None:
        """Notice dead servers and move their replicas; fail pushes past their timeout."""
        while True:
            now = time.time()
            self.state.rebalance(now)
            for store, number in self.state.expire_pushes(now):
                log.warning("version %d of %s timed out", number, store)
            self.commit()
            await asyncio.sleep(interval_s)

    async def delete_topics(self, interval_s: float = 1.0) -> None:
        """Delete the topics of failed, killed, retired and deleted versions; retried until
        done. Apart from :meth:`maintain`, so a broker outage never delays failover."""
        while True:
            for topic in sorted(self.state.topics_to_delete):
                try:
                    await self.pubsub.delete_topic(topic)
                except VeniceError as exc:
                    log.warning("could not delete topic %s yet: %s", topic, exc)
                    continue
                self.state.topics_to_delete.discard(topic)
                self.state.dirty = True
                log.info("deleted topic %s", topic)
            self.commit()
            await asyncio.sleep(interval_s)


def _error_response(exc: VeniceError) -> Response:
    return Response(error_body(exc), status_code=exc.http_status, media_type="application/json")


def create_app(controller: Controller) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(controller.maintain()), asyncio.create_task(controller.delete_topics())]
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

    @app.exception_handler(VeniceError)
    async def venice_error(request: Request, exc: VeniceError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error_response(RequestError(f"invalid request: {problems}"))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Response:
        from venice.errors import NotFoundError

        return _error_response(NotFoundError(f"no such endpoint: {request.method} {request.url.path}"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "generation": state().generation}

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
        store = state().create_store(
            body.name, body.key_schema, body.value_schema, body.partitions, body.replication_factor
        )
        controller.commit()
        return state().describe_store(store)

    @app.get("/stores")
    async def list_stores() -> dict[str, Any]:
        return {"stores": [state().describe_store(s) for s in state().stores.values()]}

    @app.get("/stores/{name}")
    async def get_store(name: str) -> dict[str, Any]:
        return state().describe_store(state().store(name))

    @app.patch("/stores/{name}")
    async def update_store(name: str, body: StoreUpdate) -> dict[str, Any]:
        store = state().update_store(name, keep_versions=body.keep_versions, push_timeout_s=body.push_timeout_s)
        controller.commit()
        return state().describe_store(store)

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
        version = state().open_version(name, time.time(), defer_swap=bool(body and body.defer_swap))
        try:
            await controller.pubsub.create_topic(version.topic, version.partitions)
        except ConflictError:
            # Left over from metadata lost before it was persisted: start the topic afresh.
            await controller.pubsub.delete_topic(version.topic)
            await controller.pubsub.create_topic(version.topic, version.partitions)
        except VeniceError as exc:
            state().fail_version(name, version.number, f"could not create topic: {exc.message}")
            controller.commit()
            raise
        controller.commit()
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

    @app.post("/servers/{server_id}/heartbeat")
    async def heartbeat(server_id: str, body: Heartbeat) -> dict[str, Any]:
        state().heartbeat(server_id, body.url, body.replicas, time.time(), draining=body.draining)
        controller.commit()
        return {"assignment": state().assignment_for(server_id), "pubsub_url": state().pubsub_url}

    @app.get("/routing")
    async def routing(request: Request, generation: int | None = None, wait_s: float = 0.0) -> Response:
        if generation is not None and generation == state().generation and wait_s > 0:
            await controller.wait_changed(min(wait_s, 30.0), request)
        if generation is not None and generation == state().generation:
            return Response(status_code=304)
        return ORJSONResponse(state().routing_table(time.time()))

    return app
