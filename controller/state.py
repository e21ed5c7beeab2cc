"""Cluster metadata: stores, schemas, versions, replicas, servers.

The I/O-free heart of the controller. Every mutation goes through :class:`ClusterState`,
which bumps ``generation`` when the routing table or an assignment may have changed and
marks itself dirty so the caller persists it (:mod:`controller.persistence`).

Version lifecycle (see docs/lifecycle.md)::

    STARTED --the push job reported end-of-push AND every partition has all its replicas READY--> ONLINE
    STARTED --a replica reports ERROR / push job reports failure / push timeout--> ERROR
    STARTED --an operator kills the push--> KILLED
    ONLINE  --outside the retention window (current + keep_versions-1 others)--> RETIRED

A store-version is unique for ever: a deleted store's next version number is kept in the
*graveyard*, so a store re-created under the same name never reuses a version number or
a topic name, and each store carries a random *incarnation* that servers put in their
file names, so they can never serve or resume a deleted store's data.

Every input is checked against :mod:`controller.limits` before anything changes.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from controller.assignment import HashRing, replica_key
from controller.limits import (
    DEFAULT_FORGET_AFTER_S,
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_MAX_VALUE_BYTES,
    DEFAULT_PUSH_TIMEOUT_S,
    MAX_INT64,
    MAX_KEEP_VERSIONS,
    MAX_OFFSET_LAG,
    MAX_PARTITIONS,
    MAX_PUSH_TIMEOUT_S,
    MAX_READ_QUOTA,
    MAX_REPLICATION_FACTOR,
    MAX_REWIND_SECONDS,
    MAX_SCHEMA_BYTES,
    MAX_STORE_NAME_CHARS,
    MAX_VALUE_BYTES_LIMIT,
    MAX_VALUE_SCHEMAS,
    MIN_PUSH_TIMEOUT_S,
)
from venice import protocol
from venice.errors import (
    ConflictError,
    NotEnoughServersError,
    NotFoundError,
    PushInProgressError,
    RequestError,
    SchemaError,
    StoreExistsError,
    StoreNotFoundError,
    VersionNotFoundError,
)
from venice.evolution import check_compatible
from venice.protocol import ReplicaReport, ReplicaStatus, VersionStatus
from venice.schema import validate_schema
from venice.structs import real_time_topic, version_topic
from venice.writecompute import update_schema

__all__ = ["ClusterState", "Hybrid", "ReplicaStatus", "VersionStatus", "check_store_name"]

STORE_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_STORE_NAME_CHARS}}}")
"""Store names are parts of topic names: Kafka's topic alphabet, short enough for ``_v<N>``."""
FORMAT = 4
"""Metadata file format: 2 added the graveyard, incarnations, max_value_bytes, failed
replicas; 3 hybrid settings, write compute, real-time start offsets, topics to create;
4 the real-time epoch of stores and the real-time records replicas lost to retention
(both 0 when absent, as older files are read)."""
UNCHANGED: Any = object()
"""``update_store(hybrid=UNCHANGED)``: leave the hybrid settings alone (``None`` removes them)."""

LIVE_VERSION_STATES = (VersionStatus.STARTED, VersionStatus.ONLINE)


@dataclass
class Replica:
    server: str
    status: str = ReplicaStatus.STARTED.value
    offset: int = 0
    records: int = 0
    reason: str | None = None
    rt_offset: int | None = None
    """Hybrid stores: the next real-time offset this copy applies (``None`` before end-of-push)."""
    rt_lag: int | None = None
    """Hybrid stores: real-time records this copy has not applied yet."""
    skipped: int = 0
    """Records this copy skipped as unreadable (poison pills)."""
    rt_lost: int = 0
    """Real-time records this copy never applied: retention had deleted them when it came to read them."""


@dataclass
class Version:
    number: int
    topic: str
    partitions: int
    status: str = VersionStatus.STARTED.value
    created_at: float = field(default_factory=time.time)
    online_at: float | None = None
    records: int | None = None
    reason: str | None = None
    defer_swap: bool = False
    """ONLINE does not make it current; ``swap`` does."""
    # partition -> replicas, as assigned when the version was opened
    replicas: dict[int, list[Replica]] = field(default_factory=dict)
    failed: dict[int, list[str]] = field(default_factory=dict)
    """partition -> servers whose copy of it failed (ERROR) after the version went ONLINE:
    never placed there again."""
    rt_start_offsets: dict[int, int] = field(default_factory=dict)
    """Hybrid stores: partition -> the real-time offset this version applies from after
    its end-of-push, in the real-time topic of the store's current ``rt_epoch``. Empty
    while the store is batch-only or its real-time topic is not created yet (it is
    filled in then)."""

    def is_live(self) -> bool:
        return self.status in (VersionStatus.STARTED.value, VersionStatus.ONLINE.value)


@dataclass
class Hybrid:
    """A hybrid store's real-time settings (docs/hybrid.md)."""

    rewind_seconds: int
    """A new version replays real-time writes from this long before it was opened."""
    offset_lag: int
    """A replica is ready once at most this many real-time records are left to apply."""


