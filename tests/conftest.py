"""Fixtures shared by the whole suite.

Kafka policy: tests that need the real broker use ``kafka_broker`` (or ``kafka_required``
when they start brokers of their own). Tests of the Spark push use ``spark_required``
(pyspark, Java and deploy/spark's jars), under the same policy. Where Kafka cannot be had (no Java, no jars, the
broker does not start) such a test FAILS when the ``CI`` environment variable is set, so
CI never passes by silently skipping them, and is skipped with the reason elsewhere.
Tests that run kcat (fixture ``kcat``) follow the same policy.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from venice.testing.kafka import KafkaBroker, KafkaStartError, kafka_available
from venice.testing.spark import spark_available


def _kafka_missing(reason: str) -> None:
    """Fail in CI, skip on a developer machine (see the module docstring)."""
    if os.environ.get("CI"):
        pytest.fail(f"Kafka is required in CI: {reason}", pytrace=False)
    pytest.skip(f"Kafka not available: {reason}")


@pytest.fixture(scope="session")
def spark_required() -> None:
    """Apply the Kafka policy to Spark: fail in CI, skip elsewhere, when it cannot run."""
    reason = spark_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"Spark is required in CI: {reason}", pytrace=False)
        pytest.skip(f"Spark not available: {reason}")


@pytest.fixture(scope="session")
def kafka_required() -> None:
    """Apply the Kafka policy without starting a broker."""
    reason = kafka_available()
    if reason:
        _kafka_missing(reason)


@pytest.fixture(scope="session")
def kafka_broker(kafka_required: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One broker for the whole session (~2 s to start). Tests share it: use unique topic
    names, and do not stop or restart it (start your own KafkaBroker for fault tests)."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except KafkaStartError as exc:
        _kafka_missing(str(exc))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["embedded", pytest.param("kafka", marks=pytest.mark.kafka)])
def pubsub_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each pub-sub backend in turn, so one contract suite covers both:
    a fresh embedded log per test, or the session's Kafka broker."""
    if request.param == "embedded":
        return f"embedded://{tmp_path / 'log'}"
    broker: KafkaBroker = request.getfixturevalue("kafka_broker")
    return broker.url


@pytest.fixture(scope="session")
def kcat() -> str:
    """kcat's path; missing kcat fails in CI (deploy/setup.sh installs it) and skips elsewhere."""
    path = shutil.which("kcat")
    if path is None:
        reason = "kcat is not installed (apt-get install kcat; deploy/setup.sh does it)"
        if os.environ.get("CI"):
            pytest.fail(f"kcat is required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path
