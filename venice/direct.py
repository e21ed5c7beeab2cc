"""The direct client: the SDK reads straight from storage servers, skipping the router hop.

``venice.Client(router_url, direct=True)`` (and ``AsyncClient``) asks the router for its
routing table (``GET /routing``) and keeps it fresh by long poll in the background
(:class:`venice.routing_cache.RoutingCache`), then does what the router does: serializes
the key, hashes it to a partition, orders that partition's ready replicas by health and
reads from the first that answers (hedging slow ones, failing over on errors, within a
retry budget: :mod:`venice.replica_health`, :mod:`venice.failover` or its blocking twin
:func:`venice.replica_sockets.run_calls`). Batch gets scatter one request per group of
partitions with the storage servers' binary frames. Values are decoded here, in the
store's newest value schema (:class:`venice.evolution.ValueDecoder`).

When no replica answers (every one failed, the budget refused a retry, the deadline
passed), the table is not loaded yet, or it does not know the store, version or a value
schema, the read raises :class:`Fallback` and the client asks the router instead: a
direct read never fails where a router read would have worked.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import httpx
import orjson

from venice.compute import ComputeSpec
from venice.errors import (
    DeadlineExceededError,
    KeyNotFoundError,
    TransportError,
    UnavailableError,
    UnknownSchemaError,
    VeniceError,
)
from venice.evolution import ValueDecoder
from venice.failover import first_success
from venice.partitioner import partition_for
from venice.protocol import (
    SCHEMA_ID_HEADER,
    Hit,
    decode_batch_response,
    encode_batch_request,
    encode_compute_request,
    encode_key_segment,
    replica_batch_path,
    replica_compute_path,
    replica_get_path,
)
from venice.replica_health import ReplicaHealth, RetryBudget
from venice.replica_sockets import Answer, Call, ReplicaSockets, get_hit, replica_error, run_calls
from venice.routing import RoutingTable, StoreRoute, plan_batch
from venice.routing_cache import RoutingCache
from venice.schema import json_default
from venice.tls import client_context

__all__ = ["DEFAULT_DIRECT_DEADLINE_S", "AsyncDirectReader", "DirectReader", "Fallback"]

log = logging.getLogger("venice.direct")

DEFAULT_DIRECT_DEADLINE_S = 2.0
"""Time budget of a direct read before it falls back to the router (failover included)."""
START_WAIT_S = 2.0
_SCHEMA_ID = SCHEMA_ID_HEADER.encode()


class Fallback(Exception):
    """This read is for the router: no replica answered, or the table cannot route it."""

    def __init__(self, reason: str, version: int | None = None) -> None:
        super().__init__(reason)
        self.version = version
        """The version the direct attempt read, so the router reads the same one."""


def _key_datum(route: StoreRoute, key: Any) -> Any:
    if route.key_codec.type_name == "bytes" and isinstance(key, str):
        return key.encode()
    return key


def interpret_get(url: str, answer: Answer) -> Hit | None:
    """A replica's answer to a single get: the hit, ``None`` (missing, final) or the error."""
    if answer.status == 200:
        raw = answer.header(_SCHEMA_ID)
        if raw is None or not raw.isdigit():
            raise UnavailableError(f"replica {url} answered without a valid {SCHEMA_ID_HEADER} header")
        return int(raw), answer.body
    error = replica_error(url, answer)
    if isinstance(error, KeyNotFoundError):
        return None
    raise error


def interpret_batch(count: int) -> Callable[[str, Answer], list[Hit | None]]:
    def interpret(url: str, answer: Answer) -> list[Hit | None]:
        if answer.status == 200:
            return decode_batch_response(answer.body, count)
        raise replica_error(url, answer)

    return interpret


def interpret_compute(count: int) -> Callable[[str, Answer], list[Hit | None]]:
    """A replica's read-compute answer: per key its result as JSON bytes, or ``None``."""
    return interpret_batch(count)


