"""The pure parts of the benchmark harness: aggregation, ratios, output parsing, markdown.

No process is started here: the harness's numbers are only as honest as this arithmetic.
"""

from __future__ import annotations

import json

import orjson
import pytest

from bench import data
from bench.loadgen import parse_redis_benchmark, parse_wrk, python_loop
from bench.results import RATIO_NAMES, TARGETS, Run, build_report, compute_ratios, render_markdown, summarise


def run(metric: str, side: str, ops: int, seconds: float = 1.0, *, items: int = 1, p99: float = 1.0, round_no: int = 0,
        errors: int = 0) -> Run:
    return Run(metric=metric, side=side, generator="gen", operations=ops, seconds=seconds, items_per_op=items,
               p50_ms=p99 / 2, p99_ms=p99, p999_ms=p99 * 2, round=round_no, errors=errors)


def sample_runs() -> list[Run]:
    runs = []
    for r, (venice, redis) in enumerate([(30_000, 100_000), (36_000, 120_000), (33_000, 90_000)]):
        runs.append(run("server_get", "venice", venice, round_no=r, p99=1.0 + r))
        runs.append(run("server_get", "redis", redis, round_no=r, p99=0.2))
    runs.append(run("router_get", "venice", 20_000, p99=1.5))
    runs.append(run("router_get", "redis", 100_000, p99=0.3))
    runs.append(run("batch100", "venice", 600, items=100))
    runs.append(run("batch100", "redis", 10_000, items=100, errors=2))
    runs.append(run("sdk_get", "venice", 8_000, seconds=2.0))
    runs.append(run("sdk_get", "redis", 10_000, seconds=2.0))
    runs.append(run("sdk_direct_get", "venice", 12_000))
    runs.append(run("sdk_direct_get", "redis", 10_000))
    runs.append(run("davinci_get", "venice", 150_000))
    runs.append(run("davinci_get", "redis", 10_000))
    runs.append(run("compute100", "venice", 300, items=100))
    runs.append(run("compute100", "client_side", 150, items=100))
    runs.append(run("router_get_records", "venice", 15_000))
    runs.append(run("router_get_records", "redis", 100_000))
    runs.append(run("nearline_visible", "venice", 25_000, seconds=5.0, p99=80.0))
    runs.append(run("nearline_apply", "venice", 100_000, seconds=4.0))
    runs.append(run("nearline_apply", "redis", 100_000, seconds=1.0))
    return runs


class TestSummarise:
    def test_medians_over_rounds_and_summed_errors(self) -> None:
        summary = summarise(sample_runs())
        server = summary["server_get"]["venice"]
        assert server.rounds == 3
        assert server.ops_per_s == 33_000
        assert server.p99_ms == 2.0
        assert summary["server_get"]["redis"].ops_per_s == 100_000
        assert summary["batch100"]["redis"].errors == 2

    def test_items_per_op_scales_throughput(self) -> None:
        summary = summarise(sample_runs())
        assert summary["batch100"]["venice"].ops_per_s == 600
        assert summary["batch100"]["venice"].items_per_s == 60_000
        assert summary["sdk_get"]["venice"].ops_per_s == 4_000

    def test_run_rates(self) -> None:
        one = run("x", "venice", 500, seconds=0.5, items=10)
        assert one.ops_per_s == 1000 and one.items_per_s == 10_000
        assert run("x", "venice", 5, seconds=0).ops_per_s == 0