@dataclass
class Store:
    name: str
    key_schema: Any
    value_schemas: dict[int, Any]
    partitions: int
    replication_factor: int
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    """ONLINE versions kept: the current one plus ``keep_versions - 1`` others (backups)."""
    push_timeout_s: float = DEFAULT_PUSH_TIMEOUT_S
    """A version still STARTED this long after it was opened goes to ERROR."""
    created_at: float = field(default_factory=time.time)
    current_version: int | None = None
    next_version: int = 1
    versions: dict[int, Version] = field(default_factory=dict)
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    """Largest serialized value a push may write (and version topics are sized for)."""
    incarnation: str = ""
    """Random id given at creation: this store, not an earlier one of the same name."""
    hybrid: Hybrid | None = None
    """Real-time writes on ``<store>_rt`` apply on top of pushes; ``None``: batch-only."""
    write_compute: bool = False
    """Partial updates are accepted (hybrid stores with record value schemas only)."""
    rt_epoch: int = 0
    """Which incarnation of ``<store>_rt`` is meant: grows whenever the store is to get a
    new real-time topic under the same name (made hybrid, or its topic found missing),
    before that topic exists. Assignments carry it next to the start offsets, so a
    server never resumes a checkpoint of a topic that is gone in the new one."""
    private: bool = False
    """Reads need a reader token (or the cluster secret); public stores are readable by anyone."""
    read_quota: int | None = None
    """Reads per second each router serves of the store (batch keys count one each); ``None``: no quota."""

    @property
    def latest_schema_id(self) -> int:
        return max(self.value_schemas)

    @property
    def real_time_topic(self) -> str:
        return real_time_topic(self.name)


@dataclass
class Server:
    server_id: str
    url: str
    last_heartbeat: float = 0.0
    draining: bool = False
    """Shutting down: no reads are routed to it and no new replicas are placed on it."""


