"""The Python SDK: read a store through the router, or straight from storage servers.

    with venice.Client("http://127.0.0.1:7777") as client:
        client.get("members", 42)                # the value, or None when missing
        client.batch_get("members", [1, 2, 3])   # values aligned with the keys

    with venice.Client("http://127.0.0.1:7777", direct=True) as client:
        client.get("members", 42)                # one hop: this process routes itself

With ``direct=True`` reads skip the router: :mod:`venice.direct` keeps the router's
routing table, partitions keys and reads replicas itself, and hands a read back to the
router only when no replica answers (the router's answer is then the one returned).

:class:`Client` and :class:`AsyncClient` are thin twins over :class:`BaseClient`,
which holds all the logic that does no I/O (URLs, key encoding, answer decoding,
error mapping) so both behave the same. httpx is wrapped here: its exceptions come
out as :class:`venice.errors.TransportError` or
:class:`venice.errors.DeadlineExceededError`. This module must stay light: it does
not import the server, router or controller code, FastAPI, LMDB or fastavro.

:meth:`Client.get` is the one call applications make in a tight loop, and httpx
spends ~200 µs of CPU on each; for a router with no proxy it goes over
:class:`_KeepAlivePool`, a few dozen lines of blocking keep-alive HTTP/1.1 on sockets
(TLS-wrapped and verified for ``https://``), and maps its failures to the same errors (with an httpx exception of the
same kind as ``__cause__``). Everything else goes through httpx.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import orjson

from venice.auth import TOKEN_ENV
from venice.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidKeyError,
    KeyNotFoundError,
    TransportError,
    error_from_response,
)
from venice.tls import client_context

__all__ = ["DEFAULT_TIMEOUT_S", "AsyncClient", "BaseClient", "Client", "encode_key"]

DEFAULT_TIMEOUT_S = 5.0
_JSON_HEADERS = {"content-type": "application/json"}


class BaseClient:
    """I/O-free half of the SDK: what to send and what an answer means."""

    def __init__(self, router_url: str, *, timeout: float = DEFAULT_TIMEOUT_S, token: str | None = None) -> None:
        self.router_url = router_url.rstrip("/")
        self.timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._token = token or None
        self._auth: dict[str, str] = {"authorization": f"Bearer {token}"} if token else {}
        """A reader token for private stores (default ``VENICE_TOKEN``), sent with every read."""

    def _get_url(self, store: str, key: Any, version: int | None) -> str:
        return self.router_url + self._get_path(store, key, version)

    def _get_path(self, store: str, key: Any, version: int | None) -> str:
        path = f"/storage/{quote(store, safe='')}/{encode_key(key)}"
        return path if version is None else f"{path}?version={int(version)}"

    def _batch_url(self, store: str, version: int | None = None) -> str:
        url = f"{self.router_url}/storage/{quote(store, safe='')}"
        return url if version is None else f"{url}?version={int(version)}"

    @staticmethod
    def _batch_body(keys: Sequence[Any]) -> bytes:
        return orjson.dumps({"keys": list(keys)})

    def _compute_url(self, store: str, version: int | None) -> str:
        url = f"{self.router_url}/compute/{quote(store, safe='')}"
        return url if version is None else f"{url}?version={int(version)}"

    @staticmethod
    def _compute_spec(project: Sequence[str], compute: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"project": list(project), "compute": [dict(op) for op in compute]}

    @staticmethod
    def _compute_body(keys: Sequence[Any], spec: Mapping[str, Any]) -> bytes:
        return orjson.dumps({"keys": list(keys), **spec})

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
    """Blocking client. Thread-safe; reuse one instance (it pools connections).

    ``direct=True``: read from storage servers without the router hop (see the module
    docstring); ``hedge_after_s`` then fixes the hedge delay (default: from observed
    latency) and ``direct_deadline_s`` is how long a direct read may take, failover
    included, before the router is asked instead.
    """

    def __init__(
        self,
        router_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        direct: bool = False,
        hedge_after_s: float | None = None,
        direct_deadline_s: float = 2.0,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(router_url, timeout=timeout, token=token)
        self._http = httpx.Client(timeout=timeout, headers=self._auth, verify=client_context(ca_file))
        self._fast = _KeepAlivePool.for_url(self.router_url, timeout, self._auth.get("authorization"), client_context(ca_file))
        self._direct: Any = None
        self._fallback: type[Exception] = _NeverRaised
        if direct:
            from venice import direct as _direct  # routing, codecs and fastavro: only when asked for

            self._direct = _direct.DirectReader(
                self.router_url, hedge_after_s=hedge_after_s, deadline_s=direct_deadline_s, token=self._token, ca_file=ca_file
            )
            self._fallback = _direct.Fallback

    def get(self, store: str, key: Any, *, version: int | None = None) -> Any:
        """The value stored under ``key`` (dict or primitive), or ``None`` when missing."""
        if self._direct is not None:
            try:
                return self._direct.get(store, key, version)
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        if self._fast is not None:
            status, content = self._fast.get(self._get_path(store, key, version))
            return self._get_result(status, content)
        with _mapped_errors():
            response = self._http.get(self._get_url(store, key, version))
        return self._get_result(response.status_code, response.content)

    def batch_get(self, store: str, keys: Sequence[Any], *, version: int | None = None) -> list[Any]:
        """Values of ``keys`` in the same order, ``None`` for each missing key."""
        if self._direct is not None:
            try:
                return list(self._direct.batch_get(store, keys, version))
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        with _mapped_errors():
            response = self._http.post(self._batch_url(store, version), content=self._batch_body(keys), headers=_JSON_HEADERS)
        return self._batch_result(response.status_code, response.content, len(keys))

    def compute(
        self,
        store: str,
        keys: Sequence[Any],
        *,
        project: Sequence[str] = (),
        compute: Sequence[Mapping[str, Any]] = (),
        version: int | None = None,
    ) -> list[Any]:
        """Read compute, run on the storage servers: per key (in order; ``None`` when
        missing) a dict of the ``project`` fields and one entry per ``compute`` op, e.g.
        ``{"op": "dot_product", "field": "embedding", "vector": [...], "as": "score"}``
        (docs/clients.md lists the ops)."""
        spec = self._compute_spec(project, compute)
        if self._direct is not None:
            try:
                return list(self._direct.compute(store, keys, spec, version))
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        with _mapped_errors():
            response = self._http.post(self._compute_url(store, version), content=self._compute_body(keys, spec), headers=_JSON_HEADERS)
        return self._batch_result(response.status_code, response.content, len(keys))

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        if self._fast is not None:
            self._fast.close()
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncClient(BaseClient):
    """asyncio twin of :class:`Client`."""

    def __init__(
        self,
        router_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        direct: bool = False,
        hedge_after_s: float | None = None,
        direct_deadline_s: float = 2.0,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(router_url, timeout=timeout, token=token)
        self._http = httpx.AsyncClient(timeout=timeout, headers=self._auth, verify=client_context(ca_file))
        self._direct: Any = None
        self._fallback: type[Exception] = _NeverRaised
        if direct:
            from venice import direct as _direct

            self._direct = _direct.AsyncDirectReader(
                self.router_url, hedge_after_s=hedge_after_s, deadline_s=direct_deadline_s, token=self._token, ca_file=ca_file
            )
            self._fallback = _direct.Fallback

    async def get(self, store: str, key: Any, *, version: int | None = None) -> Any:
        """The value stored under ``key`` (dict or primitive), or ``None`` when missing."""
        if self._direct is not None:
            try:
                return await self._direct.get(store, key, version)
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        with _mapped_errors():
            response = await self._http.get(self._get_url(store, key, version))
        return self._get_result(response.status_code, response.content)

    async def batch_get(self, store: str, keys: Sequence[Any], *, version: int | None = None) -> list[Any]:
        """Values of ``keys`` in the same order, ``None`` for each missing key."""
        if self._direct is not None:
            try:
                return list(await self._direct.batch_get(store, keys, version))
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        with _mapped_errors():
            response = await self._http.post(
                self._batch_url(store, version), content=self._batch_body(keys), headers=_JSON_HEADERS
            )
        return self._batch_result(response.status_code, response.content, len(keys))

    async def compute(
        self,
        store: str,
        keys: Sequence[Any],
        *,
        project: Sequence[str] = (),
        compute: Sequence[Mapping[str, Any]] = (),
        version: int | None = None,
    ) -> list[Any]:
        """Read compute on the storage servers (see :meth:`Client.compute`)."""
        spec = self._compute_spec(project, compute)
        if self._direct is not None:
            try:
                return list(await self._direct.compute(store, keys, spec, version))
            except self._fallback as fallback:
                version = version if version is not None else fallback.version  # type: ignore[attr-defined]
        with _mapped_errors():
            response = await self._http.post(
                self._compute_url(store, version), content=self._compute_body(keys, spec), headers=_JSON_HEADERS
            )
        return self._batch_result(response.status_code, response.content, len(keys))

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.aclose()
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


class _KeepAlivePool:
    """Blocking keep-alive HTTP/1.1 GETs to one ``http(s)://host:port``, safe across threads.

    Each call borrows an idle socket (or opens one), sends one request and reads one
    answer. A kept-alive socket the router closed meanwhile fails before any answer
    byte arrives; then the GET (a read, safe to repeat) is sent once more on a new
    socket. Connect errors and timeouts raise TransportError / DeadlineExceededError
    with an ``httpx.ConnectError`` / ``httpx.ReadTimeout`` cause, like the httpx path.
    """

    MAX_IDLE = 32

    def __init__(
        self, host: str, port: int, netloc: str, timeout: float, authorization: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address = (host, port)
        self._ssl = ssl_context
        """``https://``: every socket is wrapped in TLS, verified with this context."""
        self._timeout = timeout
        auth = b"" if authorization is None else b"Authorization: " + authorization.encode("latin-1") + b"\r\n"
        self._head = b" HTTP/1.1\r\nHost: " + netloc.encode("idna") + b"\r\nAccept: */*\r\n" + auth + b"\r\n"
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def for_url(
        cls, url: str, timeout: float, authorization: str | None = None, ssl_context: ssl.SSLContext | None = None
    ) -> _KeepAlivePool | None:
        """A pool for an http(s) URL that no proxy setting applies to, else ``None``."""
        import urllib.request  # only here: it pulls in http.client and email

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/") or parts.query:
            return None
        proxies = urllib.request.getproxies()
        if (parts.scheme in proxies or "all" in proxies) and not urllib.request.proxy_bypass(parts.hostname):
            return None
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        return cls(parts.hostname, port, parts.netloc, timeout, authorization, (ssl_context or client_context()) if tls else None)

    def get(self, path: str) -> tuple[int, bytes]:
        request = b"GET " + path.encode("ascii") + self._head
        with self._lock:
            sock = self._idle.pop() if self._idle else None
        if sock is not None:
            try:
                return self._exchange(sock, request)
            except _StaleConnection:
                pass  # closed by the router while idle: the request never arrived, send it again
        try:
            return self._exchange(self._connect(), request)
        except _StaleConnection:
            cause = httpx.RemoteProtocolError("Server disconnected without sending a response.")
            raise TransportError("the router closed the connection without answering") from cause

    def _connect(self) -> socket.socket:
        if self._closed:
            raise TransportError("the client is closed")
        try:
            sock = socket.create_connection(self._address, timeout=self._timeout)
        except TimeoutError as exc:
            raise DeadlineExceededError(f"the router did not answer in time: connect to {self._address} timed out") from httpx.ConnectTimeout(str(exc))
        except OSError as exc:
            raise TransportError(f"cannot reach the router: {exc!r}") from httpx.ConnectError(str(exc))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._ssl is not None:
            try:
                sock = self._ssl.wrap_socket(sock, server_hostname=self._address[0])
            except TimeoutError as exc:
                sock.close()
                raise DeadlineExceededError(f"the router did not finish the TLS handshake in time: {exc!r}") from httpx.ConnectTimeout(str(exc))
            except OSError as exc:  # ssl.SSLError (a certificate that does not verify) is one
                sock.close()
                raise TransportError(f"cannot reach the router: {exc!r}") from httpx.ConnectError(str(exc))
        return sock

    def _exchange(self, sock: socket.socket, request: bytes) -> tuple[int, bytes]:
        got_bytes = False
        try:
            sock.sendall(request)
            data = sock.recv(65536)
            if not data:
                raise _StaleConnection()
            got_bytes = True
            status, body, keep_alive = _read_answer(sock, data)
        except _StaleConnection:
            sock.close()
            raise
        except TimeoutError as exc:
            sock.close()
            raise DeadlineExceededError(f"the router did not answer in time: {exc!r}") from httpx.ReadTimeout(str(exc))
        except OSError as exc:
            sock.close()
            if not got_bytes and isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError)):
                raise _StaleConnection() from exc
            raise TransportError(f"cannot reach the router: {exc!r}") from httpx.ReadError(str(exc))
        except BaseException:
            sock.close()
            raise
        if keep_alive and not self._closed:
            with self._lock:
                if len(self._idle) < self.MAX_IDLE:
                    self._idle.append(sock)
                    return status, body
        sock.close()
        return status, body

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close()


