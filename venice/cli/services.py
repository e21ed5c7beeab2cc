"""``venice controller | server | router``: run one part of a cluster in the foreground.

Every option also reads a ``VENICE_*`` environment variable, shown in ``--help``.
All three take the HTTP limits of venice/httpserver.py (``--max-connections``,
``--head-timeout``, ``--keepalive-timeout``, ``--max-head-bytes``, ``--max-url-bytes``,
``--max-body-bytes``); see docs/failure-model.md for what a client gets beyond each.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from venice.cli.logopts import log_format_option
from venice.cli.params import Seconds
from venice.errors import ConfigError
from venice.httpserver import (
    DEFAULT_HEAD_TIMEOUT_S,
    DEFAULT_KEEPALIVE_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_MAX_URL_BYTES,
    HttpLimits,
)

__all__ = ["controller", "router", "server"]

Command = Callable[..., Any]
_LIMIT_NAMES = ("max_connections", "head_timeout", "keepalive_timeout", "max_head_bytes", "max_url_bytes", "max_body_bytes")


def http_limit_options(*, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> Callable[[Command], Command]:
    """The HTTP limits as options; the command gets them as one ``http: HttpLimits``."""
    options = [
        click.option("--max-connections", default=DEFAULT_MAX_CONNECTIONS, show_default=True, envvar="VENICE_MAX_CONNECTIONS",
                     type=click.IntRange(min=1), help="Open client connections; one more gets 503 TOO_MANY_CONNECTIONS."),
        click.option("--head-timeout", default=DEFAULT_HEAD_TIMEOUT_S, show_default=True, envvar="VENICE_HEAD_TIMEOUT_S",
                     type=click.FloatRange(min=0, min_open=True), help="Seconds from a request's first byte to the end of its headers; then 408."),
        click.option("--keepalive-timeout", default=DEFAULT_KEEPALIVE_S, show_default=True, envvar="VENICE_KEEPALIVE_TIMEOUT_S",
                     type=click.FloatRange(min=0, min_open=True), help="Seconds a connection may stay silent with nothing to answer; then it is closed."),
        click.option("--max-head-bytes", default=DEFAULT_MAX_HEAD_BYTES, show_default=True, envvar="VENICE_MAX_HEAD_BYTES",
                     type=click.IntRange(min=256), help="Request line and headers; beyond: 431."),
        click.option("--max-url-bytes", default=DEFAULT_MAX_URL_BYTES, show_default=True, envvar="VENICE_MAX_URL_BYTES",
                     type=click.IntRange(min=16), help="Request URL; beyond: 414."),
        click.option("--max-body-bytes", default=max_body_bytes, show_default=True, envvar="VENICE_MAX_BODY_BYTES",
                     type=click.IntRange(min=0), help="Request body; beyond: 413, decided from Content-Length before reading."),
    ]

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def with_limits(**kwargs: Any) -> Any:
            values = [kwargs.pop(name) for name in _LIMIT_NAMES]
            limits = HttpLimits(
                max_connections=values[0], head_timeout_s=values[1], keepalive_s=values[2],
                max_head_bytes=values[3], max_url_bytes=values[4], max_body_bytes=values[5],
            )
            return command(http=limits, **kwargs)

        wrapped: Command = with_limits
        for option in reversed(options):
            wrapped = option(wrapped)
        return wrapped

    return decorate


def _pubsub_url(pubsub_url: str | None, kafka: str | None, embedded: Path | None, data_dir: Path) -> str:
    given = [x for x in (pubsub_url, kafka, embedded) if x]
    if len(given) > 1:
        raise click.UsageError("give only one of --pubsub-url, --kafka-bootstrap, --embedded-log")
    if pubsub_url:
        return pubsub_url
    if kafka:
        return f"kafka://{kafka}"
    return f"embedded://{(embedded or data_dir / 'pubsub').resolve()}"


secret_option = click.option(
    "--cluster-secret-file",
    envvar="VENICE_CLUSTER_SECRET_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the cluster secret the parts share (or give the secret itself in VENICE_CLUSTER_SECRET). "
    "Without one the part is open to anyone who can reach it, and says so in its log.",
)


tls_cert_option = click.option("--tls-cert", envvar="VENICE_TLS_CERT", type=click.Path(dir_okay=False, path_type=Path), help="Serve HTTPS with this certificate chain (PEM); give --tls-key too.")
tls_key_option = click.option("--tls-key", envvar="VENICE_TLS_KEY", type=click.Path(dir_okay=False, path_type=Path), help="The private key (PEM) of --tls-cert.")
ca_file_option = click.option("--ca-file", envvar="VENICE_CA_FILE", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle (PEM) that other parts' https:// certificates are verified with (default: the system's CAs).")


def _tls(cert: Path | None, key: Path | None) -> tuple[Path | None, Path | None]:
    """Both or neither, and usable: checked now, not at the first handshake."""
    if (cert is None) != (key is None):
        raise click.UsageError("give --tls-cert and --tls-key together")
    if cert is not None and key is not None:
        from venice.tls import server_context

        try:
            server_context(cert, key)
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--tls-cert/--tls-key") from None
    return cert, key


def _ca(path: Path | None) -> Path | None:
    if path is not None:
        from venice.tls import client_context

        try:
            client_context(path)
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--ca-file") from None
    return path


def _secret(path: Path | None) -> str | None:
    from venice.auth import load_cluster_secret

    try:
        return load_cluster_secret(path)
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="--cluster-secret-file") from None


def _router_urls(urls: tuple[str, ...]) -> list[str]:
    from venice.protocol import is_base_url

    for url in urls:
        if not is_base_url(url):
            raise click.BadParameter(f"{url[:100]!r} is not a base URL http(s)://HOST[:PORT]", param_hint="--router")
    return list(urls)


host_option = click.option("--host", default="127.0.0.1", show_default=True, envvar="VENICE_HOST")
controller_option = click.option(
    "--controller",
    "controller_url",
    default="http://127.0.0.1:5050",
    show_default=True,
    envvar="VENICE_CONTROLLER_URL",
    help="URL of the controller.",
)


@click.command()
@host_option
@click.option("--port", default=5050, show_default=True, envvar="VENICE_PORT", type=int)
@click.option("--data-dir", default="venice-data/controller", show_default=True, envvar="VENICE_DATA_DIR", type=click.Path(path_type=Path))
@click.option("--kafka-bootstrap", envvar="VENICE_KAFKA_BOOTSTRAP", help="Kafka bootstrap HOST:PORT.")
@click.option("--embedded-log", envvar="VENICE_EMBEDDED_LOG", type=click.Path(path_type=Path), help="Directory of the embedded log (default DATA_DIR/pubsub).")
@click.option("--pubsub-url", envvar="VENICE_PUBSUB_URL", help="kafka://HOST:PORT or embedded:///DIR.")
@click.option("--dead-after", default=15.0, show_default=True, envvar="VENICE_DEAD_AFTER_S", type=Seconds(0.1, 86400), help="Seconds of heartbeat silence before a server counts as dead.")
@click.option("--forget-after", default=3600.0, show_default=True, envvar="VENICE_FORGET_AFTER_S", type=Seconds(0.1, 365 * 86400), help="Seconds of heartbeat silence before a dead server is forgotten (no longer counted as a member).")
@http_limit_options(max_body_bytes=4 * 1024 * 1024)
@secret_option
@tls_cert_option
@tls_key_option
@click.option("--tokens-file", envvar="VENICE_TOKENS_FILE", type=click.Path(dir_okay=False, path_type=Path), help="Token file (venice token create): admin, writer and reader tokens, digests only. Without one, admin requests and writes are open.")
@ca_file_option
@click.option("--router", "routers", multiple=True, envvar="VENICE_ROUTERS", help="URL of a router whose read rate and p99 the dashboard and `venice status` show (repeat it; the env var takes several, space-separated).")
@log_format_option(lambda o: "controller")
def controller(
    host: str,
    port: int,
    data_dir: Path,
    kafka_bootstrap: str | None,
    embedded_log: Path | None,
    pubsub_url: str | None,
    dead_after: float,
    forget_after: float,
    http: HttpLimits,
    cluster_secret_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tokens_file: Path | None,
    ca_file: Path | None,
    routers: tuple[str, ...],
) -> None:
    """Run the controller: store metadata, versions, assignment, routing table."""
    from controller.main import ControllerConfig, run
    from venice.auth import TokensFile

    secret = _secret(cluster_secret_file)
    if tokens_file is not None:
        try:
            TokensFile(tokens_file).load()
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--tokens-file") from None

    if forget_after < dead_after:
        raise click.BadParameter(f"must be at least --dead-after ({dead_after:g})", param_hint="--forget-after")
    url = _pubsub_url(pubsub_url, kafka_bootstrap, embedded_log, data_dir)
    run(
        ControllerConfig(
            data_dir=data_dir,
            pubsub_url=url,
            host=host,
            port=port,
            dead_after_s=dead_after,
            forget_after_s=forget_after,
            router_urls=tuple(_router_urls(routers)),
            http=http,
            cluster_secret=secret,
            tokens_file=tokens_file,
            tls_cert=_tls(tls_cert, tls_key)[0],
            tls_key=tls_key,
            ca_file=_ca(ca_file),
        )
    )


@click.command()
@host_option
@click.option("--port", default=7001, show_default=True, envvar="VENICE_PORT", type=int)
@click.option("--data-dir", default="venice-data/server", show_default=True, envvar="VENICE_DATA_DIR", type=click.Path(path_type=Path))
@controller_option
@click.option("--server-id", envvar="VENICE_SERVER_ID", help="Stable server identity (default: generated once, kept in the data dir).")
@click.option("--pubsub-url", envvar="VENICE_PUBSUB_URL", help="Override the pub-sub URL the controller hands out.")
@click.option("--drain-grace", default=1.0, show_default=True, envvar="VENICE_DRAIN_GRACE_S", type=click.FloatRange(min=0), help="On SIGTERM: seconds to keep answering reads after the controller stopped routing here.")
@click.option("--lmdb-map-size", default=1 << 36, show_default=True, envvar="VENICE_LMDB_MAP_SIZE", type=click.IntRange(min=1 << 16), help="Largest size in bytes of one store-version's LMDB; writes beyond it fail the version.")
@http_limit_options()
@click.option("--workers", default=1, show_default=True, envvar="VENICE_WORKERS", type=click.IntRange(1, 64), help="Processes sharing the port (SO_REUSEPORT): this one ingests and serves everything, the others serve reads from the same LMDB files read-only.")
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT (set for the workers --workers starts).")
@click.option("--read-worker-of", hidden=True, metavar="URL", help="Be a read worker of the ingesting process at URL (set by --workers).")
@secret_option
@tls_cert_option
@tls_key_option
@ca_file_option
@log_format_option(lambda o: f"server:{o['port']}")
def server(
    host: str,
    port: int,
    data_dir: Path,
    controller_url: str,
    server_id: str | None,
    pubsub_url: str | None,
    drain_grace: float,
    lmdb_map_size: int,
    http: HttpLimits,
    workers: int,
    reuse_port: bool,
    read_worker_of: str | None,
    cluster_secret_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    ca_file: Path | None,
) -> None:
    """Run a storage server: ingest assigned partitions into LMDB and serve reads."""
    from server.main import ServerConfig, run

    if workers > 1 and port == 0:
        raise click.BadParameter("--workers needs a fixed --port (the workers share it)", param_hint="--port")
    run(
        ServerConfig(
            data_dir=data_dir,
            controller_url=controller_url,
            host=host,
            port=port,
            server_id=server_id,
            pubsub_url=pubsub_url,
            lmdb_map_size=lmdb_map_size,
            drain_grace_s=drain_grace,
            http=http,
            cluster_secret=_secret(cluster_secret_file),
            tls_cert=_tls(tls_cert, tls_key)[0],
            tls_key=tls_key,
            ca_file=_ca(ca_file),
        ),
        workers=workers,
        read_worker_of=read_worker_of,
        reuse_port=reuse_port,
    )


@click.command()
@host_option
@click.option("--port", default=7777, show_default=True, envvar="VENICE_PORT", type=int)
@controller_option
@click.option("--deadline", default=2.0, show_default=True, envvar="VENICE_DEADLINE_S", help="Seconds a read may take, failovers included.")
@click.option("--max-answer-bytes", default=16 * 1024 * 1024, show_default=True, envvar="VENICE_MAX_ANSWER_BYTES", type=click.IntRange(min=1), help="Stored bytes of the values one answer may carry (duplicate keys count each time); beyond: 413 ANSWER_TOO_LARGE.")
@http_limit_options()
@click.option("--workers", default=1, show_default=True, envvar="VENICE_WORKERS", type=click.IntRange(1, 64), help="Router processes sharing the port (SO_REUSEPORT); each uses up to one core.")
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT (set for the workers --workers starts).")
@secret_option
@tls_cert_option
@tls_key_option
@ca_file_option
@log_format_option(lambda o: f"router:{o['port']}")
def router(
    host: str, port: int, controller_url: str, deadline: float, max_answer_bytes: int, http: HttpLimits, workers: int,
    reuse_port: bool, cluster_secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None, ca_file: Path | None,
) -> None:
    """Run a router: key -> partition -> ready replica, with failover."""
    from router.main import RouterConfig, run

    if workers > 1 and port == 0:
        raise click.BadParameter("--workers needs a fixed --port (the workers share it)", param_hint="--port")
    config = RouterConfig(
        host=host, port=port, controller_url=controller_url, deadline_s=deadline, max_answer_bytes=max_answer_bytes,
        http=http, reuse_port=reuse_port or workers > 1, cluster_secret=_secret(cluster_secret_file),
        tls_cert=_tls(tls_cert, tls_key)[0], tls_key=tls_key, ca_file=_ca(ca_file),
    )
    if workers == 1:
        run(config)
        return
    from venice.workers import current_args, spawn_workers, worker_args

    with spawn_workers(worker_args(current_args()), workers - 1):
        run(config)