class ClusterState:
    """All controller metadata, with the rules that change it."""

    def __init__(
        self, pubsub_url: str, dead_after_s: float = 15.0, forget_after_s: float = DEFAULT_FORGET_AFTER_S
    ) -> None:
        if not dead_after_s <= forget_after_s:
            raise ValueError(f"forget_after_s ({forget_after_s:g}) must be at least dead_after_s ({dead_after_s:g})")
        self.pubsub_url = pubsub_url
        self.dead_after_s = dead_after_s
        self.forget_after_s = forget_after_s
        self.stores: dict[str, Store] = {}
        self.servers: dict[str, Server] = {}
        self.generation = 1
        self.dirty = False
        # Topics of versions that left the live states, and real-time topics of stores that
        # were deleted or made batch-only; deleted by the controller's janitor.
        self.topics_to_delete: set[str] = set()
        self.topics_to_create: set[str] = set()
        """Real-time topics of hybrid stores not created yet; created by the janitor once no
        topic of the same (Kafka) name is pending deletion, so a new incarnation never
        reads an old one's real-time records."""
        self.graveyard: dict[str, int] = {}
        """Deleted store name -> the next version number it would have had."""
        self._routing_cache: tuple[int, dict[str, Any]] | None = None
        self._serving: frozenset[str] = frozenset()
        """Servers that were live and not draining at the last :meth:`rebalance`."""

    # -- bookkeeping ---------------------------------------------------------------
    def _changed(self, *, routing: bool = True) -> None:
        self.dirty = True
        if routing:
            self.generation += 1

    def store(self, name: str) -> Store:
        try:
            return self.stores[name]
        except KeyError:
            raise StoreNotFoundError(f"store {name!r} does not exist") from None

    def version(self, store: str, number: int) -> Version:
        try:
            return self.store(store).versions[number]
        except KeyError:
            raise VersionNotFoundError(f"store {store!r} has no version {number}") from None

    # -- stores --------------------------------------------------------------------
    def create_store(
        self,
        name: str,
        key_schema: Any,
        value_schema: Any,
        partitions: int,
        replication_factor: int,
        *,
        keep_versions: int | None = None,
        push_timeout_s: float | None = None,
        max_value_bytes: int | None = None,
        hybrid: Hybrid | None = None,
        write_compute: bool = False,
    ) -> Store:
        """A new store; every argument is checked before anything changes."""
        check_store_name(name)
        if name in self.stores:
            raise StoreExistsError(f"store {name!r} already exists")
        twin = next((s for s in self.stores if _kafka_form(s) == _kafka_form(name)), None)
        if twin is not None:
            raise ConflictError(
                f"store name {name!r} collides with store {twin!r}: Kafka treats '.' and '_' in topic names alike"
            )
        _check_int("partitions", partitions, 1, MAX_PARTITIONS)
        _check_int("replication_factor", replication_factor, 1, MAX_REPLICATION_FACTOR)
        _check_settings(keep_versions, push_timeout_s, max_value_bytes)
        for kind, schema in (("key", key_schema), ("value", value_schema)):
            _check_schema(schema, kind)
        if hybrid is not None:
            _check_hybrid(hybrid)
        _check_bool("write_compute", write_compute)
        if write_compute:
            _check_write_compute(hybrid, {1: value_schema})
        store = Store(name, key_schema, {1: value_schema}, partitions, replication_factor)
        store.keep_versions = keep_versions or store.keep_versions
        store.push_timeout_s = push_timeout_s or store.push_timeout_s
        store.max_value_bytes = max_value_bytes or store.max_value_bytes
        store.incarnation = secrets.token_hex(6)
        # Never reuse a version number (and so a topic name) of a deleted store of this
        # name, nor of one Kafka would confuse it with.
        store.next_version = max(
            (n for dead, n in self.graveyard.items() if _kafka_form(dead) == _kafka_form(name)), default=1
        )
        self.stores[name] = store
        if hybrid is not None:
            self._make_hybrid(store, hybrid)
        store.write_compute = write_compute
        self._changed()
        return store

    def update_store(
        self,
        name: str,
        *,
        keep_versions: int | None = None,
        push_timeout_s: float | None = None,
        max_value_bytes: int | None = None,
        hybrid: Hybrid | None = UNCHANGED,
        write_compute: bool | None = None,
        private: bool | None = None,
        read_quota: int | None = UNCHANGED,
    ) -> Store:
        """Change the settings given. ``hybrid=None`` makes the store batch-only again: its
        real-time topic is deleted, and write compute (which needs it) is turned off.
        ``read_quota=None`` removes the store's read quota."""
        store = self.store(name)
        _check_settings(keep_versions, push_timeout_s, max_value_bytes)
        if private is not None:
            _check_bool("private", private)
        if read_quota is not UNCHANGED and read_quota is not None:
            _check_int("read_quota", read_quota, 1, MAX_READ_QUOTA)
        if hybrid is not UNCHANGED and hybrid is not None:
            _check_hybrid(hybrid)
        if write_compute is not None:
            _check_bool("write_compute", write_compute)
        hybrid_after = store.hybrid if hybrid is UNCHANGED else hybrid
        write_compute_after = (store.write_compute if write_compute is None else write_compute) and hybrid_after is not None
        if write_compute is True:
            _check_write_compute(hybrid_after, store.value_schemas)
        if keep_versions is not None:
            store.keep_versions = keep_versions
            self._retire_old(store)
        if push_timeout_s is not None:
            store.push_timeout_s = push_timeout_s
        if max_value_bytes is not None:
            store.max_value_bytes = max_value_bytes
        if hybrid is None and store.hybrid is not None:
            self._make_batch_only(store)
        elif hybrid is not UNCHANGED and hybrid is not None:
            self._make_hybrid(store, hybrid)
        store.write_compute = write_compute_after
        if private is not None:
            store.private = private
        if read_quota is not UNCHANGED:
            store.read_quota = read_quota
        self._changed()
        return store

    def _make_hybrid(self, store: Store, hybrid: Hybrid) -> None:
        """Take the settings; a store that was batch-only gets its real-time topic created
        (by the janitor, durably: it is in :attr:`topics_to_create` until it exists)."""
        was_hybrid = store.hybrid is not None
        store.hybrid = Hybrid(hybrid.rewind_seconds, hybrid.offset_lag)
        if not was_hybrid:
            self._new_rt_epoch(store)

    def _new_rt_epoch(self, store: Store) -> None:
        """The store is to get a new real-time topic (made hybrid, or its topic went
        missing): a new epoch, the topic on the create list, and no start offsets until
        the new topic exists (offsets of an old one mean nothing in it). Replicas learn the
        epoch from their next assignment, before the topic can exist."""
        store.rt_epoch += 1
        self.topics_to_create.add(store.real_time_topic)
        self._forget_rt_offsets(store)

    @staticmethod
    def _forget_rt_offsets(store: Store) -> None:
        for version in store.versions.values():
            version.rt_start_offsets = {}
            for replicas in version.replicas.values():
                for replica in replicas:
                    replica.rt_offset = replica.rt_lag = None

    def _make_batch_only(self, store: Store) -> None:
        store.hybrid = None
        topic = store.real_time_topic
        self.topics_to_create.discard(topic)
        self.topics_to_delete.add(topic)
        # The topic they read from is going away: a store made hybrid again gets a new one
        # (and a new epoch), and its versions the new one's offsets.
        self._forget_rt_offsets(store)

    def delete_store(self, name: str) -> None:
        store = self.store(name)
        for version in store.versions.values():
            self.topics_to_delete.add(version.topic)
        if store.hybrid is not None:
            self.topics_to_create.discard(store.real_time_topic)
            self.topics_to_delete.add(store.real_time_topic)
        self.graveyard[name] = store.next_version
        del self.stores[name]
        self._changed()

    def add_value_schema(self, name: str, schema: Any) -> tuple[int, bool]:
        """Register ``schema`` as the store's next value schema: ``(id, True)``; an identical
        schema already registered: ``(its id, False)``. Refused with :class:`SchemaError`
        unless it is valid and fully compatible with every earlier schema (it reads their
        data and they read its data), and, with write compute on, a record."""
        store = self.store(name)
        _check_schema(schema, "value")
        for schema_id, existing in store.value_schemas.items():
            if _same_schema(existing, schema):
                return schema_id, False
        if len(store.value_schemas) >= MAX_VALUE_SCHEMAS:
            raise RequestError(f"store {name!r} already has {MAX_VALUE_SCHEMAS} value schemas, the most a store may have")
        check_compatible([store.value_schemas[i] for i in sorted(store.value_schemas)], schema)
        if store.write_compute:
            _check_write_compute(store.hybrid, {0: schema})
        schema_id = store.latest_schema_id + 1
        store.value_schemas[schema_id] = schema
        self._changed()
        return schema_id, True

    # -- real-time topics -----------------------------------------------------------
    def rt_topic_created(self, topic: str, beginning_offsets: Mapping[int, int]) -> None:
        """The janitor created ``topic`` (or found it there): live versions of its store
        without start offsets start at ``beginning_offsets``, so writes made before (or
        while) the store became hybrid are applied."""
        self.topics_to_create.discard(topic)
        store = self._store_of_rt(topic)
        if store is not None:
            offsets = _check_offsets(beginning_offsets, store.partitions, topic)
            for version in store.versions.values():
                if version.is_live() and not version.rt_start_offsets:
                    version.rt_start_offsets = dict(offsets)
        self._changed()

    def rt_topic_missing(self, store_name: str) -> None:
        """The real-time topic of a hybrid store is gone (deleted behind the controller's
        back): create it again."""
        store = self.store(store_name)
        if store.hybrid is not None and store.real_time_topic not in self.topics_to_create:
            # Its live versions' offsets and their replicas' checkpoints are of the topic
            # that is gone: a new epoch, so they start over at the new topic's beginning.
            self._new_rt_epoch(store)
            self._changed()

    def topic_creation_waits(self, topic: str) -> bool:
        """Whether a topic Kafka would confuse with ``topic`` is still to be deleted."""
        return any(_kafka_form(t) == _kafka_form(topic) for t in self.topics_to_delete)

    def drop_unwanted_creations(self) -> None:
        """Forget topics to create whose store no longer wants them (deleted, batch-only)."""
        unwanted = {t for t in self.topics_to_create if self._store_of_rt(t) is None}
        if unwanted:
            self.topics_to_create -= unwanted
            self.dirty = True

    def partitions_of_rt(self, topic: str) -> int | None:
        store = self._store_of_rt(topic)
        return None if store is None else store.partitions

    def _store_of_rt(self, topic: str) -> Store | None:
        """The hybrid store whose real-time topic ``topic`` is, if any."""
        name = topic.removesuffix("_rt")
        store = self.stores.get(name)
        return store if store is not None and store.hybrid is not None and store.real_time_topic == topic else None

    def rt_offsets_plan(self, store_name: str, now: float) -> tuple[str, int | None, int] | None:
        """What a version opened now must ask the pub-sub for its real-time start offsets:
        ``(topic, None, epoch)`` for the beginning offsets (the store's first version:
        writes made before the first push apply once a version exists), ``(topic,
        timestamp_ms, epoch)`` for ``offsets_for_time`` (open time minus the rewind);
        ``None`` when the store is batch-only or its topic is not created yet (offsets are
        set when it is). ``epoch`` goes back to :meth:`open_version` with the offsets."""
        store = self.store(store_name)
        if store.hybrid is None or store.real_time_topic in self.topics_to_create:
            return None
        if store.current_version is None:
            return store.real_time_topic, None, store.rt_epoch
        return store.real_time_topic, max(0, int((now - store.hybrid.rewind_seconds) * 1000)), store.rt_epoch

    def live_topics(self) -> set[str]:
        """Topics of STARTED and ONLINE versions, and real-time topics of hybrid stores once
        created: the janitor must never delete these. (A real-time topic still to be created
        is not live: whatever holds its name now is an older incarnation's.)"""
        topics = {v.topic for s in self.stores.values() for v in s.versions.values() if v.is_live()}
        topics.update(
            s.real_time_topic for s in self.stores.values() if s.hybrid is not None and s.real_time_topic not in self.topics_to_create
        )
        return topics

    # -- servers -------------------------------------------------------------------
    def live_servers(self, now: float) -> list[str]:
        return sorted(s.server_id for s in self.servers.values() if now - s.last_heartbeat <= self.dead_after_s)

    def serving_servers(self, now: float) -> list[str]:
        """Live and not draining: the servers reads are routed to and new versions placed on."""
        return [s for s in self.live_servers(now) if not self.servers[s].draining]

    def heartbeat(
        self, server_id: str, url: str, replicas: Iterable[ReplicaReport], now: float, *, draining: bool = False
    ) -> None:
        server = self.servers.get(server_id)
        if server is not None and server.url != url:
            # A server id is bound to the URL it registered with: a heartbeat naming
            # another URL is a misconfigured or hostile part trying to take over the
            # id's replicas (and reads). An admin removes the id to move it.
            raise ConflictError(
                f"server {server_id!r} is registered at {server.url}, not {url[:200]}; "
                f"remove it first (venice cluster remove-server {server_id}) to move it",
                server_id=server_id,
            )
        was_live = server is not None and now - server.last_heartbeat <= self.dead_after_s
        if server is None:
            self.servers[server_id] = server = Server(server_id, url)
            self._changed()
        server.last_heartbeat = now
        if server.draining != draining:
            server.draining = draining
            was_live = False  # its reads must stop (or resume) now: rebalance below
        if not was_live:
            # Back (or new): give it its share before it reads its assignment, so a
            # restarted server keeps the data it has instead of dropping it.
            self.rebalance(now)
        moved = [self._apply_replica_report(server_id, report) for report in replicas]
        if not was_live or any(moved):
            self.rebalance(now)

    def _apply_replica_report(self, server_id: str, report: ReplicaReport) -> bool:
        """Record one replica's state; True when a copy of an ONLINE version failed and
        its partition needs another server."""
        store = self.stores.get(report.store)
        version = store.versions.get(report.version) if store else None
        if store is None or version is None or not version.is_live():
            return False
        if report.incarnation is not None and report.incarnation != store.incarnation:
            return False  # a copy of a deleted store of the same name: not this store's
        replicas = version.replicas.get(report.partition, [])
        for replica in replicas:
            if replica.server != server_id:
                continue
            status, reason = report.status.value, report.reason
            if replica.status == ReplicaStatus.READY.value and status == ReplicaStatus.STARTED.value:
                status = replica.status  # ready stays ready until unassigned or failed
            if status == ReplicaStatus.ERROR.value and version.status == VersionStatus.ONLINE.value:
                # A copy of a live version failed (e.g. its disk filled up while it was
                # bootstrapping): drop it now and let the ring place the partition on a
                # server where it has not failed yet, as for a dead server.
                failed = version.failed.setdefault(report.partition, [])
                if server_id not in failed:
                    failed.append(server_id)
                version.replicas[report.partition] = [r for r in replicas if r is not replica]
                self._changed()
                return True
            if (replica.status, replica.reason) != (status, reason):
                replica.status, replica.reason = status, reason
                self._changed()
            replica.offset, replica.records = report.offset, report.records
            replica.rt_offset, replica.rt_lag, replica.skipped = report.rt_offset, report.rt_lag, report.skipped
            replica.rt_lost = report.rt_lost
        self._advance(store, version)
        return False

    # -- versions ------------------------------------------------------------------
    def open_version(
        self,
        store_name: str,
        now: float,
        *,
        defer_swap: bool = False,
        rt_start_offsets: Mapping[int, int] | None = None,
        rt_epoch: int | None = None,
    ) -> Version:
        """Version N+1, placed on the ring. ``rt_start_offsets`` (hybrid stores) are the
        real-time offsets :meth:`rt_offsets_plan` asked for, in the topic of ``rt_epoch``;
        without them (the topic is not created yet) they are set when it is. Offsets of
        another epoch than the store's (it got a new topic while they were asked for) are
        not taken."""
        store = self.store(store_name)
        running = [v.number for v in store.versions.values() if v.status == VersionStatus.STARTED.value]
        if running:
            number = running[0]
            raise PushInProgressError(
                f"store {store_name!r} has a push in progress: version {number} is STARTED. "
                f"Wait for it to finish, or stop it with: venice version kill --store {store_name} --version {number}",
                version=number,
            )
        live = self.serving_servers(now)
        if len(live) < store.replication_factor:
            raise NotEnoughServersError(
                f"store {store_name!r} needs {store.replication_factor} live servers, {len(live)} are up"
            )
        ring = HashRing(live)
        number = store.next_version
        topic = version_topic(store_name, number)
        version = Version(number, topic, store.partitions, created_at=now, defer_swap=defer_swap)
        for partition in range(store.partitions):
            servers = ring.replicas(replica_key(topic, partition), store.replication_factor)
            version.replicas[partition] = [Replica(server) for server in servers]
        if (
            store.hybrid is not None
            and rt_start_offsets is not None
            and store.real_time_topic not in self.topics_to_create
            and rt_epoch in (None, store.rt_epoch)
        ):
            # (A topic to create again, e.g. the store was made batch-only and hybrid while
            # the offsets were asked for: they are of the old topic; the new one's come later.)
            version.rt_start_offsets = _check_offsets(rt_start_offsets, store.partitions, store.real_time_topic)
        store.next_version = number + 1
        store.versions[number] = version
        self.topics_to_delete.discard(topic)  # never reused, but should metadata ever be lost...
        self._changed()
        return version

    def end_of_push(self, store_name: str, number: int, records: int) -> Version:
        """The push job wrote end-of-push to every partition: ``records`` data records in all.

        Idempotent, so a push job may retry it after any failure: the same count again gets
        the same answer (also once ONLINE); another count, or a version that failed, is a
        conflict. A version goes ONLINE only after this call (and all replicas READY).
        """
        _check_int("records", records, 0, MAX_INT64)
        store = self.store(store_name)
        version = self.version(store_name, number)
        if version.records is not None and version.records != records:
            raise ConflictError(
                f"version {number} of {store_name!r} already reported end-of-push with {version.records} records, not {records}"
            )
        if version.status == VersionStatus.ONLINE.value:
            return version
        if version.status != VersionStatus.STARTED.value:
            reason = f": {version.reason}" if version.reason else ""
            raise ConflictError(f"version {number} of {store_name!r} is {version.status}{reason}")
        if version.records is None:
            version.records = records
            self._changed(routing=False)
            self._advance(store, version)
        return version

    def fail_version(self, store_name: str, number: int, reason: str, status: VersionStatus = VersionStatus.ERROR) -> Version:
        version = self.version(store_name, number)
        if version.status == VersionStatus.ONLINE.value:
            raise ConflictError(f"version {number} of {store_name!r} is already ONLINE")
        if version.is_live():
            version.status, version.reason = status.value, reason
            self.topics_to_delete.add(version.topic)
            self._changed()
        return version

    def rebalance(self, now: float) -> None:
        """Keep every partition of every live version on its R servers of the ring.

        Placement is consistent hashing over live servers, so a server leaving or joining
        moves only its share of replicas. A replica on a dead server is dropped at once
        (the ring gives its partition a new server, which bootstraps from the topic); a
        replica on a live server that the ring no longer wants (after a join) is dropped
        only once every wanted replica of the partition is READY, so a partition never
        has fewer ready copies because of a move.
        """
        self._forget(now)
        live = self.live_servers(now)
        serving = frozenset(s for s in live if not self.servers[s].draining)
        if serving != self._serving:
            self._serving = serving
            self._changed()  # the routing table lists only serving servers' replicas
        if 2 * len(live) < len(self.servers) or not live:
            # Most servers silent at once is more likely the controller's own stall or a
            # partition than mass death: moving everything would only make it worse.
            # (Servers silent past forget_after_s no longer count: see _forget.)
            return
        ring = HashRing(live)
        for store in self.stores.values():
            wanted_count = min(store.replication_factor, ring.server_count)
            for version in store.versions.values():
                if version.is_live():
                    for partition in version.replicas:
                        failed = version.failed.get(partition, ())
                        wanted = ring.replicas(replica_key(version.topic, partition), wanted_count, exclude=failed)
                        self._place(version, partition, wanted, set(live))
                    self._advance(store, version)

    def remove_server(self, server_id: str, now: float) -> None:
        """An admin's removal of a server: its replicas move as for a dead server, and its
        id may register again (at any URL) with its next heartbeat."""
        if server_id not in self.servers:
            raise NotFoundError(f"no server {server_id[:200]!r} is registered")
        del self.servers[server_id]
        self._changed()
        self.rebalance(now)

    def _forget(self, now: float) -> None:
        """Drop servers silent for ``forget_after_s``: the "most servers silent" guard counts
        recent members only, so servers that left for good cannot block failover for ever."""
        gone = [s.server_id for s in self.servers.values() if now - s.last_heartbeat > self.forget_after_s]
        for server_id in gone:
            del self.servers[server_id]
        if gone:
            self._changed()

    def _place(self, version: Version, partition: int, wanted: list[str], live: set[str]) -> None:
        replicas = version.replicas[partition]
        present = {r.server for r in replicas}
        added = [Replica(server) for server in wanted if server not in present]
        wanted_ready = sum(1 for r in replicas if r.server in wanted and r.status == ReplicaStatus.READY.value)
        kept = [
            r
            for r in replicas
            if r.server in wanted or (r.server in live and wanted_ready < len(wanted))
        ]
        if added or len(kept) != len(replicas):
            version.replicas[partition] = kept + added
            self._changed()

    def kill_version(self, store_name: str, number: int) -> Version:
        version = self.version(store_name, number)
        if version.status != VersionStatus.STARTED.value:
            raise ConflictError(
                f"version {number} of {store_name!r} is {version.status}: only a STARTED push can be killed"
            )
        return self.fail_version(store_name, number, "killed by an operator", VersionStatus.KILLED)

    def swap(self, store_name: str, number: int) -> Store:
        """Make ONLINE version ``number`` current (roll forward, or back to any kept version)."""
        store = self.store(store_name)
        version = self.version(store_name, number)
        if version.status != VersionStatus.ONLINE.value:
            raise ConflictError(f"version {number} of {store_name!r} is {version.status}: only ONLINE versions can be current")
        if store.current_version != number:
            store.current_version = number
            self._retire_old(store)
            self._changed()
        return store

    def rollback(self, store_name: str) -> Store:
        """Make the newest ONLINE version older than the current one current again."""
        store = self.store(store_name)
        older = [
            v.number
            for v in store.versions.values()
            if v.status == VersionStatus.ONLINE.value and store.current_version is not None and v.number < store.current_version
        ]
        if not older:
            raise ConflictError(f"store {store_name!r} has no backup version to roll back to")
        return self.swap(store_name, max(older))

    def expire_pushes(self, now: float) -> list[tuple[str, int]]:
        """Versions STARTED longer than their store's push timeout go to ERROR."""
        expired = []
        for store in self.stores.values():
            for version in store.versions.values():
                if version.status == VersionStatus.STARTED.value and now - version.created_at > store.push_timeout_s:
                    self.fail_version(store.name, version.number, f"push timed out after {store.push_timeout_s:g} s")
                    expired.append((store.name, version.number))
        return expired

    def _advance(self, store: Store, version: Version) -> None:
        if version.status != VersionStatus.STARTED.value:
            return
        for replicas in version.replicas.values():
            for replica in replicas:
                if replica.status == ReplicaStatus.ERROR.value:
                    reason = f"server {replica.server}: {replica.reason or 'ingestion failed'}"
                    self.fail_version(store.name, version.number, reason)
                    return
        if version.records is None:
            # Servers find end-of-push in the topic, but only the push job knows it
            # succeeded: without its word (POST .../end) the version never goes live.
            return
        ready = [sum(1 for r in rs if r.status == ReplicaStatus.READY.value) for rs in version.replicas.values()]
        if all(count >= store.replication_factor for count in ready):
            version.status = VersionStatus.ONLINE.value
            version.online_at = time.time()
            if not version.defer_swap and (store.current_version is None or version.number > store.current_version):
                store.current_version = version.number
            self._retire_old(store)
            self._changed()

    def _retire_old(self, store: Store) -> None:
        """Keep the current version and the newest ``keep_versions - 1`` other ONLINE ones."""
        online = sorted(
            (v.number for v in store.versions.values() if v.status == VersionStatus.ONLINE.value), reverse=True
        )
        others = [n for n in online if n != store.current_version]
        keep = set(others[: store.keep_versions - (1 if store.current_version is not None else 0)])
        if store.current_version is not None:
            keep.add(store.current_version)
        for number in online:
            if number not in keep:
                version = store.versions[number]
                version.status = VersionStatus.RETIRED.value
                version.reason = "retired: outside the retention window"
                self.topics_to_delete.add(version.topic)
                self._changed()

    # -- views ---------------------------------------------------------------------
    def _hybrid_config(self, store: Store) -> protocol.HybridConfig | None:
        if store.hybrid is None:
            return None
        return protocol.HybridConfig(store.hybrid.rewind_seconds, store.hybrid.offset_lag, store.real_time_topic)

    @staticmethod
    def consumes_rt(store: Store, version: Version) -> bool:
        """Whether ``version`` applies real-time writes now: the current version, a push in
        progress, and an ONLINE version newer than the current one (a deferred swap) do;
        backups (older ONLINE versions) do not, so a rollback finds them as they were."""
        if store.hybrid is None:
            return False
        if version.status == VersionStatus.STARTED.value:
            return True
        if version.status != VersionStatus.ONLINE.value:
            return False
        return store.current_version is None or version.number >= store.current_version

    def assignment_for(self, server_id: str) -> list[dict[str, Any]]:
        """What ``server_id`` must host: every live version with a replica on it
        (:class:`venice.protocol.Assignment` entries)."""
        result = []
        for store in self.stores.values():
            hybrid = self._hybrid_config(store)
            for version in store.versions.values():
                if not version.is_live():
                    continue
                partitions = sorted(
                    p for p, rs in version.replicas.items() if any(r.server == server_id for r in rs)
                )
                if partitions:
                    assignment = protocol.Assignment(
                        store=store.name,
                        version=version.number,
                        topic=version.topic,
                        partitions_total=version.partitions,
                        partitions=tuple(partitions),
                        key_schema=store.key_schema,
                        value_schemas=store.value_schemas,
                        incarnation=store.incarnation,
                        hybrid=hybrid,
                        rt_start_offsets=version.rt_start_offsets if hybrid is not None else {},
                        consume_rt=self.consumes_rt(store, version),
                        rt_epoch=store.rt_epoch if hybrid is not None else 0,
                        private=store.private,
                    )
                    result.append(assignment.to_json())
        return result

    def routing_table(self, now: float) -> dict[str, Any]:
        if self._routing_cache is not None and self._routing_cache[0] == self.generation:
            return self._routing_cache[1]
        stores: dict[str, protocol.StoreRouting] = {}
        for store in self.stores.values():
            versions: dict[int, dict[int, tuple[str, ...]]] = {}
            for version in store.versions.values():
                if version.status != VersionStatus.ONLINE.value:
                    continue
                versions[version.number] = {
                    p: tuple(
                        self.servers[r.server].url
                        for r in rs
                        if r.status == ReplicaStatus.READY.value and r.server in self._serving
                    )
                    for p, rs in version.replicas.items()
                }
            stores[store.name] = protocol.StoreRouting(
                key_schema=store.key_schema,
                value_schemas=store.value_schemas,
                partitions=store.partitions,
                current_version=store.current_version,
                versions=versions,
                retired_versions=frozenset(
                    v.number for v in store.versions.values() if v.status == VersionStatus.RETIRED.value
                ),
                hybrid=self._hybrid_config(store),
                write_compute=store.write_compute,
                private=store.private,
                read_quota=store.read_quota,
            )
        table = protocol.RoutingTable(self.generation, stores).to_json()
        self._routing_cache = (self.generation, table)
        return table

    def describe_version(self, store: Store, version: Version) -> dict[str, Any]:
        return {
            "store": store.name,
            "version": version.number,
            "topic": version.topic,
            "partitions": version.partitions,
            "status": version.status,
            "reason": version.reason,
            "created_at": version.created_at,
            "online_at": version.online_at,
            "records": version.records,
            "defer_swap": version.defer_swap,
            "current": store.current_version == version.number,
            "rt_start_offsets": {str(p): o for p, o in sorted(version.rt_start_offsets.items())},
            "rt_epoch": store.rt_epoch if store.hybrid is not None else None,
            "consume_rt": self.consumes_rt(store, version),
            "rt_lag": _version_lag(version),
            "poison_pills": _poison_pills(version),
            "rt_lost": _rt_lost(version),
            "replicas": {
                str(p): [
                    {
                        "server": r.server,
                        "url": self.servers[r.server].url if r.server in self.servers else None,
                        "status": r.status,
                        "offset": r.offset,
                        "records": r.records,
                        "reason": r.reason,
                        "rt_offset": r.rt_offset,
                        "rt_lag": r.rt_lag,
                        "skipped": r.skipped,
                        "rt_lost": r.rt_lost,
                    }
                    for r in rs
                ]
                for p, rs in version.replicas.items()
            },
        }

    def describe_store(self, store: Store) -> dict[str, Any]:
        hybrid = self._hybrid_config(store)
        description = {
            "name": store.name,
            "incarnation": store.incarnation,
            "key_schema": store.key_schema,
            "value_schemas": {str(k): v for k, v in store.value_schemas.items()},
            "partitions": store.partitions,
            "replication_factor": store.replication_factor,
            "keep_versions": store.keep_versions,
            "push_timeout_s": store.push_timeout_s,
            "max_value_bytes": store.max_value_bytes,
            "hybrid": None if hybrid is None else hybrid.to_json(),
            "rt_epoch": store.rt_epoch if hybrid is not None else None,
            "write_compute": store.write_compute,
            "private": store.private,
            "read_quota": store.read_quota,
            "current_version": store.current_version,
            "created_at": store.created_at,
            "versions": [
                {k: v for k, v in self.describe_version(store, ver).items() if k != "replicas"}
                for ver in sorted(store.versions.values(), key=lambda v: v.number)
            ],
        }
        if store.write_compute:
            description["update_schemas"] = {str(k): update_schema(v) for k, v in sorted(store.value_schemas.items())}
        return description

    # -- persistence ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything persistent, as a fresh copy (nothing shared with the live state)."""
        return {
            "format": FORMAT,
            "pubsub_url": self.pubsub_url,
            "generation": self.generation,
            "stores": [asdict(s) for s in self.stores.values()],
            "servers": [{"server_id": s.server_id, "url": s.url} for s in self.servers.values()],
            "topics_to_delete": sorted(self.topics_to_delete),
            "topics_to_create": sorted(self.topics_to_create),
            "graveyard": dict(self.graveyard),
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], dead_after_s: float, now: float, forget_after_s: float = DEFAULT_FORGET_AFTER_S
    ) -> ClusterState:
        state = cls(data["pubsub_url"], dead_after_s, forget_after_s)
        # A restarted controller has not heard from anyone yet: give every known server
        # a full timeout to heartbeat before it counts as dead.
        state.servers = {s["server_id"]: Server(s["server_id"], s["url"], now) for s in data["servers"]}
        state._serving = frozenset(state.servers)
        for raw in data["stores"]:
            versions = {}
            for vraw in raw["versions"].values():
                replicas = {int(p): [Replica(**r) for r in rs] for p, rs in vraw["replicas"].items()}
                failed = {int(p): list(servers) for p, servers in vraw.get("failed", {}).items()}
                starts = {int(p): int(o) for p, o in (vraw.get("rt_start_offsets") or {}).items()}
                versions[int(vraw["number"])] = Version(
                    **{**vraw, "replicas": replicas, "failed": failed, "rt_start_offsets": starts}
                )
            hybrid = raw.get("hybrid")
            store = Store(
                **{
                    **raw,
                    "value_schemas": {int(k): v for k, v in raw["value_schemas"].items()},
                    "versions": versions,
                    "hybrid": None if hybrid is None else Hybrid(int(hybrid["rewind_seconds"]), int(hybrid["offset_lag"])),
                }
            )
            if not store.incarnation:
                # Saved before incarnations (format 1): a new one; servers re-ingest its
                # versions under the new file names and remove the old ones.
                store.incarnation = secrets.token_hex(6)
                state.dirty = True
            state.stores[store.name] = store
        state.topics_to_delete = set(data.get("topics_to_delete", []))
        state.topics_to_create = set(data.get("topics_to_create", []))
        state.graveyard = {str(k): int(v) for k, v in data.get("graveyard", {}).items()}
        # Routers compare generations; never go back to one they may have seen.
        state.generation = int(data["generation"]) + 1
        return state

    def restored(self, saved: dict[str, Any], now: float) -> ClusterState:
        """The last saved state ``saved``, carrying over what is not persisted (servers'
        liveness), to replace this one after a change that could not be saved."""
        state = ClusterState.from_dict(saved, self.dead_after_s, now, self.forget_after_s)
        state.pubsub_url = self.pubsub_url
        for server_id, server in state.servers.items():
            known = self.servers.get(server_id)
            if known is not None:
                server.last_heartbeat, server.draining = known.last_heartbeat, known.draining
        state._serving = frozenset(s for s in self._serving if s in state.servers)
        state.generation = self.generation + 1  # never go back to a generation a router saw
        state.dirty = False
        return state


