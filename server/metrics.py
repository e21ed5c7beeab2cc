"""A storage server's metrics (``GET /metrics``; every one is listed in docs/operations.md).

Reads answered are counted on the fast path by one attribute increment on the
:class:`~venice.ingestion.VersionStorage` the read already holds (``hits``, ``misses``,
``batches``, ``batch_keys``); reads refused (a replica not ready, a bad path) into a
:class:`venice.metrics.Counter`, off the fast path. Everything is read when a scrape
asks, like the rest: LMDB sizes and entries, records and bytes ingested, lag per
partition, poison pills, replica states. A store-version's counts go when it does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from server import workercounts
from venice.ingestion import IngestionHost
from venice.ingestion.version import PartitionState
from venice.metrics import OTHER, Counter, Registry, Sample
from venice.protocol import ReplicaStatus

__all__ = ["ServerMetrics"]

_PARTITION = ("store", "version", "partition")


class ServerMetrics:
    def __init__(self, host: IngestionHost, server_id: str) -> None:
        self.host = host
        self.with_workers = False
        """Whether read workers (``--workers``) answer reads too: their counts are added
        from their files (server/workercounts.py)."""
        self.registry = registry = Registry()
        self.refused = Counter("venice_server_reads_total", "", ("store", "version", "kind", "result"))
        registry.counter_callback(
            "venice_server_reads_total",
            "Reads, by store-version, kind (single, batch) and result (hit, miss, ok for a batch, or the error code).",
            ("store", "version", "kind", "result"),
            self._reads,
        )
        registry.counter_callback(
            "venice_server_batch_keys_total", "Keys asked for in batch reads, by store-version.", ("store", "version"), self._batch_keys
        )
        registry.gauge("venice_server_info", "This server's identity (always 1).", ("server_id",), lambda: [((server_id,), 1)])
        registry.gauge(
            "venice_server_hosted_versions", "Store-versions this server holds in LMDB.", (), lambda: [((), len(host.hosted))]
        )
        registry.gauge("venice_server_lmdb_bytes", "Bytes of LMDB pages in use, by store-version.", ("store", "version"), self._lmdb_bytes)
        registry.gauge(
            "venice_server_lmdb_entries", "Keys stored, by store-version and partition.", _PARTITION, self._lmdb_entries
        )
        registry.counter_callback(
            "venice_server_ingested_records_total",
            "Data records applied by this process since it started (version and real-time topics).",
            _PARTITION,
            lambda: self._partition_samples(lambda s: s.ingested),
        )
        registry.counter_callback(
            "venice_server_ingested_bytes_total",
            "Key and value bytes of the topic records this process read and processed since it started.",
            _PARTITION,
            lambda: self._partition_samples(lambda s: s.ingested_bytes),
        )
        registry.gauge(
            "venice_server_offset_lag",
            "Records of a topic not applied yet, by partition; topic is version (0 after end-of-push) or realtime (hybrid stores).",
            (*_PARTITION, "topic"),
            self._lags,
        )
        registry.counter_callback(
            "venice_server_poison_pills_total",
            "Real-time records skipped as unreadable (kept in the checkpoint, so across restarts).",
            _PARTITION,
            lambda: self._partition_samples(lambda s: s.checkpoint.skipped),
        )
        registry.counter_callback(
            "venice_server_rt_lost_records_total",
            "Real-time records never applied because retention deleted them first (kept in the checkpoint).",
            _PARTITION,
            lambda: self._partition_samples(lambda s: s.checkpoint.rt_lost),
        )
        registry.gauge(
            "venice_server_replica_status",
            "1 for the status each replica is in (STARTED, READY, ERROR), 0 for the others.",
            (*_PARTITION, "status"),
            self._statuses,
        )

    def count_refused(self, store: str, version: object, kind: str, code: str) -> None:
        """A read refused with error ``code``; the store-version is a label only when it is
        hosted here (anything a client makes up counts under ``_other``)."""
        if isinstance(version, int) and any(k[0] == store and k[1] == version for k in self.host.hosted):
            self.refused.inc((store, str(version), kind, code))
        else:
            self.refused.inc((OTHER, OTHER, kind, code))

    def render(self) -> bytes:
        return self.registry.render()

    # -- scrape-time samples --------------------------------------------------------------
    def _partitions(self) -> Iterator[tuple[tuple[str, str, str], PartitionState]]:
        for hosted in list(self.host.hosted.values()):
            a = hosted.assignment
            for partition, state in sorted(hosted.ingestion.partitions.items()):
                yield (a.store, str(a.version), str(partition)), state

    def _partition_samples(self, value: Callable[[PartitionState], int]) -> Iterator[Sample]:
        for labels, state in self._partitions():
            yield labels, float(value(state))

    def _reads(self) -> Iterator[Sample]:
        answered: dict[tuple[str, ...], float] = {}
        hosted_now = list(self.host.hosted.values())
        workers = list(workercounts.read_all(self.host.data_dir)) if self.with_workers else []
        for hosted in hosted_now:
            a, storage = hosted.assignment, hosted.storage
            labels = (a.store, str(a.version))
            hits, misses, batches = storage.hits, storage.misses, storage.batches
            for worker in workers:
                counted = worker.reads.get((a.store, a.version))
                if counted is not None:
                    hits, misses, batches = hits + counted[0], misses + counted[1], batches + counted[2]
            for kind, result, count in (("single", "hit", hits), ("single", "miss", misses), ("batch", "ok", batches)):
                key = (*labels, kind, result)
                answered[key] = answered.get(key, 0) + count
        yield from answered.items()
        refused = dict(self.refused.values)
        if workers:
            hosted_labels = {(h.assignment.store, str(h.assignment.version)) for h in hosted_now}
            for worker in workers:
                for (store, version, kind, code), count in worker.refused.items():
                    key = (store, version, kind, code) if (store, version) in hosted_labels else (OTHER, OTHER, kind, code)
                    refused[key] = refused.get(key, 0) + count
        yield from refused.items()

    def _batch_keys(self) -> Iterator[Sample]:
        workers = list(workercounts.read_all(self.host.data_dir)) if self.with_workers else []
        for hosted in list(self.host.hosted.values()):
            a = hosted.assignment
            keys = hosted.storage.batch_keys + sum(w.reads.get((a.store, a.version), (0, 0, 0, 0))[3] for w in workers)
            yield (a.store, str(a.version)), float(keys)

    def _lmdb_bytes(self) -> Iterator[Sample]:
        for hosted in list(self.host.hosted.values()):
            yield (hosted.assignment.store, str(hosted.assignment.version)), float(hosted.storage.size_bytes())

    def _lmdb_entries(self) -> Iterator[Sample]:
        for hosted in list(self.host.hosted.values()):
            a = hosted.assignment
            for partition in sorted(hosted.ingestion.partitions):
                yield (a.store, str(a.version), str(partition)), float(hosted.storage.count(partition))

    def _lags(self) -> Iterator[Sample]:
        for hosted in list(self.host.hosted.values()):
            a, ingestion = hosted.assignment, hosted.ingestion
            for partition, state in sorted(ingestion.partitions.items()):
                labels = (a.store, str(a.version), str(partition))
                version_lag = state.version_lag()
                if version_lag is not None:
                    yield (*labels, "version"), float(version_lag)
                if a.hybrid is not None:
                    rt_lag = state.rt_lag(ingestion.rt_epoch)
                    if rt_lag is not None:
                        yield (*labels, "realtime"), float(rt_lag)

    def _statuses(self) -> Iterator[Sample]:
        for labels, state in self._partitions():
            for status in ReplicaStatus:
                yield (*labels, status.value), 1.0 if state.status is status else 0.0
