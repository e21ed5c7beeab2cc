"""TLS for every part: server contexts from ``--tls-cert``/``--tls-key``, client contexts
that verify by default (the system's CAs, or ``--ca-file`` / ``VENICE_CA_FILE``).

Python's :mod:`ssl` with the platform's defaults: TLS 1.2 or newer, certificates and host
names verified by clients. A file that cannot be read or is not a certificate (or a key
that does not match it) is a :class:`~venice.errors.ConfigError` at start, never a
handshake failure later.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache
from pathlib import Path

from venice.errors import ConfigError

__all__ = ["CA_FILE_ENV", "client_context", "server_context"]

CA_FILE_ENV = "VENICE_CA_FILE"
"""The CA bundle clients verify servers with when none is given (default: the system's)."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The context a part serves TLS with: its certificate chain and private key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use TLS certificate {cert} with key {key}: {exc}") from None
    return context


def client_context(ca_file: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A verifying client context: ``ca_file``, else ``VENICE_CA_FILE``, else the system's CAs.
    One per CA file per process (they are thread-safe and costly to build)."""
    path = os.fspath(ca_file) if ca_file is not None else os.environ.get(CA_FILE_ENV) or None
    return _client_context(path)


@lru_cache(maxsize=8)
def _client_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot use CA file {ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