class DirectCore:
    """The I/O-free half of both direct readers: routes, keys, decoding."""

    def __init__(self) -> None:
        self._decoders: dict[tuple[str, bytes], tuple[ValueDecoder, bool]] = {}
        self._spread = itertools.count()
        self._seed = random.getrandbits(64)
        self._affinity: dict[tuple[str, ...], int] = {}

    def preference(self, replicas: tuple[str, ...]) -> int:
        """The rotation that puts this client's preferred replica first.

        Equally healthy replicas are ranked by a hash of the client's seed and the URL, so
        one client keeps reading from the same server (warm sockets, one server to wake:
        on a small machine alternating between two servers cost this client about half
        its throughput) while many clients spread over all the replicas. The health
        ranking still moves a failed, busy or slow replica back.
        """
        found = self._affinity.get(replicas)
        if found is None:
            if len(self._affinity) > 10_000:
                self._affinity.clear()
            ranks = [zlib.crc32(f"{self._seed}:{url}".encode()) for url in replicas]
            found = self._affinity[replicas] = ranks.index(min(ranks))
        return found

    def _table(self) -> RoutingTable | None:
        raise NotImplementedError

    def _request_refresh(self) -> None:
        raise NotImplementedError

    def plan(self, store: str, version: int | None) -> tuple[StoreRoute, int]:
        """The store's route and the version to read; Fallback when the table cannot say
        (the router has the final word on a missing store or version)."""
        table = self._table()
        if table is None:
            raise Fallback("no routing table yet")
        route = table.stores.get(store)
        if route is None:
            raise Fallback(f"store {store!r} is not in the routing table")
        try:
            return route, route.resolve_version(version)
        except VeniceError as exc:
            raise Fallback(exc.message) from None

    @staticmethod
    def key_bytes(route: StoreRoute, key: Any) -> bytes:
        return route.key_codec.encode(_key_datum(route, key))

    def replicas(self, route: StoreRoute, version: int, partition: int) -> tuple[str, ...]:
        found = route.versions.get(version, {}).get(partition, ())
        if not found:
            raise Fallback(f"no ready replica of {route.name} v{version} partition {partition}", version)
        return found

    def decoder(self, route: StoreRoute) -> tuple[ValueDecoder, bool]:
        """The store's decoder, and whether its values need turning into the router's JSON
        form (bytes as base64 text, NaN as null) so both paths answer alike."""
        key = (route.name, route.schemas_fingerprint)
        found = self._decoders.get(key)
        if found is None:
            if len(self._decoders) > 1000:
                self._decoders.clear()
            schemas = {sid: codec.schema for sid, codec in route.value_codecs.items()}
            text = orjson.dumps(list(schemas.values()))
            json_form = any(b'"%s"' % name in text for name in (b"bytes", b"fixed", b"float", b"double"))
            found = self._decoders[key] = (ValueDecoder(schemas), json_form)
        return found

    def decode(self, route: StoreRoute, version: int, hit: Hit) -> Any:
        try:
            decoder, json_form = self.decoder(route)
            value = decoder.decode(hit[0], hit[1])
            return orjson.loads(orjson.dumps(value, default=json_default)) if json_form else value
        except UnknownSchemaError:
            self._request_refresh()  # a schema newer than this table: the router knows it
            raise Fallback(f"value schema {hit[0]} is not in the routing table yet", version) from None

    def batch_calls(
        self, route: StoreRoute, version: int, encoded: Sequence[bytes]
    ) -> list[tuple[tuple[str, ...], list[tuple[int, bytes]]]]:
        """Distinct keys grouped by the replica order they are read in: ``(replicas, items)``."""
        by_partition: dict[int, list[bytes]] = {}
        for key_bytes in dict.fromkeys(encoded):
            by_partition.setdefault(route.partition_of(key_bytes), []).append(key_bytes)
        for partition in by_partition:
            self.replicas(route, version, partition)
        plan = plan_batch(route, version, by_partition, next(self._spread))
        return [(order, [(p, kb) for p in partitions for kb in by_partition[p]]) for order, partitions in plan.items()]

    @staticmethod
    def compute_spec(spec: Mapping[str, Any], keys: int) -> bytes:
        """The spec checked here (a bad one is a RequestError before any request) and
        serialized as the servers read it."""
        checked = ComputeSpec.from_json(dict(spec))
        checked.check_cost(keys)
        return checked.to_bytes()

    @staticmethod
    def computed(encoded: Sequence[bytes], found: dict[bytes, Hit | None]) -> list[Any]:
        out: list[Any] = []
        for key_bytes in encoded:
            hit = found[key_bytes]
            out.append(None if hit is None else orjson.loads(hit[1]))
        return out

    def assemble(self, route: StoreRoute, version: int, encoded: Sequence[bytes], found: dict[bytes, Hit | None]) -> list[Any]:
        out: list[Any] = []
        for key_bytes in encoded:
            hit = found[key_bytes]
            out.append(None if hit is None else self.decode(route, version, hit))
        return out


