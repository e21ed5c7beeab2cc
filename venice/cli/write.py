"""``venice put``, ``delete``, ``update``, ``write`` and ``encode``: nearline writes to hybrid stores.

Keys on the command line are parsed strictly (:func:`venice.schema.key_from_text`, as in
URL paths); values and update ops are JSON (``@FILE`` reads the JSON from a file), with
``bytes``/``fixed`` data as base64 text. Every write is checked before it is sent
(:class:`venice.writer.StoreWriter`) and the command returns once it is durably in the
store's real-time topic.

``venice write --input FILE.jsonl`` streams one write per line:
``{"key": K, "value": V}``, ``{"key": K, "delete": true}`` or ``{"key": K, "update": OPS}``
(each may add ``"schema_id": N``). Each line is checked before it is sent; at a bad line
the command flushes what came before, sends nothing after it, and fails naming the line.

``venice encode`` sends nothing: it prints, as shell assignments, where a write goes and
its bytes, for writing with other Kafka tools (the kcat recipe in docs/api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
import orjson

from venice.cli.params import Integer
from venice.cli.store import CliError, controller_option, handle_errors
from venice.errors import InvalidInputError, InvalidValueError, VeniceError

__all__ = ["delete", "encode", "put", "update", "write"]

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest line ``venice write`` reads: a value of the largest allowed size (4 MiB), as
base64 inside JSON, with room to spare; longer is an error, not a memory blow-up."""
_PROGRESS_EVERY = 256
_LINE_FIELDS = frozenset({"key", "value", "delete", "update", "schema_id"})

store_option = click.option("--store", required=True, help="Store to write to (it must be hybrid).")
key_option = click.option("--key", required=True, help="The key, as in a URL path: numbers in ASCII digits, strings verbatim, records as JSON.")
schema_id_option = click.option("--schema-id", type=Integer(1, 2**31 - 1), help="Value schema the value (or update) is written with (default: the newest).")
pubsub_option = click.option(
    "--pubsub-url",
    envvar="VENICE_PUBSUB_URL",
    show_envvar=True,
    help="Pub-sub to write to (kafka://HOST:PORT or embedded:///DIR); default: the one the controller names.",
)


def _json_argument(text: str, what: str) -> Any:
    """JSON given on the command line, or read from ``@FILE``."""
    raw: bytes | str = text
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read {what} from {path}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidValueError(f"{what} is not valid JSON: {exc}") from None


def _run(work: Callable[[Any], Awaitable[str]], controller: str, pubsub_url: str | None) -> None:
    """Run ``work(producer)`` with an AsyncProducer, flush, and print what it says."""
    import logging

    from venice.producer import AsyncProducer

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retries are not the user's business

    async def main() -> str:
        async with AsyncProducer(controller, pubsub_url=pubsub_url) as producer:
            return await work(producer)

    click.echo(asyncio.run(main()))


@click.command("put")
@controller_option
@store_option
@key_option
@click.option("--value", required=True, help="The value as JSON (bytes as base64 text), or @FILE.")
@schema_id_option
@pubsub_option
@handle_errors
def put(controller: str, store: str, key: str, value: str, schema_id: int | None, pubsub_url: str | None) -> None:
    """Write VALUE under KEY in a hybrid STORE."""
    parsed = _json_argument(value, "--value")
    _write_one(controller, pubsub_url, store, key, "put", lambda p, w, datum: p.put(
        store, datum, w.value_from_json(parsed, schema_id), schema_id=schema_id))


@click.command("delete")
@controller_option
@store_option
@key_option
@pubsub_option
@handle_errors
def delete(controller: str, store: str, key: str, pubsub_url: str | None) -> None:
    """Delete KEY from a hybrid STORE."""
    _write_one(controller, pubsub_url, store, key, "deleted", lambda p, _w, datum: p.delete(store, datum))


