"""Who may call which controller endpoint: one table, checked before anything else runs.

:class:`AuthMiddleware` wraps the FastAPI app: it classifies each request by method and
path (:data:`RULES`), decides with :class:`venice.auth.AuthPolicy` and answers 401 / 403
in the platform's error shape before the body is read or a handler runs, so a refused
request changes nothing. A path no rule names needs the admin role: a route added later
without a rule is closed, not open. The principal is left in ``scope["state"]`` for the
handlers that filter by it (``GET /stores``).

:class:`ControllerAuth` holds the cluster secret and the token file, read again when it
changes (at most once a second), so ``venice token create`` takes effect without a
restart; a file that no longer parses keeps the last good table and logs an error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from venice.auth import Action, AuthPolicy, Principal, TokensFile, TokenTable, bearer
from venice.errors import VeniceError, error_body

__all__ = ["RULES", "AuthMiddleware", "ControllerAuth", "rule_for"]

log = logging.getLogger("venice.controller")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NAME = r"(?P<store>[^/]+)"
_N = r"[^/]+"
RULES: list[tuple[str, re.Pattern[str], Action | None]] = [
    (method, re.compile(pattern), action)
    for method, pattern, action in [
        ("GET", r"/health", None),
        ("GET", r"/cluster", None),
        ("GET", r"/(docs|redoc|openapi\.json)", None),
        ("GET", r"/(dashboard/[^/]+)?", None),  # the dashboard's static files: no data
        ("GET", r"/metrics", Action.MONITOR),
        ("GET", r"/overview", Action.MONITOR),
        ("GET", r"/stores", None),  # filtered: private stores only for their readers
        ("GET", rf"/stores/{_NAME}(/versions(/{_N})?)?", Action.READ),
        ("POST", r"/stores", Action.ADMIN),
        ("PATCH", rf"/stores/{_NAME}", Action.ADMIN),
        ("DELETE", rf"/stores/{_NAME}", Action.ADMIN),
        ("POST", rf"/stores/{_NAME}/rollback", Action.ADMIN),
        ("POST", rf"/stores/{_NAME}/versions/{_N}/(swap|kill)", Action.ADMIN),
        ("POST", rf"/stores/{_NAME}/value-schemas", Action.WRITE),
        ("POST", rf"/stores/{_NAME}/versions", Action.WRITE),
        ("POST", rf"/stores/{_NAME}/versions/{_N}/(end|error)", Action.WRITE),
        ("POST", rf"/servers/{_N}/heartbeat", Action.CLUSTER),
        ("DELETE", rf"/servers/{_N}", Action.ADMIN),
        ("GET", r"/routing", Action.MEMBER),
        ("GET", r"/auth/tokens", Action.CLUSTER),
    ]
]
"""(method, path, what the caller must be allowed) in order; ``None``: anyone."""


def rule_for(method: str, path: str) -> tuple[Action | None, str | None]:
    """The action a request needs and the store it is about; admin for anything unlisted."""
    for rule_method, pattern, action in RULES:
        if rule_method == method or (method == "HEAD" and rule_method == "GET"):
            match = pattern.fullmatch(path)
            if match is not None:
                return action, match.groupdict().get("store")
    return Action.ADMIN, None


class ControllerAuth:
    """The controller's secret and tokens; :meth:`policy` is the current decision maker."""

    def __init__(
        self,
        secret: str | None = None,
        tokens_file: Path | None = None,
        *,
        reload_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret = secret
        self.file = TokensFile(tokens_file) if tokens_file is not None else None
        self._reload_every_s = reload_every_s
        self._clock = clock
        self._checked_at = clock()
        tokens = self.file.load() if self.file is not None else None  # a bad file stops the start
        self._policy = AuthPolicy(secret, tokens)
        self.generation = 1
        """Grows whenever the token table changes: routers poll ``/auth/tokens`` by it."""

    def policy(self) -> AuthPolicy:
        if self.file is not None and self._clock() - self._checked_at >= self._reload_every_s:
            self._checked_at = self._clock()
            try:
                tokens = self.file.reload_if_changed()
            except VeniceError as exc:
                log.error("keeping the last good token table: %s", exc.message)
                tokens = None
            if tokens is not None:
                self._policy = AuthPolicy(self.secret, tokens)
                self.generation += 1
                log.info("token file %s read again: %d token(s)", self.file.path, len(tokens))
        return self._policy

    def table(self) -> TokenTable:
        return self.policy().tokens or TokenTable()

    def warnings(self) -> list[str]:
        """What a start without a secret or tokens leaves open, for a loud log line."""
        found = []
        if self.secret is None:
            found.append(
                "NO CLUSTER SECRET: anyone who can reach the controller can register storage servers and read the "
                "routing table (give --cluster-secret-file or VENICE_CLUSTER_SECRET)"
            )
        if self.file is None:
            found.append(
                "NO TOKEN FILE: anyone who can reach the controller can create, delete and push stores "
                "(give --tokens-file; make tokens with venice token create)"
            )
        return found


class AuthMiddleware:
    """Answers 401/403 before the wrapped app sees a request it may not make."""

    def __init__(self, app: ASGIApp, auth: ControllerAuth, private: Callable[[str], bool]) -> None:
        self.app = app
        self.auth = auth
        self._private = private
        """Whether a store (by name) is private; ``False`` for one that does not exist."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            principal = self._check(scope)
        except VeniceError as exc:
            body = error_body(exc)
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *exc.headers()]
            await send({"type": "http.response.start", "status": exc.http_status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return None
        scope.setdefault("state", {})["principal"] = principal
        return await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> Principal:
        header = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"authorization":
                header = value
                break
        credential = bearer(header)
        action, store = rule_for(scope["method"], scope["path"])
        policy = self.auth.policy()
        if action is None:
            return policy.principal(credential)
        private = store is not None and self._private(store)
        return policy.check(credential, action, store, private=private)