class TestRatios:
    def test_every_figure(self) -> None:
        ratios = compute_ratios(
            summarise(sample_runs()),
            push={"venice_records_per_s": 50_000, "redis_records_per_s": 1_000_000},
            memory={"venice_bytes": 300, "redis_bytes": 200},
            push_records={"venice_records_per_s": 20_000, "redis_records_per_s": 400_000},
        )
        assert set(ratios) == set(RATIO_NAMES)
        assert ratios["push_records_vs_redis_pipe"] == pytest.approx(0.05)
        assert ratios["router_get_records_vs_redis"] == pytest.approx(0.15)
        assert ratios["server_get_vs_redis"] == pytest.approx(0.33)
        assert ratios["router_get_vs_redis"] == pytest.approx(0.2)
        assert ratios["router_p99_ms_c32"] == 1.5
        assert ratios["sdk_get_vs_redispy"] == pytest.approx(0.8)
        assert ratios["batch100_vs_mget"] == pytest.approx(0.06)
        assert ratios["push_vs_redis_pipe"] == pytest.approx(0.05)
        assert ratios["memory_vs_redis"] == pytest.approx(1.5)
        assert ratios["sdk_direct_get_vs_redispy"] == pytest.approx(1.2)
        assert ratios["davinci_get_vs_redispy"] == pytest.approx(15.0)
        assert ratios["compute100_vs_client_side"] == pytest.approx(2.0)
        assert ratios["nearline_visible_p99_ms"] == 80.0
        assert ratios["nearline_vs_redis_set"] == pytest.approx(0.25)

    def test_missing_sides_are_none_not_zero(self) -> None:
        only_venice = [r for r in sample_runs() if r.side == "venice"]
        ratios = compute_ratios(summarise(only_venice))
        assert ratios["server_get_vs_redis"] is None
        assert ratios["router_p99_ms_c32"] == 1.5  # needs no Redis side
        assert ratios["push_vs_redis_pipe"] is None and ratios["memory_vs_redis"] is None
        assert ratios["push_records_vs_redis_pipe"] is None and ratios["router_get_records_vs_redis"] is None
        assert ratios["nearline_visible_p99_ms"] == 80.0 and ratios["nearline_vs_redis_set"] is None

    def test_targets_directions(self) -> None:
        assert TARGETS["server_get_vs_redis"].met(0.6) and not TARGETS["server_get_vs_redis"].met(0.59)
        assert TARGETS["router_p99_ms_c32"].met(2.0) and not TARGETS["router_p99_ms_c32"].met(2.01)
        assert TARGETS["memory_vs_redis"].met(1.2)
        assert TARGETS["batch100_vs_mget"].met(None) is None
        assert TARGETS["davinci_get_vs_redispy"].met(10.0) and not TARGETS["davinci_get_vs_redispy"].met(9.9)
        assert TARGETS["compute100_vs_client_side"].met(1.5) and TARGETS["sdk_direct_get_vs_redispy"].met(1.0)
        # issue 13's goals
        assert TARGETS["router_get_vs_redis"].met(0.35) and not TARGETS["router_get_vs_redis"].met(0.34)
        assert TARGETS["sdk_get_vs_redispy"].met(0.6) and TARGETS["batch100_vs_mget"].met(0.35)
        assert TARGETS["push_vs_redis_pipe"].met(0.4) and not TARGETS["push_vs_redis_pipe"].met(0.39)
        assert TARGETS["push_records_vs_redis_pipe"].met(0.25) and not TARGETS["push_records_vs_redis_pipe"].met(0.24)
        assert TARGETS["router_get_records_vs_redis"].met(0.25)
        assert TARGETS["nearline_visible_p99_ms"].met(100.0) and not TARGETS["nearline_visible_p99_ms"].met(100.5)
        assert TARGETS["nearline_vs_redis_set"].met(0.25) and not TARGETS["nearline_vs_redis_set"].met(0.24)


class TestReport:
    def report(self) -> dict:
        return build_report(
            sample_runs(),
            push={"venice_records_per_s": 50_000.0, "redis_records_per_s": 1_000_000.0},
            memory={"venice_bytes": 300, "redis_bytes": 200},
            machine={"cpu_count": 2},
            config={"keys": 1000},
            generators={"server_get": "wrk vs redis-benchmark"},
        )

    def test_json_has_ratios_raw_figures_and_cores(self) -> None:
        report = json.loads(orjson.dumps(self.report()))
        assert set(report["ratios"]) == set(RATIO_NAMES)
        assert report["machine"]["cpu_count"] == 2
        assert report["met"]["router_p99_ms_c32"] is True
        assert report["met"]["server_get_vs_redis"] is False
        raw = report["summary"]["router_get"]["venice"]
        assert {"ops_per_s", "p50_ms", "p99_ms", "p999_ms"} <= set(raw)
        assert len(report["runs"]) == len(sample_runs())

    def test_markdown_names_every_figure_and_generator(self) -> None:
        text = render_markdown(self.report())
        for name in RATIO_NAMES:
            assert f"| {name} |" in text
        assert "| server_get_vs_redis | 0.33 | >= 0.6 | no |" in text
        assert "| router_p99_ms_c32 | 1.5 | <= 2 | yes |" in text
        assert "wrk vs redis-benchmark" in text
        assert "| batch100 | venice | gen | 1 | 600 | 60,000 |" in text

    def test_markdown_shows_missing_as_na(self) -> None:
        text = render_markdown(build_report([run("server_get", "venice", 10)]))
        assert "| server_get_vs_redis | n/a |" in text


WRK_OUTPUT = """Running 3s test @ http://127.0.0.1:1234
  1 threads and 32 connections
Requests/sec:  10338.10
BENCHJSON {"requests": 41393, "duration_us": 4003928, "connect": 0, "read": 1, "write": 0, "status": 2, "timeout": 0, "p50_us": 2957, "p99_us": 9408, "p999_us": 15582, "mean_us": 3147.9, "max_us": 16757}
"""

