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
import pytest

from venice.cluster import wait_for


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

        # The cluster is closed: a secret between the parts, and an admin token printed once per data dir.
        admin = printed["admin token"]
        assert admin.startswith("vt_")
        assert httpx.delete(f"{printed['controller']}/stores/member-features", timeout=10).status_code == 401
        assert httpx.get(f"{printed['controller']}/stores", headers={"authorization": f"Bearer {admin}"}, timeout=10).status_code == 200
        secrets_dir = tmp_path / "qs" / "secrets"
        assert admin not in (secrets_dir / "tokens.json").read_text()
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in secrets_dir.iterdir())
        assert "OPEN:" not in (tmp_path / "qs" / "logs" / "controller.log").read_text()

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


def test_quickstart_restarts_a_part_that_dies_and_reads_keep_working(tmp_path: Path) -> None:
    """kill -9 of a storage server: reads through the router keep working, the quickstart
    says which part died (with its log) and starts it again, and it serves again."""
    err_path = tmp_path / "quickstart.err"
    with open(err_path, "w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "venice", "quickstart", "--data-dir", str(tmp_path / "qs"), "--servers", "2"],
            stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            out = _lines(process.stdout)
            printed: dict[str, str] = {}
            parts: dict[str, tuple[int, str]] = {}
            while len(parts) < 4:  # controller, 2 servers, router
                line = out.get(timeout=180)
                if line.startswith("  "):
                    name, _, pid, url = line.split()
                    parts[name] = (int(pid), url)
                else:
                    name, _, value = line.partition(":")
                    printed[name.strip()] = value.strip()
            curl = shlex.split(printed["try"])
            assert set(parts) == {"controller", "server-0", "server-1", "router"}
            controller = parts["controller"][1]
            pid, server_url = parts["server-0"]

            os.kill(pid, signal.SIGKILL)
            # Replicas are on both servers: every read still answers while server-0 is gone.
            for _ in range(30):
                assert httpx.get(curl[-1], timeout=10).status_code == 200
            wait_for(lambda: "server-0 restarted" in err_path.read_text(), 30, "the quickstart to restart server-0")
            told = err_path.read_text()
            assert f"server-0 (pid {pid}) was killed by SIGKILL; the end of" in told
            assert "  | " in told  # the tail of its log
            new_pid = int(told.split("server-0 restarted (pid ")[1].split(")")[0])
            assert new_pid != pid and os.path.exists(f"/proc/{new_pid}")

            # Back with its data (resumed from its checkpoints) and routed to again.
            admin = {"authorization": f"Bearer {printed['admin token']}"}

            def serving_again() -> bool:
                replicas = httpx.get(f"{server_url}/admin/replicas", headers=admin, timeout=5).json()["replicas"]
                table = httpx.get(f"{controller}/routing", headers=admin, timeout=5).json()["stores"]["member-features"]
                routed = {url for urls in table["versions"][str(table["current_version"])]["partitions"].values() for url in urls}
                return bool(replicas) and all(r["status"] == "READY" for r in replicas) and server_url in routed

            wait_for(serving_again, 60, "server-0 to serve again")
            assert httpx.get(curl[-1], timeout=10).status_code == 200

            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0, err_path.read_text()
            for _, url in parts.values():
                with pytest.raises(httpx.ConnectError):
                    httpx.get(f"{url}/health", timeout=2)
        finally:
            if process.poll() is None:
                # Ctrl-C first: the parts run in sessions of their own and would outlive a SIGKILL.
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
