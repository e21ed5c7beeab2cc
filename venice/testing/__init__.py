"""Test helpers shipped with the package: real processes on free loopback ports.

* :class:`venice.cluster.LocalCluster`: controller + servers + router as processes.
* :class:`venice.testing.kafka.KafkaBroker`: a real Kafka broker from ``deploy/kafka``.
* :func:`venice.testing.spark.spark_available`: whether a Spark push can run here.
"""

from __future__ import annotations

from venice.cluster import LocalCluster, free_port, wait_for

__all__ = ["LocalCluster", "free_port", "wait_for"]
