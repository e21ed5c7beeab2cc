"""``venice put / delete / update / write / encode``: the real command line in child
processes, against a stand-in controller (real HTTP) and the embedded log.

What lands on the real-time topic is checked with fastavro and mmh3, not with the code
under test."""

from __future__ import annotations

import base64
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.router.fakes import FakeController, serve_in_thread, store_description
from tests.test_producer import COUNTER, avro, create_topic, partition_of, read_topic, unavro

PHOTO: dict[str, Any] = {
    "type": "record",
    "name": "Photo",
    "fields": [{"name": "caption", "type": "string"}, {"name": "jpeg", "type": "bytes"}],
}


class Cli:
    def __init__(self, controller: FakeController, url: str, pubsub_url: str) -> None:
        self.controller = controller
        self.url = url
        self.pubsub_url = pubsub_url

    def store(self, name: str, key: Any, schemas: dict[int, Any], partitions: int = 3, **options: Any) -> None:
        self.controller.descriptions[name] = store_description(name, key, schemas, partitions, **options)
        if options.get("hybrid", True):
            create_topic(self.pubsub_url, f"{name}_rt", partitions)

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "venice", *args[:1], "--controller", self.url, *args[1:]],
            capture_output=True,
            text=stdin is None,
            input=stdin,
            timeout=120,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def records(self, store: str, count: int) -> list[Any]:
        return read_topic(self.pubsub_url, f"{store}_rt", count)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    pubsub_url = f"embedded://{tmp_path / 'log'}"
    controller = FakeController(pubsub_url=pubsub_url)
    with serve_in_thread(controller) as url:
        yield Cli(controller, url, pubsub_url)


def test_put_delete_update(cli: Cli, tmp_path: Path) -> None:
    cli.store("counters", "long", {1: COUNTER}, write_compute=True)
    done = cli.run("put", "--store", "counters", "--key", "-42", "--value", '{"hits": 3, "tags": ["a"]}')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"put counters -42: durable in counters_rt partition {partition_of(avro('long', -42), 3)}"
    (tmp_path / "ops.json").write_text('{"increment": {"hits": 2}}')
    done = cli.run("update", "--store", "counters", "--key", "-42", "--ops", f"@{tmp_path / 'ops.json'}")
    assert done.returncode == 0, done.stderr
    done = cli.run("delete", "--store", "counters", "--key", "7")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar, no noise
    found = cli.records("counters", 3)
    forty_two = [m for m in found if m.key == avro("long", -42)]
    assert unavro(COUNTER, forty_two[0].value) == {"hits": 3, "tags": ["a"]}
    assert dict(forty_two[1].headers) == {"schema-id": b"1", "venice-op": b"update"}
    assert [m.value for m in found if m.key == avro("long", 7)] == [None]


def test_bytes_are_base64_in_json(cli: Cli) -> None:
    cli.store("photos", "string", {1: PHOTO})
    jpeg = b"\xff\xd8\xff\x00"
    value = orjson.dumps({"caption": "cat", "jpeg": base64.b64encode(jpeg).decode()}).decode()
    done = cli.run("put", "--store", "photos", "--key", "cat.jpg", "--value", value)
    assert done.returncode == 0, done.stderr
    assert unavro(PHOTO, cli.records("photos", 1)[0].value) == {"caption": "cat", "jpeg": jpeg}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--key", "+1", "--value", '{"hits": 1}'), "key '+1' is not a valid long"),
        (("--key", "１", "--value", '{"hits": 1}'), "is not a valid long"),
        (("--key", "1", "--value", "{hits: 1}"), "--value is not valid JSON"),
        (("--key", "1", "--value", '{"hits": "x"}'), "does not fit the value schema"),
        (("--key", "1", "--value", '{"hits": 1, "extra": 1}'), "extra"),
        (("--key", "1", "--value", '{"hits": 1}', "--schema-id", "7"), "no value schema 7"),
        (("--key", "1", "--value", "@/nonexistent/value.json"), "cannot read --value from /nonexistent/value.json"),
        (("--key", "1", "--value", '"' + "x" * 300 + '"'), "does not fit the value schema"),
    ],
)
def test_bad_puts_fail_clearly_and_send_nothing(cli: Cli, args: tuple[str, ...], message: str) -> None:
    cli.store("strict", "long", {1: COUNTER}, max_value_bytes=64)
    done = cli.run("put", "--store", "strict", *args)
    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert cli.records("strict", 0) == []


def test_batch_only_store_and_missing_store(cli: Cli) -> None:
    cli.store("batch", "string", {1: "string"}, hybrid=False)
    done = cli.run("put", "--store", "batch", "--key", "k", "--value", '"v"')
    assert done.returncode == 1 and "batch-only" in done.stderr
    done = cli.run("delete", "--store", "nope", "--key", "k")
    assert done.returncode == 1 and "does not exist" in done.stderr


