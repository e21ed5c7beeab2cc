"""Bounds on everything a store, a version or a server report may hold.

One table, used by the request models (:mod:`controller.protocol`) and checked again by
the state (:mod:`controller.state`), so nothing outside them is ever applied or
persisted. docs/failure-model.md lists each with what a client gets beyond it.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_FORGET_AFTER_S",
    "DEFAULT_KEEP_VERSIONS",
    "DEFAULT_MAX_VALUE_BYTES",
    "DEFAULT_PUSH_TIMEOUT_S",
    "MAX_INT64",
    "MAX_KEEP_VERSIONS",
    "MAX_OFFSET_LAG",
    "MAX_PARTITIONS",
    "MAX_PUSH_TIMEOUT_S",
    "MAX_REASON_CHARS",
    "MAX_REPLICATION_FACTOR",
    "MAX_REWIND_SECONDS",
    "MAX_SCHEMA_BYTES",
    "MAX_STORE_NAME_CHARS",
    "MAX_VALUE_BYTES_LIMIT",
    "MAX_VALUE_SCHEMAS",
    "MAX_VERSION",
    "MIN_PUSH_TIMEOUT_S",
    "TOPIC_HEADROOM_BYTES",
]

MAX_PARTITIONS = 1024
MAX_REPLICATION_FACTOR = 32
DEFAULT_KEEP_VERSIONS = 2
MAX_KEEP_VERSIONS = 100
DEFAULT_PUSH_TIMEOUT_S = 3600.0
MIN_PUSH_TIMEOUT_S = 1.0
MAX_PUSH_TIMEOUT_S = 7 * 24 * 3600.0
DEFAULT_MAX_VALUE_BYTES = 1 << 20
MAX_VALUE_BYTES_LIMIT = 4 << 20
"""Largest ``max_value_bytes`` a store may set: with its key and headers a record must fit
the Kafka producer's requests (8 MiB) and, comfortably, one partition fetch (4 MiB)."""
TOPIC_HEADROOM_BYTES = 64 << 10
"""Room beyond the value limit in a version topic's ``max.message.bytes``: key (at most
511 bytes), headers and the record batch's own framing."""
MAX_STORE_NAME_CHARS = 200
MAX_VERSION = (1 << 31) - 1
MAX_INT64 = (1 << 63) - 1
MAX_REASON_CHARS = 2000
DEFAULT_FORGET_AFTER_S = 3600.0
"""A server silent this long is forgotten (see ClusterState.rebalance)."""
MAX_REWIND_SECONDS = 30 * 24 * 3600
"""Hybrid stores: how far back a new version may replay real-time writes (30 days)."""
MAX_OFFSET_LAG = 10**9
"""Hybrid stores: the largest real-time lag (records) a replica may have and be ready."""
MAX_VALUE_SCHEMAS = 1000
"""Value schemas a store may register: every one travels in each routing table and assignment."""
MAX_SCHEMA_BYTES = 256 << 10
"""Largest schema (its JSON) a store takes, for the same reason."""

MAX_READ_QUOTA = 10_000_000
"""Reads per second a store's quota may allow at each router (``store update --read-quota``)."""
