"""What the controller's clients send it: every request body, typed and bounded, in one place.

Push jobs' version calls and operators' store changes are validated here before any
state is touched, so a malformed or hostile body is a 400 in the platform's error shape,
never a 500 and never a value the metadata file cannot hold (every integer fits in 64
bits, every float is finite). The bounds themselves are the state's
(:mod:`controller.state`), which checks them again for callers that do not come through
HTTP. Storage servers' heartbeats are the one payload both sides share, so they are
typed once, in :mod:`venice.protocol` (:class:`venice.protocol.Heartbeat`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from controller.limits import (
    MAX_INT64,
    MAX_KEEP_VERSIONS,
    MAX_OFFSET_LAG,
    MAX_PARTITIONS,
    MAX_PUSH_TIMEOUT_S,
    MAX_READ_QUOTA,
    MAX_REASON_CHARS,
    MAX_REPLICATION_FACTOR,
    MAX_REWIND_SECONDS,
    MAX_VALUE_BYTES_LIMIT,
    MIN_PUSH_TIMEOUT_S,
)

__all__ = [
    "SERVER_ID",
    "EndOfPush",
    "HybridSettings",
    "StoreCreate",
    "StoreUpdate",
    "ValueSchemaAdd",
    "VersionError",
    "VersionOpen",
]

SERVER_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
"""A storage server's id (``--server-id``): it names the server in metadata and on the ring."""


def _clip(text: Any) -> Any:
    """Reasons are free text from a server or push job: kept, but never more than fits in a log line."""
    return text[:MAX_REASON_CHARS] if isinstance(text, str) else text


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class HybridSettings(_Body):
    """A hybrid store's real-time settings as an operator gives them (docs/hybrid.md)."""

    rewind_seconds: int = Field(ge=0, le=MAX_REWIND_SECONDS, strict=True)
    """A new version replays real-time writes from this long before it was opened."""
    offset_lag: int = Field(ge=0, le=MAX_OFFSET_LAG, strict=True)
    """A replica is ready once at most this many real-time records are left to apply."""


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
    hybrid: HybridSettings | None = None
    """Real-time writes on top of pushes (``None``: batch-only)."""
    write_compute: bool = Field(default=False, strict=True)
    """Partial updates: needs ``hybrid`` and a record value schema."""


class StoreUpdate(_Body):
    """Only the fields given change. ``"hybrid": null`` makes the store batch-only again,
    which is why "given" is told from "null" (:attr:`hybrid_given`)."""

    keep_versions: int | None = Field(default=None, ge=1, le=MAX_KEEP_VERSIONS, strict=True)
    push_timeout_s: float | None = Field(
        default=None, ge=MIN_PUSH_TIMEOUT_S, le=MAX_PUSH_TIMEOUT_S, allow_inf_nan=False, strict=True
    )
    max_value_bytes: int | None = Field(default=None, ge=1, le=MAX_VALUE_BYTES_LIMIT, strict=True)
    hybrid: HybridSettings | None = None
    write_compute: bool | None = Field(default=None, strict=True)
    private: bool | None = Field(default=None, strict=True)
    """Reads need a reader token (docs/security.md)."""
    read_quota: int | None = Field(default=None, ge=1, le=MAX_READ_QUOTA, strict=True)
    """Reads per second at each router; ``null`` removes the quota (see :attr:`read_quota_given`)."""

    @property
    def hybrid_given(self) -> bool:
        return "hybrid" in self.model_fields_set

    @property
    def read_quota_given(self) -> bool:
        return "read_quota" in self.model_fields_set


class ValueSchemaAdd(_Body):
    """``POST /stores/{store}/value-schemas``: a value schema to register as the next id."""

    schema_: Any = Field(alias="schema")
    """Avro JSON (object or array) or a primitive name; checked by the state."""


class VersionOpen(_Body):
    defer_swap: bool = Field(default=False, strict=True)


class EndOfPush(_Body):
    records: int = Field(ge=0, le=MAX_INT64, strict=True)
    """Data records the push job wrote to the version topic, all partitions together."""


class VersionError(_Body):
    reason: Annotated[str, AfterValidator(_clip)] = Field(min_length=1, strict=True)
    """Why the push failed (kept up to MAX_REASON_CHARS characters)."""
