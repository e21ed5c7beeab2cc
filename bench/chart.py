"""The PNG chart of a report (matplotlib, the ``bench`` extra); skipped with a note when missing."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.results import RATIO_NAMES, TARGETS

__all__ = ["write_chart"]


def write_chart(report: Mapping[str, Any], path: Path) -> bool:
    """Draw the ratios against their targets and the raw throughputs side by side.

    False (and nothing written) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    names = list(RATIO_NAMES)
    values = [report["ratios"].get(n) for n in names]
    # Every figure as the share of its target reached (1.0 = met): bound/value for
    # "<=" targets, value/bound for ">=" ones, so all bars read the same way.
    reached: list[float] = []
    colours = []
    for name, value in zip(names, values, strict=True):
        target = TARGETS[name]
        if value is None or value <= 0:
            reached.append(0.0)
        else:
            reached.append(value / target.bound if target.op == ">=" else target.bound / value)
        met = target.met(value)
        colours.append("#999999" if met is None else ("#2e8b57" if met else "#c0392b"))
    ys = list(range(len(names)))
    left.barh(ys, reached, color=colours)
    left.axvline(1.0, color="black", linewidth=1.5)
    for y, name, value, share in zip(ys, names, values, reached, strict=True):
        label = "n/a" if value is None else f"{value:.3g}"
        left.text(share + 0.02, y, f"{label} (target {TARGETS[name]})", va="center", fontsize=8)
    left.set_yticks(ys, names, fontsize=8)
    left.set_xlim(0, max(1.6, max(reached) + 0.6))
    left.invert_yaxis()
    left.set_title("share of target reached (1.0 = met; green: met)")

    summary = report.get("summary", {})
    metrics = [m for m in ("server_get", "router_get", "batch100", "sdk_get") if m in summary]
    xs = range(len(metrics))
    width = 0.38
    for offset, side, colour in ((-width / 2, "venice", "#1f77b4"), (width / 2, "redis", "#d62728")):
        heights = [summary[m].get(side, {}).get("items_per_s", 0) for m in metrics]
        right.bar([x + offset for x in xs], heights, width, label=side, color=colour)
    floor = summary.get("server_get", {}).get("uvicorn_floor")
    if floor is not None and "server_get" in metrics:
        x = metrics.index("server_get")
        right.hlines(floor["items_per_s"], x - width, x + width, colors="black", linestyles="dashed",
                     label="uvicorn floor (trivial app)")
    push = report.get("push") or {}
    if push.get("venice_records_per_s"):
        x = len(metrics)
        right.bar(x - width / 2, push["venice_records_per_s"], width, color="#1f77b4")
        right.bar(x + width / 2, push["redis_records_per_s"], width, color="#d62728")
        metrics.append("push")
    right.set_xticks(list(range(len(metrics))), [f"{m}\n(items/s)" for m in metrics], fontsize=8)
    right.set_yscale("log")
    right.set_title("raw throughput (log scale)")
    right.legend()
    machine = report.get("machine", {})
    fig.suptitle(f"venice-py vs Redis on loopback, {machine.get('cpu_count', '?')} cores, "
                 f"{report.get('config', {}).get('keys', '?')} keys")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
