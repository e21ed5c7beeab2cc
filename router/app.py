"""The router's ASGI application.

A raw ASGI callable rather than a FastAPI app: the router only has three routes and
they are the hottest code in the platform; framework routing, validation and response
classes cost about three quarters of the throughput on a small machine. Requests
are answered with one JSON body; every error has the shape of
:func:`venice.errors.error_body`.

    GET    /health                   {"status": "ok"}
    GET    /storage/{store}/{key}    the value as JSON, in the store's newest value schema
                                     (?version=N reads version N)
    POST   /storage/{store}          {"keys": [...]} -> {"results": [...]} in key order
    PUT    /storage/{store}/{key}    the value as JSON -> 202 once durable (hybrid stores)
    DELETE /storage/{store}/{key}    -> 202 once durable
    PATCH  /storage/{store}/{key}    update ops as JSON -> 202 once durable
    GET    /routing                  the router's copy of the routing table, with the
                                     controller's generation / long-poll contract (direct clients)
    POST   /compute/{store}          {"keys": [...], "project": [...], "compute": [...]}
                                     -> {"results": [...]} in key order, computed on the servers
    GET    /changes/{store}          the store's changes as Server-Sent Events (router/changes.py)
    GET    /metrics                  Prometheus text format (router/metrics.py)

What a request may cost is bounded before the work is done: at most ``MAX_BATCH_KEYS``
keys, each nested at most ``MAX_KEY_DEPTH`` deep (checked before any key is encoded:
the encoder recurses), and an answer of at most ``max_answer_bytes`` of stored values
or computed results (summed over the requested keys, duplicates included, before
anything is decoded: 413 ``ANSWER_TOO_LARGE``); batches and read compute alike. A
value asked for many times is decoded once.

Writes are :mod:`router.writes`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import orjson

from router.changes import ChangeStreams
from router.metrics import RouterMetrics
from router.replicas import GetOutcome, ReplicaReader
from router.writes import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_RECORDS, DEFAULT_WRITE_TIMEOUT_S, RouterWrites
from venice.auth import Action, bearer
from venice.compute import ComputeSpec
from venice.errors import (
    AnswerTooLargeError,
    BodyTooLargeError,
    InternalError,
    InvalidKeyError,
    InvalidValueError,
    KeyNotFoundError,
    NotFoundError,
    RequestError,
    UnknownSchemaError,
    VeniceError,
    error_body,
)
from venice.httpserver import AnswerHeaders, Deferred
from venice.metrics import OTHER, PROMETHEUS_CONTENT_TYPE
from venice.protocol import BATCH_FRAME_BYTES, Hit
from venice.quota import ReadQuotas
from venice.routing import StoreRoute, answer_size, gather_results, plan_batch
from venice.routing_cache import DEFAULT_REFRESH_INTERVAL_S, RoutingCache
from venice.schema import AvroCodec, json_default, key_from_text, parse_integer
from venice.tls import client_context
from venice.token_cache import TokenCache

__all__ = ["DEFAULT_DEADLINE_S", "DEFAULT_MAX_ANSWER_BYTES", "MAX_BATCH_KEYS", "MAX_KEY_DEPTH", "RouterApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_DEADLINE_S = 2.0
DEFAULT_MAX_ANSWER_BYTES = 16 * 1024 * 1024
"""Stored bytes of the values one answer may carry (see the module docstring)."""
MAX_BATCH_KEYS = 10_000
MAX_KEY_DEPTH = 32
"""How deeply a key given as JSON may nest lists and objects (no key schema needs more)."""
MAX_BODY_BYTES = 16 * 1024 * 1024
_STORAGE_PREFIX = b"/storage/"
_COMPUTE_PREFIX = b"/compute/"
_CHANGES_PREFIX = b"/changes/"
_HEALTH_BODY = orjson.dumps({"status": "ok"})
_JSON_HEADERS = [(b"content-type", b"application/json")]
_JSON_HEAD = b"content-type: application/json\r\n"
"""_JSON_HEADERS pre-encoded, for the answers of the fast path (venice.httpserver.AnswerHeaders)."""
_WRITE_METHODS = frozenset({"PUT", "DELETE", "PATCH"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_PROMETHEUS_HEADERS = [(b"content-type", PROMETHEUS_CONTENT_TYPE.encode())]
_ENDPOINTS = {b"/health": "health", b"/routing": "routing", b"/metrics": "metrics"}

logger = logging.getLogger("venice.router")


class RouterApp:
    """ASGI app: routing cache + replica reader, started and stopped by the ASGI lifespan."""

    def __init__(
        self,
        controller_url: str,
        *,
        deadline_s: float = DEFAULT_DEADLINE_S,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        hedge_after_s: float | None = None,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
        max_pending_writes: int = DEFAULT_MAX_PENDING_RECORDS,
        max_pending_write_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        cluster_secret: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.cache = RoutingCache(controller_url, refresh_interval_s=refresh_interval_s, token=cluster_secret, ca_file=ca_file)
        self.tokens = TokenCache(controller_url, cluster_secret, ca_file=ca_file)
        """Decides reads of private stores (and the routing table) from the controller's token table."""
        self.changes = ChangeStreams(controller_url, self.cache, cluster_secret=cluster_secret)
        # A replica's batch answer holds distinct keys only, plus framing: more than
        # this and the caller's answer is over the limit anyway.
        self.reader = ReplicaReader(
            hedge_after_s=hedge_after_s,
            on_stale_routing=self.cache.request_refresh,
            max_answer_bytes=max_answer_bytes + BATCH_FRAME_BYTES * MAX_BATCH_KEYS,
            ssl_context=client_context(ca_file),
            authorization=None if cluster_secret is None else f"Bearer {cluster_secret}",
        )
        self.writes = RouterWrites(
            controller_url,
            lambda: self.cache.table,
            max_pending_records=max_pending_writes,
            max_pending_bytes=max_pending_write_bytes,
            write_timeout_s=write_timeout_s,
            token=cluster_secret,
            ca_file=ca_file,
        )
        self.quotas = ReadQuotas()
        self.metrics = RouterMetrics(self.cache, self.reader.counts, quotas=self.quotas)
        self.deadline_s = deadline_s
        self.max_answer_bytes = max_answer_bytes
        self._private_of: object = None
        self._private_stores: frozenset[str] = frozenset()
        """Names of the private stores of the routing table ``_private_of``."""
        # Shared rotation counter: consecutive requests start on different replicas.
        self._spread = itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def startup(self) -> None:
        """Never fails for a missing controller: the cache keeps retrying in the background."""
        await self.cache.start()
        await self.tokens.start()

    async def shutdown(self) -> None:
        try:
            await self.writes.aclose()  # writes accepted before the shutdown are made durable first
        finally:
            await self.tokens.aclose()
            await self.cache.aclose()
            await self.reader.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("router start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        if path.startswith(_CHANGES_PREFIX) and scope["method"] == "GET":
            try:
                store = _path_text(path[len(_CHANGES_PREFIX) :], "store name", RequestError)
            except VeniceError as exc:
                await self._send_json(send, exc.http_status, error_body(exc))
                return
            try:
                self._check_read(store, _authorization(scope))
            except VeniceError as exc:
                self.metrics.answered(OTHER, "changes", exc.http_status)
                await self._send_json(send, exc.http_status, error_body(exc), exc.headers())
                return
            self.metrics.answered(store, "changes", 200)
            await self.changes.serve(store, scope.get("query_string", b""), list(scope.get("headers", [])), receive, send)
            return
        if path == b"/metrics" and scope["method"] == "GET":
            try:
                self.tokens.check(bearer(_authorization(scope)), Action.MONITOR)
            except VeniceError as exc:
                self.metrics.answered("", "metrics", exc.http_status)
                await self._send_json(send, exc.http_status, error_body(exc), exc.headers())
                return
            body = self.metrics.render()
            self.metrics.answered("", "metrics", 200)
            await self._send(send, 200, body, _PROMETHEUS_HEADERS)
            return
        extra: list[tuple[bytes, bytes]] = []
        try:
            status, body = await self._dispatch(scope["method"], path, scope.get("query_string", b""), receive, scope)
        except VeniceError as exc:
            status, body, extra = exc.http_status, error_body(exc), exc.headers()
        except Exception:
            logger.exception("unexpected error serving %s %r", scope["method"], path)
            status, body = 500, error_body(InternalError("unexpected error in the router"))
        if not path.startswith((_STORAGE_PREFIX, _COMPUTE_PREFIX)):  # reads and compute count themselves
            self.metrics.answered("", _ENDPOINTS.get(path, "other"), status)
        await self._send_json(send, status, body, extra)

    @staticmethod
    async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await RouterApp._send(send, status, body, [*_JSON_HEADERS, *(extra or ())])

    @staticmethod
    async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _dispatch(self, method: str, path: bytes, query: bytes, receive: Receive, scope: Scope) -> tuple[int, bytes]:
        if path.startswith(_STORAGE_PREFIX):
            body = await _read_body(receive) if method in _BODY_METHODS else b""
            answer = self._reads(method, path, query, body, _authorization(scope))
            if answer is not None:
                status, _, json_body = await answer
                return status, json_body
            try:
                store = _path_text(path[len(_STORAGE_PREFIX) :].partition(b"/")[0], "store name", RequestError)
            except VeniceError as exc:
                self.metrics.answered(OTHER, "other", exc.http_status)
                raise
            self.metrics.answered(store, "other", 405)
            return _method_not_allowed(method, path)
        if path == b"/health":
            return 200, _HEALTH_BODY
        if path.startswith(_COMPUTE_PREFIX):  # counts itself, like reads: once, by store
            if method != "POST":
                self.metrics.answered(OTHER, "compute", 405)
                return _method_not_allowed(method, path)
            try:
                store = _path_text(path[len(_COMPUTE_PREFIX) :], "store name", RequestError)
                self._check_read(store, _authorization(scope))
            except VeniceError as exc:
                self.metrics.answered(OTHER, "compute", exc.http_status)
                raise
            _, _, answer_body = await self._timed(self.compute(store, await _read_body(receive), query), store, "compute")
            return 200, answer_body
        if path == b"/routing":
            if method != "GET":
                return _method_not_allowed(method, path)
            self.tokens.check(bearer(_authorization(scope)), Action.MEMBER)
            return await self.routing(query)
        raise NotFoundError(f"no route {method} {path.decode('latin-1')}")

    def fast_path(
        self, method: str, path: bytes, query: bytes, body: bytes
    ) -> Awaitable[tuple[int, AnswerHeaders, bytes]] | Deferred | None:
        """Reads (single and batch) and writes for :class:`venice.httpserver.HttpServer`,
        without ASGI; ``None`` sends everything else (health, wrong methods, unknown paths,
        and requests that need a token: reads of private stores, writes when the cluster
        has a token file; only the ASGI path sees their Authorization header) through ASGI."""
        return self._reads(method, path, query, body, None, fast=True)

    def _reads(
        self, method: str, path: bytes, query: bytes, body: bytes, authorization: bytes | None, *, fast: bool = False
    ) -> Awaitable[tuple[int, AnswerHeaders, bytes]] | Deferred | None:
        if not path.startswith(_STORAGE_PREFIX):
            return None
        store_part, slash, key_part = path[len(_STORAGE_PREFIX) :].partition(b"/")
        try:
            if fast:
                if (self.tokens.writes_need_token if method in _WRITE_METHODS else self._is_private(store_part)):
                    return None
            elif slash and method in _WRITE_METHODS:
                self.tokens.check(bearer(authorization), Action.WRITE, _path_text(store_part, "store name", RequestError))
            elif (slash and method == "GET") or (not slash and method == "POST"):
                self._check_read(_path_text(store_part, "store name", RequestError), authorization)
            if slash and method == "GET":
                store = _path_text(store_part, "store name", RequestError)
                key_text = _path_text(key_part, "key", InvalidKeyError)
            elif slash and method in _WRITE_METHODS:
                return self._write(method, store_part, key_part, query, body)
            elif not slash and method == "POST":
                if len(body) > MAX_BODY_BYTES:
                    raise BodyTooLargeError(f"request body larger than {MAX_BODY_BYTES} bytes")
                store = _path_text(store_part, "store name", RequestError)
                return self._timed(self.batch_get(store, body, query), store, "batch")
            else:
                return None
        except VeniceError as exc:  # refused before any read or write (bad path, no token): counted, not timed
            endpoint = ("single" if method == "GET" else method.lower()) if slash else "batch"
            self.metrics.answered(OTHER, endpoint, exc.http_status)
            raise
        return self._single(store, key_text, query)  # counts and times itself

    def _is_private(self, store_part: bytes) -> bool:
        """Whether the store named in a read path is private (its reads need a token).
        Two identity checks per read while no store is private."""
        cache = self.cache
        if not cache.loaded:
            return False  # the read itself answers 503
        table = cache.table
        if table is not self._private_of:
            self._private_of = table
            self._private_stores = frozenset(n for n, r in table.stores.items() if r.private)
        if not self._private_stores:
            return False
        return _path_text(store_part, "store name", RequestError) in self._private_stores

    def _check_read(self, store: str, authorization: bytes | None) -> None:
        """401/403 for a read of a private store without a token that may read it."""
        table = self.cache.table
        route = table.stores.get(store)
        private = route is not None and route.private
        self.tokens.check(bearer(authorization), Action.READ, store, private=private)

    async def _timed(
        self, json_body: Awaitable[bytes], store: str, endpoint: str, status: int = 200
    ) -> tuple[int, AnswerHeaders, bytes]:
        """Await a read (or a write: ``status`` 202); count it by store, endpoint and status, and time it."""
        started = time.perf_counter()
        try:
            body = await json_body
        except VeniceError as exc:
            self.metrics.answered(store, endpoint, exc.http_status, time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.answered(store, endpoint, 500, time.perf_counter() - started)
            raise
        self.metrics.answered(store, endpoint, status, time.perf_counter() - started)
        return status, _JSON_HEAD, body

    def _write(
        self, method: str, store_part: bytes, key_part: bytes, query: bytes, body: bytes
    ) -> Awaitable[tuple[int, AnswerHeaders, bytes]]:
        store = _path_text(store_part, "store name", RequestError)
        key = _path_text(key_part, "key", InvalidKeyError)
        if len(body) > MAX_BODY_BYTES:  # the server refuses it first (its own limit): for other ASGI servers
            raise BodyTooLargeError(f"request body larger than {MAX_BODY_BYTES} bytes")
        if method == "PUT":
            return self._timed(self.writes.put(store, key, body, query), store, "put", 202)
        if method == "PATCH":
            return self._timed(self.writes.patch(store, key, body, query), store, "patch", 202)
        return self._timed(self.writes.delete(store, key), store, "delete", 202)

    def _single(
        self, store: str, key_text: str, query: bytes
    ) -> _SingleAnswer | Awaitable[tuple[int, AnswerHeaders, bytes]]:
        """A single-key read: on the callback lane (:meth:`ReplicaReader.start_get`, a
        :class:`~venice.httpserver.Deferred` answer) when the first replica has an idle
        connection, else awaited. Counted and timed like :meth:`_timed`."""
        started = time.perf_counter()
        try:
            route, version, partition, key_bytes, replicas = self._plan_single(store, key_text, query)
        except VeniceError as exc:
            self.metrics.answered(store, "single", exc.http_status, time.perf_counter() - started)
            raise
        except Exception:
            self.metrics.answered(store, "single", 500, time.perf_counter() - started)
            raise
        answer = _SingleAnswer(self, route, store, version, key_text, started)
        if replicas and self.reader.start_get(
            replicas, store, version, partition, key_bytes, deadline_at=self._deadline_at(), done=answer.finish
        ):
            return answer
        read = self.reader.get(replicas, store, version, partition, key_bytes, deadline_at=self._deadline_at())
        return self._timed(self._single_after(read, route, version, key_text), store, "single")

    async def _single_after(self, read: Awaitable[Hit | None], route: StoreRoute, version: int, key_text: str) -> bytes:
        return self._single_json(route, version, key_text, await read)

    async def single_get(self, store: str, key_text: str, query: bytes) -> bytes:
        """JSON of the value of one key, read from the first replica that answers."""
        route, version, partition, key_bytes, replicas = self._plan_single(store, key_text, query)
        hit = await self.reader.get(replicas, store, version, partition, key_bytes, deadline_at=self._deadline_at())
        return self._single_json(route, version, key_text, hit)

    def _plan_single(self, store: str, key_text: str, query: bytes) -> tuple[StoreRoute, int, int, bytes, list[str]]:
        """Route, version, partition, key bytes and replicas (best first) of a single-key read."""
        route = self.cache.table.store(store)
        if route.read_quota is not None:
            self.quotas.charge(store, route.read_quota)
        version = route.resolve_version(_version_param(query))
        datum = key_from_text(route.key_codec, key_text)
        if type(datum) is dict or type(datum) is list:
            _check_depth(datum)
        key_bytes = route.key_codec.encode(datum)
        partition = route.partition_of(key_bytes)
        replicas = self.reader.order(route.replicas(version, partition), next(self._spread))
        return route, version, partition, key_bytes, replicas

    def _single_json(self, route: StoreRoute, version: int, key_text: str, hit: Hit | None) -> bytes:
        if hit is None:
            raise KeyNotFoundError(f"key {_shorten(key_text)} not found in store {route.name!r} (version {version})")
        if len(hit[1]) > self.max_answer_bytes:
            raise AnswerTooLargeError(f"the value is {len(hit[1])} bytes, over the limit of {self.max_answer_bytes} bytes")
        return _dumps(self._decode(route, hit))

    async def batch_get(self, store: str, body: bytes, query: bytes) -> bytes:
        """JSON ``{"results": [...]}`` for the keys of ``body``, in their order.

        All keys are read from one version, fixed when the request starts, so a batch
        never mixes data of two pushes.
        """
        keys = _parse_keys(body)
        route = self.cache.table.store(store)
        if route.read_quota is not None:
            self.quotas.charge(store, route.read_quota, len(keys))
        version = route.resolve_version(_version_param(query))
        codec = route.key_codec
        if codec.type_name == "bytes":
            encoded = [codec.encode(_key_datum(codec, key)) for key in keys]
        else:
            encoded = [codec.encode(key) for key in keys]
        hits = await self._read_batch(route, version, encoded)
        size = answer_size(encoded, hits)
        if size > self.max_answer_bytes:
            raise AnswerTooLargeError(
                f"the answer would carry {size} bytes of values, over the limit of {self.max_answer_bytes} bytes: "
                "ask for fewer keys per batch"
            )
        results = gather_results(keys, encoded, hits, lambda schema_id: self._decoder(route, schema_id))
        return _dumps({"results": results})

    async def _read_batch(self, route: StoreRoute, version: int, encoded: list[bytes]) -> dict[bytes, Hit | None]:
        """Scatter the distinct keys by partition, one request per replica order, and gather."""
        by_partition: dict[int, list[bytes]] = {}
        for key_bytes in dict.fromkeys(encoded):
            by_partition.setdefault(route.partition_of(key_bytes), []).append(key_bytes)
        plan = plan_batch(route, version, by_partition, next(self._spread))
        deadline_at = self._deadline_at()
        found: dict[bytes, Hit | None] = {}

        async def read_group(replicas: tuple[str, ...], partitions: list[int]) -> None:
            items = [(p, key_bytes) for p in partitions for key_bytes in by_partition[p]]
            ordered = self.reader.order(replicas, 0)  # keeps the plan's rotation among equally healthy replicas
            hits = await self.reader.batch(ordered, route.name, version, items, deadline_at=deadline_at)
            found.update(zip((key_bytes for _, key_bytes in items), hits, strict=True))

        await _all_or_nothing([read_group(replicas, partitions) for replicas, partitions in plan.items()])
        return found

    def _decode(self, route: StoreRoute, hit: Hit) -> Any:
        """The value of ``hit`` in the store's newest schema (see :meth:`_decoder`)."""
        try:
            return route.value_decoder.decode(hit[0], hit[1])
        except UnknownSchemaError:
            self.cache.request_refresh()
            raise
        except InvalidValueError as exc:
            raise InternalError(exc.message) from exc

    def _decoder(self, route: StoreRoute, schema_id: int) -> Callable[[bytes], Any]:
        """Decodes values stored with one schema id into the store's newest schema, so
        readers see one shape whatever schema a push or a nearline writer used (older
        values get the new fields' defaults). An id the table does not know yet means the
        table is stale: refresh it, and the 503 ``UNKNOWN_SCHEMA`` is retriable. Stored data
        that does not decode is the platform's fault, not the caller's: a 500."""
        try:
            to_newest = route.value_decoder.decoder(schema_id)
        except UnknownSchemaError:
            self.cache.request_refresh()
            raise

        def decode(data: bytes) -> Any:
            try:
                return to_newest(data)
            except InvalidValueError as exc:
                raise InternalError(exc.message) from exc

        return decode

    async def compute(self, store: str, body: bytes, query: bytes) -> bytes:
        """JSON ``{"results": [...]}``: each key's read-compute result, computed by the
        storage servers (one request per group of partitions), in the caller's key order."""
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"compute body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise RequestError('compute body must be a JSON object {"keys": [...], "project": [...], "compute": [...]}')
        keys = payload.get("keys")
        if not isinstance(keys, list):
            raise InvalidKeyError('compute body needs "keys": [...]')
        if len(keys) > MAX_BATCH_KEYS:
            raise RequestError(f"a compute request may hold at most {MAX_BATCH_KEYS} keys, got {len(keys)}")
        _check_key_depths(body, keys)
        spec = ComputeSpec.from_json({k: v for k, v in payload.items() if k != "keys"})
        spec.check_cost(len(keys))
        spec_json = spec.to_bytes()
        route = self.cache.table.store(store)
        if route.read_quota is not None:
            self.quotas.charge(store, route.read_quota, len(keys))
        version = route.resolve_version(_version_param(query))
        codec = route.key_codec
        encoded = [codec.encode(_key_datum(codec, key)) for key in keys]
        by_partition: dict[int, list[bytes]] = {}
        for key_bytes in dict.fromkeys(encoded):
            by_partition.setdefault(route.partition_of(key_bytes), []).append(key_bytes)
        plan = plan_batch(route, version, by_partition, next(self._spread))
        deadline_at = self._deadline_at()
        found: dict[bytes, Hit | None] = {}

        async def group(replicas: tuple[str, ...], partitions: list[int]) -> None:
            items = [(p, key_bytes) for p in partitions for key_bytes in by_partition[p]]
            hits = await self.reader.compute(self.reader.order(replicas, 0), store, version, spec_json, items, deadline_at=deadline_at)
            found.update(zip((key_bytes for _, key_bytes in items), hits, strict=True))

        await _all_or_nothing([group(replicas, partitions) for replicas, partitions in plan.items()])
        size = answer_size(encoded, found)
        if size > self.max_answer_bytes:
            raise AnswerTooLargeError(
                f"the answer would carry {size} bytes of results, over the limit of {self.max_answer_bytes} bytes: "
                "ask for fewer keys or less per key"
            )
        results: list[dict[str, Any]] = []
        for key, key_bytes in zip(keys, encoded, strict=True):
            hit = found[key_bytes]
            if hit is None:
                results.append({"key": key, "found": False})
            else:  # the server's JSON, passed through as it is
                results.append({"key": key, "found": True, "value": orjson.Fragment(hit[1])})
        return _dumps({"results": results})

    async def routing(self, query: bytes) -> tuple[int, bytes]:
        """``GET /routing[?generation=G[&wait_s=W]]`` from the cache: the table, or 304 while
        it is still at G (after waiting up to W seconds, at most 30, for a change)."""
        generation, wait_s = _routing_params(query)
        current, body = self.cache.payload_json()
        if generation is not None and current == generation:
            if wait_s <= 0 or not await self.cache.wait_change(generation, wait_s):
                return 304, b""
            current, body = self.cache.payload_json()
        return 200, body

    def _deadline_at(self) -> float:
        return asyncio.get_running_loop().time() + self.deadline_s


class _SingleAnswer(Deferred):
    """The answer to a single-key read on the callback lane: :meth:`finish` gets what the
    replicas gave (:data:`router.replicas.GetOutcome`), counts and times it, and answers."""

    __slots__ = ("app", "key_text", "route", "started", "store", "version")

    def __init__(self, app: RouterApp, route: StoreRoute, store: str, version: int, key_text: str, started: float) -> None:
        super().__init__()
        self.app = app
        self.route = route
        self.store = store
        self.version = version
        self.key_text = key_text
        self.started = started

    def finish(self, outcome: GetOutcome) -> None:
        app = self.app
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            body = app._single_json(self.route, self.version, self.key_text, outcome)
        except VeniceError as exc:
            app.metrics.answered(self.store, "single", exc.http_status, time.perf_counter() - self.started)
            self.fail(exc)
            return
        except Exception as exc:  # noqa: BLE001 - answered as a logged 500 by the server
            app.metrics.answered(self.store, "single", 500, time.perf_counter() - self.started)
            self.fail(exc)
            return
        app.metrics.answered(self.store, "single", 200, time.perf_counter() - self.started)
        self.resolve(200, _JSON_HEAD, body)


async def _all_or_nothing(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run all; on the first failure cancel the rest and raise it."""
    if len(coroutines) == 1:
        await coroutines[0]
        return
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestError("client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLargeError(f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_keys(body: bytes) -> list[Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidKeyError(f"batch body is not valid JSON: {exc}") from exc
    keys = payload.get("keys") if isinstance(payload, dict) else None
    if not isinstance(keys, list):
        raise InvalidKeyError('batch body must be a JSON object {"keys": [...]}')
    if len(keys) > MAX_BATCH_KEYS:
        raise RequestError(f"a batch may hold at most {MAX_BATCH_KEYS} keys, got {len(keys)}")
    _check_key_depths(body, keys)
    return keys


def _check_key_depths(body: bytes, keys: list[Any]) -> None:
    """InvalidKeyError for a key of ``keys`` (parsed from ``body``) nested too deep."""
    if body.count(b"[") + body.count(b"{") > MAX_KEY_DEPTH + 1:  # else no key can nest that deep
        for key in keys:
            if type(key) is dict or type(key) is list:
                _check_depth(key)


def _check_depth(key: Any) -> None:
    """InvalidKeyError for a key nested deeper than MAX_KEY_DEPTH (without recursing)."""
    stack: list[tuple[Any, int]] = [(key, 0)]
    while stack:
        item, depth = stack.pop()
        if type(item) is dict:
            children: Any = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        depth += 1
        if depth > MAX_KEY_DEPTH:
            raise InvalidKeyError(f"key nested more than {MAX_KEY_DEPTH} levels deep")
        stack.extend((child, depth) for child in children)


def _key_datum(codec: AvroCodec, key: Any) -> Any:
    """JSON has no bytes: a string key of a ``bytes`` schema means its UTF-8, as in the URL path."""
    if codec.type_name == "bytes" and isinstance(key, str):
        return key.encode()
    return key


def _authorization(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            return bytes(value)
    return None


def _path_text(part: bytes, what: str, error: type[VeniceError]) -> str:
    try:
        return unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} in the URL is not UTF-8 after percent-decoding") from exc


def _version_param(query: bytes) -> int | None:
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "version":
            try:
                return parse_integer(value)
            except ValueError:
                raise RequestError(f"version must be an integer, got {value!r}") from None
    return None


MAX_ROUTING_WAIT_S = 30.0


def _routing_params(query: bytes) -> tuple[int | None, float]:
    """``generation`` and ``wait_s`` of a routing request; RequestError naming a bad one."""
    generation: int | None = None
    wait_s = 0.0
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "generation":
            try:
                generation = parse_integer(value)
            except ValueError:
                raise RequestError(f"generation must be an integer, got {value[:40]!r}") from None
            if generation < 0:
                raise RequestError("generation must not be negative")
        elif name == "wait_s":
            try:
                wait_s = float(value)
            except ValueError:
                raise RequestError(f"wait_s must be a number of seconds, got {value[:40]!r}") from None
            if not math.isfinite(wait_s) or wait_s < 0:
                raise RequestError(f"wait_s must be a finite number of seconds >= 0, got {value[:40]!r}")
            wait_s = min(wait_s, MAX_ROUTING_WAIT_S)
    return generation, wait_s


def _method_not_allowed(method: str, path: bytes) -> tuple[int, bytes]:
    return 405, error_body(RequestError(f"method {method} not allowed on {path.decode('latin-1')}"))


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=json_default)


def _shorten(text: str, limit: int = 200) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."