@click.command("update")
@controller_option
@store_option
@key_option
@click.option("--ops", required=True, help='Update ops as JSON, e.g. \'{"increment": {"visits": 1}}\' (docs/hybrid.md), or @FILE.')
@schema_id_option
@pubsub_option
@handle_errors
def update(controller: str, store: str, key: str, ops: str, schema_id: int | None, pubsub_url: str | None) -> None:
    """Apply a partial update to KEY in a hybrid STORE with write compute."""
    parsed = _json_argument(ops, "--ops")
    _write_one(controller, pubsub_url, store, key, "updated", lambda p, w, datum: p.update(
        store, datum, w.ops_from_json(parsed, schema_id), schema_id=schema_id))


def _write_one(controller: str, pubsub_url: str | None, store: str, key: str, verb: str,
               send: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
    """One nearline write from the command line: ``send(producer, writer, key datum)``, flushed,
    then one line saying where it is durable."""

    async def work(producer: Any) -> str:
        writer = await producer.store_writer(store)
        datum = writer.key_from_text(key)
        await send(producer, writer, datum)
        await producer.flush()
        return f"{verb} {store} {key}: durable in {writer.topic} partition {writer.partition_of(writer.encode_key(datum))}"

    _run(work, controller, pubsub_url)


@click.command("write")
@controller_option
@store_option
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False, allow_dash=True), help="JSON lines file (- for stdin).")
@click.option("--no-progress", is_flag=True, help="Do not draw a progress bar (it is only drawn on a terminal anyway).")
@pubsub_option
@handle_errors
def write(controller: str, store: str, input_path: str, no_progress: bool, pubsub_url: str | None) -> None:
    """Stream writes from a JSON lines file into a hybrid STORE.

    Each line is one of {"key": K, "value": V}, {"key": K, "delete": true} or
    {"key": K, "update": OPS}, optionally with "schema_id": N. A bad line stops the
    command: what came before it is written, nothing after it is sent.
    """
    started = time.monotonic()
    counts = {"put": 0, "delete": 0, "update": 0}

    async def work(producer: Any) -> str:
        writer = await producer.store_writer(store)
        with _open_input(input_path) as (stream, size):
            progress = _progress(size, store, enabled=not no_progress)
            try:
                for number, line in _lines(stream, input_path):
                    try:
                        kind = await _write_line(producer, writer, store, line)
                    except VeniceError as exc:
                        await producer.flush()  # what came before the bad line is written
                        done = sum(counts.values())
                        raise CliError(
                            f"{input_path}:{number}: {exc.message} "
                            f"(nothing from this line on was sent; the {done} write(s) before it are durable)"
                        ) from exc
                    counts[kind] += 1
                    if number % _PROGRESS_EVERY == 0 and size is not None:
                        progress.update(stream.tell() - progress.n)
                        progress.set_postfix_str(f"{sum(counts.values())} writes", refresh=False)
                await producer.flush()
            finally:
                progress.close()
        total = sum(counts.values())
        seconds = max(time.monotonic() - started, 1e-9)
        return (
            f"wrote {total} records to {writer.topic} ({counts['put']} puts, {counts['delete']} deletes, "
            f"{counts['update']} updates) in {seconds:.1f} s ({total / seconds:.0f} records/s)"
        )

    _run(work, controller, pubsub_url)


