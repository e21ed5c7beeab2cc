"""Fixtures shared by the whole suite.

``kafka_broker`` starts one real Kafka broker per test session. A test that needs it
and finds none FAILS when the ``CI`` environment variable is set (never a silent skip
in CI); on a developer machine without Java it is skipped with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from venice.testing.kafka import KafkaBroker, kafka_unavailable_reason


def _no_kafka(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Kafka is required in CI: {reason}", pytrace=False)
    pytest.skip(f"Kafka not available: {reason}")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    reason = kafka_unavailable_reason()
    if reason:
        _no_kafka(reason)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except RuntimeError as exc:
        _no_kafka(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["embedded", "kafka"])
def pubsub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each pub-sub backend in turn (the contract suite runs on both)."""
    if request.param == "embedded":
        return f"embedded://{tmp_path / 'log'}"
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return broker.url
