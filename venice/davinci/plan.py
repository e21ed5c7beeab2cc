"""Which store-versions an embedded client hosts, decided without I/O.

A Da Vinci client is a storage server for one reader: it runs the same ingestion library
(:class:`venice.ingestion.IngestionHost`), so it needs the same input a server gets from
its heartbeat, :class:`~venice.protocol.Assignment` entries. It builds them itself from
the controller's store description (:class:`~venice.protocol.StoreDescription`):

* the current version, every version being pushed (STARTED), and ONLINE versions newer
  than the current one (a deferred swap): what the controller would assign a server
  holding every partition, minus the backups, which an embedded client does not keep;
* the version it serves now, until the version it should serve is complete locally: a
  new version is swapped in only once every subscribed partition is ready here, so reads
  never see a half-ingested version. While it waits, the version it serves keeps
  applying real-time writes (a server's backup would stop), so reads stay fresh.

``consume_rt`` and the real-time start offsets are the controller's (its rule when the
description does not say). A rollback needs no rule of its own: the backup it makes
current is hosted again (ingested from its version topic) and swapped in when ready.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from venice.errors import RequestError
from venice.protocol import Assignment, StoreDescription, VersionStatus

__all__ = ["Plan", "Target", "check_partitions", "plan_hosting"]


@dataclass(frozen=True, slots=True)
class Target:
    """A store-version of one store incarnation."""

    version: int
    incarnation: str


@dataclass(frozen=True, slots=True)
class Plan:
    assignments: tuple[Assignment, ...]
    """What the ingestion host must host, newest first."""
    target: Target | None
    """The version to serve (the controller's current one); ``None`` before the first push."""


def check_partitions(partitions: Iterable[int] | None, total: int) -> tuple[int, ...]:
    """The subscribed partitions (all when ``None``); RequestError naming a bad one."""
    if partitions is None:
        return tuple(range(total))
    chosen = tuple(sorted(set(partitions)))
    if not chosen:
        raise RequestError("partitions: subscribe to at least one partition (or pass None for all)")
    for partition in chosen:
        if isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < total:
            raise RequestError(f"partitions: {partition!r} is not a partition of this store (it has {total}: 0..{total - 1})")
    return chosen


def plan_hosting(
    description: StoreDescription, partitions: Sequence[int] | None, serving: Assignment | None = None
) -> Plan:
    """The assignments to host and the version to serve, given the controller's
    description, the subscribed ``partitions`` (``None``: all) and the assignment of the
    version served now (``None``: nothing yet)."""
    chosen = check_partitions(partitions, description.partitions)
    current = description.current_version
    wanted: dict[int, Assignment] = {}
    for version in description.versions:
        live = version.status is VersionStatus.STARTED or (
            version.status is VersionStatus.ONLINE and (current is None or version.version >= current)
        )
        if live:
            wanted[version.version] = description.assignment(version, chosen)
    target = Target(current, description.incarnation) if current is not None else None
    if serving is not None:
        same_store = serving.incarnation == description.incarnation
        if same_store and serving.version in wanted:
            if target is not None and serving.version != target.version and description.hybrid is not None:
                # Served until its successor is complete here: it keeps applying writes.
                wanted[serving.version] = replace(wanted[serving.version], consume_rt=True)
        else:
            # No longer the controller's concern (a backup, retired, or of a deleted
            # incarnation of the store): hosted as it was until the swap.
            described = description.version(serving.version) if same_store else None
            consume = same_store and description.hybrid is not None
            if described is not None:
                kept = description.assignment(described, serving.partitions, consume_rt=consume)
            else:
                kept = replace(serving, consume_rt=consume and serving.hybrid is not None)
            if same_store:
                wanted[serving.version] = kept
            else:
                return Plan((*sorted(wanted.values(), key=lambda a: -a.version), kept), target)
    return Plan(tuple(sorted(wanted.values(), key=lambda a: -a.version)), target)
