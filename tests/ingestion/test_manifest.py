"""The hosting manifest: hostile files are refused and never break a reader, and another
OS process reads the LMDB files an ingesting host writes, following the manifest."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.ingestion.helpers import assignment, key, send_rt, value, wait_until, write_push
from venice.errors import ReplicaNotReadyError, RequestError
from venice.ingestion import HostingView, IngestionHost, VersionStorage
from venice.ingestion.manifest import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    HostedEntry,
    parse_manifest,
    render_manifest,
    write_manifest,
)
from venice.ingestion.records import Checkpoint, encode_stored
from venice.protocol import ReplicaStatus
from venice.pubsub import connect

GOOD: dict[str, Any] = {
    "store": "s", "version": 1, "incarnation": "", "topic": "s_v1", "dir": "s_v1",
    "partitions_total": 2, "ready": [0], "key_schema": "long", "value_schemas": {"1": "string"},
}


def manifest(*entries: dict[str, Any], **top: Any) -> bytes:
    return orjson.dumps({"format": 1, "pid": 1, "versions": list(entries), **top})


class TestManifestFormat:
    def test_round_trip(self) -> None:
        entry = HostedEntry("s", 1, "inc", "s_v1", "s_v1-inc", 4, (0, 3), "long", {1: "string", 2: "long"})
        assert parse_manifest(render_manifest([entry])) == [entry]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (b"", "not JSON"),
            (b"\xff\xfe{", "not JSON"),
            (b"[]", "not format 1"),
            (manifest(format=2), "not format 1"),
            (orjson.dumps({"format": 1, "versions": {}}), "not a list"),
            (manifest("nope"), "not an object"),
            (manifest({**GOOD, "dir": ".."}), "not a directory name"),
            (manifest({**GOOD, "dir": "../../etc"}), "not a directory name"),
            (manifest({**GOOD, "dir": "/etc"}), "not a directory name"),
            (manifest({**GOOD, "dir": "a/b"}), "not a directory name"),
            (manifest({**GOOD, "dir": "a\x00b"}), "not a directory name"),
            (manifest({**GOOD, "dir": ".hidden"}), "not a directory name"),
            (manifest({**GOOD, "dir": "x" * 400}), "at most 300"),
            (manifest({**GOOD, "dir": 7}), "not a string"),
            (manifest({**GOOD, "ready": [2]}), "not a partition"),
            (manifest({**GOOD, "ready": [-1]}), "not a partition"),
            (manifest({**GOOD, "ready": [True]}), "not a partition"),
            (manifest({**GOOD, "ready": "0"}), "not a list"),
            (manifest({**GOOD, "ready": list(range(5))}), "not a list"),
            (manifest({**GOOD, "partitions_total": 0}), "partitions_total"),
            (manifest({**GOOD, "partitions_total": 10**9}), "partitions_total"),
            (manifest({**GOOD, "version": "1"}), "version"),
            (manifest({**GOOD, "store": None}), "store"),
            (manifest({**GOOD, "value_schemas": {"one": "string"}}), "not a schema id"),
            (manifest({**GOOD, "value_schemas": {"١": "string"}}), "not a schema id"),
            (manifest({**GOOD, "value_schemas": []}), "value_schemas"),
            (manifest(GOOD, GOOD), "twice"),
            (b" " * (MAX_MANIFEST_BYTES + 1), "larger than"),
        ],
    )
    def test_hostile_manifests_are_refused_with_a_reason(self, content: bytes, message: str) -> None:
        with pytest.raises(RequestError, match=message):
            parse_manifest(content)


class TestHostingView:
    def test_a_bad_manifest_leaves_the_last_good_one_in_force(self, tmp_path: Path) -> None:
        storage = VersionStorage(tmp_path / "versions" / "s_v1", 2, [0])
        storage.apply(0, [(b"k", encode_stored(1, b"\x02v"))], Checkpoint(3, True, True, 1))
        storage.close()
        write_manifest(tmp_path, manifest(GOOD))
        with HostingView(tmp_path, poll_s=None) as view:
            assert view.ready("s", 1, 0).get(0, b"k") == encode_stored(1, b"\x02v")
            with pytest.raises(ReplicaNotReadyError):
                view.ready("s", 1, 1)
            for bad in (b"{torn", manifest({**GOOD, "dir": "../x"}), b"\x00" * 100):
                write_manifest(tmp_path, bad)
                assert not view.refresh()
                assert view.ready("s", 1, 0).get(0, b"k") == encode_stored(1, b"\x02v")
            write_manifest(tmp_path, manifest({**GOOD, "dir": "missing_dir"}))
            assert view.refresh()  # parses, but the directory cannot be opened: not served
            with pytest.raises(ReplicaNotReadyError):
                view.ready("s", 1, 0)
            (tmp_path / MANIFEST_NAME).unlink()
            assert view.refresh()
            assert view.versions() == []

    def test_no_manifest_yet_means_nothing_ready(self, tmp_path: Path) -> None:
        with HostingView(tmp_path, poll_s=None) as view:
            assert view.versions() == []
            with pytest.raises(ReplicaNotReadyError):
                view.ready("s", 1, 0)


_READER = r"""
import json, sys, time
from pathlib import Path
from venice.errors import ReplicaNotReadyError
from venice.ingestion import HostingView, decode_stored
from venice.partitioner import partition_for

