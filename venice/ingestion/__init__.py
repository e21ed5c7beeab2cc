"""Ingestion: store-versions held in LMDB, fed from version and real-time topics.

What a storage server and an embedded (Da Vinci) client share (docs/architecture.md,
docs/hybrid.md):

* :class:`IngestionHost` hosts the store-versions it is assigned, keeps them fed and
  says which partitions are ready; :class:`HostingView` reads the same files from
  another process.
* :class:`VersionStorage`: one store-version's LMDB environment.
* :mod:`venice.ingestion.records`: the pure rules for applying records.

Importing this package loads LMDB; ``import venice`` does not import it.
"""

from __future__ import annotations

from venice.ingestion.host import HostedVersion, IngestionHost, SchemaRefresh, version_dir_name
from venice.ingestion.manifest import MANIFEST_NAME, HostedEntry, HostingView
from venice.ingestion.records import TOMBSTONE, Change, Checkpoint, SkipKind, decode_stored, encode_stored
from venice.ingestion.schemas import StoreCodecs
from venice.ingestion.storage import DEFAULT_CHANGELOG_SIZE, DEFAULT_MAP_SIZE, StorageError, VersionStorage
from venice.ingestion.version import PartitionState, VersionIngestion

__all__ = [
    "DEFAULT_CHANGELOG_SIZE",
    "DEFAULT_MAP_SIZE",
    "MANIFEST_NAME",
    "TOMBSTONE",
    "Change",
    "Checkpoint",
    "HostedEntry",
    "HostedVersion",
    "HostingView",
    "IngestionHost",
    "PartitionState",
    "SchemaRefresh",
    "SkipKind",
    "StorageError",
    "StoreCodecs",
    "VersionIngestion",
    "VersionStorage",
    "decode_stored",
    "encode_stored",
    "version_dir_name",
]