async def _write_line(producer: Any, writer: Any, store: str, line: bytes) -> str:
    """Check and queue one line; the kind of write it was."""
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"not valid JSON: {exc}") from None
    if not isinstance(entry, dict) or "key" not in entry:
        raise InvalidInputError('expected an object with "key" and one of "value", "delete": true or "update"')
    extra = sorted(set(entry) - _LINE_FIELDS)
    if extra:
        raise InvalidInputError(f"unknown field(s) {', '.join(map(repr, extra))}: a line holds key, value|delete|update, schema_id")
    kinds = [kind for kind in ("value", "delete", "update") if kind in entry]
    if len(kinds) != 1:
        raise InvalidInputError(f'give exactly one of "value", "delete": true or "update", not {" and ".join(kinds) or "none"}')
    schema_id = entry.get("schema_id")
    if schema_id is not None and (isinstance(schema_id, bool) or not isinstance(schema_id, int) or schema_id < 1):
        raise InvalidInputError(f'"schema_id" must be a positive integer, not {orjson.dumps(schema_id).decode()[:40]}')
    key = writer.key_from_json(entry["key"])
    if kinds[0] == "value":
        await producer.put(store, key, writer.value_from_json(entry["value"], schema_id), schema_id=schema_id)
        return "put"
    if kinds[0] == "delete":
        if entry["delete"] is not True:
            raise InvalidInputError('"delete" must be true')
        if schema_id is not None:
            raise InvalidInputError('a delete has no "schema_id"')
        await producer.delete(store, key)
        return "delete"
    await producer.update(store, key, writer.ops_from_json(entry["update"], schema_id), schema_id=schema_id)
    return "update"


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[IO[bytes], int | None]]:
    """The input as a binary stream with its size (``None`` for stdin)."""
    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream, os.fstat(stream.fileno()).st_size


def _lines(stream: IO[bytes], name: str) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers; a line over MAX_LINE_BYTES is an error."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise CliError(f"{name}:{number}: line longer than {MAX_LINE_BYTES} bytes; nothing from it on was sent")
        if line.strip():
            yield number, line


def _progress(size: int | None, store: str, *, enabled: bool) -> Any:
    """A tqdm bar over input bytes, drawn only when asked and stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(
        total=size,
        unit="B",
        unit_scale=True,
        desc=f"write {store}",
        file=sys.stderr,
        disable=None if enabled else True,
        leave=False,
        dynamic_ncols=True,
    )


@click.command("encode")
@controller_option
@store_option
@key_option
@click.option("--value", help="A value as JSON (or @FILE): print its bytes too.")
@click.option("--ops", help="Update ops as JSON (or @FILE): print the update's bytes too.")
@schema_id_option
@handle_errors
def encode(controller: str, store: str, key: str, value: str | None, ops: str | None, schema_id: int | None) -> None:
    """Print where a write to KEY goes and its bytes, for other Kafka producers (kcat).

    Sends nothing. Prints shell assignments: topic, partition, and the key (and value or
    update, with its schema id) as printf escapes, e.g. key='\\x06\\x62\\x6f\\x62';
    `eval "$(venice encode ...)"` sets them.
    """
    from venice.controller_client import ControllerClient
    from venice.writer import StoreWriter

    if value is not None and ops is not None:
        raise click.UsageError("give --value or --ops, not both")
    with ControllerClient(controller) as client:
        writer = StoreWriter(store, client.get_store(store))
    if writer.hybrid is None:
        click.echo(f"note: store {store} is batch-only: it has no real-time topic (make it hybrid first)", err=True)
    datum = writer.key_from_text(key)
    if value is not None:
        record = writer.put(datum, writer.value_from_json(_json_argument(value, "--value"), schema_id), schema_id)
    elif ops is not None:
        record = writer.update(datum, writer.ops_from_json(_json_argument(ops, "--ops"), schema_id), schema_id)
    else:
        record = writer.delete(datum)
    lines = [f"topic={record.topic}", f"partition={record.partition}"]
    for name, raw in record.headers:
        lines.append(f"{name.replace('-', '_')}={raw.decode()}")
    lines.append(f"key='{_escapes(record.key)}'")
    if record.value is not None:
        lines.append(f"value='{_escapes(record.value)}'")
    click.echo("\n".join(lines))
    if b"\x00" in record.key:
        click.echo("note: the key's bytes hold a NUL byte, which a shell variable or kcat -k cannot carry", err=True)


def _escapes(data: bytes) -> str:
    """``data`` as printf escapes: ``\\xNN`` per byte (no ``%``, no quote, any byte)."""
    return "".join(f"\\x{byte:02x}" for byte in data)
