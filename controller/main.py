"""Start a controller: typed config -> FastAPI app -> :class:`venice.httpserver.HttpServer`.

The controller's app is plain ASGI, so it runs on the same server as the storage
servers and routers, with the same limits on slow and oversized requests (uvicorn
never closed a half-sent request and took 100 MB JSON bodies). Its body limit suits
metadata: 4 MiB by default, except heartbeats (``POST /servers/{id}/heartbeat``), which
list every replica of a server and may take up to ``MAX_HEARTBEAT_BYTES`` (64 MiB; the
app checks that bound itself while it reads). The long poll of ``GET /routing`` watches
``request.is_disconnected()``, which this server answers from ``http.disconnect``: the
client leaving, or the server shutting down (so SIGTERM answers long polls at once
and the shutdown stays graceful).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from controller.app import MAX_HEARTBEAT_BYTES, Controller, create_app
from controller.auth import ControllerAuth
from controller.limits import DEFAULT_FORGET_AFTER_S
from controller.persistence import MetadataFile
from venice.httpserver import HttpLimits, HttpServer
from venice.pubsub import connect
from venice.tls import server_context

__all__ = ["DEFAULT_MAX_BODY_BYTES", "ControllerConfig", "build_server", "run", "with_heartbeat_limit"]

DEFAULT_PORT = 5050
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
"""Store definitions and schemas are small; nothing the controller takes needs more but heartbeats."""
_HEARTBEAT_PREFIX = b"/servers/"
"""``POST /servers/{id}/heartbeat`` is the only route under it."""


@dataclass(frozen=True)
class ControllerConfig:
    data_dir: Path
    """Where the metadata file lives."""
    pubsub_url: str
    """``kafka://HOST:PORT`` or ``embedded:///DIR``; handed to servers and push jobs."""
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    dead_after_s: float = 15.0
    """A server silent this long is no longer given new replicas."""
    forget_after_s: float = DEFAULT_FORGET_AFTER_S
    """A server silent this long is forgotten: it no longer counts as a member."""
    cluster_secret: str | None = field(default=None, repr=False)
    """What storage servers and routers must present (``None``: anyone may; logged loudly)."""
    tokens_file: Path | None = None
    """The token file (digests of admin/writer/reader tokens; ``None``: admin and writes open)."""
    router_urls: tuple[str, ...] = ()
    """Routers whose metrics the dashboard and ``venice status`` show."""
    graceful_shutdown_s: float = 5.0
    http: HttpLimits = field(default_factory=lambda: HttpLimits(max_body_bytes=DEFAULT_MAX_BODY_BYTES))
    """What the controller accepts from its clients (sizes, timeouts, connections)."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    ca_file: Path | None = None
    """CA bundle the routers' https:// certificates are verified with (default: ``VENICE_CA_FILE``, else the system's)."""
    """Serve HTTPS with this certificate and key (both or neither)."""


def build_server(config: ControllerConfig) -> HttpServer:
    auth = ControllerAuth(config.cluster_secret, config.tokens_file)
    for warning in auth.warnings():
        logging.getLogger("venice.controller").warning("OPEN: %s", warning)
    controller = Controller(
        MetadataFile(config.data_dir), connect(config.pubsub_url), config.dead_after_s, config.forget_after_s, auth,
        router_urls=config.router_urls,
        ca_file=config.ca_file,
    )
    return HttpServer(
        create_app(controller),
        host=config.host,
        port=config.port,
        graceful_shutdown_s=config.graceful_shutdown_s,
        limits=with_heartbeat_limit(config.http),
        ssl_context=server_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None,
    )


def with_heartbeat_limit(limits: HttpLimits) -> HttpLimits:
    """``limits`` letting heartbeats through up to the app's own heartbeat bound (or the
    general body limit when that is larger): a server hosting many replicas must not be
    refused its heartbeat, and be taken for dead, by the metadata body limit."""
    if limits.body_limits_by_path:
        return limits
    heartbeat = max(MAX_HEARTBEAT_BYTES, limits.max_body_bytes)
    return dataclasses.replace(limits, body_limits_by_path=((_HEARTBEAT_PREFIX, heartbeat),))


def run(config: ControllerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    build_server(config).run()
