"""What the controller tells operators: events in its log and its metrics.

:class:`ClusterObserver` compares the cluster state with the last one it saw, after
every saved change and every maintenance round, and turns the difference into events:
a push opened, went ONLINE, failed or was killed; a version became current or was
retired; a replica moved to another server; a server went dead or came back. Each event
is one log line with ``store``/``version``/``partition``/``server`` as fields (see
:mod:`venice.logs`) and moves a counter. Gauges (stores, versions by status, servers,
heartbeat ages) are read from the state when a scrape asks.

Diffing rather than hooks in :mod:`controller.state`: the rules stay free of
observability code, and every path to a change (requests, heartbeats, maintenance, a
restored state) is seen the same way. No I/O; the clock is passed in.

After a start the first look only takes a baseline: counters count what this process
saw happen (Prometheus expects counters to restart from zero with the process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from controller.state import ClusterState
from venice.metrics import Registry, Sample
from venice.protocol import ReplicaStatus, VersionStatus

__all__ = ["ClusterObserver"]

log = logging.getLogger("venice.controller")

PUSH_DURATION_BUCKETS_S = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)

VersionKey = tuple[str, str, int]
"""``(store, incarnation, version)``: a store-version, never reused."""


@dataclass
class _Seen:
    versions: dict[VersionKey, str] = field(default_factory=dict)
    current: dict[tuple[str, str], int | None] = field(default_factory=dict)
    placements: dict[tuple[VersionKey, int], frozenset[str]] = field(default_factory=dict)
    live: frozenset[str] = frozenset()


def _look(state: ClusterState, now: float) -> _Seen:
    seen = _Seen(live=frozenset(state.live_servers(now)))
    for store in state.stores.values():
        seen.current[(store.name, store.incarnation)] = store.current_version
        for version in store.versions.values():
            key = (store.name, store.incarnation, version.number)
            seen.versions[key] = version.status
            if version.is_live():
                for partition, replicas in version.replicas.items():
                    seen.placements[(key, partition)] = frozenset(r.server for r in replicas)
    return seen


class ClusterObserver:
    def __init__(self, state_of: Callable[[], ClusterState]) -> None:
        self._seen: _Seen | None = None
        self._state_of = state_of
        self.registry = registry = Registry()
        self.pushes_started = registry.counter("venice_controller_pushes_started_total", "Versions opened (pushes started), by store.", ("store",))
        self.pushes_ended = registry.counter("venice_controller_pushes_ended_total", "Versions that went ONLINE, by store.", ("store",))
        self.pushes_failed = registry.counter(
            "venice_controller_pushes_failed_total", "Pushes that ended in ERROR or KILLED, by store and status.", ("store", "status")
        )
        self.push_duration = registry.histogram(
            "venice_controller_push_duration_seconds", "From opening a version to it going ONLINE.", (), PUSH_DURATION_BUCKETS_S
        )
        self.swaps = registry.counter("venice_controller_version_swaps_total", "A store's current version changed (push, swap, rollback), by store.", ("store",))
        self.reassignments = registry.counter(
            "venice_controller_reassignments_total", "Replicas placed on another server after a version was opened (failover, a server joining)."
        )
        self.deaths = registry.counter("venice_controller_server_deaths_total", "Servers that went silent past --dead-after.")
        registry.gauge("venice_controller_stores", "Stores.", (), lambda: [((), len(self.state.stores))])
        registry.gauge("venice_controller_versions", "Versions kept in metadata, by status.", ("status",), self._versions)
        registry.gauge("venice_controller_current_version", "The version reads go to, by store (absent: none yet).", ("store",), self._current)
        registry.gauge("venice_controller_replicas", "Replicas of live versions, by status.", ("status",), self._replicas)
        registry.gauge("venice_controller_servers", "Member servers, by state (live, draining, dead).", ("state",), self._servers)
        registry.gauge(
            "venice_controller_heartbeat_age_seconds", "Seconds since each member server's last heartbeat.", ("server",), self._ages
        )
        registry.gauge("venice_controller_routing_generation", "Generation of the routing table.", (), lambda: [((), self.state.generation)])
        self._clock_now = 0.0

    @property
    def state(self) -> ClusterState:
        return self._state_of()  # looked up per call: the controller replaces it when a save fails

    def render(self, now: float) -> bytes:
        """The metrics as of ``now``; looks first, so counters agree with the gauges."""
        self.observe(now)
        self._clock_now = now
        return self.registry.render()

    # -- events ------------------------------------------------------------------------
    def observe(self, now: float) -> None:
        """Compare with the last look; log and count what changed."""
        seen, before = _look(self.state, now), self._seen
        self._seen = seen
        if before is None:
            return
        self._versions_changed(before, seen, now)
        for (store, incarnation), current in seen.current.items():
            old = before.current.get((store, incarnation))
            if (store, incarnation) in before.current and current != old and current is not None:
                self.swaps.inc((store,))
                log.info("version %d of %s is current (was %s)", current, store, old, extra={"event": "version_swapped", "store": store, "version": current, "previous": old})
        for (key, partition), servers in seen.placements.items():
            old_servers = before.placements.get((key, partition))
            if old_servers is None:
                continue
            for server in sorted(servers - old_servers):
                self.reassignments.inc()
                log.info(
                    "%s v%d partition %d: replica placed on %s (left: %s)", key[0], key[2], partition, server, ",".join(sorted(old_servers - servers)) or "-",
                    extra={"event": "replica_moved", "store": key[0], "version": key[2], "partition": partition, "server": server},
                )
        for server in sorted(before.live - seen.live):
            if server in self.state.servers:
                self.deaths.inc()
                log.warning("server %s is dead: no heartbeat for %.1f s", server, now - self.state.servers[server].last_heartbeat, extra={"event": "server_dead", "server": server})
        for server in sorted(seen.live - before.live):
            log.info("server %s is live", server, extra={"event": "server_live", "server": server})

    def _versions_changed(self, before: _Seen, seen: _Seen, now: float) -> None:
        for key, status in seen.versions.items():
            old = before.versions.get(key)
            if status == old:
                continue
            store, _, number = key
            fields = {"store": store, "version": number}
            version = self.state.stores[store].versions[number]
            if old is None and status == VersionStatus.STARTED.value:
                self.pushes_started.inc((store,))
                log.info("push opened: %s v%d (%d partitions)", store, number, version.partitions, extra={"event": "push_opened", **fields})
            elif status == VersionStatus.ONLINE.value and old in (None, VersionStatus.STARTED.value):
                self.pushes_ended.inc((store,))
                took = (version.online_at or now) - version.created_at
                self.push_duration.observe(took)
                log.info("push ended: %s v%d is ONLINE after %.1f s", store, number, took, extra={"event": "push_ended", "duration_s": round(took, 3), **fields})
            elif status in (VersionStatus.ERROR.value, VersionStatus.KILLED.value):
                self.pushes_failed.inc((store, status))
                log.warning("push failed: %s v%d is %s: %s", store, number, status, version.reason, extra={"event": "push_failed", "status": status, **fields})
            elif status == VersionStatus.RETIRED.value:
                log.info("version retired: %s v%d", store, number, extra={"event": "version_retired", **fields})

    # -- gauges ------------------------------------------------------------------------
    def _versions(self) -> Iterator[Sample]:
        counts = dict.fromkeys((s.value for s in VersionStatus), 0)
        for store in self.state.stores.values():
            for version in store.versions.values():
                counts[version.status] = counts.get(version.status, 0) + 1
        for status, count in counts.items():
            yield (status,), float(count)

    def _current(self) -> Iterator[Sample]:
        for store in self.state.stores.values():
            if store.current_version is not None:
                yield (store.name,), float(store.current_version)

    def _replicas(self) -> Iterator[Sample]:
        counts = dict.fromkeys((s.value for s in ReplicaStatus), 0)
        for store in self.state.stores.values():
            for version in store.versions.values():
                if version.is_live():
                    for replicas in version.replicas.values():
                        for replica in replicas:
                            counts[replica.status] = counts.get(replica.status, 0) + 1
        for status, count in counts.items():
            yield (status,), float(count)

    def _servers(self) -> Iterator[Sample]:
        live = set(self.state.live_servers(self._clock_now))
        draining = sum(1 for s in live if self.state.servers[s].draining)
        yield ("live",), float(len(live) - draining)
        yield ("draining",), float(draining)
        yield ("dead",), float(len(self.state.servers) - len(live))

    def _ages(self) -> Iterator[Sample]:
        for server in self.state.servers.values():
            yield (server.server_id,), max(0.0, self._clock_now - server.last_heartbeat)
