"""The pure half of the benchmark: raw runs in, medians, ratios, JSON and markdown out.

Nothing here starts a process or touches the network, so it is unit-tested
(``tests/bench``). A *run* is one timed load of one side (``venice`` or ``redis``) for
one *metric*; runs of the two sides of a metric alternate, and a metric's figure is
the median over its rounds, so slow drift of the machine hits both sides alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "RATIO_NAMES",
    "TARGETS",
    "Run",
    "SideSummary",
    "Target",
    "build_report",
    "compute_ratios",
    "render_markdown",
    "summarise",
]

VENICE = "venice"
REDIS = "redis"
CLIENT_SIDE = "client_side"
"""The other side of compute100: the same work done in the client after a batch get."""


@dataclass(frozen=True)
class Target:
    """``value >= bound`` (``op=">="``) or ``value <= bound`` (``op="<="``)."""

    op: str
    bound: float

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


TARGETS: dict[str, Target] = {
    "server_get_vs_redis": Target(">=", 0.6),
    "router_get_vs_redis": Target(">=", 0.35),
    "router_p99_ms_c32": Target("<=", 2.0),
    "sdk_get_vs_redispy": Target(">=", 0.6),
    "batch100_vs_mget": Target(">=", 0.35),
    "push_vs_redis_pipe": Target(">=", 0.4),
    "memory_vs_redis": Target("<=", 1.5),
    "push_records_vs_redis_pipe": Target(">=", 0.25),
    "router_get_records_vs_redis": Target(">=", 0.25),
    "sdk_direct_get_vs_redispy": Target(">=", 1.0),
    "davinci_get_vs_redispy": Target(">=", 10.0),
    "compute100_vs_client_side": Target(">=", 1.5),
    "nearline_visible_p99_ms": Target("<=", 100.0),
    "nearline_vs_redis_set": Target(">=", 0.25),
}
RATIO_NAMES = tuple(TARGETS)

DESCRIPTIONS: dict[str, str] = {
    "server_get_vs_redis": "single-key GET req/s straight to one storage server / Redis GET req/s (32 connections)",
    "router_get_vs_redis": "single-key GET req/s through the router / Redis GET req/s (32 connections)",
    "router_p99_ms_c32": "p99 latency (ms) of router GETs at 32 connections",
    "sdk_get_vs_redispy": "sync venice.Client.get loop / redis-py get loop, one thread (ops/s)",
    "batch100_vs_mget": "keys/s of 100-key batch gets through the router / keys/s of Redis MGET of 100 keys",
    "push_vs_redis_pipe": "records/s of `venice push` to ONLINE at R=2 / records/s of `redis-cli --pipe`",
    "memory_vs_redis": "resident bytes of one storage server holding the data / Redis's resident bytes",
    "push_records_vs_redis_pipe": "records/s of `venice push` of the record workload's CSV (18 fields) to ONLINE at R=2 / "
    "records/s of `redis-cli --pipe` of the same records as JSON strings",
    "router_get_records_vs_redis": "GET req/s of records through the router (JSON answers) / Redis GET req/s of the "
    "records as JSON strings (32 connections)",
    "sdk_direct_get_vs_redispy": "sync venice.Client(direct=True).get loop (no router hop) / redis-py get loop, one thread (ops/s)",
    "davinci_get_vs_redispy": "DaVinciClient.get loop (in-process LMDB) / redis-py get loop, one thread (ops/s)",
    "compute100_vs_client_side": "keys/s of Client.compute of 100 keys (dot product of 64 floats on the servers) / keys/s of "
    "Client.batch_get of the same 100 keys + the dot product with numpy in the client",
    "nearline_visible_p99_ms": "p99 ms from a producer's put to the value read back through the router, at 5,000 writes/s",
    "nearline_vs_redis_set": "nearline writes/s applied on both replicas at R=2 / Redis SET req/s (32 connections)",
}


@dataclass(frozen=True)
class Run:
    """One timed load against one side.

    ``operations`` counts requests (or Python calls); ``items_per_op`` turns them into
    items (keys of a batch, records of a push). Latencies are in milliseconds, ``None``
    when the generator does not give them.
    """

    metric: str
    side: str
    generator: str
    operations: int
    seconds: float
    items_per_op: int = 1
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    round: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ops_per_s(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.ops_per_s * self.items_per_op

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        data["ops_per_s"] = round(self.ops_per_s, 1)
        data["items_per_s"] = round(self.items_per_s, 1)
        return data


@dataclass(frozen=True)
class SideSummary:
    """Medians over the rounds of one side of one metric."""

    metric: str
    side: str
    generator: str
    rounds: int
    ops_per_s: float
    items_per_s: float
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: Sequence[Run]) -> dict[str, dict[str, SideSummary]]:
    """``{metric: {side: SideSummary}}``: medians of throughput and latency over rounds.

    Errors are summed, not medianed: one failed request in any round must show.
    """
    grouped: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        grouped.setdefault((run.metric, run.side), []).append(run)
    out: dict[str, dict[str, SideSummary]] = {}
    for (metric, side), group in grouped.items():
        out.setdefault(metric, {})[side] = SideSummary(
            metric=metric,
            side=side,
            generator=group[0].generator,
            rounds=len(group),
            ops_per_s=statistics.median(r.ops_per_s for r in group),
            items_per_s=statistics.median(r.items_per_s for r in group),
            errors=sum(r.errors for r in group),
            p50_ms=_median(r.p50_ms for r in group),
            p99_ms=_median(r.p99_ms for r in group),
            p999_ms=_median(r.p999_ms for r in group),
        )
    return out


def _ratio(summary: Mapping[str, Mapping[str, SideSummary]], metric: str, base: str = REDIS) -> float | None:
    sides = summary.get(metric, {})
    venice, other = sides.get(VENICE), sides.get(base)
    if venice is None or other is None or other.items_per_s <= 0:
        return None
    return venice.items_per_s / other.items_per_s


def compute_ratios(
    summary: Mapping[str, Mapping[str, SideSummary]],
    *,
    push: Mapping[str, float] | None = None,
    memory: Mapping[str, float] | None = None,
    push_records: Mapping[str, Any] | None = None,
) -> dict[str, float | None]:
    """The figures of :data:`TARGETS`; ``None`` where a side is missing.

    ``push`` and ``push_records`` (the record workload's) hold ``venice_records_per_s``
    and ``redis_records_per_s``; ``memory`` holds ``venice_bytes`` and ``redis_bytes``.
    """
    router = summary.get("router_get", {}).get(VENICE)
    visible = summary.get("nearline_visible", {}).get(VENICE)
    ratios: dict[str, float | None] = {
        "server_get_vs_redis": _ratio(summary, "server_get"),
        "router_get_vs_redis": _ratio(summary, "router_get"),
        "router_p99_ms_c32": router.p99_ms if router is not None else None,
        "sdk_get_vs_redispy": _ratio(summary, "sdk_get"),
        "batch100_vs_mget": _ratio(summary, "batch100"),
        "push_vs_redis_pipe": None,
        "memory_vs_redis": None,
        "push_records_vs_redis_pipe": None,
        "router_get_records_vs_redis": _ratio(summary, "router_get_records"),
        "sdk_direct_get_vs_redispy": _ratio(summary, "sdk_direct_get"),
        "davinci_get_vs_redispy": _ratio(summary, "davinci_get"),
        "compute100_vs_client_side": _ratio(summary, "compute100", CLIENT_SIDE),
        "nearline_visible_p99_ms": visible.p99_ms if visible is not None else None,
        "nearline_vs_redis_set": _ratio(summary, "nearline_apply"),
    }
    if push and push.get("redis_records_per_s"):
        ratios["push_vs_redis_pipe"] = push["venice_records_per_s"] / push["redis_records_per_s"]
    if push_records and push_records.get("redis_records_per_s"):
        ratios["push_records_vs_redis_pipe"] = push_records["venice_records_per_s"] / push_records["redis_records_per_s"]
    if memory and memory.get("redis_bytes"):
        ratios["memory_vs_redis"] = memory["venice_bytes"] / memory["redis_bytes"]
    return ratios


def build_report(
    runs: Sequence[Run],
    *,
    push: Mapping[str, Any] | None = None,
    memory: Mapping[str, Any] | None = None,
    machine: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, str] | None = None,
    push_records: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document ``--out`` writes."""
    summary = summarise(runs)
    ratios = compute_ratios(summary, push=push, memory=memory, push_records=push_records)
    return {
        "ratios": {k: (round(v, 4) if v is not None else None) for k, v in ratios.items()},
        "targets": {k: str(t) for k, t in TARGETS.items()},
        "met": {k: TARGETS[k].met(v) for k, v in ratios.items()},
        "descriptions": DESCRIPTIONS,
        "generators": dict(generators or {}),
        "machine": dict(machine or {}),
        "config": dict(config or {}),
        "summary": {m: {s: v.to_json() for s, v in sides.items()} for m, sides in summary.items()},
        "push": dict(push or {}),
        "memory": dict(memory or {}),
        "runs": [r.to_json() for r in runs],
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_markdown(report: Mapping[str, Any]) -> str:
    """A human table of the ratios, then the raw figures behind them."""
    lines = ["# venice-py vs Redis", ""]
    machine = report.get("machine", {})
    config = report.get("config", {})
    if machine or config:
        facts = [f"{k}: {v}" for k, v in {**machine, **config}.items()]
        lines += ["; ".join(facts), ""]
    lines += ["| figure | value | target | met | what |", "|---|---|---|---|---|"]
    for name in RATIO_NAMES:
        value = report["ratios"].get(name)
        met = report.get("met", {}).get(name)
        lines.append(
            f"| {name} | {_fmt(value)} | {report['targets'][name]} | {_fmt(met)} | {DESCRIPTIONS[name]} |"
        )
    generators = report.get("generators", {})
    if generators:
        lines += ["", "Load generators:", ""]
        lines += [f"* {metric}: {how}" for metric, how in generators.items()]
    lines += [
        "",
        "| metric | side | generator | rounds | ops/s | items/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for metric, sides in report.get("summary", {}).items():
        for side, s in sides.items():
            lines.append(
                f"| {metric} | {side} | {s['generator']} | {s['rounds']} | {_fmt(s['ops_per_s'])} | "
                f"{_fmt(s['items_per_s'])} | {_fmt(s['p50_ms'])} | {_fmt(s['p99_ms'])} | {_fmt(s['p999_ms'])} | "
                f"{s['errors']} |"
            )
    push = report.get("push") or {}
    if push:
        lines += ["", "Push: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in push.items())]
    records = report.get("records") or {}
    if records:
        lines += ["", "Record workload: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in records.items())]
    memory = report.get("memory") or {}
    if memory:
        lines += ["", "Memory: " + "; ".join(f"{k}: {_fmt(v)}" for k, v in memory.items())]
    if report.get("cpu_pct"):
        lines += ["", "CPU use during the venice runs (% of one core, median over rounds; 200 = both cores):", ""]
        for metric, usage in report["cpu_pct"].items():
            lines.append(f"* {metric}: " + ", ".join(f"{name} {pct}" for name, pct in usage.items()))
    if report.get("spark"):
        from bench.spark import render as render_spark

        lines += render_spark(report["spark"])
    if report.get("profiles"):
        from bench.profile import render

        lines += render(report["profiles"])
    return "\n".join(lines) + "\n"
