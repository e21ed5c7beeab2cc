"""Metrics every part exports at ``GET /metrics``, in the Prometheus text format.

The hot paths (a storage server's read, a router's read) count into plain dicts and
lists owned by one process and one event loop: :class:`Counter` is a dict of label
tuples to numbers and :class:`Histogram` a list of bucket counts. Nothing is locked and
nothing is formatted until a scrape, when :meth:`Registry.render` turns them, and the
gauges its callbacks compute on the spot (LMDB sizes, lags, states), into metric
families of ``prometheus-client``, which writes the text format (escaping, ``+Inf``,
``_bucket``/``_sum``/``_count``). Measured on this machine: ``Counter.labels(...).inc()``
of prometheus-client costs ~3.5 µs and ``Histogram.labels(...).observe()`` ~6.7 µs,
against ~0.4 µs and ~0.6 µs here; a storage server answers a read in ~40 µs.

Label sets stay bounded: a label value the part does not know (a store nobody hosts, a
path a client made up) is counted under :data:`OTHER`, and a metric never holds more
than ``max_series`` label sets (new ones beyond that go to the all-:data:`OTHER` set;
a callback's samples beyond 1,000 are left out).

Each process serves its own figures; no part runs several worker processes today (a
part that does would need prometheus-client's multiprocess mode, whose files this
module does not write).

Importing this module loads ``prometheus_client`` only when a scrape renders.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "LATENCY_BUCKETS_S",
    "OTHER",
    "PROMETHEUS_CONTENT_TYPE",
    "Counter",
    "Histogram",
    "Registry",
    "Sample",
]

OTHER = "_other"
"""The label value of everything a bounded label set does not name."""
DEFAULT_MAX_SERIES = 1000
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Read latencies: sub-millisecond local reads up to the router's 2 s deadline."""

Sample = tuple[tuple[str, ...], float]
"""Label values (in the metric's label-name order) and a value."""


class Counter:
    """Monotonic counts by label values; ``inc`` is a dict update, nothing more."""

    __slots__ = ("help", "labelnames", "max_series", "name", "values")

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.max_series = max_series
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...] = (), amount: float = 1) -> None:
        values = self.values
        if labels in values:
            values[labels] += amount
        elif len(values) < self.max_series:
            values[labels] = amount
        else:
            overflow = (OTHER,) * len(self.labelnames)
            values[overflow] = values.get(overflow, 0) + amount

    def get(self, labels: tuple[str, ...] = ()) -> float:
        return self.values.get(labels, 0)


class Histogram:
    """Observations in cumulative buckets by label values (a list per label set)."""

    __slots__ = ("buckets", "help", "labelnames", "max_series", "name", "series")

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
        max_series: int = DEFAULT_MAX_SERIES,
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError("histogram buckets must be distinct and increasing")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(float(b) for b in buckets)
        self.max_series = max_series
        # label values -> [count in bucket 0, ..., count above the last bucket, sum]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self._new(labels)
        series[bisect_left(self.buckets, value)] += 1
        series[-1] += value

    def _new(self, labels: tuple[str, ...]) -> list[float]:
        if len(self.series) >= self.max_series:
            labels = (OTHER,) * len(self.labelnames)
            if labels in self.series:
                return self.series[labels]
        series = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        return series

    def count(self, labels: tuple[str, ...] = ()) -> int:
        series = self.series.get(labels)
        return 0 if series is None else int(sum(series[:-1]))

    def quantile(self, q: float, labels: tuple[str, ...] | None = None) -> float | None:
        """The bucket bound at quantile ``q`` (of one label set, or of all together):
        what a dashboard shows as p99 (``None`` without observations; ``inf`` above the
        last bucket)."""
        rows = [self.series[labels]] if labels is not None and labels in self.series else (
            [] if labels is not None else list(self.series.values())
        )
        counts = [sum(row[i] for row in rows) for i in range(len(self.buckets) + 1)]
        total = sum(counts)
        if total == 0:
            return None
        rank, seen = q * total, 0.0
        for bound, count in zip([*self.buckets, float("inf")], counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")


class Registry:
    """The metrics of one process: counters and histograms it updates, and gauges (or
    counters kept elsewhere) computed by callbacks at scrape time."""

    def __init__(self) -> None:
        self._metrics: list[Counter | Histogram] = []
        self._callbacks: list[tuple[str, str, str, tuple[str, ...], Callable[[], Iterable[Sample]]]] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str] = (), max_series: int = DEFAULT_MAX_SERIES) -> Counter:
        metric = Counter(name, help, labelnames, max_series)
        self._metrics.append(metric)
        return metric

    def histogram(
        self, name: str, help: str, labelnames: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS_S
    ) -> Histogram:
        metric = Histogram(name, help, labelnames, buckets)
        self._metrics.append(metric)
        return metric

    def gauge(self, name: str, help: str, labelnames: Sequence[str], samples: Callable[[], Iterable[Sample]]) -> None:
        """A gauge whose samples ``samples()`` computes at each scrape."""
        self._callbacks.append(("gauge", name, help, tuple(labelnames), samples))

    def counter_callback(self, name: str, help: str, labelnames: Sequence[str], samples: Callable[[], Iterable[Sample]]) -> None:
        """A counter kept elsewhere (e.g. in a checkpoint), read at each scrape."""
        self._callbacks.append(("counter", name, help, tuple(labelnames), samples))

    def families(self) -> list[Any]:
        """prometheus-client metric families of everything, as of now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        out: list[Any] = []
        for metric in self._metrics:
            if isinstance(metric, Counter):
                family: Any = CounterMetricFamily(_base(metric.name), metric.help, labels=metric.labelnames)
                for labels, value in list(metric.values.items()):
                    family.add_metric(list(labels), value)
            else:
                family = HistogramMetricFamily(metric.name, metric.help, labels=metric.labelnames)
                bounds = [*(_float_text(b) for b in metric.buckets), "+Inf"]
                for labels, row in list(metric.series.items()):
                    cumulative, buckets = 0.0, []
                    for bound, count in zip(bounds, row[:-1], strict=True):
                        cumulative += count
                        buckets.append((bound, cumulative))
                    family.add_metric(list(labels), buckets, row[-1])
            out.append(family)
        for kind, name, help, labelnames, samples in self._callbacks:
            family = (GaugeMetricFamily if kind == "gauge" else CounterMetricFamily)(
                _base(name) if kind == "counter" else name, help, labels=labelnames
            )
            for count, (labels, value) in enumerate(samples()):
                if count >= DEFAULT_MAX_SERIES:
                    break  # bounded like the counters: e.g. heartbeat ages of made-up server ids
                family.add_metric(list(labels), value)
            out.append(family)
        return out

    def render(self) -> bytes:
        """Everything in the Prometheus text format (version 0.0.4)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshot(self.families()))
        return generate_latest(registry)


class _Snapshot:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return self._families


def _base(name: str) -> str:
    # prometheus-client adds ``_total`` to counter families itself.
    return name[: -len("_total")] if name.endswith("_total") else name


def _float_text(value: float) -> str:
    return repr(float(value))
