"""Venice: a derived-data key-value serving platform.

The public SDK is :class:`Client` and :class:`AsyncClient`; every error is a
:class:`VeniceError` (the tree is drawn in :mod:`venice.errors`). Importing this package
pulls in neither server code, LMDB nor FastAPI.
"""

from __future__ import annotations

from venice.client import AsyncClient, Client
from venice.errors import *  # noqa: F403 - the error tree is public API
from venice.errors import __all__ as _errors_all
from venice.partitioner import partition_for

__all__ = ["AsyncClient", "Client", "partition_for", *_errors_all]