def check_store_name(name: str) -> None:
    """Store names become topic names (``<store>_v<N>``): Kafka's alphabet, at most 200 characters.

    ``_v`` inside a name is fine: :func:`venice.structs.parse_version_topic` splits at the
    *last* ``_v``, and a version number is all digits, so a topic maps back to one store.
    """
    if not isinstance(name, str) or not STORE_NAME.fullmatch(name) or name in (".", ".."):
        shown = repr(name[:40]) + ("..." if len(name) > 40 else "") if isinstance(name, str) else repr(name)
        raise RequestError(
            f"invalid store name {shown}: use 1 to {MAX_STORE_NAME_CHARS} ASCII letters, digits, '.', '_' or '-' "
            "(and not '.' or '..')"
        )


def _kafka_form(name: str) -> str:
    """Kafka refuses a topic whose name differs from an existing one only by '.' vs '_'."""
    return name.replace(".", "_")


def _check_int(what: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(f"{what} must be an integer from {low} to {high}, not {value!r:.40}")


def _check_settings(keep_versions: int | None, push_timeout_s: float | None, max_value_bytes: int | None) -> None:
    if keep_versions is not None:
        _check_int("keep_versions", keep_versions, 1, MAX_KEEP_VERSIONS)
    if push_timeout_s is not None and (
        not isinstance(push_timeout_s, (int, float))
        or isinstance(push_timeout_s, bool)
        or not math.isfinite(push_timeout_s)
        or not MIN_PUSH_TIMEOUT_S <= push_timeout_s <= MAX_PUSH_TIMEOUT_S
    ):
        raise RequestError(
            f"push_timeout_s must be a number of seconds from {MIN_PUSH_TIMEOUT_S:g} to {MAX_PUSH_TIMEOUT_S:g}, "
            f"not {push_timeout_s!r:.40}"
        )
    if max_value_bytes is not None:
        _check_int("max_value_bytes", max_value_bytes, 1, MAX_VALUE_BYTES_LIMIT)


def _check_bool(what: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise RequestError(f"{what} must be true or false, not {value!r:.40}")


def _check_schema(schema: Any, kind: str) -> None:
    """A key or value schema a store may hold: valid Avro, and small enough to travel in
    every routing table and assignment."""
    try:
        size = len(orjson.dumps(schema))
    except TypeError as exc:
        raise SchemaError(f"{kind} schema is not plain JSON (numbers must fit in 64 bits): {exc}") from exc
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(f"{kind} schema is {size} bytes of JSON; a store takes schemas of at most {MAX_SCHEMA_BYTES} bytes")
    try:
        validate_schema(schema, kind=kind)
    except SchemaError as exc:
        message = exc.message if exc.message.startswith(f"{kind} schema") else f"{kind} schema: {exc.message}"
        raise SchemaError(message, **exc.details) from exc


def _check_hybrid(hybrid: Hybrid) -> None:
    _check_int("hybrid.rewind_seconds", hybrid.rewind_seconds, 0, MAX_REWIND_SECONDS)
    _check_int("hybrid.offset_lag", hybrid.offset_lag, 0, MAX_OFFSET_LAG)


def _check_write_compute(hybrid: Hybrid | None, schemas: Mapping[int, Any]) -> None:
    """Partial updates are nearline writes (so the store must be hybrid) of record values:
    every value schema must derive an update schema."""
    if hybrid is None:
        raise RequestError("write compute needs a hybrid store: give hybrid settings too (venice store update --hybrid-...)")
    for schema_id, schema in sorted(schemas.items()):
        try:
            update_schema(schema)
        except SchemaError as exc:
            which = "the new value schema" if schema_id == 0 else f"value schema {schema_id}"
            raise SchemaError(f"write compute: {which}: {exc.message}") from exc


def _same_schema(a: Any, b: Any) -> bool:
    """Whether two schemas are the same JSON (object key order aside; a bare primitive
    name and ``{"type": name}`` alike)."""

    def bare(schema: Any) -> Any:
        if isinstance(schema, str):
            schema = schema.strip()
            if schema[:1] in "{[":
                try:
                    return orjson.loads(schema)
                except orjson.JSONDecodeError:
                    return schema
        if isinstance(schema, dict) and set(schema) == {"type"} and isinstance(schema["type"], str):
            return schema["type"]
        return schema

    left, right = bare(a), bare(b)
    return type(left) is type(right) and left == right


def _check_offsets(offsets: Mapping[int, int], partitions: int, topic: str) -> dict[int, int]:
    """Start offsets of every partition of a store's real-time topic, and nothing else."""
    if set(offsets) != set(range(partitions)):
        raise ConflictError(
            f"real-time topic {topic} has partitions {sorted(offsets)[:20]}, the store has {partitions}: "
            "delete the topic and the controller creates it again"
        )
    for partition, offset in offsets.items():
        _check_int(f"real-time start offset of partition {partition}", offset, 0, MAX_INT64)
    return {int(p): int(o) for p, o in offsets.items()}


def _version_lag(version: Version) -> int | None:
    """The largest real-time lag a replica of ``version`` reports (``None``: none reports one)."""
    lags = [r.rt_lag for rs in version.replicas.values() for r in rs if r.rt_lag is not None]
    return max(lags) if lags else None


def _poison_pills(version: Version) -> int:
    """Real-time records ``version`` skipped as unreadable. Every replica of a partition
    skips the same records, so a partition counts its largest report, not their sum."""
    return sum(max((r.skipped for r in rs), default=0) for rs in version.replicas.values())


def _rt_lost(version: Version) -> int:
    """Real-time records ``version`` never applied because retention deleted them first;
    per partition its largest report (replicas of a partition that found the same log
    lost the same records), summed."""
    return sum(max((r.rt_lost for r in rs), default=0) for rs in version.replicas.values())
