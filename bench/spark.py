"""The Spark push in ``python -m bench``: records/s beside the single-process push on a
record workload, and the driver's peak memory for two input sizes.

The workload is member-feature records (a ``long`` key and a record value: a string, a
double, an int, 8 doubles, a nullable string), the shape of a real feature push and the
one the vectorized encoder works on, written as JSON lines. Each push goes to ONLINE on
the benchmark's cluster (R=1, its own stores). Figures:

* ``cli_records_per_s``: wall time of the ``venice push`` process, as ``push_vs_redis_pipe``;
* ``push_spark_records_per_s``: the Spark push from the controller's first answer to
  ONLINE (``PushSummary``), the session already up; ``push_spark_process_records_per_s``
  counts the Spark session's start-up too (a fixed ~10-30 s that a real cluster's
  long-running session does not pay per push);
* per input size: the driver's peak RSS (VmHWM of the Python process that runs the push)
  and the JVM's (local mode: driver and executors in one JVM, bounded by its heap).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from venice.controller_client import ControllerClient

__all__ = ["RECORD_SCHEMA", "run", "write_records"]

RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "MemberFeatures",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "score", "type": "double"},
        {"name": "visits", "type": "int"},
        {"name": "embedding", "type": {"type": "array", "items": "double"}},
        {"name": "country", "type": ["null", "string"], "default": None},
    ],
}
_COUNTRIES = ["us", "fr", "in", "br", None]


def write_records(path: Path, count: int, seed: int = 17) -> Path:
    """``count`` member-feature records with unique keys ``id``, as JSON lines, streamed."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        for start in range(0, count, 10_000):
            out.write(b"".join(
                orjson.dumps({
                    "id": i * 7919 + 1,
                    "name": f"member-{i}",
                    "score": round(rng.random() * 100, 4),
                    "visits": rng.randrange(1000),
                    "embedding": [round(rng.uniform(-1, 1), 4) for _ in range(8)],
                    "country": rng.choice(_COUNTRIES),
                }) + b"\n"
                for i in range(start, min(count, start + 10_000))
            ))
    return path


def _create_store(controller: str, name: str, partitions: int) -> None:
    with ControllerClient(controller) as client:
        client.create_store({
            "name": name, "key_schema": "long", "value_schema": RECORD_SCHEMA, "partitions": partitions, "replication_factor": 1,
        })


def _cli_push(controller: str, store: str, path: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "venice", "push", "--controller", controller, "--store", store, "--input", str(path),
         "--key-field", "id", "--no-progress", "--timeout", "3600"],
        capture_output=True, text=True, timeout=7200,
    )
    if result.returncode != 0:
        raise RuntimeError(f"venice push failed: {result.stderr[-2000:]}")
    return time.perf_counter() - started


def _spark_push(controller: str, store: str, path: Path, master: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.spark_driver", "--controller", controller, "--store", store, "--input", str(path),
         "--master", master],
        capture_output=True, text=True, timeout=7200, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"the Spark push failed: {result.stderr[-3000:]}")
    figures: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return figures


def run(controller: str, work: Path, sizes: list[int], *, partitions: int, master: str, log: Callable[[str], None]) -> dict[str, Any]:
    """The figures of this section, or ``{"skipped": why}`` when Spark cannot run here."""
    from venice.testing.spark import spark_available

    reason = spark_available()
    if reason:
        log(f"Spark push not measured: {reason}")
        return {"skipped": reason}
    _create_store(controller, "bench_records_cli", partitions)
    _create_store(controller, "bench_records_spark", partitions)
    report: dict[str, Any] = {"records": sizes[0], "master": master, "driver": {}}
    for index, count in enumerate(sizes):
        log(f"writing {count:,} member-feature records (JSON lines) for the Spark push")
        path = write_records(work / f"records-{count}.jsonl", count)
        if index == 0:
            log(f"venice push of {count:,} records (single process)")
            cli_s = _cli_push(controller, "bench_records_cli", path)
            report["cli_records_per_s"] = round(count / cli_s, 1)
            report["cli_seconds"] = round(cli_s, 3)
        log(f"Spark push ({master}) of {count:,} records")
        figures = _spark_push(controller, "bench_records_spark", path, master)
        log(f"Spark push of {count:,}: {figures}")
        if index == 0:
            report["push_spark_records_per_s"] = figures["push_records_per_s"]
            report["push_spark_process_records_per_s"] = round(count / figures["process_seconds"], 1)
            report["spark_session_start_seconds"] = figures["session_start_seconds"]
        report["driver"][str(count)] = figures
        path.unlink()
    peaks = [report["driver"][str(n)]["driver_peak_rss"] for n in sizes]
    report["driver_peak_rss_growth"] = round(peaks[-1] / peaks[0], 3) if peaks[0] else None
    return report


def render(report: dict[str, Any]) -> list[str]:
    """Markdown lines of this section."""
    if not report:
        return []
    if "skipped" in report or "error" in report:
        return ["", f"Spark push: not measured ({report.get('skipped') or report.get('error')})"]
    lines = ["", f"Spark push ({report['master']}, member-feature records, to ONLINE at R=1):", "",
             "| figure | value |", "|---|---|"]
    for name in ("cli_records_per_s", "push_spark_records_per_s", "push_spark_process_records_per_s", "spark_session_start_seconds",
                 "driver_peak_rss_growth"):
        lines.append(f"| {name} | {report.get(name)} |")
    lines += ["", "| rows | push records/s | driver peak RSS | JVM peak RSS (driver + local executors) |", "|---|---|---|---|"]
    for rows, figures in report["driver"].items():
        jvm = figures.get("jvm_peak_rss")
        lines.append(f"| {int(rows):,} | {figures['push_records_per_s']:,} | {figures['driver_peak_rss'] / 2**20:.0f} MiB | "
                     f"{'-' if jvm is None else f'{jvm / 2**20:.0f} MiB'} |")
    return lines