def test_write_streams_every_kind_of_line(cli: Cli, tmp_path: Path) -> None:
    cli.store("counters", "long", {1: COUNTER}, write_compute=True)
    lines = [
        {"key": 1, "value": {"hits": 1, "tags": []}},
        {"key": 2, "value": {"hits": 2, "tags": ["x"]}, "schema_id": 1},
        {"key": 1, "update": {"increment": {"hits": 10}}},
        {"key": 2, "delete": True},
    ]
    path = tmp_path / "writes.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines[:2]) + b"\n   \n" + b"\n".join(orjson.dumps(x) for x in lines[2:]))
    done = cli.run("write", "--store", "counters", "--input", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 4 records to counters_rt (2 puts, 1 deletes, 1 updates)")
    assert done.stderr == ""  # not a terminal: no progress bar
    found = cli.records("counters", 4)
    one = [m for m in found if m.key == avro("long", 1)]
    assert [dict(m.headers).get("venice-op") for m in one] == [None, b"update"]
    assert [m.value is None for m in found if m.key == avro("long", 2)] == [False, True]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", 'expected an object with "key"'),
        (b'{"value": {"hits": 1}}', 'expected an object with "key"'),
        (b'{"key": 9, "value": {"hits": 1}, "delete": true}', "exactly one of"),
        (b'{"key": 9}', "exactly one of"),
        (b'{"key": 9, "delete": false}', '"delete" must be true'),
        (b'{"key": 9, "value": {"hits": 1}, "ttl": 5}', "unknown field(s) 'ttl'"),
        (b'{"key": 9, "value": {"hits": 1}, "schema_id": "1"}', '"schema_id" must be a positive integer'),
        (b'{"key": "9", "value": {"hits": 1}}', "key"),
        (b'{"key": 9, "value": {"hits": 1.5}}', "does not fit the value schema"),
        (b'{"key": 9, "update": {"increment": {"tags": 1}}}', "tags"),
        (b'{"key": 9, "value": {"hits": 1}, "schema_id": 3}', "no value schema 3"),
        (b"\xff\xfe{}", "not valid JSON"),
    ],
)
def test_a_bad_line_stops_the_stream_and_nothing_after_it_is_sent(cli: Cli, tmp_path: Path, bad_line: bytes, message: str) -> None:
    cli.store("counters", "long", {1: COUNTER}, write_compute=True)
    good = [orjson.dumps({"key": k, "value": {"hits": k}}) for k in range(3)]
    after = [orjson.dumps({"key": k, "value": {"hits": k}}) for k in range(100, 103)]
    path = tmp_path / "writes.jsonl"
    path.write_bytes(b"\n".join([*good, bad_line, *after]) + b"\n")
    done = cli.run("write", "--store", "counters", "--input", str(path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {path}:4: "), done.stderr
    assert message in done.stderr and "the 3 write(s) before it are durable" in done.stderr
    found = cli.records("counters", 3)
    assert sorted(unavro("long", m.key) for m in found) == [0, 1, 2]


def test_an_overlong_line_is_refused_without_reading_it_whole(cli: Cli, tmp_path: Path) -> None:
    from venice.cli.write import MAX_LINE_BYTES

    cli.store("counters", "long", {1: COUNTER}, write_compute=True)
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as out:
        out.write(orjson.dumps({"key": 1, "value": {"hits": 1}}) + b"\n")
        out.write(b'{"key": 2, "value": {"hits": 1, "tags": ["' + b"x" * (MAX_LINE_BYTES + 10) + b'"]}}\n')
    done = cli.run("write", "--store", "counters", "--input", str(path))
    assert done.returncode == 1 and f"{path}:2: line longer than {MAX_LINE_BYTES} bytes" in done.stderr
    assert [unavro("long", m.key) for m in cli.records("counters", 1)] == [1]


def test_write_from_stdin(cli: Cli) -> None:
    cli.store("words", "string", {1: "long"})
    lines = b"".join(orjson.dumps({"key": w, "value": len(w)}) + b"\n" for w in ("a", "bb", "ccc"))
    done = cli.run("write", "--store", "words", "--input", "-", stdin=lines)
    assert done.returncode == 0, done.stderr
    found = cli.records("words", 3)
    assert {unavro("string", m.key): unavro("long", m.value) for m in found} == {"a": 1, "bb": 2, "ccc": 3}


def test_progress_bar_on_a_terminal(cli: Cli, tmp_path: Path) -> None:
    cli.store("words", "string", {1: "long"})
    path = tmp_path / "many.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"key": f"w{i}", "value": i}) + b"\n" for i in range(2000)))
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "venice", "write", "--controller", cli.url, "--store", "words", "--input", str(path)],
            stdout=subprocess.PIPE, stderr=secondary,
        ) as process:  # fmt: skip
            os.close(secondary)
            drawn = b""
            while select.select([primary], [], [], 60)[0]:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                drawn += chunk
            out, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        assert out.startswith(b"wrote 2000 records")
    finally:
        os.close(primary)
    assert b"write words" in drawn  # the bar's label, drawn on the terminal


def test_encode_prints_what_kcat_needs(cli: Cli) -> None:
    cli.store("counters", "long", {1: COUNTER}, 5, write_compute=True)
    done = cli.run("encode", "--store", "counters", "--key", "300", "--value", '{"hits": 7, "tags": []}')
    assert done.returncode == 0, done.stderr
    key, value = avro("long", 300), avro(COUNTER, {"hits": 7, "tags": []})
    assert done.stdout.splitlines() == [
        "topic=counters_rt",
        f"partition={partition_of(key, 5)}",
        "schema_id=1",
        "key='" + "".join(f"\\x{b:02x}" for b in key) + "'",
        "value='" + "".join(f"\\x{b:02x}" for b in value) + "'",
    ]
    done = cli.run("encode", "--store", "counters", "--key", "300", "--ops", '{"increment": {"hits": 1}}')
    assert "schema_id=1\nvenice_op=update\n" in done.stdout
    done = cli.run("encode", "--store", "counters", "--key", "0")
    zero = avro("long", 0)
    assert done.stdout.splitlines() == ["topic=counters_rt", f"partition={partition_of(zero, 5)}", "key='\\x00'"]
    assert "NUL byte" in done.stderr
    # The assignments are shell: eval them and print the bytes back.
    script = f'eval "$({sys.executable} -m venice encode --controller {cli.url} --store counters --key 300 --value \'{{"hits": 7, "tags": []}}\')"; printf "$value"'
    shell = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == value
