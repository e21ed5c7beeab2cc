"""One Spark push in this process, then its figures as one JSON line on stdout.

``python -m bench.spark_driver --controller URL --store S --input FILE [--master local[2]]``

Run by ``python -m bench`` (bench/spark.py) as a child so that its memory is its own:
``driver_peak_rss`` is this Python process's VmHWM (the driver, where nothing of the
input may gather), ``jvm_peak_rss`` that of the JVM it started, which in local mode also
hosts the executors (bounded by ``spark.driver.memory``, not by the input).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson


def _peak_rss(pid: int | str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _jvm_pid(root: int) -> int | None:
    """The JVM among ``root`` and its children (spark-submit execs into java)."""
    pending = [root]
    while pending:
        pid = pending.pop()
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "java":
                return pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        pending += [int(c) for c in children]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.spark_driver")
    parser.add_argument("--controller", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--key-field", default="id")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--timeout", type=float, default=3600.0)
    args = parser.parse_args(argv)

    from venice.push.spark import push_input, spark_session

    started = time.perf_counter()
    spark = spark_session(args.master, {"spark.driver.memory": "1g"})
    session_s = time.perf_counter() - started
    try:
        summary = push_input(spark, args.controller, args.store, args.input, key_field=args.key_field, timeout_s=args.timeout)
        jvm = _jvm_pid(spark.sparkContext._gateway.proc.pid)  # private, but the one way to the JVM pid
        figures = {
            "records": summary.records,
            "push_seconds": round(summary.seconds, 3),
            "push_records_per_s": round(summary.records_per_s, 1),
            "session_start_seconds": round(session_s, 3),
            "process_seconds": round(time.perf_counter() - started, 3),
            "driver_peak_rss": _peak_rss("self"),
            "jvm_peak_rss": _peak_rss(jvm) if jvm is not None else None,
        }
    finally:
        spark.stop()
    sys.stdout.write(orjson.dumps(figures).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