data_dir, store, version, partitions = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
view = HostingView(data_dir, poll_s=0.05)

def state(keys):
    seen = {}
    for k in keys:
        key = bytes.fromhex(k)
        p = partition_for(key, partitions)
        try:
            raw = view.ready(store, version, p).get(p, key)
        except ReplicaNotReadyError:
            seen[k] = "not ready"
            continue
        seen[k] = None if raw is None else decode_stored(raw)[1].hex()
    return seen

for line in sys.stdin:  # one phase per line: the state to wait for
    expected = json.loads(line)
    deadline = time.monotonic() + 60
    while (seen := state(expected)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    print(json.dumps({"ok": seen == expected, "pid": __import__("os").getpid()}), flush=True)
view.close()
"""


class TestAcrossProcesses:
    async def test_another_process_reads_what_the_host_writes(self, tmp_path: Path) -> None:
        store, P = f"s{uuid.uuid4().hex[:8]}", 2
        data_dir = tmp_path / "host"
        data_dir.mkdir()
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _READER, str(data_dir), store, "1", str(P),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert reader.stdin is not None and reader.stdout is not None

        async def phase(expected: dict[int, bytes | str | None]) -> None:
            line = {key(k).hex(): (v.hex() if isinstance(v, bytes) else v) for k, v in expected.items()}
            reader.stdin.write(orjson.dumps(line) + b"\n")  # type: ignore[union-attr]
            answer = orjson.loads(await asyncio.wait_for(reader.stdout.readline(), 120))  # type: ignore[union-attr]
            assert answer["ok"], expected
            assert answer["pid"] != os.getpid()

        try:
            async with connect(f"embedded://{tmp_path / 'log'}") as pubsub:
                await pubsub.create_topic(f"{store}_rt", P)
                await write_push(pubsub, f"{store}_v1", P, {key(i): value("pushed", i) for i in range(20)})
                host = IngestionHost(data_dir, pubsub=pubsub, schema_refresh=lambda s, i: asyncio.sleep(0, {}))
                a = assignment(store, 1, P, hybrid=True, rt_start_offsets=dict.fromkeys(range(P), 0))
                await host.reconcile([a])
                await phase({i: value("pushed", i) for i in range(20)})  # the reader found the version by itself

                async with await pubsub.producer() as producer:
                    for i in range(5):
                        await send_rt(producer, f"{store}_rt", P, key(i), value("nearline", i))
                    await send_rt(producer, f"{store}_rt", P, key(5), None)
                await phase({**{i: value("nearline", i) for i in range(5)}, 5: None, 6: value("pushed", 6)})

                await wait_until(lambda: all(r.status is ReplicaStatus.READY for r in host.reports()), "ready")
                await host.reconcile([])  # dropped: the reader stops serving it
                await phase({i: "not ready" for i in range(3)})
                await host.close()
        finally:
            reader.stdin.close()
            await asyncio.wait_for(reader.wait(), 30)
        assert reader.returncode == 0