class _NeverRaised(Exception):
    """Stands for the direct reader's fallback signal when there is no direct reader."""


class _StaleConnection(Exception):
    """A kept-alive socket turned out closed before any answer byte came back."""


def _read_answer(sock: socket.socket, data: bytes) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one HTTP/1.1 answer whose first bytes are ``data``."""
    end = data.find(b"\r\n\r\n")
    while end < 0:
        more = sock.recv(65536)
        if not more:
            raise OSError("the router closed the connection inside the answer's headers")
        data += more
        end = data.find(b"\r\n\r\n")
    lines = data[:end].split(b"\r\n")
    try:
        version, code = lines[0].split(b" ", 2)[:2]
        status = int(code)
    except ValueError:
        raise OSError(f"the router sent an invalid status line {lines[0][:100]!r}") from None
    length = -1
    chunked = False
    keep_alive = version == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.strip().lower()
            keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
    body = data[end + 4 :]
    if chunked:
        return status, _read_chunked(sock, body), keep_alive
    if length < 0:  # no length: the body runs to the end of the connection
        while more := sock.recv(65536):
            body += more
        return status, body, False
    while len(body) < length:
        more = sock.recv(max(65536, length - len(body)))
        if not more:
            raise OSError("the router closed the connection inside the answer's body")
        body += more
    return status, body[:length], keep_alive


def _read_chunked(sock: socket.socket, data: bytes) -> bytes:
    parts: list[bytes] = []
    while True:
        while (line_end := data.find(b"\r\n")) < 0:
            data += _recv_more(sock)
        size = int(data[:line_end].split(b";", 1)[0], 16)
        data = data[line_end + 2 :]
        if size == 0:
            while not (data.startswith(b"\r\n") or b"\r\n\r\n" in data):
                data += _recv_more(sock)
            return b"".join(parts)
        while len(data) < size + 2:
            data += _recv_more(sock)
        parts.append(data[:size])
        data = data[size + 2 :]


def _recv_more(sock: socket.socket) -> bytes:
    more = sock.recv(65536)
    if not more:
        raise OSError("the router closed the connection inside a chunked answer")
    return more


def _loads(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise InternalError(f"router sent invalid JSON: {exc}") from exc
