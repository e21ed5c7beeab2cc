"""venice.metrics: counts and buckets rendered in the Prometheus text format, read back
by prometheus-client's parser (an independent reader of the format)."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from venice.metrics import OTHER, Counter, Histogram, Registry


def parse(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counter_renders_known_values() -> None:
    registry = Registry()
    reads = registry.counter("venice_test_reads_total", "Reads.", ("store", "result"))
    reads.inc(("a", "hit"))
    reads.inc(("a", "hit"))
    reads.inc(("b", "miss"), 5)
    samples = parse(registry.render())
    assert samples[("venice_test_reads_total", (("result", "hit"), ("store", "a")))] == 2
    assert samples[("venice_test_reads_total", (("result", "miss"), ("store", "b")))] == 5
    assert b"# TYPE venice_test_reads_total counter" in registry.render()


def test_label_values_are_escaped() -> None:
    registry = Registry()
    registry.counter("venice_test_total", "x", ("store",)).inc(('we"ird\nname\\',))
    samples = parse(registry.render())
    assert samples[("venice_test_total", (("store", 'we"ird\nname\\'),))] == 1


def test_counter_label_sets_are_bounded() -> None:
    counter = Counter("venice_test_total", "x", ("store",), max_series=3)
    for i in range(10):
        counter.inc((f"s{i}",))
    assert counter.values == {("s0",): 1, ("s1",): 1, ("s2",): 1, (OTHER,): 7}


def test_histogram_buckets_are_cumulative() -> None:
    registry = Registry()
    histogram = registry.histogram("venice_test_seconds", "x", ("kind",), buckets=(0.01, 0.1, 1.0))
    for observed in (0.005, 0.01, 0.05, 0.5, 3.0):
        histogram.observe(observed, ("single",))
    samples = parse(registry.render())
    label = (("kind", "single"),)

    def bucket(le: str) -> float:
        return samples[("venice_test_seconds_bucket", (*label, ("le", le)))]

    # le is inclusive: 0.01 falls in the first bucket.
    assert [bucket("0.01"), bucket("0.1"), bucket("1.0"), bucket("+Inf")] == [2, 3, 4, 5]
    assert samples[("venice_test_seconds_count", label)] == 5
    assert samples[("venice_test_seconds_sum", label)] == pytest.approx(3.565)
    assert histogram.count(("single",)) == 5


def test_histogram_quantile_is_the_bucket_bound() -> None:
    histogram = Histogram("venice_test_seconds", "x", ("kind",), buckets=(0.001, 0.01, 0.1))
    assert histogram.quantile(0.99) is None
    for _ in range(98):
        histogram.observe(0.0005, ("a",))
    histogram.observe(0.05, ("a",))
    histogram.observe(0.05, ("b",))
    assert histogram.quantile(0.5) == 0.001
    assert histogram.quantile(0.99) == 0.1  # 98 of 100 at or below 1 ms
    assert histogram.quantile(0.98, ("a",)) == 0.001
    assert histogram.quantile(0.99, ("b",)) == 0.1
    assert histogram.quantile(0.5, ("nobody",)) is None
    histogram.observe(7.0, ("b",))
    assert histogram.quantile(1.0, ("b",)) == math.inf


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError):
        Histogram("x", "x", (), buckets=(1.0, 0.5))
    with pytest.raises(ValueError):
        Histogram("x", "x", (), buckets=())


def test_gauges_are_computed_at_scrape_time() -> None:
    registry = Registry()
    sizes = {"a": 1.0}
    registry.gauge("venice_test_bytes", "x", ("store",), lambda: [((k,), v) for k, v in sizes.items()])
    registry.counter_callback("venice_test_done_total", "x", (), lambda: [((), 3.0)])
    assert parse(registry.render())[("venice_test_bytes", (("store", "a"),))] == 1
    sizes["a"], sizes["b"] = 10.0, 2.0
    samples = parse(registry.render())
    assert samples[("venice_test_bytes", (("store", "a"),))] == 10
    assert samples[("venice_test_bytes", (("store", "b"),))] == 2
    assert samples[("venice_test_done_total", ())] == 3


def test_callback_samples_are_bounded() -> None:
    registry = Registry()
    registry.gauge("venice_test_age_seconds", "x", ("server",), lambda: [((f"s{i}",), 1.0) for i in range(5000)])
    samples = parse(registry.render())
    assert len(samples) == 1000
