"""A real Kafka broker for tests and benchmarks, run by ``deploy/kafka/kafka.sh``.

The broker is a separate JVM process on two free loopback ports, with its data in its
own directory. It is tied to this Python process (``--watch-pid``): should the test run
die without stopping it, the broker stops itself within a second or so.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

__all__ = [
    "KafkaBroker",
    "KafkaStartError",
    "delete_records",
    "kafka_available",
    "kafka_script",
    "kafka_unavailable_reason",
]

START_TIMEOUT_S = 180.0
"""kafka.sh waits 60 s for the port; the first run may also download the jars."""


class KafkaStartError(RuntimeError):
    """The broker did not start; the message holds the tail of its logs."""


def kafka_script() -> Path:
    """``deploy/kafka/kafka.sh`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"


def kafka_available() -> str | None:
    """``None`` when a broker can be started here, else the reason it cannot."""
    script = kafka_script()
    if not script.exists():
        return f"{script} not found (not a source checkout)"
    if shutil.which("java") is None:
        return "java is not installed"
    lib = Path(os.environ.get("VENICE_KAFKA_LIB", script.parent / "lib"))
    if not any(lib.glob("kafka_2.13-*.jar")) and shutil.which("mvn") is None:
        return f"the Kafka jars are not in {lib} and mvn is not installed to fetch them (see deploy/setup.sh)"
    return None


kafka_unavailable_reason = kafka_available
"""Older name of :func:`kafka_available`."""


def _free_ports(count: int) -> list[int]:
    """Distinct ports that were free a moment ago (all held at once, so never the same)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class KafkaBroker:
    """One single-node KRaft broker in ``data_dir`` (a new temporary directory if not given).

    ``start()`` (or ``with KafkaBroker() as broker:``) starts it; ``stop()`` stops it by
    pid; ``restart()`` does both on the same ports and data, so records survive.
    """

    def __init__(self, data_dir: Path | str | None = None, *, port: int | None = None, controller_port: int | None = None) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="venice-kafka-"))
        free = _free_ports(2)
        self.port = port or free[0]
        self.controller_port = controller_port or free[1]

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT`` for :func:`venice.pubsub.connect`."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (from the pid file kafka.sh writes)."""
        try:
            return int((self.data_dir / "broker.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def start(self) -> KafkaBroker:
        """Start the broker and return once its port accepts connections."""
        self._run(
            "start", "--port", str(self.port), "--controller-port", str(self.controller_port),
            "--watch-pid", str(os.getpid()),
        )
        return self

    def stop(self) -> None:
        """Stop the broker (TERM, then KILL after 20 s); a no-op when it is not running."""
        self._run("stop")

    def restart(self) -> None:
        """Stop, then start again on the same ports and data: records written before survive."""
        self.stop()
        self.start()

    def _run(self, command: str, *args: str) -> None:
        argv = [str(kafka_script()), command, "--dir", str(self.data_dir), *args]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise KafkaStartError(f"kafka.sh {command} failed: {exc}") from exc
        if result.returncode != 0:
            raise KafkaStartError(f"kafka.sh {command} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def delete_records(bootstrap: str, topic: str, before: Mapping[int, int]) -> dict[int, int]:
    """What Kafka's retention does, on demand and at an exact offset: delete the records of
    ``topic`` below ``before[partition]`` (the admin API's DeleteRecords). Returns each
    partition's new beginning offset (its low watermark)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        done = await admin.delete_records({TopicPartition(topic, p): RecordsToDelete(o) for p, o in before.items()})
    finally:
        await admin.close()
    return {tp.partition: int(low) for tp, low in done.items()}
