"""The one client of the controller's HTTP API (docs/api.md), for every part that talks to it.

:class:`ControllerClient` (blocking) and :class:`AsyncControllerClient` (asyncio) are thin
twins over :class:`BaseControllerClient`, which builds every call and reads every answer
without doing I/O: both twins send the same requests and raise the same errors. httpx is
wrapped here: a transport failure is :class:`venice.errors.TransportError` (retriable), a
timeout :class:`venice.errors.DeadlineExceededError`, and an error answer the typed error
its JSON body names (:func:`venice.errors.error_from_response`).

    with ControllerClient("http://127.0.0.1:5050") as controller:
        controller.get_store("members")["current_version"]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from venice.auth import TOKEN_ENV
from venice.errors import (
    DeadlineExceededError,
    InternalError,
    TransportError,
    error_from_response,
)
from venice.protocol import Heartbeat, HeartbeatAnswer, RoutingTable
from venice.tls import client_context

__all__ = ["DEFAULT_TIMEOUT_S", "AsyncControllerClient", "BaseControllerClient", "Call", "ControllerClient", "ControllerPoller"]

DEFAULT_TIMEOUT_S = 30.0
MAX_LONG_POLL_S = 30.0
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the controller, built without I/O."""

    method: str
    path: str
    body: Any = None
    params: Mapping[str, str] | None = None
    timeout_s: float | None = None
    """Overrides the client's timeout (long polls wait longer)."""
    not_modified_ok: bool = False
    """A 304 answer is expected and means ``None``."""


def _q(name: str) -> str:
    return quote(name, safe="")


def _within(call: Call, timeout_s: float | None) -> Call:
    """``call`` with its own timeout (a caller with a deadline of its own), or as it is."""
    return call if timeout_s is None else replace(call, timeout_s=timeout_s)


