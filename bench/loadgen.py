"""Load generators: wrk (HTTP) and redis-benchmark (RESP), both C; and one-thread Python loops.

Each ``run_*`` function returns a :class:`bench.results.Run`. The parsers of the tools'
output are pure functions, unit-tested in ``tests/bench``.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.results import Run

__all__ = [
    "WRK_SCRIPT",
    "parse_redis_benchmark",
    "parse_wrk",
    "python_loop",
    "run_redis_benchmark",
    "run_wrk",
]

_WRK_MARK = "BENCHJSON "

WRK_SCRIPT = r"""
-- Requests come from a file of lines, one request per line:
--   GET <path>            or   POST|PUT <path> <json body>
-- Each wrk thread starts at its own offset and walks the list round-robin.
local reqs = {}
local n = 0
local idx = 0

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local method, rest = line:match("^(%u+) (.*)$")
    if method == "POST" or method == "PUT" then
      local path, body = rest:match("^(%S+) (.*)$")
      n = n + 1
      reqs[n] = wrk.format(method, path, {["Content-Type"] = "application/json"}, body)
    else
      n = n + 1
      reqs[n] = wrk.format("GET", rest)
    end
  end
  f:close()
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  idx = math.random(n) - 1
end

function request()
  idx = idx % n + 1
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p99_us": %d, "p999_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
"""


def parse_wrk(output: str) -> dict[str, float]:
    """The JSON line the script's ``done`` prints; ValueError when wrk printed none."""
    for line in output.splitlines():
        if line.startswith(_WRK_MARK):
            data: dict[str, float] = json.loads(line[len(_WRK_MARK) :])
            return data
    raise ValueError(f"wrk printed no result line; output:\n{output[-2000:]}")


def run_wrk(
    *,
    wrk: str,
    url: str,
    requests_file: Path,
    script: Path,
    metric: str,
    connections: int,
    seconds: float,
    threads: int = 1,
    items_per_op: int = 1,
    round_no: int = 0,
) -> Run:
    """``wrk -t{threads} -c{connections} -d{seconds}s`` over the request lines of ``requests_file``."""
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(script), url, "--", str(requests_file),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr[-2000:]}")
    data = parse_wrk(result.stdout)
    errors = int(data["connect"] + data["read"] + data["write"] + data["status"] + data["timeout"])
    return Run(
        metric=metric,
        side="venice",
        generator=f"wrk -t{threads} -c{connections}",
        operations=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        items_per_op=items_per_op,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        p999_ms=data["p999_us"] / 1000,
        round=round_no,
        extra={"mean_ms": data["mean_us"] / 1000, "max_ms": data["max_us"] / 1000},
    )


_RB_THROUGHPUT = re.compile(r"throughput summary:\s*([\d.]+) requests per second")
_RB_PERCENTILE = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)")


def parse_redis_benchmark(output: str) -> dict[str, float]:
    """Throughput and p50/p99/p99.9 (ms) from redis-benchmark's (7.x) full report.

    Percentiles come from the "Latency by percentile distribution" block: the first
    bucket whose cumulative share reaches the percentile.
    """
    match = _RB_THROUGHPUT.search(output)
    if match is None:
        raise ValueError(f"redis-benchmark printed no throughput; output:\n{output[-2000:]}")
    buckets: list[tuple[float, float, int]] = []
    in_block = False
    for line in output.splitlines():
        if line.startswith("Latency by percentile distribution"):
            in_block = True
            continue
        if in_block:
            found = _RB_PERCENTILE.match(line)
            if found is None:
                if buckets:
                    break
                continue
            buckets.append((float(found.group(1)), float(found.group(2)), int(found.group(3))))
    result = {"rps": float(match.group(1))}
    for name, pct in (("p50_ms", 50.0), ("p99_ms", 99.0), ("p999_ms", 99.9)):
        result[name] = next((ms for share, ms, _ in buckets if share >= pct), buckets[-1][1] if buckets else 0.0)
    if buckets:
        result["requests"] = buckets[-1][2]
    return result


def run_redis_benchmark(
    *,
    redis_benchmark: str,
    port: int,
    command: Sequence[str],
    keyspace: int,
    requests: int,
    connections: int,
    metric: str,
    items_per_op: int = 1,
    round_no: int = 0,
    timeout_s: float = 600,
) -> Run:
    """``redis-benchmark -c{connections} -n{requests} -r{keyspace} COMMAND...`` (one thread)."""
    args = [
        redis_benchmark, "-h", "127.0.0.1", "-p", str(port), "-c", str(connections), "-n", str(requests),
        "-r", str(keyspace), *command,
    ]
    started = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({result.returncode}): {result.stderr[-2000:]}")
    data = parse_redis_benchmark(result.stdout)
    return Run(
        metric=metric,
        side="redis",
        generator=f"redis-benchmark -c{connections}",
        operations=requests,
        seconds=requests / data["rps"],
        items_per_op=items_per_op,
        errors=0,
        p50_ms=data["p50_ms"],
        p99_ms=data["p99_ms"],
        p999_ms=data["p999_ms"],
        round=round_no,
        extra={"wall_s": wall},
    )


def python_loop(
    call: Callable[[str], object],
    keys: Sequence[str],
    *,
    seconds: float,
    max_ops: int,
    metric: str,
    side: str,
    generator: str,
    check: Callable[[str, object], bool] | None = None,
    round_no: int = 0,
) -> Run:
    """Call ``call(key)`` in one thread for ``seconds`` (at most ``max_ops`` calls).

    Latencies of every call are recorded with ``perf_counter`` (~0.1 µs of overhead).
    ``check`` verifies a sample of answers (every 97th) so a loop of errors cannot pass
    as throughput.
    """
    latencies: list[float] = []
    record = latencies.append
    clock = time.perf_counter
    errors = 0
    count = len(keys)
    started = clock()
    stop_at = started + seconds
    done = 0
    while done < max_ops:
        key = keys[done % count]
        t0 = clock()
        value = call(key)
        t1 = clock()
        record(t1 - t0)
        if check is not None and done % 97 == 0 and not check(key, value):
            errors += 1
        done += 1
        if t1 >= stop_at:
            break
    elapsed = clock() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1000

    return Run(
        metric=metric,
        side=side,
        generator=generator,
        operations=done,
        seconds=elapsed,
        errors=errors,
        p50_ms=pct(50),
        p99_ms=pct(99),
        p999_ms=pct(99.9),
        round=round_no,
    )
