"""``python -m bench``: venice-py and Redis side by side on loopback.

Starts Redis and a venice cluster (controller, 2 storage servers, router; on Kafka from
deploy/kafka or the embedded log), loads the same data into both, measures each
figure of :data:`bench.results.TARGETS` with the two sides alternating, and prints
(and with ``--out`` writes) JSON, markdown and a PNG chart. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import data
from bench.chart import write_chart
from bench.loadgen import WRK_SCRIPT, python_loop, run_redis_benchmark, run_wrk
from bench.results import Run, build_report, render_markdown
from bench.sides import FloorSide, RedisSide, VeniceSide, child_pids, process_memory
from bench.tools import ensure_tools, version_of

__all__ = ["main"]

_T0 = time.monotonic()
GROUPS = ("http", "sdk", "direct", "davinci", "compute", "memory", "records", "spark", "nearline")
"""What ``--only`` chooses from: the wrk/redis-benchmark figures, the router SDK loop, the
clients of issue 9, memory, the record workload (bench/records.py), the Spark push and the
nearline writes of issue 12."""
NEARLINE_RATE = 5000.0
"""Writes/s of the visibility figure (the issue's 5,000)."""


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k keys, 3 s runs, 2 rounds (under 5 minutes)")
    parser.add_argument("--out", type=Path, help="write JSON here, and .md and .png beside it")
    parser.add_argument("--backend", choices=("kafka", "embedded"), default="kafka", help="venice pub-sub")
    parser.add_argument("--keys", type=int, help="number of keys (default 1,000,000; 100,000 with --quick)")
    parser.add_argument("--records", type=int, help="records of the record workload (default 300,000; 50,000 with --quick)")
    parser.add_argument("--seconds", type=float, help="length of one timed run (default 10; 3 with --quick)")
    parser.add_argument("--rounds", type=int, help="alternating rounds per figure (default 3; 2 with --quick)")
    parser.add_argument("--connections", type=int, default=32, help="connections of the C load generators")
    parser.add_argument("--router-workers", type=int, help="router processes (venice router --workers; default: "
                        "venice.workers.default_workers(): 1 up to 2 cores, then one per 2 cores up to 4)")
    parser.add_argument("--server-workers", type=int, help="processes per storage server (venice server --workers: one "
                        "ingests, the others read; default: venice.workers.default_workers())")
    parser.add_argument("--work-dir", type=Path, help="where data and processes live (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="afterwards, profile each venice hot path with py-spy under the same load; stacks go to DIR",
    )
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark push figures")
    parser.add_argument(
        "--only", metavar="GROUPS",
        help=f"measure only these groups, comma-separated, of: {', '.join(GROUPS)} (the push is always measured)",
    )
    parser.add_argument("--spark-rows", help="input sizes of the Spark push, comma-separated (default 1000000,4000000; "
                        "100000,400000 with --quick): records/s from the first, driver memory from each")
    parser.add_argument("--spark-master", default="local[2]", help="Spark master of the Spark push (default local[2])")
    args = parser.parse_args(argv)
    chosen = [g.strip() for g in (args.only or ",".join(GROUPS)).split(",") if g.strip()]
    unknown = sorted(set(chosen) - set(GROUPS))
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    args.groups = set(chosen)
    if "spark" not in args.groups:
        args.no_spark = True
    args.spark_rows = [int(n) for n in (args.spark_rows or ("100000,400000" if args.quick else "1000000,4000000")).split(",")]
    args.keys = args.keys or (100_000 if args.quick else 1_000_000)
    args.records = args.records or (50_000 if args.quick else 300_000)
    args.seconds = args.seconds or (3.0 if args.quick else 10.0)
    args.rounds = args.rounds or (2 if args.quick else 3)
    return args


def _machine(tools: dict[str, str], backend: str) -> dict[str, Any]:
    mem_total = 0
    try:
        with open("/proc/meminfo") as meminfo:
            mem_total = int(meminfo.readline().split()[1]) * 1024
    except OSError:
        pass
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mem_total_bytes": mem_total,
        "redis": version_of(tools["redis-server"], "--version"),
        "wrk": version_of(tools["wrk"], "-v"),
        "backend": backend,
    }


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _loadavg() -> str:
    """The 1-minute load average: other work on the machine shows here."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "unknown"


def _cpu_busy_pct(seconds: float = 1.0) -> float:
    """Share of all cores busy over ``seconds`` (from /proc/stat): taken while the
    benchmark itself is idle, it shows how much other work the machine is doing."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return -1.0
    total = total1 - total0
    return round(100.0 * (1 - (idle1 - idle0) / total), 1) if total > 0 else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, str], work: Path) -> None:
        self.args = args
        self.tools = tools
        self.work = work
        self.runs: list[Run] = []
        self.redis = RedisSide(work, tools)
        self.venice = VeniceSide(
            work, backend=args.backend, router_workers=args.router_workers, server_workers=args.server_workers
        )
        self.floor = FloorSide(work)
        self.script = work / "requests.lua"
        self.script.write_text(WRK_SCRIPT)
        self.rps_guess: dict[str, float] = {}
        self.cpu: dict[str, list[dict[str, float]]] = {}

    # -- setup ---------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        n = self.args.keys
        log(f"writing {n:,} records (JSONL for venice push, RESP for redis-cli --pipe)")
        jsonl = data.write_jsonl(self.work / "data.jsonl", n)
        resp = data.write_resp(self.work / "data.resp", n)
        log("starting redis-server and the uvicorn floor app")
        self.redis.start()
        self.floor.start()
        log(f"starting venice ({self.args.backend}): controller, 2 servers, router")
        self.venice.start()
        self.venice.create_store(replication_factor=2)

        log("loading redis with redis-cli --pipe")
        redis_s = self.redis.load(resp)
        if int(self.redis.cli("DBSIZE")) != n:
            raise RuntimeError(f"redis holds {self.redis.cli('DBSIZE')} keys, expected {n}")
        log(f"redis loaded in {redis_s:.2f}s; venice push (to ONLINE at R=2)")
        failed_pushes: list[str] = []
        while True:
            try:
                venice_s, summary = self.venice.push(jsonl)
                break
            except RuntimeError as exc:
                # Reported in the output, never hidden: the timed figure is of the push that worked.
                failed_pushes.append(str(exc)[-500:])
                log(f"venice push failed (attempt {len(failed_pushes)}): {str(exc)[-300:]}")
                if len(failed_pushes) >= 2:
                    raise
        log(f"venice push took {venice_s:.2f}s: {summary}")
        self.venice.wait_router_serves(data.key(0))
        return {
            "records": n,
            "venice_seconds": round(venice_s, 3),
            "venice_records_per_s": n / venice_s,
            "redis_seconds": round(redis_s, 3),
            "redis_records_per_s": n / redis_s,
            "venice_summary": summary,
            "venice_failed_attempts": failed_pushes,
            "how": "wall time of the `venice push` process (start to ONLINE at R=2) vs `redis-cli --pipe` of SETs",
        }

    def write_request_files(self) -> None:
        from venice.partitioner import partition_for
        from venice.schema import AvroCodec

        codec = AvroCodec("string", kind="key")
        sample = data.sample_indexes(self.args.keys, min(self.args.keys, 200_000))
        assert self.venice.version is not None
        lines = data.server_get_lines(
            sample, self.venice.version, lambda kb: partition_for(kb, self.venice.partitions), codec.encode
        )
        (self.work / "server_get.txt").write_text("\n".join(lines) + "\n")
        (self.work / "router_get.txt").write_text("\n".join(data.router_get_lines(sample)) + "\n")
        batch_sample = data.sample_indexes(self.args.keys, 200_000, seed=23)
        (self.work / "batch100.txt").write_text("\n".join(data.batch_request_lines(batch_sample, 100)) + "\n")

    def sanity_check(self) -> None:
        """Every path the load generators use answers the right value before anything is timed."""
        i = self.args.keys // 2
        got = httpx.get(f"{self.venice.router_url}/storage/{data.STORE}/{data.key(i)}", timeout=10)
        if got.status_code != 200 or got.json() != data.value(i):
            raise RuntimeError(f"router answered {got.status_code} {got.text[:200]} for {data.key(i)}")
        first = (self.work / "server_get.txt").read_text().split("\n", 1)[0].split(" ", 1)[1]
        direct = httpx.get(self.venice.server_url(0) + first, timeout=10)
        if direct.status_code != 200:
            raise RuntimeError(f"storage server answered {direct.status_code} for {first}")
        if self.redis.cli("GET", data.key(i)) != data.value(i):
            raise RuntimeError("redis does not hold the expected value")

    # -- load --------------------------------------------------------------------------
    def wrk(self, metric: str, base_url: str, round_no: int, seconds: float, items: int = 1, side: str = "venice") -> Run:
        watched = self._watched() if side == "venice" and round_no >= 0 else {}
        before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        children_before = _children_cpu()
        started = time.perf_counter()
        run = run_wrk(
            wrk=self.tools["wrk"], url=base_url, requests_file=self.work / f"{metric}.txt", script=self.script,
            metric=metric, connections=self.args.connections, seconds=seconds, items_per_op=items, round_no=round_no,
        )
        if watched:
            wall = time.perf_counter() - started
            usage = {name: 100.0 * (cpu_seconds(pid) - before[name]) / wall for name, pid in watched.items()}
            usage["wrk"] = 100.0 * (_children_cpu() - children_before) / wall
            self.cpu.setdefault(metric, []).append(usage)
        return run if side == "venice" else replace(run, side=side)

    def _watched(self) -> dict[str, int]:
        """The venice processes whose CPU time is recorded during venice runs."""
        watched = {"router": self.venice.router_pid(), "server 0": self.venice.server_pid(0),
                   "server 1": self.venice.server_pid(1)}
        for name, pid in list(watched.items()):  # the other workers (--workers), children of the first
            for n, child in enumerate(child_pids(pid), 1):
                watched[f"{name} w{n}"] = child
        return watched

    def cpu_report(self) -> dict[str, dict[str, float]]:
        """Median CPU use (% of one core) of each process over a metric's timed venice runs."""
        return {
            metric: {name: round(statistics.median(u[name] for u in usages), 1) for name in usages[0]}
            for metric, usages in self.cpu.items()
        }

    def redis_bench(
        self, metric: str, command: list[str], round_no: int, seconds: float, items: int = 1, keyspace: int | None = None
    ) -> Run:
        guess = self.rps_guess.get(metric, 50_000.0)
        requests = max(10_000, int(guess * seconds))
        run = run_redis_benchmark(
            redis_benchmark=self.tools["redis-benchmark"], port=self.redis.port, command=command,
            keyspace=keyspace or self.args.keys, requests=requests, connections=self.args.connections, metric=metric,
            items_per_op=items, round_no=round_no,
        )
        self.rps_guess[metric] = run.ops_per_s
        return run

    def measure_pair(self, metric: str, venice: Any, redis: Any, *extra: Any) -> None:
        """Warm both sides up, then ``rounds`` alternating timed runs (order flips every round).

        ``extra`` sides (references, not part of any ratio) run after the pair each round.
        """
        warm = min(2.0, self.args.seconds)
        venice(-1, warm)
        redis(-1, warm)
        for round_no in range(self.args.rounds):
            order = (venice, redis) if round_no % 2 == 0 else (redis, venice)
            for side in (*order, *extra):
                run = side(round_no, self.args.seconds)
                self.runs.append(run)
                log(
                    f"{metric} round {round_no} {run.side}: {run.items_per_s:,.0f} items/s "
                    f"p50 {_ms(run.p50_ms)} p99 {_ms(run.p99_ms)} ms errors {run.errors}"
                )

    def measure_http(self) -> None:
        server, router = self.venice.server_url(0), self.venice.router_url
        get = ["GET", "key:__rand_int__"]
        mget = ["MGET", *(["key:__rand_int__"] * 100)]
        self.measure_pair(
            "server_get",
            lambda r, s: self.wrk("server_get", server, r, s),
            lambda r, s: self.redis_bench("server_get", get, r, s),
            lambda r, s: self.wrk("server_get", self.floor.url, r, s, side="uvicorn_floor"),
        )
        self.measure_pair(
            "router_get",
            lambda r, s: self.wrk("router_get", router, r, s),
            lambda r, s: self.redis_bench("router_get", get, r, s),
        )
        self.measure_pair(
            "batch100",
            lambda r, s: self.wrk("batch100", router, r, s, items=100),
            lambda r, s: self.redis_bench("batch100", mget, r, s, items=100),
        )

    def measure_sdk(self) -> None:
        import redis

        import venice

        indexes = data.sample_indexes(self.args.keys, 50_000, seed=31)
        keys = [data.key(i) for i in indexes]

        def venice_ok(key: str, got: object) -> bool:
            return got == data.value(int(key[4:]))

        def redis_ok(key: str, got: object) -> bool:
            return isinstance(got, bytes) and got.decode() == data.value(int(key[4:]))

        with venice.Client(self.venice.router_url) as client:
            r = redis.Redis(host="127.0.0.1", port=self.redis.port)
            try:
                def venice_loop(round_no: int, seconds: float) -> Run:
                    return python_loop(
                        lambda k: client.get(data.STORE, k), keys, seconds=seconds, max_ops=2_000_000,
                        metric="sdk_get", side="venice", generator="python loop, venice.Client.get",
                        check=venice_ok, round_no=round_no,
                    )

                def redis_loop(round_no: int, seconds: float) -> Run:
                    return python_loop(
                        r.get, keys, seconds=seconds, max_ops=2_000_000, metric="sdk_get", side="redis",
                        generator="python loop, redis-py get", check=redis_ok, round_no=round_no,
                    )

                self.measure_pair("sdk_get", venice_loop, redis_loop)
            finally:
                r.close()

    def measure_records(self) -> dict[str, Any]:
        """The record workload (bench/records.py): push from CSV (timed against ``redis-cli --pipe``
        of the same records as JSON), push again from Parquet, then GETs through the router."""
        from bench import records as rec

        n = self.args.records
        log(f"record workload: generating {n:,} records (18 fields) as CSV, Parquet and RESP")
        made = rec.generate(n)
        csv_path = made.write_csv(self.work / "records.csv")
        parquet_path = made.write_parquet(self.work / "records.parquet")
        resp = made.write_resp(self.work / "records.resp")
        self.venice.create_store(replication_factor=2, store=rec.STORE, value_schema=rec.VALUE_SCHEMA)
        redis_s = self.redis.load(resp)
        log(f"records: redis loaded in {redis_s:.2f}s; venice push of the CSV (to ONLINE at R=2)")
        csv_s, csv_summary = self.venice.push(csv_path, store=rec.STORE)
        log(f"records: CSV push took {csv_s:.2f}s: {csv_summary}; now the Parquet push")
        parquet_s, parquet_summary = self.venice.push(parquet_path, store=rec.STORE)
        log(f"records: Parquet push took {parquet_s:.2f}s: {parquet_summary}")
        self.venice.wait_router_serves(rec.key(0), store=rec.STORE)
        sample = data.sample_indexes(n, min(n, 200_000), seed=41)
        (self.work / "router_get_records.txt").write_text("\n".join(rec.router_get_lines(rec.STORE, sample)) + "\n")
        for i in (0, n // 2, n - 1):  # every answer the load generators get is the record pushed
            got = httpx.get(f"{self.venice.router_url}/storage/{rec.STORE}/{rec.key(i)}", timeout=10)
            if got.status_code != 200 or got.json() != made.expected(i):
                raise RuntimeError(f"router answered {got.status_code} {got.text[:300]} for {rec.key(i)}")
            if orjson.loads(self.redis.cli("GET", rec.key(i))) != made.expected(i):
                raise RuntimeError(f"redis does not hold the expected record {rec.key(i)}")
        get = ["GET", "rec:__rand_int__"]
        self.measure_pair(
            "router_get_records",
            lambda r, s: self.wrk("router_get_records", self.venice.router_url, r, s),
            lambda r, s: self.redis_bench("router_get_records", get, r, s, keyspace=n),
        )
        return {
            "records": n,
            "fields": len(rec.VALUE_SCHEMA["fields"]),
            "csv_bytes": csv_path.stat().st_size,
            "parquet_bytes": parquet_path.stat().st_size,
            "venice_seconds": round(csv_s, 3),
            "venice_records_per_s": n / csv_s,
            "venice_summary": csv_summary,
            "venice_parquet_seconds": round(parquet_s, 3),
            "venice_parquet_records_per_s": n / parquet_s,
            "venice_parquet_summary": parquet_summary,
            "redis_seconds": round(redis_s, 3),
            "redis_records_per_s": n / redis_s,
            "how": "wall time of `venice push` of the CSV (start to ONLINE at R=2) vs `redis-cli --pipe` of SETs of "
            "the records as JSON; the Parquet push of the same records is reported beside it",
        }

    def measure_nearline(self) -> None:
        """Nearline writes (bench/nearline.py), after the read figures and memory."""
        from bench import nearline

        log("nearline: a hybrid store with an empty first version")
        self.venice.create_nearline_store(replication_factor=2)
        controller, router = self.venice.controller_url, self.venice.router_url
        seconds = max(self.args.seconds, 3.0)
        nearline.visible_run(controller, router, rate=NEARLINE_RATE, seconds=1.0, round_no=-1)  # warm-up
        for round_no in range(self.args.rounds):
            run = nearline.visible_run(controller, router, rate=NEARLINE_RATE, seconds=seconds, round_no=round_no)
            self.runs.append(run)
            log(f"nearline_visible round {round_no}: {run.ops_per_s:,.0f} writes/s, p50 {run.p50_ms} p99 {run.p99_ms} ms, "
                f"{run.extra.get('probes')} probes, errors {run.errors}")
        count = 50_000 if self.args.quick else 200_000
        servers = [self.venice.server_url(i) for i in range(self.venice.servers)]
        set_value = ["SET", "key:__rand_int__", data.value(0)]
        self.measure_pair(
            "nearline_apply",
            lambda r, s: nearline.apply_run(controller, servers, count=count if r >= 0 else count // 5, round_no=r),
            lambda r, s: self.redis_bench("nearline_apply", set_value, r, s),
        )
        # The router's HTTP writes (202 = durable in the log), under wrk, beside the same SET.
        (self.work / "router_put.txt").write_text("\n".join(nearline.router_put_lines(200_000)) + "\n")
        self.measure_pair(
            "router_put",
            lambda r, s: self.wrk("router_put", router, r, s),
            lambda r, s: self.redis_bench("router_put", set_value, r, s),
        )

    def measure_memory(self) -> dict[str, Any]:
        server = process_memory(self.venice.server_pid(0))
        # Read workers map the same LMDB pages (counted once, in the ingesting process's
        # RssFile); what each adds is its own anonymous memory.
        worker_anon = sum(process_memory(pid).get("RssAnon", 0) for pid in child_pids(self.venice.server_pid(0)))
        server["VmRSS"] += worker_anon
        redis_mem = process_memory(self.redis.pid)
        info = self.redis.info_memory()
        return {
            "venice_bytes": server["VmRSS"],
            "redis_bytes": redis_mem["VmRSS"],
            "venice_rss_anon": server.get("RssAnon", 0),
            "venice_read_workers_rss_anon": worker_anon,
            "venice_rss_file": server.get("RssFile", 0),
            "venice_peak_rss": server.get("VmHWM", 0),
            "venice_lmdb_file_bytes": self.venice.lmdb_bytes(0),
            "redis_used_memory": info.get("used_memory", 0),
            "redis_peak_rss": redis_mem.get("VmHWM", 0),
            "how": "VmRSS of storage server 0 (holds every partition at R=2 with 2 servers) plus the RssAnon of its "
            "read workers (they share its LMDB pages) vs VmRSS of redis-server, both after the read benchmarks touched "
            "the data",
        }

    def measure_spark(self) -> dict[str, Any]:
        """The Spark push beside the single-process one (bench/spark.py), after the read runs."""
        from bench import spark

        try:
            return spark.run(self.venice.controller_url, self.work, self.args.spark_rows, partitions=self.venice.partitions,
                             master=self.args.spark_master, log=log)
        except Exception as exc:  # reported, never fatal: the other figures are already measured
            log(f"Spark push failed: {str(exc)[-500:]}")
            return {"error": str(exc)[-2000:]}

    def run(self) -> dict[str, Any]:
        self.loadavg_start = _loadavg()
        push = self.load()
        self.write_request_files()
        self.sanity_check()
        self.busy_before = _cpu_busy_pct()
        log(f"measuring (machine {self.busy_before}% busy with other work just before)")
        from bench import clients

        groups = self.args.groups
        if "http" in groups:
            self.measure_http()
        if "sdk" in groups:
            self.measure_sdk()
        if "direct" in groups:
            clients.measure_direct(self, log)
        davinci = clients.measure_davinci(self, log) if "davinci" in groups else None
        if "compute" in groups:
            clients.measure_compute(self, log)
        records = self.measure_records() if "records" in groups else None
        memory = self.measure_memory() if "memory" in groups else None
        spark = self.measure_spark() if not self.args.no_spark else None
        if "nearline" in groups:
            self.measure_nearline()
        profiles = self.profile(self.args.profile) if self.args.profile is not None else None
        generators = {
            "server_get": f"wrk -t1 -c{self.args.connections} (C, HTTP/1.1 keep-alive) vs redis-benchmark "
            f"-c{self.args.connections} GET (C, RESP, one thread)",
            "router_get": f"wrk -t1 -c{self.args.connections} vs redis-benchmark -c{self.args.connections} GET",
            "batch100": f"wrk -t1 -c{self.args.connections} POST 100 keys vs redis-benchmark "
            f"-c{self.args.connections} MGET of 100 random keys",
            "sdk_get": "one Python thread: venice.Client.get loop vs redis-py Redis.get loop",
            "sdk_direct_get": "one Python thread: venice.Client(direct=True).get loop (straight to the storage servers) "
            "vs redis-py Redis.get loop",
            "davinci_get": "one Python thread: venice.DaVinciClient.get loop (local LMDB copy) vs redis-py Redis.get loop",
            "compute100": "one Python thread: Client.compute of 100 keys (64-float dot product on the servers, through "
            "the router) vs Client.batch_get of the same keys + numpy in the client; items are keys",
            "push": "wall clock of `venice push` vs `redis-cli --pipe`",
            "push_records": "wall clock of `venice push` of the record workload's CSV (to ONLINE at R=2) vs "
            "`redis-cli --pipe` of the same records as JSON strings",
            "router_get_records": f"wrk -t1 -c{self.args.connections} GET of records through the router (JSON answers) "
            f"vs redis-benchmark -c{self.args.connections} GET of the records as JSON strings",
            "memory": "VmRSS from /proc of the storage server vs redis-server",
            "spark": "wall clock of `venice push` vs a Spark push (bench/spark.py) of the same member-feature records",
            "nearline_visible": f"one venice.AsyncProducer at {NEARLINE_RATE:g} writes/s; every 50th write polled "
            "through the router every 2 ms until visible (bench/nearline.py)",
            "nearline_apply": "one venice.AsyncProducer as fast as it sends, until both replicas applied every write "
            f"vs redis-benchmark -c{self.args.connections} SET of 100 bytes",
            "router_put": f"wrk -t1 -c{self.args.connections} PUT /storage/nearline/<new key> through the router "
            f"(each 202 durable in the log; not yet applied) vs redis-benchmark -c{self.args.connections} SET of 100 bytes; "
            "no target",
            "uvicorn_floor": "wrk against a trivial raw ASGI app on uvicorn+uvloop+httptools (bench/floor.py): "
            "the ceiling of any uvicorn-served figure here; in no ratio",
        }
        config = {
            "keys": self.args.keys, "value_bytes": data.VALUE_BYTES, "seconds_per_run": self.args.seconds,
            "rounds": self.args.rounds, "connections": self.args.connections, "quick": self.args.quick,
            "partitions": self.venice.partitions, "replication_factor": 2, "router_workers": self.venice.router_workers,
            "server_workers": self.venice.server_workers,
        }
        machine = _machine(self.tools, self.args.backend)
        machine["loadavg_start"] = self.loadavg_start
        machine["loadavg_end"] = _loadavg()
        machine["other_work_busy_pct_before_measuring"] = self.busy_before
        report = build_report(
            self.runs, push=push, memory=memory, push_records=records, machine=machine, config=config, generators=generators,
        )
        report["cpu_pct"] = self.cpu_report()
        if records is not None:
            report["records"] = records
        if davinci is not None:
            report["davinci"] = davinci
        if spark is not None:
            report["spark"] = spark
        if profiles is not None:
            report["profiles"] = profiles
        return report

    # -- profiles ------------------------------------------------------------------------
    def profile(self, out_dir: Path) -> dict[str, Any]:
        """One more run of each venice hot path, with py-spy on the process serving it."""
        import concurrent.futures

        from bench import profile

        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        seconds = max(3.0, self.args.seconds)
        router_pid = self.venice.router_pid()
        server_pid = self.venice.server_pid(0)
        results: dict[str, Any] = {}

        def under_load(load: Any, targets: dict[str, tuple[int, str]]) -> None:
            with concurrent.futures.ThreadPoolExecutor(max_workers=1 + len(targets)) as pool:
                running = pool.submit(load, seconds + 2.0)
                time.sleep(1.0)  # past connection set-up
                spies = {
                    name: pool.submit(profile.record, py_spy, pid, seconds, out_dir / f"{name}.txt")
                    for name, (pid, _) in targets.items()
                }
                for name, spy in spies.items():
                    try:
                        results[name] = {"what": targets[name][1], **profile.summarise(spy.result(), seconds=seconds)}
                    except Exception as exc:  # reported, never fatal: the figures are already measured
                        results[name] = {"what": targets[name][1], "error": str(exc)[-300:]}
                running.result()

        log("profiling server_get (storage server 0 under wrk)")
        under_load(lambda s: self.wrk("server_get", self.venice.server_url(0), -2, s),
                   {"server_get": (server_pid, "storage server 0, wrk GETs straight to it")})
        log("profiling router_get (router and storage server 0 under wrk through the router)")
        under_load(lambda s: self.wrk("router_get", self.venice.router_url, -2, s),
                   {"router_get/router": (router_pid, "router, wrk GETs through it"),
                    "router_get/server": (server_pid, "storage server 0, while wrk GETs go through the router")})
        log("profiling batch100 (router under wrk batch gets)")
        under_load(lambda s: self.wrk("batch100", self.venice.router_url, -2, s, items=100),
                   {"batch100/router": (router_pid, "router, wrk 100-key batch gets")})

        import venice

        keys = [data.key(i) for i in data.sample_indexes(self.args.keys, 20_000, seed=7)]
        with venice.Client(self.venice.router_url) as client:
            def sdk_loop(s: float) -> None:
                python_loop(lambda k: client.get(data.STORE, k), keys, seconds=s, max_ops=2_000_000,
                            metric="sdk_get", side="venice", generator="profile", round_no=-2)

            log("profiling sdk_get (this process's Client.get loop, and the router)")
            under_load(sdk_loop, {"sdk_get/client": (os.getpid(), "the benchmark process running Client.get"),
                                  "sdk_get/router": (router_pid, "router, serving the one-thread Client.get loop")})

        log("profiling push (a second push of the same data, under py-spy)")
        try:
            command = self.venice.push_command(self.work / "data.jsonl")
            stacks, wall, _ = profile.record_command(py_spy, command, out_dir / "push.txt", timeout_s=3600)
            results["push"] = {"what": "the venice push process, start to ONLINE", "wall_s": round(wall, 2),
                               **profile.summarise(stacks, seconds=wall)}
        except Exception as exc:
            results["push"] = {"what": "the venice push process", "error": str(exc)[-300:]}
        return results

    def stop(self) -> None:
        self.venice.stop()
        self.redis.stop()
        self.floor.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import redis  # noqa: F401  - the redis-py side of sdk_get_vs_redispy
    except ImportError:
        print("python -m bench needs redis-py: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    tools = ensure_tools(log)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="venice-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, tools, work)
    try:
        report = bench.run()
    finally:
        log("stopping")
        bench.stop()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    markdown = render_markdown(report)
    print(markdown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        args.out.with_suffix(".md").write_text(markdown)
        if write_chart(report, args.out.with_suffix(".png")):
            log(f"wrote {args.out}, {args.out.with_suffix('.md')}, {args.out.with_suffix('.png')}")
        else:
            log(f"wrote {args.out} and {args.out.with_suffix('.md')}; no PNG: pip install matplotlib")
    log(f"done in {time.monotonic() - _T0:.0f}s")
    return 0
