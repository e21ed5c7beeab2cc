"""``GET /changes/{store}[?since=TOKEN]``: a store's changes as Server-Sent Events.

For consumers that are not Python (browsers, ``curl -N``): the same stream as
:class:`venice.ChangeConsumer`, read by the router through its own routing table::

    : connected
    event: position
    id: TOKEN
    data: {"version": 3}

    id: TOKEN
    data: {"key": 42, "value": {...}, "version": 3}

    event: version-swap
    id: TOKEN
    data: {"old": 3, "new": 4}

    : keep-alive

Every event's ``id`` is the position after it, so a client that reconnects with
``Last-Event-ID`` (what ``EventSource`` does by itself) resumes exactly there; ``since``
does the same in the URL, and without either the stream starts at the tail. A deleted key
has ``"value": null``; bytes are base64 text. A comment line goes out every
:data:`HEARTBEAT_S` seconds without a change, so proxies keep the connection open and the
router notices a client that went away. A bad position is a 400 (JSON error, before any
event), an expired one a 410 ``POSITION_EXPIRED``, an unknown store a 404. A client that
reads slowly holds the stream back (the server stops reading the change logs while its
send buffer is full); one that disconnects ends it. At most :data:`MAX_STREAMS` streams
run per router (a 503 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from venice.changes import AsyncChangeConsumer, Change, VersionSwap
from venice.errors import RequestError, UnavailableError, VeniceError, error_body
from venice.routing_cache import RoutingCache
from venice.schema import json_default

__all__ = ["HEARTBEAT_S", "MAX_STREAMS", "ChangeStreams"]

logger = logging.getLogger("venice.router")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEARTBEAT_S = 15.0
MAX_STREAMS = 64
MAX_TOKEN_CHARS = 64_000
_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # proxies that buffer answers (nginx) pass these through at once
]


def _since(query: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The position to start from: ``Last-Event-ID`` (a reconnecting EventSource), else ``?since=``."""
    for name, value in headers:
        if name.lower() == b"last-event-id" and value:
            if len(value) > MAX_TOKEN_CHARS:
                raise RequestError("Last-Event-ID is too long to be a position")
            return value.decode("latin-1")
    for key, text in parse_qsl(query.decode("latin-1")):
        if key == "since" and text:
            return text
    return None


def event_bytes(event: Change | VersionSwap) -> bytes:
    if isinstance(event, Change):
        data: bytes = orjson.dumps({"key": event.key, "value": event.value, "version": event.version}, default=json_default)
        return b"id: " + event.position.encode() + b"\ndata: " + data + b"\n\n"
    data = orjson.dumps({"old": event.old, "new": event.new})
    return b"event: version-swap\nid: " + event.position.encode() + b"\ndata: " + data + b"\n\n"


class ChangeStreams:
    """Serves the SSE streams of one router (its routing cache, its controller)."""

    def __init__(
        self, controller_url: str, cache: RoutingCache, *, heartbeat_s: float = HEARTBEAT_S, max_streams: int = MAX_STREAMS,
        cluster_secret: str | None = None,
    ) -> None:
        self.cluster_secret = cluster_secret
        """What the streams' consumers show the controller and the storage servers."""
        self.controller_url = controller_url
        self.cache = cache
        self.heartbeat_s = heartbeat_s
        self.max_streams = max_streams
        self.active = 0

    async def serve(self, store: str, query: bytes, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send) -> None:
        if self.active >= self.max_streams:
            return await _error(send, UnavailableError(f"this router already serves {self.max_streams} change streams"))
        self.active += 1
        consumer: AsyncChangeConsumer | None = None
        try:
            try:
                consumer = AsyncChangeConsumer(
                    self.controller_url, store, since=_since(query, headers), routing=self.cache, token=self.cluster_secret or ""
                )
                await consumer.start()
            except VeniceError as exc:
                return await _error(send, exc)
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            first = b": connected\n\nevent: position\nid: " + consumer.position.encode() + b"\ndata: " + \
                orjson.dumps({"version": consumer.version}) + b"\n\n"
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await self._stream(consumer, receive, send)
        finally:
            self.active -= 1
            if consumer is not None:
                await consumer.aclose()

    async def _stream(self, consumer: AsyncChangeConsumer, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            while not gone.done():
                next_event = asyncio.ensure_future(consumer.next_event(timeout=self.heartbeat_s))
                await asyncio.wait({next_event, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done():
                    next_event.cancel()
                    with contextlib.suppress(asyncio.CancelledError, VeniceError):
                        await next_event
                    return
                try:
                    event = next_event.result()
                except VeniceError as exc:  # e.g. the position expired meanwhile: say so, and end
                    message = orjson.dumps(exc.to_dict()["error"])
                    await send({"type": "http.response.body", "body": b"event: error\ndata: " + message + b"\n\n", "more_body": True})
                    break
                body = b": keep-alive\n\n" if event is None else event_bytes(event)
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            return
        finally:
            gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _error(send: Send, exc: VeniceError) -> None:
    body = error_body(exc)
    await send({"type": "http.response.start", "status": exc.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
