"""A real Kafka broker for tests, started from ``deploy/kafka/kafka.sh`` on free ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from venice.cluster import free_port

__all__ = ["KafkaBroker", "kafka_script", "kafka_unavailable_reason"]


def kafka_script() -> Path:
    """``deploy/kafka/kafka.sh`` of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "kafka.sh"


def kafka_unavailable_reason() -> str | None:
    """Why no broker can be started here, or ``None`` when one can."""
    if not kafka_script().exists():
        return f"{kafka_script()} not found (not a source checkout)"
    if shutil.which("java") is None:
        return "java is not installed"
    lib = kafka_script().parent / "lib"
    if not any(lib.glob("kafka_2.13-*.jar")) and shutil.which("mvn") is None:
        return "Kafka jars are not fetched and mvn is not installed (run deploy/setup.sh)"
    return None


class KafkaBroker:
    """One single-node KRaft broker in its own directory; stop it by :meth:`stop`."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="venice-kafka-"))
        self.port = free_port()
        self.controller_port = free_port()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    def start(self) -> KafkaBroker:
        result = subprocess.run(
            [str(kafka_script()), "start", "--dir", str(self.data_dir),
             "--port", str(self.port), "--controller-port", str(self.controller_port)],
            capture_output=True, text=True, timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"Kafka broker did not start:\n{result.stderr[-3000:]}")
        return self

    def stop(self) -> None:
        subprocess.run([str(kafka_script()), "stop", "--dir", str(self.data_dir)], check=True, timeout=60)

    def restart(self) -> None:
        """Stop and start on the same ports and data: records written before survive."""
        self.stop()
        self.start()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
