"""A part's copy of the controller's token table, for deciding reads and writes itself.

Routers (and storage servers) hold the cluster secret, with which they fetch
``GET /auth/tokens`` (digests, roles and stores; never tokens) about once a second, by
generation (an unchanged table is a 304). Between fetches, and while the controller is
down, the last table decides. Until the first table arrived, a request that needs a token
gets a 503 (retriable) rather than a 401 it does not deserve.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from venice.auth import Action, AuthPolicy, Principal, Role, TokenTable
from venice.controller_client import AsyncControllerClient, ControllerPoller
from venice.errors import UnavailableError, VeniceError
from venice.supervise import supervised

__all__ = ["TokenCache"]

log = logging.getLogger("venice.auth")

REFRESH_INTERVAL_S = 1.0


class TokenCache(ControllerPoller):
    """The newest token table and the :class:`AuthPolicy` built on it."""

    def __init__(
        self,
        controller_url: str,
        secret: str | None,
        *,
        ca_file: str | os.PathLike[str] | None = None,
        refresh_interval_s: float = REFRESH_INTERVAL_S,
    ) -> None:
        self._url = controller_url
        self._secret = secret
        self._ca_file = ca_file
        self._interval_s = refresh_interval_s
        self._generation: int | None = None
        self.policy = AuthPolicy(secret)
        """Without a secret no table can be fetched: the part is open (and said so at start)."""

    @property
    def loaded(self) -> bool:
        return self._generation is not None

    async def start(self) -> None:
        if self._secret is None:
            return
        self._client = AsyncControllerClient(self._url, timeout_s=5.0, token=self._secret, ca_file=self._ca_file)
        with contextlib.suppress(VeniceError):
            await self.refresh()
        self._task = asyncio.get_running_loop().create_task(
            supervised("token table refresh", self._refresh_quietly, self._interval_s, log=log), name="token-refresh"
        )

    async def refresh(self) -> bool:
        """Fetch the table once; True when it changed."""
        assert self._client is not None
        answer = await self._client.tokens(self._generation)
        if answer is None:
            return False
        raw = answer.get("tokens")
        table = None if raw is None else TokenTable.from_json(raw)  # None: the controller has no token file
        self.policy = AuthPolicy(self._secret, table)
        self._generation = int(answer.get("generation", 0))
        log.info("token table generation %d: %s", self._generation, "no token file" if table is None else f"{len(table)} token(s)")
        return True

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except VeniceError as exc:
            log.debug("token table refresh failed (the last table stays): %s", exc)

    def check(self, credential: str | None, action: Action, store: str | None = None, *, private: bool = False) -> Principal:
        """As :meth:`AuthPolicy.check`; 503 while a token would need a table not fetched yet."""
        policy = self.policy
        needs = action is Action.WRITE or policy.required(action, private=private)
        if self._secret is not None and not self.loaded and needs:
            principal = policy.principal(credential) if credential is not None else None
            if principal is None or principal.role is not Role.CLUSTER:
                raise UnavailableError("this part has not fetched the token table from the controller yet; retry")
        return policy.check(credential, action, store, private=private)

    @property
    def writes_need_token(self) -> bool:
        """Whether a write must show a writer token here (also while the table is not
        fetched yet: then it is a 503, never an unchecked write)."""
        return self._secret is not None and (not self.loaded or self.policy.tokens is not None)
