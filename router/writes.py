"""The router's HTTP writes, for services that speak no Kafka (docs/api.md).

    PUT    /storage/{store}/{key}[?schema_id=N]   body: the value as JSON      -> 202
    DELETE /storage/{store}/{key}                                               -> 202
    PATCH  /storage/{store}/{key}[?schema_id=N]   body: update ops as JSON     -> 202

202 means the record is durably in the store's real-time topic (Kafka ``acks=all``,
or the embedded log after its fsync); the servers apply it from there. Keys are parsed
as in reads; values and ops are checked by the same :class:`venice.writer.StoreWriter`
as the SDK's (400 ``INVALID_VALUE``, ``INVALID_KEY``, ``INVALID_SCHEMA``,
``WRITE_COMPUTE_DISABLED``; 409 ``NOT_HYBRID``) before anything is sent.

One pub-sub producer per router (:class:`venice.group_commit.GroupCommit`): concurrent
requests share each flush, so a flood of writes costs a flush per round, not per
request, and 202 still means durable. What a router buffers is bounded: beyond
``max_pending_records`` / ``max_pending_bytes`` waiting writes, a write is refused at
once with 503 ``OVERLOADED`` (retry later) instead of queueing without bound; a write
not confirmed within ``write_timeout_s`` gets 504 ``DEADLINE_EXCEEDED`` (it may or may
not have been applied, as with any failed confirmation: delivery is at least once).

Store descriptions (``GET /stores/{store}``) are cached for ``describe_max_age_s`` and
fetched again early when the routing table shows other schemas or another write-compute
setting than when the description was fetched (at most once a second). A store the
routing table does not know is a 404, and one it shows batch-only a 409, without asking
the controller, so floods of writes to made-up names or batch-only stores cost the
controller nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from urllib.parse import parse_qsl

import orjson

from venice.controller_client import AsyncControllerClient
from venice.errors import DeadlineExceededError, InternalError, InvalidValueError, RequestError, VeniceError
from venice.group_commit import GroupCommit
from venice.producer import StoreWriters
from venice.pubsub import PubSub, connect
from venice.pubsub.base import Producer
from venice.routing import RoutingTable
from venice.schema import parse_integer
from venice.writer import OutgoingRecord, StoreWriter, not_hybrid

__all__ = [
    "ACCEPTED_BODY",
    "DEFAULT_MAX_PENDING_BYTES",
    "DEFAULT_MAX_PENDING_RECORDS",
    "DEFAULT_WRITE_TIMEOUT_S",
    "DESCRIBE_MAX_AGE_S",
    "RouterWrites",
]

DEFAULT_MAX_PENDING_RECORDS = 10_000
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_WRITE_TIMEOUT_S = 10.0
DESCRIBE_MAX_AGE_S = 5.0
ACCEPTED_BODY = orjson.dumps({"status": "accepted"})


class RouterWrites:
    """Checks, encodes and durably produces the router's HTTP writes (see the module doc)."""

    def __init__(
        self,
        controller_url: str,
        table: Callable[[], RoutingTable],
        *,
        max_pending_records: int = DEFAULT_MAX_PENDING_RECORDS,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
        describe_max_age_s: float = DESCRIBE_MAX_AGE_S,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        """``table`` returns the router's current routing table (UnavailableError before it has one);
        ``token``: the router's cluster secret (descriptions of private stores need it)."""
        self._controller = AsyncControllerClient(controller_url, timeout_s=write_timeout_s, token=token or "", ca_file=ca_file)
        self._table = table
        self.writers = StoreWriters(self._controller, max_age_s=describe_max_age_s)
        self.commit = GroupCommit(
            self._open_producer, max_pending_records=max_pending_records, max_pending_bytes=max_pending_bytes
        )
        self.write_timeout_s = write_timeout_s
        self._pubsub: PubSub | None = None
        self._seen: dict[str, tuple[bytes, bool]] = {}
        """Per store, the routing table's schemas and write-compute flag when its description
        was last checked against them."""

    async def aclose(self) -> None:
        """Wait for the writes in flight (at most ``write_timeout_s``: their requests have
        that long anyway), then close."""
        try:
            await self.commit.close(self.write_timeout_s)
        finally:
            if self._pubsub is not None:
                with contextlib.suppress(VeniceError):
                    await self._pubsub.close()
            await self._controller.aclose()

    async def put(self, store: str, key_text: str, body: bytes, query: bytes) -> bytes:
        value = _json_body(body, "value")
        schema_id = _schema_id_param(query)
        return await self._write(
            store, lambda w: w.put(w.key_from_text(key_text), w.value_from_json(value, schema_id), schema_id)
        )

    async def delete(self, store: str, key_text: str) -> bytes:
        return await self._write(store, lambda w: w.delete(w.key_from_text(key_text)))

    async def patch(self, store: str, key_text: str, body: bytes, query: bytes) -> bytes:
        ops = _json_body(body, "update ops")
        schema_id = _schema_id_param(query)
        return await self._write(
            store, lambda w: w.update(w.key_from_text(key_text), w.ops_from_json(ops, schema_id), schema_id)
        )

    async def _write(self, store: str, make: Callable[[StoreWriter], OutgoingRecord]) -> bytes:
        """Check and encode, queue (503 OVERLOADED when full), wait until durable; the 202 body."""
        route = self._table().store(store)  # 404 for a store the router does not know
        if route.hybrid is None:
            raise not_hybrid(store)  # from the table: a flood to a batch-only store costs the controller nothing
        view = (route.schemas_fingerprint, route.write_compute)
        seen = self._seen.get(store)
        if seen is None:
            await self.writers.get(store)
            self._seen[store] = view
        elif seen != view and await self.writers.recheck(store) is not None:
            # The table shows other schemas or settings than when the description was fetched.
            self._seen[store] = view
        record = await self.writers.build(store, make)
        future = self.commit.submit_nowait(record)
        try:
            # Shielded: a client that goes away must not cancel the record for the others.
            await asyncio.wait_for(asyncio.shield(future), self.write_timeout_s)
        except TimeoutError:
            future.add_done_callback(_consume)
            raise DeadlineExceededError(
                f"the write was not confirmed durable within {self.write_timeout_s:g} s; it may or may not be applied"
            ) from None
        except asyncio.CancelledError:
            future.add_done_callback(_consume)
            raise
        return ACCEPTED_BODY

    async def _open_producer(self) -> Producer:
        if self._pubsub is None:
            url = (await self._controller.cluster()).get("pubsub_url")
            if not isinstance(url, str):
                raise InternalError("the controller's GET /cluster does not say which pub-sub it uses (pubsub_url)")
            self._pubsub = connect(url)
        return await self._pubsub.producer()


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve the outcome nobody waits for any more (no "never retrieved" warning)."""
    if not future.cancelled():
        future.exception()


def _json_body(body: bytes, what: str) -> object:
    if not body:
        raise InvalidValueError(f"the request body must hold the {what} as JSON; it is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidValueError(f"the request body is not valid JSON ({what}): {exc}") from None


def _schema_id_param(query: bytes) -> int | None:
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "schema_id":
            try:
                return parse_integer(value, (1, 2**31 - 1), kind="schema id")
            except ValueError as exc:
                raise RequestError(str(exc)) from None
    return None