class _RoutingThread:
    """A :class:`RoutingCache` on a background thread's event loop, for blocking callers."""

    def __init__(self, url: str, token: str | None = None, ca_file: str | os.PathLike[str] | None = None) -> None:
        self.cache = RoutingCache(url, token=token, ca_file=ca_file)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="venice-direct-routing", daemon=True)
        self._thread.start()
        self._started.wait(START_WAIT_S + 1.0)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.cache.start()
        finally:
            self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.cache.aclose()

    @property
    def table(self) -> RoutingTable | None:
        return self.cache.table if self.cache.loaded else None

    def request_refresh(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.cache.request_refresh)
            except RuntimeError:  # the loop just finished
                pass

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(10)


class DirectReader(DirectCore):
    """Blocking direct reads (the sync ``venice.Client(direct=True)``). Thread-safe."""

    def __init__(
        self, router_url: str, *, deadline_s: float = DEFAULT_DIRECT_DEADLINE_S, hedge_after_s: float | None = None,
        token: str | None = None, ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.deadline_s = deadline_s
        self.sockets = ReplicaSockets(hedge_after_s=hedge_after_s, authorization=f"Bearer {token}" if token else None)
        self.routing = _RoutingThread(router_url, token, ca_file)
        self._prefixes: dict[tuple[str, int], str] = {}
        """``/v1/{store}/{version}/`` by store and version: built once, not per read."""

    def _table(self) -> RoutingTable | None:
        return self.routing.table

    def _request_refresh(self) -> None:
        self.routing.request_refresh()

    def _run(self, calls: Sequence[Call[Any]], version: int) -> None:
        run_calls(self.sockets, calls, time.monotonic() + self.deadline_s)
        for call in calls:
            if call.error is not None:
                self._give_up(call.error, call.what, version)

    def _give_up(self, error: VeniceError, what: str, version: int) -> NoReturn:
        """A read that failed: to the router when retrying elsewhere may help, else raised."""
        if error.refresh_routing:
            self._request_refresh()
        if error.retriable:
            raise Fallback(f"{what}: {error.message}", version)
        raise error

    def get(self, store: str, key: Any, version: int | None = None) -> Any:
        """The value of ``key`` (newest schema) or ``None``; Fallback when the router should answer.

        Written flat (a synchronous reader's throughput is its CPU time per call); the
        rules are :meth:`plan`'s and :meth:`replicas`'."""
        table = self.routing.table
        route = None if table is None else table.stores.get(store)
        number = None if route is None else (route.current_version if version is None else version)
        versions = None if number is None or route is None else route.versions.get(number)
        if versions is None or route is None or number is None:
            route, number = self.plan(store, version)  # raises Fallback with the reason
            versions = route.versions[number]
        codec = route.key_codec
        key_bytes = codec.encode(key.encode() if codec.type_name == "bytes" and isinstance(key, str) else key)
        partition = partition_for(key_bytes, route.partition_count)
        replicas = versions.get(partition)
        if not replicas:
            raise Fallback(f"no ready replica of {store} v{number} partition {partition}", number)
        prefix = self._prefixes.get((store, number))
        if prefix is None:
            if len(self._prefixes) > 1000:
                self._prefixes.clear()
            prefix = self._prefixes[(store, number)] = replica_get_path(store, number, 0, b"")[: -len("0/")]
        path = f"{prefix}{partition}/{encode_key_segment(key_bytes)}"
        try:
            hit = get_hit(self.sockets, replicas, self.preference(replicas), path, interpret_get, time.monotonic() + self.deadline_s, store)
        except VeniceError as error:
            self._give_up(error, f"store {store!r} v{number} partition {partition}", number)
        return None if hit is None else self.decode(route, number, hit)

    def batch_get(self, store: str, keys: Sequence[Any], version: int | None = None) -> list[Any]:
        """Values of ``keys`` in order, ``None`` for missing ones, all of one version."""
        route, number = self.plan(store, version)
        encoded = [self.key_bytes(route, k) for k in keys]
        groups = self.batch_calls(route, number, encoded)
        path = replica_batch_path(store, number)
        calls: list[Call[list[Hit | None]]] = [
            Call(self.sockets.order(order, 0), b"POST", path, encode_batch_request(items), interpret_batch(len(items)),
                 what=f"batch of {len(items)} key(s) of store {store!r} v{number}")
            for order, items in groups
        ]
        self._run(calls, number)
        found: dict[bytes, Hit | None] = {}
        for call, (_, items) in zip(calls, groups, strict=True):
            assert call.result is not None
            found.update(zip((kb for _, kb in items), call.result, strict=True))
        return self.assemble(route, number, encoded, found)

    def compute(self, store: str, keys: Sequence[Any], spec: Mapping[str, Any], version: int | None = None) -> list[Any]:
        """Read compute on the replicas (one request per group of partitions)."""
        spec_json = self.compute_spec(spec, len(keys))
        route, number = self.plan(store, version)
        encoded = [self.key_bytes(route, k) for k in keys]
        groups = self.batch_calls(route, number, encoded)
        path = replica_compute_path(store, number)
        calls: list[Call[list[Hit | None]]] = [
            Call(self.sockets.order(order, 0), b"POST", path, encode_compute_request(spec_json, items),
                 interpret_compute(len(items)), what=f"compute over {len(items)} key(s) of store {store!r} v{number}")
            for order, items in groups
        ]
        self._run(calls, number)
        found: dict[bytes, Hit | None] = {}
        for call, (_, items) in zip(calls, groups, strict=True):
            assert call.result is not None
            found.update(zip((kb for _, kb in items), call.result, strict=True))
        return self.computed(encoded, found)

    def close(self) -> None:
        self.routing.close()
        self.sockets.close()


class AsyncDirectReader(DirectCore):
    """asyncio direct reads (``venice.AsyncClient(direct=True)``): the routing cache runs
    as a task of the caller's loop; replicas are read over httpx."""

    def __init__(
        self, router_url: str, *, deadline_s: float = DEFAULT_DIRECT_DEADLINE_S, hedge_after_s: float | None = None,
        token: str | None = None, ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.deadline_s = deadline_s
        self.hedge_after_s = hedge_after_s
        self.health = ReplicaHealth()
        self.budget = RetryBudget()
        self.cache = RoutingCache(router_url, token=token, ca_file=ca_file)
        self._started: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient(
            trust_env=False, limits=httpx.Limits(max_keepalive_connections=64),
            headers={"authorization": f"Bearer {token}"} if token else None, verify=client_context(ca_file),
        )

    def _table(self) -> RoutingTable | None:
        return self.cache.table if self.cache.loaded else None

    def _request_refresh(self) -> None:
        self.cache.request_refresh()

    async def ensure_started(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self.cache.start())
        await asyncio.shield(self._started)

    async def _first(self, replicas: Sequence[str], attempt: Callable[[str, float], Any], what: str, version: int) -> Any:
        health = self.health
        self.budget.record_request()

        async def tracked(url: str, timeout: float) -> Any:
            started = health.started(url)
            try:
                result = await attempt(url, timeout)
            except asyncio.CancelledError:
                health.abandoned(url, started)
                raise
            except VeniceError as exc:
                if exc.retriable:
                    health.failed(url)
                else:
                    health.succeeded(url, started)
                raise
            except BaseException:
                health.failed(url)
                raise
            health.succeeded(url, started)
            return result

        loop = asyncio.get_running_loop()
        hedge = self.hedge_after_s if self.hedge_after_s is not None else health.hedge_after_s()
        try:
            return await first_success(
                replicas, tracked, deadline_at=loop.time() + self.deadline_s, hedge_after_s=hedge, what=what,
                may_retry=self.budget.try_spend,
            )
        except VeniceError as exc:
            if exc.refresh_routing:
                self._request_refresh()
            if exc.retriable:
                raise Fallback(f"{what}: {exc.message}", version) from None
            raise

    async def _send(self, url: str, method: str, path: str, body: bytes | None, timeout: float) -> Answer:
        try:
            response = await self._http.request(
                method, url + path, content=body, timeout=timeout,
                headers=None if body is None else {"content-type": "application/octet-stream"},
            )
        except httpx.TimeoutException as exc:
            raise DeadlineExceededError(f"replica {url} did not answer in {timeout:.3f}s") from exc
        except httpx.HTTPError as exc:
            raise TransportError(f"replica {url}: {exc!r}") from exc
        head = b"".join(b"\r\n%s: %s" % (k.encode("latin-1").lower(), v.encode("latin-1")) for k, v in response.headers.items())
        return Answer(response.status_code, head, response.content)

    async def get(self, store: str, key: Any, version: int | None = None) -> Any:
        await self.ensure_started()
        route, number = self.plan(store, version)
        key_bytes = self.key_bytes(route, key)
        partition = route.partition_of(key_bytes)
        found = self.replicas(route, number, partition)
        replicas = self.health.order(found, self.preference(found))
        path = replica_get_path(store, number, partition, key_bytes)

        async def attempt(url: str, timeout: float) -> Hit | None:
            return interpret_get(url, await self._send(url, "GET", path, None, timeout))

        hit = await self._first(replicas, attempt, f"store {store!r} v{number} partition {partition}", number)
        return None if hit is None else self.decode(route, number, hit)

    async def batch_get(self, store: str, keys: Sequence[Any], version: int | None = None) -> list[Any]:
        await self.ensure_started()
        route, number = self.plan(store, version)
        encoded = [self.key_bytes(route, k) for k in keys]
        path = replica_batch_path(store, number)
        found: dict[bytes, Hit | None] = {}

        async def group(order: tuple[str, ...], items: list[tuple[int, bytes]]) -> None:
            body = encode_batch_request(items)
            interpret = interpret_batch(len(items))

            async def attempt(url: str, timeout: float) -> list[Hit | None]:
                return interpret(url, await self._send(url, "POST", path, body, timeout))

            hits = await self._first(self.health.order(order, 0), attempt, f"batch of {len(items)} key(s) of {store!r}", number)
            found.update(zip((kb for _, kb in items), hits, strict=True))

        tasks = [asyncio.ensure_future(group(order, items)) for order, items in self.batch_calls(route, number, encoded)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return self.assemble(route, number, encoded, found)

    async def compute(self, store: str, keys: Sequence[Any], spec: Mapping[str, Any], version: int | None = None) -> list[Any]:
        await self.ensure_started()
        spec_json = self.compute_spec(spec, len(keys))
        route, number = self.plan(store, version)
        encoded = [self.key_bytes(route, k) for k in keys]
        path = replica_compute_path(store, number)
        found: dict[bytes, Hit | None] = {}

        async def group(order: tuple[str, ...], items: list[tuple[int, bytes]]) -> None:
            body = encode_compute_request(spec_json, items)
            interpret = interpret_compute(len(items))

            async def attempt(url: str, timeout: float) -> list[Hit | None]:
                return interpret(url, await self._send(url, "POST", path, body, timeout))

            hits = await self._first(self.health.order(order, 0), attempt, f"compute over {len(items)} key(s) of {store!r}", number)
            found.update(zip((kb for _, kb in items), hits, strict=True))

        tasks = [asyncio.ensure_future(group(order, items)) for order, items in self.batch_calls(route, number, encoded)]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return self.computed(encoded, found)

    async def aclose(self) -> None:
        if self._started is not None:
            try:
                await self._started
            except Exception:  # noqa: BLE001 - closing: a failed start has nothing to undo
                pass
        await self.cache.aclose()
        await self._http.aclose()