REDIS_BENCHMARK_OUTPUT = """====== GET ======
  20000 requests completed in 0.12 seconds
Latency by percentile distribution:
0.000% <= 0.047 milliseconds (cumulative count 4)
50.000% <= 0.119 milliseconds (cumulative count 10373)
99.219% <= 0.319 milliseconds (cumulative count 19844)
99.902% <= 2.519 milliseconds (cumulative count 19982)
100.000% <= 2.599 milliseconds (cumulative count 20000)

Cumulative distribution of latencies:
38.150% <= 0.103 milliseconds (cumulative count 7630)

Summary:
  throughput summary: 166666.67 requests per second
"""


class TestParsers:
    def test_wrk_line(self) -> None:
        data = parse_wrk(WRK_OUTPUT)
        assert data["requests"] == 41393 and data["p99_us"] == 9408 and data["status"] == 2

    def test_wrk_without_line(self) -> None:
        with pytest.raises(ValueError):
            parse_wrk("Requests/sec: 1\n")

    def test_redis_benchmark_percentiles(self) -> None:
        data = parse_redis_benchmark(REDIS_BENCHMARK_OUTPUT)
        assert data["rps"] == pytest.approx(166666.67)
        assert data["p50_ms"] == 0.119
        assert data["p99_ms"] == 0.319
        assert data["p999_ms"] == 2.519  # first bucket at or past 99.9%, not the cumulative block after
        assert data["requests"] == 20000

    def test_redis_benchmark_without_summary(self) -> None:
        with pytest.raises(ValueError):
            parse_redis_benchmark("oops")


class TestPythonLoop:
    def test_counts_checks_and_latencies(self) -> None:
        answers = {"a": 1, "b": 2}
        result = python_loop(
            answers.get, ["a", "b", "zz"], seconds=5, max_ops=300, metric="sdk_get", side="redis",
            generator="loop", check=lambda k, v: v is not None,
        )
        assert result.operations == 300
        # every 97th call is checked: calls 0, 97, 194, 291 ask a, b, zz, a; only zz is missing
        assert result.errors == 1
        assert result.p50_ms is not None and result.p50_ms <= result.p99_ms <= result.p999_ms


class TestData:
    def test_keys_match_redis_benchmark_rand_int(self) -> None:
        assert data.key(12345) == "key:000000012345"

    def test_values_are_100_distinct_ascii_bytes(self) -> None:
        values = {data.value(i) for i in range(2000)}
        assert len(values) == 2000
        assert all(len(v.encode()) == data.VALUE_BYTES for v in values)

    def test_files(self, tmp_path) -> None:
        jsonl = data.write_jsonl(tmp_path / "d.jsonl", 3).read_bytes().splitlines()
        assert orjson.loads(jsonl[2]) == {"key": data.key(2), "value": data.value(2)}
        resp = data.write_resp(tmp_path / "d.resp", 2).read_bytes()
        assert resp.startswith(b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000000\r\n$100\r\n")
        assert resp.count(b"SET") == 2

    def test_request_lines(self) -> None:
        lines = list(data.server_get_lines([1], 3, lambda kb: 2, lambda k: k.encode()))
        assert lines == ["GET /v1/bench/3/2/a2V5OjAwMDAwMDAwMDAwMQ"]
        assert list(data.router_get_lines([7])) == ["GET /storage/bench/key:000000000007"]
        batches = list(data.batch_request_lines(list(range(250)), 100))
        assert len(batches) == 2
        method, path, body = batches[0].split(" ", 2)
        assert (method, path) == ("POST", "/storage/bench")
        assert len(orjson.loads(body)["keys"]) == 100

    def test_router_put_lines(self) -> None:
        from bench.nearline import router_put_lines

        lines = router_put_lines(3)
        assert len(set(lines)) == 3
        method, path, body = lines[2].split(" ", 2)
        assert (method, path) == ("PUT", "/storage/nearline/http-2")
        assert orjson.loads(body) == "http:2:" + "x" * 93


def test_chart_is_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from bench.chart import write_chart

    report = build_report(
        sample_runs(), push={"venice_records_per_s": 5.0, "redis_records_per_s": 10.0},
        memory={"venice_bytes": 3, "redis_bytes": 2}, machine={"cpu_count": 2}, config={"keys": 10},
    )
    path = tmp_path / "chart.png"
    assert write_chart(report, path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_cpu_use_is_rendered_per_metric() -> None:
    report = build_report([run("server_get", "venice", 10)])
    report["cpu_pct"] = {"server_get": {"router": 0.5, "server 0": 97.2, "wrk": 61.0}}
    text = render_markdown(report)
    assert "* server_get: router 0.5, server 0 97.2, wrk 61.0" in text
