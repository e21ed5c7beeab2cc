"""Raw-socket HTTP/1.1 helpers for tests that must see the exact bytes a server sends.

Real clients (httpx, http.client, curl) hide framing mistakes or fail in ways that do
not say which byte was wrong; these helpers read what arrives and nothing more. Every
read is bounded by the socket timeout, so a server that never answers fails the test
with ``TimeoutError`` instead of hanging it.
"""

from __future__ import annotations

import socket

__all__ = ["connect", "header", "read_response", "read_until", "read_until_close"]


def connect(url: str, *, timeout: float = 5.0) -> socket.socket:
    """A connected socket to ``http://host:port``."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return socket.create_connection((host, int(port)), timeout=timeout)


def read_until(sock: socket.socket, marker: bytes, buffer: bytearray | None = None) -> bytes:
    """Bytes up to and including ``marker``; anything read past it stays in ``buffer``."""
    data = buffer if buffer is not None else bytearray()
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}; got {bytes(data)!r}")
        data += chunk
    end = data.index(marker) + len(marker)
    found = bytes(data[:end])
    del data[:end]
    return found


def read_until_close(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_response(sock: socket.socket, buffer: bytearray | None = None, *, head_only: bool = False) -> tuple[bytes, bytes]:
    """One answer framed by ``content-length`` or chunked: ``(head, body)`` (the body
    de-chunked). ``head_only``: an answer that has no body whatever its headers say (to
    HEAD, or 1xx/204/304)."""
    data = buffer if buffer is not None else bytearray()
    head = read_until(sock, b"\r\n\r\n", data)
    if head_only:
        return head, b""
    if (header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        body = bytearray()
        while True:
            size = int(read_until(sock, b"\r\n", data)[:-2].split(b";")[0], 16)
            _fill(sock, data, size + 2)
            body += data[:size]
            del data[: size + 2]
            if size == 0:
                return head, bytes(body)
    length = int(header(head, b"content-length") or 0)
    _fill(sock, data, length)
    body_bytes = bytes(data[:length])
    del data[:length]
    return head, body_bytes


def _fill(sock: socket.socket, data: bytearray, size: int) -> None:
    while len(data) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        data += chunk


def header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` in a response head, or ``None``."""
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None
