"""Da Vinci: embedded clients holding a store in local LMDB (docs/clients.md).

:class:`DaVinciClient` (and its asyncio face :class:`AsyncDaVinciClient`) ingests a
store with the ingestion library storage servers run (:mod:`venice.ingestion`) and
serves reads in-process. Importing this package loads LMDB; ``import venice`` does not
(``venice.DaVinciClient`` imports it on first use).
"""

from __future__ import annotations

from venice.davinci.client import DEFAULT_START_TIMEOUT_S, AsyncDaVinciClient, DaVinciClient
from venice.davinci.plan import Plan, Target, plan_hosting

__all__ = ["DEFAULT_START_TIMEOUT_S", "AsyncDaVinciClient", "DaVinciClient", "Plan", "Target", "plan_hosting"]
