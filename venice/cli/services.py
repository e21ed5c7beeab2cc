"""``venice controller | server | router``: run one part of a cluster in the foreground.

Every option also reads a ``VENICE_*`` environment variable, shown in ``--help``.
"""

from __future__ import annotations

from pathlib import Path

import click

from venice.cli.params import Seconds

__all__ = ["controller", "router", "server"]


def _pubsub_url(pubsub_url: str | None, kafka: str | None, embedded: Path | None, data_dir: Path) -> str:
    given = [x for x in (pubsub_url, kafka, embedded) if x]
    if len(given) > 1:
        raise click.UsageError("give only one of --pubsub-url, --kafka-bootstrap, --embedded-log")
    if pubsub_url:
        return pubsub_url
    if kafka:
        return f"kafka://{kafka}"
    return f"embedded://{(embedded or data_dir / 'pubsub').resolve()}"


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
def controller(
    host: str,
    port: int,
    data_dir: Path,
    kafka_bootstrap: str | None,
    embedded_log: Path | None,
    pubsub_url: str | None,
    dead_after: float,
    forget_after: float,
) -> None:
    """Run the controller: store metadata, versions, assignment, routing table."""
    from controller.main import ControllerConfig, run

    if forget_after < dead_after:
        raise click.BadParameter(f"must be at least --dead-after ({dead_after:g})", param_hint="--forget-after")
    url = _pubsub_url(pubsub_url, kafka_bootstrap, embedded_log, data_dir)
    run(
        ControllerConfig(
            data_dir=data_dir, pubsub_url=url, host=host, port=port, dead_after_s=dead_after, forget_after_s=forget_after
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
def server(
    host: str,
    port: int,
    data_dir: Path,
    controller_url: str,
    server_id: str | None,
    pubsub_url: str | None,
    drain_grace: float,
    lmdb_map_size: int,
) -> None:
    """Run a storage server: ingest assigned partitions into LMDB and serve reads."""
    from server.main import ServerConfig, run

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
        )
    )


@click.command()
@host_option
@click.option("--port", default=7777, show_default=True, envvar="VENICE_PORT", type=int)
@controller_option
@click.option("--deadline", default=2.0, show_default=True, envvar="VENICE_DEADLINE_S", help="Seconds a read may take, failovers included.")
def router(host: str, port: int, controller_url: str, deadline: float) -> None:
    """Run a router: key -> partition -> ready replica, with failover."""
    from router.main import RouterConfig, run

    run(RouterConfig(host=host, port=port, controller_url=controller_url, deadline_s=deadline))
