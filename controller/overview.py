"""``GET /overview``: the whole cluster in one answer, for ``venice status`` and the dashboard.

What an operator looks at first: servers (live, draining or dead, heartbeat age, replicas
held), stores with their versions, each live version's replica map (partition x server,
with status, records applied and real-time lag) and push progress, and what the routers
report (read rate and p99, when the controller is told where routers are). Built from
the state without I/O; the routers' figures come in as an argument.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from controller.state import ClusterState, Store, Version
from venice.protocol import ReplicaStatus

__all__ = ["overview"]


def overview(
    state: ClusterState,
    now: float,
    routers: Sequence[dict[str, Any]] = (),
    topic_ends: Mapping[str, Mapping[int, int]] | None = None,
) -> dict[str, Any]:
    """``topic_ends``: end offsets of version topics (pushes under way), for each replica's lag."""
    live = set(state.live_servers(now))
    held: Counter[str] = Counter()
    stores = []
    for store in sorted(state.stores.values(), key=lambda s: s.name):
        versions = []
        for version in sorted(store.versions.values(), key=lambda v: v.number):
            versions.append(_version(store, version, held, (topic_ends or {}).get(version.topic)))
        stores.append(
            {
                "name": store.name,
                "current_version": store.current_version,
                "partitions": store.partitions,
                "replication_factor": store.replication_factor,
                "hybrid": store.hybrid is not None,
                "versions": versions,
            }
        )
    servers = [
        {
            "server_id": s.server_id,
            "url": s.url,
            "state": ("draining" if s.draining else "live") if s.server_id in live else "dead",
            "heartbeat_age_s": round(max(0.0, now - s.last_heartbeat), 3),
            "replicas": held.get(s.server_id, 0),
        }
        for s in sorted(state.servers.values(), key=lambda s: s.server_id)
    ]
    return {
        "generation": state.generation,
        "time": now,
        "dead_after_s": state.dead_after_s,
        "servers": servers,
        "stores": stores,
        "routers": list(routers),
    }


def _version(store: Store, version: Version, held: Counter[str], ends: Mapping[int, int] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "version": version.number,
        "status": version.status,
        "current": store.current_version == version.number,
        "reason": version.reason,
        "created_at": version.created_at,
        "online_at": version.online_at,
        "records": version.records,
    }
    if not version.is_live():
        return entry
    replicas: dict[str, list[dict[str, Any]]] = {}
    ready_partitions = replicated = 0
    for partition in sorted(version.replicas):
        rows = []
        for replica in version.replicas[partition]:
            held[replica.server] += 1
            rows.append(
                {
                    "server": replica.server,
                    "status": replica.status,
                    "records": replica.records,
                    "offset": replica.offset,
                    "lag": None if ends is None or partition not in ends else max(0, ends[partition] - replica.offset),
                    "rt_lag": replica.rt_lag,
                }
            )
        replicas[str(partition)] = rows
        ready = sum(1 for r in version.replicas[partition] if r.status == ReplicaStatus.READY.value)
        ready_partitions += ready >= 1
        replicated += ready >= store.replication_factor
    entry["replicas"] = replicas
    entry["progress"] = {
        "partitions": version.partitions,
        "ready_partitions": ready_partitions,
        "replicated_partitions": replicated,
        "records_applied": sum(max((r.records for r in rs), default=0) for rs in version.replicas.values()),
        "push_ended": version.records is not None,
    }
    return entry
