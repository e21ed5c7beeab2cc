"""Where the CPU goes on the venice side: py-spy samples of a running process, summarised.

``python -m bench --profile DIR`` runs each hot path once more under load with py-spy
attached to the process that serves it and writes, per path, the collapsed stacks
(``DIR/<name>.txt``, the input of flamegraph tools) and a summary in the report:

* ``busy_pct``: samples with the process on CPU (py-spy drops idle samples) over the
  samples a fully busy thread would give: 100 means one core saturated, the ceiling of a
  one-event-loop Python process;
* ``by_layer``: the share of busy samples whose innermost Python frame is in each layer
  (the HTTP server, the event loop, our code, LMDB, Avro, the HTTP client, ...);
* ``top_self``: the functions most often innermost.

Time in C extensions (httptools, uvloop, lmdb) is counted to the Python frame that
called into them, which is what the layers name.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LAYERS", "layer_of", "record", "summarise"]

RATE_HZ = 250

LAYERS: Sequence[tuple[str, tuple[str, ...]]] = (
    ("http server (venice/httpserver.py, uvicorn, httptools)", ("/venice/httpserver.py", "/uvicorn/", "httptools")),
    ("event loop (asyncio, uvloop)", ("/asyncio/", "uvloop", "/selectors.py", "/socket.py", "/ssl.py")),
    ("http client (httpx, httpcore, h11)", ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/sniffio/")),
    ("router (router/)", ("/router/",)),
    ("storage server (server/, venice/ingestion/)", ("/server/", "/venice/ingestion/")),
    ("push job (venice/push/)", ("/venice/push/",)),
    ("pub-sub (venice/pubsub, aiokafka)", ("/venice/pubsub/", "/aiokafka/", "/kafka/")),
    ("sdk and core (venice/)", ("/venice/",)),
    ("lmdb", ("lmdb",)),
    ("avro (fastavro)", ("fastavro",)),
    ("json (orjson, json)", ("orjson", "/json/")),
    ("parquet/csv readers (pyarrow, csv)", ("pyarrow", "/csv.py")),
    ("benchmark harness (bench/)", ("/bench/",)),
)

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def record(py_spy: str, pid: int, seconds: float, out: Path) -> Path:
    """Sample ``pid`` for ``seconds`` into collapsed stacks at ``out`` (blocks meanwhile)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(RATE_HZ),
         "--format", "raw", "--nonblocking", "-o", str(out)],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed on pid {pid}: {result.stderr[-1000:]}")
    return out


def layer_of(frame: str) -> str:
    """The layer of one py-spy frame ``func (path/file.py:line)``."""
    match = _FRAME.match(frame)
    where = match.group("file") if match else frame
    where = "/" + where.replace("\\", "/")
    for name, needles in LAYERS:
        if any(needle in where for needle in needles):
            return name
    return "other (stdlib, interpreter)"


def _parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(collapsed: Path, *, seconds: float, rate_hz: int = RATE_HZ, top: int = 12) -> dict[str, Any]:
    """``busy_pct``, ``by_layer`` and ``top_self`` (see the module doc) of one recording."""
    stacks = _parse(collapsed.read_text().splitlines())
    busy = sum(count for _, count in stacks)
    layers: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        # The innermost frame that is real code (py-spy may end a stack with "<module>" lines).
        leaf = frames[-1]
        layers[layer_of(leaf)] += count
        leaves[leaf] += count

    def pct(n: int) -> float:
        return round(100.0 * n / busy, 1) if busy else 0.0

    return {
        "samples": busy,
        "busy_pct": round(100.0 * busy / (seconds * rate_hz), 1) if seconds > 0 else 0.0,
        "by_layer": {name: pct(n) for name, n in layers.most_common()},
        "top_self": [[frame, pct(n)] for frame, n in leaves.most_common(top)],
        "collapsed_stacks": str(collapsed),
    }


def render(profiles: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown lines for the report."""
    lines = ["", "## Profiles (py-spy, venice side under the same load)", ""]
    for name, p in profiles.items():
        if "error" in p:
            lines += [f"* {name}: no profile ({p['error']})"]
            continue
        layers = ", ".join(f"{layer} {share}%" for layer, share in p["by_layer"].items() if share >= 1.0)
        lines += [
            f"**{name}** — {p['what']}: on CPU {p['busy_pct']}% of one core; {layers}.",
            "",
            "| innermost frame | share of busy samples |",
            "|---|---|",
            *[f"| `{frame}` | {share}% |" for frame, share in p["top_self"][:8]],
            "",
        ]
    return lines


def record_command(py_spy: str, command: Sequence[str], out: Path, timeout_s: float) -> tuple[Path, float, str]:
    """Run ``command`` under py-spy: (collapsed stacks, wall seconds, the command's stdout)."""
    import time

    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run(
        [py_spy, "record", "--rate", str(RATE_HZ), "--format", "raw", "--nonblocking", "-o", str(out), "--",
         *command],
        capture_output=True, text=True, timeout=timeout_s,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy of {command[:4]} failed: {result.stderr[-1000:]}")
    return out, seconds, result.stdout
