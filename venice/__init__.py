"""Venice: a derived-data key-value serving platform.

The public SDK is :class:`Client` and :class:`AsyncClient` (through the router, or
``direct=True``), :class:`DaVinciClient` (the store held locally),
:class:`ChangeConsumer` (change capture) and :class:`Producer` and
:class:`AsyncProducer` (nearline writes to hybrid stores); every error is a
:class:`VeniceError` (the tree is drawn in :mod:`venice.errors`). Importing this package
pulls in neither server code, LMDB nor FastAPI; embedded clients, change capture and the
producers (Avro, pub-sub clients) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from venice.client import AsyncClient, Client
from venice.errors import *  # noqa: F403 - the error tree is public API
from venice.errors import __all__ as _errors_all
from venice.partitioner import partition_for

if TYPE_CHECKING:
    from venice.changes import AsyncChangeConsumer, Change, ChangeConsumer, VersionSwap
    from venice.davinci import AsyncDaVinciClient, DaVinciClient
    from venice.producer import AsyncProducer, Producer

__all__ = [
    "AsyncChangeConsumer",
    "AsyncClient",
    "AsyncDaVinciClient",
    "AsyncProducer",
    "Change",
    "ChangeConsumer",
    "Client",
    "DaVinciClient",
    "Producer",
    "VersionSwap",
    "partition_for",
    *_errors_all,
]

_LAZY = {
    "DaVinciClient": "venice.davinci",
    "AsyncDaVinciClient": "venice.davinci",
    "ChangeConsumer": "venice.changes",
    "AsyncChangeConsumer": "venice.changes",
    "Change": "venice.changes",
    "VersionSwap": "venice.changes",
    "Producer": "venice.producer",
    "AsyncProducer": "venice.producer",
}


def __getattr__(name: str) -> Any:
    """Embedded clients (LMDB), change capture (codecs) and producers (pub-sub clients):
    imported on first use, not with the SDK."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'venice' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
