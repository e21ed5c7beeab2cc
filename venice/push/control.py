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

from venice.controller_client import ControllerClient
from venice.errors import PushError, UnavailableError
from venice.schema import MAX_KEY_BYTES

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "OpenedVersion",
    "PushControl",
    "StorePlan",
    "VersionEnded",
]

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


class PushControl:
    """The controller, as a push sees it, over :class:`venice.controller_client.ControllerClient`.
    Errors come out as :mod:`venice.errors` types."""

    def __init__(self, url: str, *, client: ControllerClient | None = None, token: str | None = None) -> None:
        self._client = client or ControllerClient(url, timeout_s=_HTTP_TIMEOUT_S, token=token)
        self._own_client = client is None
        self.url = self._client.url

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def __enter__(self) -> PushControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- before a version exists -----------------------------------------------------------

    def store_plan(self, store: str) -> StorePlan:
        description = self._client.get_store(store)
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
        return str(self._client.cluster()["pubsub_url"])

    def open_version(self, store: str, *, defer_swap: bool) -> OpenedVersion:
        opened = self._client.open_version(store, defer_swap=defer_swap)
        return OpenedVersion(
            version=int(opened["version"]),
            topic=str(opened["topic"]),
            partitions=int(opened["partitions"]),
            pubsub_url=str(opened["pubsub_url"]),
        )

    # -- while a version is open ---------------------------------------------------------

    def version(self, store: str, version: int) -> dict[str, Any]:
        return self._client.get_version(store, version)

    def ended(self, store: str, version: int) -> VersionEnded | None:
        """The failure recorded on the controller, when it already ended the version."""
        try:
            info = self._client.get_version(store, version, timeout_s=_REPORT_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - best effort: the caller has an error to raise anyway
            return None
        return _ended(store, version, info)

    def end(self, store: str, version: int, records: int, deadline: float) -> None:
        """Report that everything was written; retried (idempotent) while the controller is
        unreachable or unavailable, until ``deadline`` (``time.monotonic()``)."""
        while True:
            try:
                self._client.end_of_push(store, version, records)
                return
            except UnavailableError:  # TransportError and every 503 are UnavailableError
                if time.monotonic() + _RETRY_PAUSE_S >= deadline:
                    raise
            time.sleep(_RETRY_PAUSE_S)

    def fail(self, store: str, version: int, reason: str) -> None:
        """Mark the version ERROR. Never raises: the original error matters more."""
        try:
            self._client.fail_version(store, version, reason, timeout_s=_REPORT_TIMEOUT_S)
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
