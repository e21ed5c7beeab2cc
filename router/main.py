"""Run the router: typed config -> ASGI app -> :class:`venice.httpserver.HttpServer`.

The server owns the signal handling: SIGTERM or SIGINT stops accepting connections,
lets requests in flight finish (up to ``graceful_shutdown_s``) and then runs the
app's lifespan shutdown, which closes the routing cache and the replica pools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from router.app import DEFAULT_DEADLINE_S, DEFAULT_MAX_ANSWER_BYTES, RouterApp
from router.writes import DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_RECORDS, DEFAULT_WRITE_TIMEOUT_S
from venice.httpserver import DEFAULT_LIMITS, HttpLimits, HttpServer
from venice.routing_cache import DEFAULT_REFRESH_INTERVAL_S
from venice.tls import server_context

__all__ = ["DEFAULT_PORT", "RouterConfig", "build_app", "build_server", "run"]

DEFAULT_PORT = 7777
DEFAULT_CONTROLLER_URL = "http://127.0.0.1:5050"


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """Settings of one router process."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    controller_url: str = DEFAULT_CONTROLLER_URL
    """Where ``GET /routing`` is served."""
    deadline_s: float = DEFAULT_DEADLINE_S
    """Time budget of one read, failover included."""
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    """How often the routing table is polled (a 304 when unchanged)."""
    hedge_after_s: float | None = None
    """A replica silent this long gets a parallel read sent to the next replica;
    ``None``: three times the recent p95 latency, between 10 and 250 ms."""
    graceful_shutdown_s: float = 5.0
    max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES
    """Stored bytes of the values one answer may carry; beyond: 413 ``ANSWER_TOO_LARGE``."""
    http: HttpLimits = DEFAULT_LIMITS
    """What the router accepts from its clients (sizes, timeouts, connections)."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, beside other router processes on the same port (``--workers``)."""
    max_pending_writes: int = DEFAULT_MAX_PENDING_RECORDS
    """HTTP writes waiting to be made durable; one more is a 503 ``OVERLOADED``."""
    max_pending_write_bytes: int = DEFAULT_MAX_PENDING_BYTES
    write_timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
    """An HTTP write not confirmed durable this soon is a 504."""
    cluster_secret: str | None = field(default=None, repr=False)
    """Presented to the controller (routing) and to storage servers; ``None``: an open cluster."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """Serve HTTPS with this certificate and key (both or neither)."""
    ca_file: Path | None = None
    """CA bundle the controller's and storage servers' certificates are verified with
    (default: ``VENICE_CA_FILE``, else the system's)."""


def build_app(config: RouterConfig) -> RouterApp:
    return RouterApp(
        config.controller_url,
        deadline_s=config.deadline_s,
        refresh_interval_s=config.refresh_interval_s,
        hedge_after_s=config.hedge_after_s,
        max_answer_bytes=config.max_answer_bytes,
        max_pending_writes=config.max_pending_writes,
        max_pending_write_bytes=config.max_pending_write_bytes,
        write_timeout_s=config.write_timeout_s,
        cluster_secret=config.cluster_secret,
        ca_file=config.ca_file,
    )


def build_server(config: RouterConfig, app: RouterApp | None = None) -> HttpServer:
    """The HTTP server the router runs on (also used by tests that embed a router)."""
    return HttpServer(
        app if app is not None else build_app(config),
        host=config.host,
        port=config.port,
        graceful_shutdown_s=config.graceful_shutdown_s,
        limits=config.http,
        reuse_port=config.reuse_port,
        ssl_context=server_context(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None,
    )


def run(config: RouterConfig) -> None:
    """Serve until SIGTERM/SIGINT. Blocks."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s router:{config.port} %(levelname)s %(message)s")
    if config.cluster_secret is None:
        logging.getLogger("venice.router").warning(
            "OPEN: NO CLUSTER SECRET: this router reaches an open controller and open storage servers "
            "(give --cluster-secret-file or VENICE_CLUSTER_SECRET)"
        )
    build_server(config).run()
