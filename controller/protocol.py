"""What the controller's clients send it: every request body, typed and bounded, in one place.

Storage servers' heartbeats (with their replica reports), push jobs' version calls and
operators' store changes are validated here before any state is touched, so a malformed
or hostile body is a 400 in the platform's error shape, never a 500 and never a value
the metadata file cannot hold (every integer fits in 64 bits, every float is finite).
The bounds themselves are the state's (:mod:`controller.state`), which checks them again
for callers that do not come through HTTP.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from controller.limits import (
    MAX_INT64,
    MAX_KEEP_VERSIONS,
    MAX_PARTITIONS,
    MAX_PUSH_TIMEOUT_S,
    MAX_REASON_CHARS,
    MAX_REPLICATION_FACTOR,
    MAX_STORE_NAME_CHARS,
    MAX_VALUE_BYTES_LIMIT,
    MAX_VERSION,
    MIN_PUSH_TIMEOUT_S,
)

__all__ = [
    "SERVER_ID",
    "EndOfPush",
    "Heartbeat",
    "ReplicaReport",
    "ReplicaStatus",
    "StoreCreate",
    "StoreUpdate",
    "VersionError",
    "VersionOpen",
]

SERVER_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
"""A storage server's id (``--server-id``): it names the server in metadata and on the ring."""
MAX_REPLICAS_PER_REPORT = 100_000
MAX_URL_CHARS = 2048


class ReplicaStatus(str, Enum):
    """A replica's state as its server reports it."""

    STARTED = "STARTED"
    """Ingesting its partition of the version topic."""
    READY = "READY"
    """Applied end-of-push with the record count it announced: serves reads."""
    ERROR = "ERROR"
    """Failed (``reason`` says why), e.g. a disk write failed."""


def _clip(text: Any) -> Any:
    """Reasons are free text from a server or push job: kept, but never more than fits in a log line."""
    return text[:MAX_REASON_CHARS] if isinstance(text, str) else text


Reason = Annotated[str | None, AfterValidator(_clip)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ReplicaReport(_Body):
    """One replica in a heartbeat: a partition of a store-version this server hosts."""

    store: str = Field(min_length=1, max_length=MAX_STORE_NAME_CHARS, strict=True)
    version: int = Field(ge=1, le=MAX_VERSION, strict=True)
    partition: int = Field(ge=0, lt=MAX_PARTITIONS, strict=True)
    status: ReplicaStatus
    offset: int = Field(default=0, ge=0, le=MAX_INT64, strict=True)
    """Next offset of the version topic partition to apply."""
    records: int = Field(default=0, ge=0, le=MAX_INT64, strict=True)
    """Data records applied since start-of-push."""
    reason: Reason = None
    incarnation: str | None = Field(default=None, max_length=64, strict=True)
    """The store incarnation the server's copy belongs to; a report of another one is ignored."""


class Heartbeat(_Body):
    url: str = Field(min_length=1, max_length=MAX_URL_CHARS, pattern=r"^https?://[^\s/?#]+$", strict=True)
    """Where routers reach this server: ``http://HOST:PORT``."""
    replicas: list[ReplicaReport] = Field(default_factory=list, max_length=MAX_REPLICAS_PER_REPORT)
    draining: bool = Field(default=False, strict=True)


class StoreCreate(_Body):
    name: str = Field(strict=True)
    key_schema: Any
    value_schema: Any
    partitions: int = Field(default=4, ge=1, le=MAX_PARTITIONS, strict=True)
    replication_factor: int = Field(default=1, ge=1, le=MAX_REPLICATION_FACTOR, strict=True)
    keep_versions: int | None = Field(default=None, ge=1, le=MAX_KEEP_VERSIONS, strict=True)
    push_timeout_s: float | None = Field(
        default=None, ge=MIN_PUSH_TIMEOUT_S, le=MAX_PUSH_TIMEOUT_S, allow_inf_nan=False, strict=True
    )
    max_value_bytes: int | None = Field(default=None, ge=1, le=MAX_VALUE_BYTES_LIMIT, strict=True)


class StoreUpdate(_Body):
    keep_versions: int | None = Field(default=None, ge=1, le=MAX_KEEP_VERSIONS, strict=True)
    push_timeout_s: float | None = Field(
        default=None, ge=MIN_PUSH_TIMEOUT_S, le=MAX_PUSH_TIMEOUT_S, allow_inf_nan=False, strict=True
    )
    max_value_bytes: int | None = Field(default=None, ge=1, le=MAX_VALUE_BYTES_LIMIT, strict=True)


class VersionOpen(_Body):
    defer_swap: bool = Field(default=False, strict=True)


class EndOfPush(_Body):
    records: int = Field(ge=0, le=MAX_INT64, strict=True)
    """Data records the push job wrote to the version topic, all partitions together."""


class VersionError(_Body):
    reason: Annotated[str, AfterValidator(_clip)] = Field(min_length=1, strict=True)
    """Why the push failed (kept up to MAX_REASON_CHARS characters)."""
