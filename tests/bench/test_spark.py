"""The pure parts of the Spark push benchmark: its workload file and its report lines."""

from __future__ import annotations

from pathlib import Path

import fastavro
import orjson

from bench.spark import RECORD_SCHEMA, render, write_records


def test_workload_records_fit_the_store_schema_and_have_unique_keys(tmp_path: Path) -> None:
    path = write_records(tmp_path / "r.jsonl", 25_003)
    records = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert len(records) == 25_003
    assert len({r["id"] for r in records}) == 25_003
    parsed = fastavro.parse_schema(RECORD_SCHEMA)
    assert all(fastavro.validation.validate({k: v for k, v in r.items() if k != "id"}, parsed) for r in records[:2000])
    assert all(len(r["embedding"]) == 8 for r in records)


def test_report_lines() -> None:
    report = {
        "records": 1000, "master": "local[2]", "cli_records_per_s": 50_000.0, "push_spark_records_per_s": 40_000.0,
        "push_spark_process_records_per_s": 20_000.0, "spark_session_start_seconds": 12.5, "driver_peak_rss_growth": 1.01,
        "driver": {"1000": {"push_records_per_s": 40_000.0, "driver_peak_rss": 150 * 2**20, "jvm_peak_rss": 900 * 2**20},
                   "4000": {"push_records_per_s": 42_000.0, "driver_peak_rss": 151 * 2**20, "jvm_peak_rss": None}},
    }
    text = "\n".join(render(report))
    assert "| push_spark_records_per_s | 40000.0 |" in text
    assert "| 1,000 | 40,000.0 | 150 MiB | 900 MiB |" in text
    assert "| 4,000 | 42,000.0 | 151 MiB | - |" in text
    assert render({"skipped": "java is not installed"}) == ["", "Spark push: not measured (java is not installed)"]
    assert render({}) == []
