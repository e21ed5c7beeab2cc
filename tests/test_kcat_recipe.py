"""The kcat recipe of docs/api.md, run as it stands, against the real Kafka broker.

The shell blocks are taken from the document (between their ``<!-- kcat-recipe: NAME -->``
markers), so what readers copy is what is tested. kcat is a producer nobody here wrote:
what it puts on the real-time topic is checked against the contract with fastavro and
mmh3.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.router.fakes import FakeController, serve_in_thread, store_description
from tests.test_producer import avro, create_topic, partition_of, read_topic
from venice.testing.kafka import KafkaBroker

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def recipe(name: str) -> str:
    """The shell block of docs/api.md marked ``<!-- kcat-recipe: name -->``."""
    found = re.search(rf"<!-- kcat-recipe: {re.escape(name)} -->\s*```sh\n(.*?)```", DOC.read_text(), re.S)
    assert found is not None, f"docs/api.md has no kcat recipe {name!r}"
    return found.group(1)


def run_recipe(name: str, cwd: Path, **variables: str) -> None:
    """Run a recipe block in bash, with the venv's ``venice`` and ``python`` first on PATH."""
    env = {**os.environ, **variables, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", recipe(name)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"recipe {name} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def greetings(kafka_broker: KafkaBroker, kcat: str) -> Iterator[tuple[str, str, str]]:
    """A hybrid store of string -> string with 4 partitions, as the recipe assumes, on a
    stand-in controller: (controller URL, broker, store)."""
    store = f"greetings_{uuid.uuid4().hex[:8]}"
    controller = FakeController(pubsub_url=kafka_broker.url)
    controller.descriptions[store] = store_description(store, "string", {1: "string"}, 4)
    create_topic(kafka_broker.url, f"{store}_rt", 4)
    with serve_in_thread(controller) as url:
        yield url, kafka_broker.bootstrap, store


def test_the_recipes_write_what_the_contract_says(greetings: tuple[str, str, str], tmp_path: Path) -> None:
    controller, broker, store = greetings
    run_recipe("encode", tmp_path, CONTROLLER=controller, BROKER=broker, STORE=store)
    run_recipe("by-hand", tmp_path, CONTROLLER=controller, BROKER=broker, STORE=store)
    found = read_topic(f"kafka://{broker}", f"{store}_rt", 3)
    key = avro("string", "bob")
    assert [(m.partition, m.key) for m in found] == [(partition_of(key, 4), key)] * 3
    put, delete, by_hand = found
    assert put.value == avro("string", "hello from kcat") and dict(put.headers) == {"schema-id": b"1"}
    assert delete.value is None
    assert by_hand.value == avro("string", "hi kcat") and dict(by_hand.headers) == {"schema-id": b"1"}


def test_the_documented_varints() -> None:
    """The encodings the recipe's prose gives for longs and strings."""
    text = DOC.read_text()
    for number, escaped in ((42, "\\x54"), (-1, "\\x01"), (300, "\\xd8\\x04")):
        assert f"{number} is `{escaped}`" in text
        assert avro("long", number) == bytes(int(h, 16) for h in escaped.split("\\x")[1:])
    assert '`"bob"` is `\\x06bob`' in text and avro("string", "bob") == b"\x06bob"
