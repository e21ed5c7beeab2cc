"""Pub-sub layer: one interface, a Kafka backend and an embedded durable log."""

from __future__ import annotations

from venice.errors import RequestError
from venice.pubsub.base import Consumer, Producer, PubSub

__all__ = ["Consumer", "Producer", "PubSub", "connect"]


def connect(url: str) -> PubSub:
    """The backend named by ``url``: ``kafka://HOST:PORT[,...]`` or ``embedded:///DIR``."""
    if url.startswith("kafka://"):
        from venice.pubsub.kafka import KafkaPubSub

        return KafkaPubSub(url[len("kafka://") :])
    if url.startswith("embedded://"):
        from venice.pubsub.embedded import EmbeddedPubSub

        return EmbeddedPubSub(url[len("embedded://") :])
    raise RequestError(f"unknown pub-sub URL {url!r}: expected kafka://HOST:PORT or embedded:///DIR")
