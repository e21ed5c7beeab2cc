"""The Python SDK: read a store through the router.

    with venice.Client("http://127.0.0.1:7777") as client:
        client.get("members", 42)                # the value, or None when missing
        client.batch_get("members", [1, 2, 3])   # values aligned with the keys

:class:`Client` and :class:`AsyncClient` are thin twins over :class:`BaseClient`,
which holds all the logic that does no I/O (URLs, key encoding, answer decoding,
error mapping) so both behave the same. httpx is wrapped here: its exceptions come
out as :class:`venice.errors.TransportError` or
:class:`venice.errors.DeadlineExceededError`. This module must stay light: it does
not import the server, router or controller code, FastAPI, LMDB or fastavro.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from venice.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidKeyError,
    KeyNotFoundError,
    TransportError,
    error_from_response,
)

__all__ = ["DEFAULT_TIMEOUT_S", "AsyncClient", "BaseClient", "Client", "encode_key"]

DEFAULT_TIMEOUT_S = 5.0
_JSON_HEADERS = {"content-type": "application/json"}


class BaseClient:
    """I/O-free half of the SDK: what to send and what an answer means."""

    def __init__(self, router_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.router_url = router_url.rstrip("/")
        self.timeout = timeout

    def _get_url(self, store: str, key: Any, version: int | None) -> str:
        url = f"{self.router_url}/storage/{quote(store, safe='')}/{encode_key(key)}"
        return url if version is None else f"{url}?version={int(version)}"

    def _batch_url(self, store: str) -> str:
        return f"{self.router_url}/storage/{quote(store, safe='')}"

    @staticmethod
    def _batch_body(keys: Sequence[Any]) -> bytes:
        return orjson.dumps({"keys": list(keys)})

    @staticmethod
    def _get_result(status: int, content: bytes) -> Any:
        """The value of a single get; a missing key is ``None``, other errors raise."""
        if status == 200:
            return _loads(content)
        error = error_from_response(status, content)
        if isinstance(error, KeyNotFoundError):
            return None
        raise error

    @staticmethod
    def _batch_result(status: int, content: bytes, count: int) -> list[Any]:
        """Values aligned with the requested keys, ``None`` where missing."""
        if status != 200:
            raise error_from_response(status, content)
        try:
            results = _loads(content)["results"]
            values = [item["value"] if item["found"] else None for item in results]
        except (KeyError, TypeError) as exc:
            raise InternalError(f"router sent a malformed batch answer: {exc!r}") from exc
        if len(values) != count:
            raise InternalError(f"router answered {len(values)} results for {count} keys")
        return values


class Client(BaseClient):
    """Blocking client. Thread-safe; reuse one instance (it pools connections)."""

    def __init__(self, router_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(router_url, timeout=timeout)
        self._http = httpx.Client(timeout=timeout)

    def get(self, store: str, key: Any, *, version: int | None = None) -> Any:
        """The value stored under ``key`` (dict or primitive), or ``None`` when missing."""
        with _mapped_errors():
            response = self._http.get(self._get_url(store, key, version))
        return self._get_result(response.status_code, response.content)

    def batch_get(self, store: str, keys: Sequence[Any]) -> list[Any]:
        """Values of ``keys`` in the same order, ``None`` for each missing key."""
        with _mapped_errors():
            response = self._http.post(self._batch_url(store), content=self._batch_body(keys), headers=_JSON_HEADERS)
        return self._batch_result(response.status_code, response.content, len(keys))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(BaseClient):
    """asyncio twin of :class:`Client`."""

    def __init__(self, router_url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(router_url, timeout=timeout)
        self._http = httpx.AsyncClient(timeout=timeout)

    async def get(self, store: str, key: Any, *, version: int | None = None) -> Any:
        """The value stored under ``key`` (dict or primitive), or ``None`` when missing."""
        with _mapped_errors():
            response = await self._http.get(self._get_url(store, key, version))
        return self._get_result(response.status_code, response.content)

    async def batch_get(self, store: str, keys: Sequence[Any]) -> list[Any]:
        """Values of ``keys`` in the same order, ``None`` for each missing key."""
        with _mapped_errors():
            response = await self._http.post(
                self._batch_url(store), content=self._batch_body(keys), headers=_JSON_HEADERS
            )
        return self._batch_result(response.status_code, response.content, len(keys))

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def encode_key(key: Any) -> str:
    """A key as one URL path segment; the router parses it with the store's key schema.

    Booleans and numbers are written as text, strings and bytes percent-encoded
    (``/`` included), records and other complex keys as JSON.
    """
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, (int, float)):
        return repr(key)
    if isinstance(key, (str, bytes)):
        return quote(key, safe="")
    if isinstance(key, (dict, list)):
        return quote(orjson.dumps(key), safe="")
    raise InvalidKeyError(f"unsupported key type {type(key).__name__}")


@contextmanager
def _mapped_errors() -> Iterator[None]:
    """Re-raise httpx's errors as the platform's own."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise DeadlineExceededError(f"the router did not answer in time: {exc!r}") from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"cannot reach the router: {exc!r}") from exc


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InternalError(f"router sent invalid JSON: {exc}") from exc
