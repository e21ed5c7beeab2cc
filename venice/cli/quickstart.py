"""``venice quickstart``: a whole local cluster serving a sample store, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from types import FrameType

import click
import orjson

from venice.cluster import ManagedProcess
from venice.controller_client import ControllerClient
from venice.errors import ConflictError, VeniceError

__all__ = ["SAMPLE_STORE", "quickstart"]

SAMPLE_STORE = "member-features"
SAMPLE_DATA = "member_features.jsonl.gz"
SAMPLE_SCHEMA = "member_features.avsc"
SAMPLE_KEY_FIELD = "member_id"


def _sample(name: str) -> Path:
    return Path(str(resources.files("venice.data").joinpath(name)))


def create_sample_store(controller_url: str, partitions: int, replication_factor: int, token: str | None = None) -> None:
    """Create the sample store unless it exists already (a restarted quickstart)."""
    body = {
        "name": SAMPLE_STORE,
        "key_schema": "long",
        "value_schema": orjson.loads(_sample(SAMPLE_SCHEMA).read_bytes()),
        "partitions": partitions,
        "replication_factor": replication_factor,
    }
    with ControllerClient(controller_url, timeout_s=10.0, token=token) as controller:
        try:
            controller.create_store(body)
        except ConflictError:
            pass  # there already (STORE_EXISTS)


class Restarts:
    """When a dead part may be started again: at once the first time, then after a delay
    that doubles (up to a minute) while it keeps dying within a minute of its last start."""

    def __init__(self, first_delay_s: float = 1.0, max_delay_s: float = 60.0, stable_after_s: float = 60.0) -> None:
        self.first_delay_s, self.max_delay_s, self.stable_after_s = first_delay_s, max_delay_s, stable_after_s
        self._last: dict[str, tuple[float, float]] = {}
        """part -> (when it was last started, the delay before the next start)"""

    def due(self, name: str, now: float) -> bool:
        last = self._last.get(name)
        if last is None or now - last[0] >= self.stable_after_s:
            self._last[name] = (now, self.first_delay_s)
            return True
        started, delay = last
        if now - started < delay:
            return False
        self._last[name] = (now, min(delay * 2, self.max_delay_s))
        return True


def _restart(process: ManagedProcess) -> None:
    """Say which part died, with the end of its log, and start it again."""
    code = process.popen.returncode if process.popen is not None else None
    how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exited with code {code}"
    click.echo(f"{process.name} (pid {process.pid}) {how}; the end of {process.log_path}:", err=True)
    for line in process.log_tail(10).splitlines():
        click.echo(f"  | {line}", err=True)
    process.start()
    click.echo(f"{process.name} restarted (pid {process.pid})", err=True)


def local_credentials(data_dir: Path) -> tuple[str, Path, str]:
    """The quickstart's cluster secret, token file and admin token, made on its first run and
    kept in ``DATA_DIR/secrets/`` (mode 0600) so a restarted quickstart finds its cluster as
    it left it. Keeping the admin token on disk is a convenience of a local sandbox only:
    a real deployment keeps tokens where the people and jobs that use them do."""
    from venice.auth import Role, TokensFile, new_secret

    secrets_dir = data_dir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    secret_path, token_path, tokens = secrets_dir / "cluster-secret", secrets_dir / "admin-token", TokensFile(secrets_dir / "tokens.json")
    for path in (secret_path, token_path):
        if not path.exists():
            value = new_secret() if path is secret_path else tokens.create(Role.ADMIN, note="quickstart")[0]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
    return secret_path.read_text().strip(), tokens.path, token_path.read_text().strip()


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
    store, print how to read it, and run until Ctrl-C. A part that dies is named (with
    the end of its log) and started again, so kill -9 of a server shows failover."""
    from venice.cluster import LocalCluster
    from venice.push.job import run_push

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    pubsub_url = f"kafka://{kafka_bootstrap}" if kafka_bootstrap else None
    from venice.workers import default_workers

    secret, tokens_file, admin = local_credentials(data_dir)
    cluster = LocalCluster(
        data_dir, servers=servers, pubsub_url=pubsub_url, router_workers=default_workers(),
        server_workers=default_workers(), cluster_secret=secret, tokens_file=tokens_file,
    )
    click.echo(f"starting controller, {servers} storage server(s) and a router (logs in {cluster.logs}) ...", err=True)
    try:
        cluster.start()
        create_sample_store(cluster.controller_url, partitions=4, replication_factor=min(2, servers), token=admin)
        summary = run_push(cluster.controller_url, SAMPLE_STORE, _sample(SAMPLE_DATA), key_field=SAMPLE_KEY_FIELD, token=admin)
        key = first_sample_key()
        click.echo(f"pushed {SAMPLE_STORE} v{summary.version}: {summary.records} records")
        click.echo(f"controller: {cluster.controller_url}")
        click.echo(f"router:     {cluster.router_url}")
        click.echo(f"admin token: {admin}")
        click.echo(f"(admin commands need it: export VENICE_TOKEN={admin}; it is kept in {data_dir / 'secrets'})", err=True)
        click.echo(f"try:        curl {cluster.router_url}/storage/{SAMPLE_STORE}/{key}")
        click.echo("parts (kill -9 one to try failover: reads keep working and the quickstart restarts it):")
        for process in cluster.processes():
            click.echo(f"  {process.name:<11} pid {process.pid:<8} {process.url}")
        click.echo("press Ctrl-C to stop every process", err=True)
        sys.stdout.flush()
        restarts = Restarts()
        while not stop.wait(0.5):
            for process in cluster.processes():
                if not process.alive() and restarts.due(process.name, time.monotonic()):
                    _restart(process)
    except (VeniceError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        click.echo("stopping ...", err=True)
        cluster.stop()
        click.echo("stopped", err=True)
