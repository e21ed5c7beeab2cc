"""``venice quickstart`` comes up, answers its printed curl line, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import gzip
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from importlib import resources
from pathlib import Path
from typing import IO

import httpx
import orjson


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_quickstart_serves_its_curl_line_and_stops(tmp_path: Path) -> None:
    with open(tmp_path / "quickstart.err", "w") as err:
        _run_quickstart(tmp_path, err)


def _run_quickstart(tmp_path: Path, err: IO[str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "venice", "quickstart", "--data-dir", str(tmp_path / "qs"), "--servers", "2"],
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out = _lines(process.stdout)
        printed: dict[str, str] = {}
        while "try" not in printed:
            line = out.get(timeout=180)
            name, _, value = line.partition(":")
            printed[name.strip()] = value.strip()
        assert printed["controller"].startswith("http://127.0.0.1:")
        assert printed["router"].startswith("http://127.0.0.1:")
        curl = shlex.split(printed["try"])
        assert curl[0] == "curl"
        if shutil.which("curl"):
            answer = orjson.loads(subprocess.run(curl + ["-sf"], capture_output=True, check=True, timeout=10).stdout)
        else:
            answer = httpx.get(curl[-1], timeout=10).raise_for_status().json()
        sample = Path(str(resources.files("venice.data").joinpath("member_features.jsonl.gz")))
        with gzip.open(sample, "rb") as f:
            first = orjson.loads(f.readline())
        assert curl[-1].endswith(f"/{first['member_id']}")
        assert answer == {k: v for k, v in first.items() if k != "member_id"} | {
            k: None for k in answer if k not in first
        }

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, (tmp_path / "quickstart.err").read_text()
        for url in (printed["controller"], printed["router"]):
            try:
                httpx.get(f"{url}/health", timeout=2)
                raise AssertionError(f"{url} still answers after Ctrl-C")
            except httpx.ConnectError:
                pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
