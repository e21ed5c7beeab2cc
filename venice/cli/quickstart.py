"""``venice quickstart``: a whole local cluster serving a sample store, until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
from importlib import resources
from pathlib import Path
from types import FrameType

import click
import httpx
import orjson

from venice.errors import VeniceError

__all__ = ["SAMPLE_STORE", "quickstart"]

SAMPLE_STORE = "member-features"
SAMPLE_DATA = "member_features.jsonl.gz"
SAMPLE_SCHEMA = "member_features.avsc"
SAMPLE_KEY_FIELD = "member_id"


def _sample(name: str) -> Path:
    return Path(str(resources.files("venice.data").joinpath(name)))


def create_sample_store(controller_url: str, partitions: int, replication_factor: int) -> None:
    """Create the sample store unless it exists already (a restarted quickstart)."""
    body = {
        "name": SAMPLE_STORE,
        "key_schema": "long",
        "value_schema": orjson.loads(_sample(SAMPLE_SCHEMA).read_bytes()),
        "partitions": partitions,
        "replication_factor": replication_factor,
    }
    response = httpx.post(f"{controller_url}/stores", json=body, timeout=10.0)
    if response.status_code not in (201, 409):
        from venice.errors import error_from_response

        raise error_from_response(response.status_code, response.content)


def first_sample_key() -> int:
    import gzip

    with gzip.open(_sample(SAMPLE_DATA), "rb") as f:
        return int(orjson.loads(f.readline())[SAMPLE_KEY_FIELD])


@click.command()
@click.option("--data-dir", default="venice-data/quickstart", show_default=True, envvar="VENICE_DATA_DIR", type=click.Path(path_type=Path))
@click.option("--servers", default=2, show_default=True, type=click.IntRange(1, 16), help="Storage servers to start.")
@click.option("--kafka-bootstrap", envvar="VENICE_KAFKA_BOOTSTRAP", help="Run on this Kafka broker instead of the embedded log.")
def quickstart(data_dir: Path, servers: int, kafka_bootstrap: str | None) -> None:
    """Start a controller, storage servers and a router on 127.0.0.1, push a sample
    store, print how to read it, and run until Ctrl-C."""
    from venice.cluster import LocalCluster
    from venice.push.job import run_push

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    pubsub_url = f"kafka://{kafka_bootstrap}" if kafka_bootstrap else None
    cluster = LocalCluster(data_dir, servers=servers, pubsub_url=pubsub_url)
    click.echo(f"starting controller, {servers} storage server(s) and a router (logs in {cluster.logs}) ...", err=True)
    try:
        cluster.start()
        create_sample_store(cluster.controller_url, partitions=4, replication_factor=min(2, servers))
        summary = run_push(cluster.controller_url, SAMPLE_STORE, _sample(SAMPLE_DATA), key_field=SAMPLE_KEY_FIELD)
        key = first_sample_key()
        click.echo(f"pushed {SAMPLE_STORE} v{summary.version}: {summary.records} records")
        click.echo(f"controller: {cluster.controller_url}")
        click.echo(f"router:     {cluster.router_url}")
        click.echo(f"try:        curl {cluster.router_url}/storage/{SAMPLE_STORE}/{key}")
        click.echo("press Ctrl-C to stop every process", err=True)
        sys.stdout.flush()
        while not stop.wait(0.5):
            dead = [p.name for p in cluster.processes() if not p.alive()]
            if dead:
                raise click.ClickException(f"{', '.join(dead)} exited unexpectedly; see {cluster.logs}")
    except (VeniceError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        click.echo("stopping ...", err=True)
        cluster.stop()
        click.echo("stopped", err=True)