class BaseControllerClient:
    """What to send for each controller call and what its answer means (no I/O)."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._auth = {"authorization": f"Bearer {token}"} if token else {}
        """``token``: a bearer token, or the cluster secret for the cluster's own parts
        (default: ``VENICE_TOKEN``); sent with every call."""

    # -- requests ------------------------------------------------------------------------
    @staticmethod
    def _health() -> Call:
        return Call("GET", "/health")

    @staticmethod
    def _cluster() -> Call:
        return Call("GET", "/cluster")

    @staticmethod
    def _overview() -> Call:
        return Call("GET", "/overview")

    @staticmethod
    def _list_stores() -> Call:
        return Call("GET", "/stores")

    @staticmethod
    def _get_store(store: str) -> Call:
        return Call("GET", f"/stores/{_q(store)}")

    @staticmethod
    def _create_store(description: Mapping[str, Any]) -> Call:
        return Call("POST", "/stores", dict(description))

    @staticmethod
    def _update_store(store: str, changes: Mapping[str, Any]) -> Call:
        return Call("PATCH", f"/stores/{_q(store)}", dict(changes))

    @staticmethod
    def _add_value_schema(store: str, schema: Any) -> Call:
        return Call("POST", f"/stores/{_q(store)}/value-schemas", {"schema": schema})

    @staticmethod
    def _delete_store(store: str) -> Call:
        return Call("DELETE", f"/stores/{_q(store)}")

    @staticmethod
    def _list_versions(store: str) -> Call:
        return Call("GET", f"/stores/{_q(store)}/versions")

    @staticmethod
    def _get_version(store: str, version: int) -> Call:
        return Call("GET", f"/stores/{_q(store)}/versions/{int(version)}")

    @staticmethod
    def _open_version(store: str, defer_swap: bool) -> Call:
        return Call("POST", f"/stores/{_q(store)}/versions", {"defer_swap": defer_swap})

    @staticmethod
    def _end_of_push(store: str, version: int, records: int) -> Call:
        return Call("POST", f"/stores/{_q(store)}/versions/{int(version)}/end", {"records": records})

    @staticmethod
    def _fail_version(store: str, version: int, reason: str) -> Call:
        return Call("POST", f"/stores/{_q(store)}/versions/{int(version)}/error", {"reason": reason[:2000]})

    @staticmethod
    def _swap(store: str, version: int) -> Call:
        return Call("POST", f"/stores/{_q(store)}/versions/{int(version)}/swap")

    @staticmethod
    def _rollback(store: str) -> Call:
        return Call("POST", f"/stores/{_q(store)}/rollback")

    @staticmethod
    def _kill(store: str, version: int) -> Call:
        return Call("POST", f"/stores/{_q(store)}/versions/{int(version)}/kill")

    @staticmethod
    def _heartbeat(server_id: str, heartbeat: Heartbeat) -> Call:
        return Call("POST", f"/servers/{_q(server_id)}/heartbeat", heartbeat.to_json())

    @staticmethod
    def _remove_server(server_id: str) -> Call:
        return Call("DELETE", f"/servers/{_q(server_id)}")

    @staticmethod
    def _tokens(generation: int | None) -> Call:
        params = None if generation is None else {"generation": str(generation)}
        return Call("GET", "/auth/tokens", params=params, not_modified_ok=True)

    @staticmethod
    def _routing(generation: int | None, wait_s: float) -> Call:
        if generation is None:
            return Call("GET", "/routing")
        wait_s = max(0.0, min(wait_s, MAX_LONG_POLL_S))
        return Call(
            "GET",
            "/routing",
            params={"generation": str(generation), "wait_s": f"{wait_s:g}"},
            timeout_s=wait_s + 5.0,
            not_modified_ok=True,
        )

    # -- answers -------------------------------------------------------------------------
    def _url(self, call: Call) -> str:
        return self.url + call.path

    def _timeout(self, call: Call) -> float:
        return call.timeout_s if call.timeout_s is not None else self.timeout_s

    def _request_kwargs(self, call: Call) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"timeout": self._timeout(call), "headers": dict(self._auth)}
        if call.body is not None:
            kwargs["content"] = orjson.dumps(call.body)
            kwargs["headers"].update(_JSON)
        if call.params:
            kwargs["params"] = dict(call.params)
        return kwargs

    def _answer(self, call: Call, status: int, content: bytes) -> Any:
        """The decoded JSON answer (``None`` for an expected 304); errors raise typed."""
        if status == 304 and call.not_modified_ok:
            return None
        if status >= 400:
            raise error_from_response(status, content)
        if not content:
            return {}
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise InternalError(f"controller {self.url} sent invalid JSON for {call.method} {call.path}: {exc}") from exc

    @staticmethod
    def _routing_answer(answer: Any) -> RoutingTable | None:
        return None if answer is None else RoutingTable.from_json(answer)


@contextmanager
def _mapped_errors(url: str, call: Call) -> Iterator[None]:
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DeadlineExceededError(f"the controller at {url} did not answer {call.method} {call.path} in time") from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach the controller at {url}: {exc or type(exc).__name__}") from exc


class ControllerClient(BaseControllerClient):
    """Blocking client of the controller. Thread-safe; reuse one (it keeps connections)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.Client | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(url, timeout_s=timeout_s, token=token)
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(trust_env=False, verify=client_context(ca_file))

    def call(self, call: Call) -> Any:
        with _mapped_errors(self.url, call):
            response = self._http.request(call.method, self._url(call), **self._request_kwargs(call))
        return self._answer(call, response.status_code, response.content)

    def health(self) -> dict[str, Any]:
        return dict(self.call(self._health()))

    def cluster(self) -> dict[str, Any]:
        return dict(self.call(self._cluster()))

    def overview(self) -> dict[str, Any]:
        """The whole cluster in one answer (``GET /overview``: servers, stores, replica maps, routers)."""
        return dict(self.call(self._overview()))

    def list_stores(self) -> list[dict[str, Any]]:
        return list(self.call(self._list_stores())["stores"])

    def get_store(self, store: str) -> dict[str, Any]:
        return dict(self.call(self._get_store(store)))

    def create_store(self, description: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.call(self._create_store(description)))

    def update_store(self, store: str, **changes: Any) -> dict[str, Any]:
        return dict(self.call(self._update_store(store, changes)))

    def delete_store(self, store: str) -> dict[str, Any]:
        return dict(self.call(self._delete_store(store)))

    def add_value_schema(self, store: str, schema: Any) -> dict[str, Any]:
        """Register ``schema`` as the store's next value schema: ``{"id": N, "schema": ...}``
        (an identical schema already registered answers with its id)."""
        return dict(self.call(self._add_value_schema(store, schema)))

    def list_versions(self, store: str) -> list[dict[str, Any]]:
        return list(self.call(self._list_versions(store))["versions"])

    def get_version(self, store: str, version: int, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(self.call(_within(self._get_version(store, version), timeout_s)))

    def open_version(self, store: str, *, defer_swap: bool = False) -> dict[str, Any]:
        return dict(self.call(self._open_version(store, defer_swap)))

    def end_of_push(self, store: str, version: int, records: int, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(self.call(_within(self._end_of_push(store, version, records), timeout_s)))

    def fail_version(self, store: str, version: int, reason: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(self.call(_within(self._fail_version(store, version, reason), timeout_s)))

    def swap(self, store: str, version: int) -> dict[str, Any]:
        return dict(self.call(self._swap(store, version)))

    def rollback(self, store: str) -> dict[str, Any]:
        return dict(self.call(self._rollback(store)))

    def kill(self, store: str, version: int) -> dict[str, Any]:
        return dict(self.call(self._kill(store, version)))

    def heartbeat(self, server_id: str, heartbeat: Heartbeat) -> HeartbeatAnswer:
        return HeartbeatAnswer.from_json(self.call(self._heartbeat(server_id, heartbeat)))

    def remove_server(self, server_id: str) -> dict[str, Any]:
        """Forget a server (admin): its replicas move, its id may register again at any URL."""
        return dict(self.call(self._remove_server(server_id)))

    def tokens(self, generation: int | None = None) -> dict[str, Any] | None:
        """The token table (cluster secret only); ``None`` when still at ``generation``."""
        answer = self.call(self._tokens(generation))
        return None if answer is None else dict(answer)

    def routing(self, generation: int | None = None, *, wait_s: float = 0.0) -> RoutingTable | None:
        """The routing table; with ``generation``, ``None`` when unchanged after ``wait_s``."""
        return self._routing_answer(self.call(self._routing(generation, wait_s)))

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> ControllerClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncControllerClient(BaseControllerClient):
    """asyncio twin of :class:`ControllerClient`."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(url, timeout_s=timeout_s, token=token)
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(trust_env=False, verify=client_context(ca_file))

    async def call(self, call: Call) -> Any:
        with _mapped_errors(self.url, call):
            response = await self._http.request(call.method, self._url(call), **self._request_kwargs(call))
        return self._answer(call, response.status_code, response.content)

    async def health(self) -> dict[str, Any]:
        return dict(await self.call(self._health()))

    async def cluster(self) -> dict[str, Any]:
        return dict(await self.call(self._cluster()))

    async def list_stores(self) -> list[dict[str, Any]]:
        return list((await self.call(self._list_stores()))["stores"])

    async def get_store(self, store: str) -> dict[str, Any]:
        return dict(await self.call(self._get_store(store)))

    async def create_store(self, description: Mapping[str, Any]) -> dict[str, Any]:
        return dict(await self.call(self._create_store(description)))

    async def update_store(self, store: str, **changes: Any) -> dict[str, Any]:
        return dict(await self.call(self._update_store(store, changes)))

    async def delete_store(self, store: str) -> dict[str, Any]:
        return dict(await self.call(self._delete_store(store)))

    async def add_value_schema(self, store: str, schema: Any) -> dict[str, Any]:
        """Register ``schema`` as the store's next value schema: ``{"id": N, "schema": ...}``
        (an identical schema already registered answers with its id)."""
        return dict(await self.call(self._add_value_schema(store, schema)))

    async def list_versions(self, store: str) -> list[dict[str, Any]]:
        return list((await self.call(self._list_versions(store)))["versions"])

    async def get_version(self, store: str, version: int, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(await self.call(_within(self._get_version(store, version), timeout_s)))

    async def open_version(self, store: str, *, defer_swap: bool = False) -> dict[str, Any]:
        return dict(await self.call(self._open_version(store, defer_swap)))

    async def end_of_push(self, store: str, version: int, records: int, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(await self.call(_within(self._end_of_push(store, version, records), timeout_s)))

    async def fail_version(self, store: str, version: int, reason: str, *, timeout_s: float | None = None) -> dict[str, Any]:
        return dict(await self.call(_within(self._fail_version(store, version, reason), timeout_s)))

    async def swap(self, store: str, version: int) -> dict[str, Any]:
        return dict(await self.call(self._swap(store, version)))

    async def rollback(self, store: str) -> dict[str, Any]:
        return dict(await self.call(self._rollback(store)))

    async def kill(self, store: str, version: int) -> dict[str, Any]:
        return dict(await self.call(self._kill(store, version)))

    async def heartbeat(self, server_id: str, heartbeat: Heartbeat) -> HeartbeatAnswer:
        return HeartbeatAnswer.from_json(await self.call(self._heartbeat(server_id, heartbeat)))

    async def remove_server(self, server_id: str) -> dict[str, Any]:
        """Forget a server (admin): its replicas move, its id may register again at any URL."""
        return dict(await self.call(self._remove_server(server_id)))

    async def tokens(self, generation: int | None = None) -> dict[str, Any] | None:
        """The token table (cluster secret only); ``None`` when still at ``generation``."""
        answer = await self.call(self._tokens(generation))
        return None if answer is None else dict(answer)

    async def routing(self, generation: int | None = None, *, wait_s: float = 0.0) -> RoutingTable | None:
        """The routing table; with ``generation``, ``None`` when unchanged after ``wait_s``."""
        return self._routing_answer(await self.call(self._routing(generation, wait_s)))

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncControllerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class ControllerPoller:
    """The life cycle of a part's background copy of something the controller serves (the
    routing table, the token table): one client, and one task that polls with it."""

    _client: AsyncControllerClient | None = None
    _task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        """Stop polling and close the client; the last copy stays readable."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
