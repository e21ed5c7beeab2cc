"""The controller calls of a push, in one place, synchronous (a Spark driver is).

The protocol is the single-process push's (:mod:`venice.push.job`, docs/api.md):

1. ``GET /stores/{store}``: key and value schemas, the latest value schema id, limits.
2. ``GET /cluster``: the pub-sub URL, to refuse early what cannot work (an embedded
   log that executors on other machines cannot reach).
3. ``POST /stores/{store}/versions``: version N, its topic, partitions and pub-sub.
   While another push to the store runs the controller answers 409
   ``PUSH_IN_PROGRESS``: that error is raised as is, nothing was opened.
4. ``POST .../versions/{n}/end`` with the total record count once every record and
   every end-of-push is written. The version goes ONLINE only after it. The call is
   idempotent, so it is retried on transport errors and 503 until the push's deadline.
5. ``GET .../versions/{n}`` until ONLINE; ERROR or KILLED stop the push with the reason.

Any failure after step 3 is reported with ``POST .../versions/{n}/error`` (best
effort) unless the controller already ended the version, so the half-written
version is cleaned up and never becomes current.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from venice.errors import (
    PushError,
    StoreNotFoundError,
    TransportError,
    UnavailableError,
    VeniceError,
    error_from_response,
)

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "OpenedVersion",
    "PushControl",
    "StorePlan",
    "VersionEnded",
]

MAX_KEY_BYTES = 511
"""Longest serialized key a store takes."""
DEFAULT_MAX_VALUE_BYTES = 1 << 20
"""A store's ``max_value_bytes`` when it does not say."""

_HTTP_TIMEOUT_S = 30.0
_REPORT_TIMEOUT_S = 5.0
_RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class StorePlan:
    """What a push needs to know about its store."""

    key_schema: Any
    value_schema: Any
    schema_id: int
    """Id of the value schema records are written with (the latest)."""
    max_value_bytes: int
    max_key_bytes: int = MAX_KEY_BYTES


@dataclass(frozen=True)
class OpenedVersion:
    version: int
    topic: str
    partitions: int
    pubsub_url: str


class VersionEnded(PushError):
    """The controller already marked the version ERROR or KILLED: nothing to report back."""


def _q(name: str) -> str:
    return quote(name, safe="")


class PushControl:
    """The controller, as a push sees it. Errors come out as :mod:`venice.errors` types."""

    def __init__(self, url: str, *, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client()
        self._own_client = client is None

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> PushControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = _HTTP_TIMEOUT_S) -> Any:
        try:
            response = self._client.request(method, f"{self.url}{path}", json=body, timeout=timeout)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the controller at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response.json() if response.content else {}

    # -- before a version exists -----------------------------------------------------------

    def store_plan(self, store: str) -> StorePlan:
        try:
            description: dict[str, Any] = self.call("GET", f"/stores/{_q(store)}")
        except VeniceError as exc:
            if exc.code == "NOT_FOUND":
                raise StoreNotFoundError(f"store {store!r} does not exist") from exc
            raise
        schemas = description.get("value_schemas") or {}
        if not schemas:
            raise PushError(f"store {store!r} has no value schema")
        by_id = {int(k): v for k, v in schemas.items()}
        schema_id = max(by_id)
        return StorePlan(
            key_schema=description["key_schema"],
            value_schema=by_id[schema_id],
            schema_id=schema_id,
            max_value_bytes=int(description.get("max_value_bytes") or DEFAULT_MAX_VALUE_BYTES),
        )

    def pubsub_url(self) -> str:
        return str(self.call("GET", "/cluster")["pubsub_url"])

    def open_version(self, store: str, *, defer_swap: bool) -> OpenedVersion:
        opened = self.call("POST", f"/stores/{_q(store)}/versions", {"defer_swap": defer_swap})
        return OpenedVersion(
            version=int(opened["version"]),
            topic=str(opened["topic"]),
            partitions=int(opened["partitions"]),
            pubsub_url=str(opened["pubsub_url"]),
        )

    # -- while a version is open ---------------------------------------------------------

    def version(self, store: str, version: int, *, timeout: float = _HTTP_TIMEOUT_S) -> dict[str, Any]:
        info: dict[str, Any] = self.call("GET", f"/stores/{_q(store)}/versions/{version}", timeout=timeout)
        return info

    def ended(self, store: str, version: int) -> VersionEnded | None:
        """The failure recorded on the controller, when it already ended the version."""
        try:
            info = self.version(store, version, timeout=_REPORT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - best effort: the caller has an error to raise anyway
            return None
        return _ended(store, version, info)

    def end(self, store: str, version: int, records: int, deadline: float) -> None:
        """Report that everything was written; retried (idempotent) while the controller is
        unreachable or unavailable, until ``deadline`` (``time.monotonic()``)."""
        while True:
            try:
                self.call("POST", f"/stores/{_q(store)}/versions/{version}/end", {"records": records})
                return
            except UnavailableError:  # TransportError and every 503 are UnavailableError
                if time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise
            time.sleep(_RETRY_PAUSE_S)

    def fail(self, store: str, version: int, reason: str) -> None:
        """Mark the version ERROR. Never raises: the original error matters more."""
        try:
            self.call("POST", f"/stores/{_q(store)}/versions/{version}/error", {"reason": reason[:2000]},
                      timeout=_REPORT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - best effort; the caller re-raises the real failure
            pass

    def await_online(self, store: str, version: int, deadline: float, poll_s: float) -> None:
        """Poll until ONLINE; ERROR/KILLED or the deadline raise."""
        last: dict[str, Any] = {}
        while True:
            try:
                last = self.version(store, version)
            except UnavailableError:
                pass  # a controller restart or hiccup: keep polling until the deadline
            if last.get("status") == "ONLINE":
                return
            ended = _ended(store, version, last)
            if ended is not None:
                raise ended
            if time.monotonic() >= deadline:
                raise PushError(
                    f"timed out waiting for version {version} of {store!r} to go ONLINE "
                    f"(status {last.get('status') or 'unknown'}; {_readiness(last)})"
                )
            time.sleep(poll_s)


def _ended(store: str, version: int, info: dict[str, Any]) -> VersionEnded | None:
    status = info.get("status")
    if status in ("ERROR", "KILLED"):
        return VersionEnded(f"version {version} of {store!r} failed ({status}): {info.get('reason') or 'no reason given'}")
    return None


def _readiness(description: dict[str, Any]) -> str:
    """``"3/4 partitions have a ready replica"``: where a stuck push is stuck."""
    replicas = description.get("replicas") or {}
    partitions = int(description.get("partitions") or len(replicas) or 0)
    ready = sum(1 for entries in replicas.values() if any(r.get("status") == "READY" for r in entries))
    return f"{ready}/{partitions} partitions have a ready replica"
