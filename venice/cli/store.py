"""``venice store``: create, list, describe and delete stores on the controller.

Also home of the small helpers the push command shares (the ``--controller`` option
and the error handling that turns every :class:`VeniceError` into ``error: <message>``
on stderr with exit code 1, never a traceback: a user error is a message, not a bug).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import click
import httpx
import orjson

from venice.cli.params import Integer, Seconds
from venice.errors import SchemaError, TransportError, VeniceError, error_from_response
from venice.push.formats import FORMATS
from venice.schema import parse_schema, validate_schema

__all__ = ["CliError", "ControllerClient", "controller_option", "handle_errors", "load_schema", "store"]

DEFAULT_CONTROLLER = "http://127.0.0.1:5050"
DEFAULT_PARTITIONS = 4
DEFAULT_REPLICATION_FACTOR = 1
"""One copy per partition: what a single-server dev cluster can hold. Production stores
should ask for 2 or more explicitly."""

F = TypeVar("F", bound=Callable[..., Any])
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class CliError(click.ClickException):
    """A failure the user can act on: ``error: <message>`` and exit code 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def handle_errors(command: F) -> F:
    """Turn VeniceError (and Ctrl-C) into a one-line message instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except VeniceError as exc:
            raise CliError(exc.message) from exc
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]


controller_option = click.option(
    "--controller",
    envvar="VENICE_CONTROLLER_URL",
    default=DEFAULT_CONTROLLER,
    show_default=True,
    show_envvar=True,
    help="Controller base URL.",
)


class ControllerClient:
    """Synchronous calls to the controller's store API (docs/api.md)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = httpx.request(method, f"{self.url}{path}", json=body, timeout=self.timeout_s)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot reach the controller at {self.url}: {exc or type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise error_from_response(response.status_code, response.content)
        return response.json() if response.content else {}

    def create_store(
        self,
        name: str,
        key_schema: Any,
        value_schema: Any,
        partitions: int,
        replication_factor: int,
        *,
        max_value_bytes: int | None = None,
    ) -> Any:
        body = {
            "name": name,
            "key_schema": key_schema,
            "value_schema": value_schema,
            "partitions": partitions,
            "replication_factor": replication_factor,
        }
        if max_value_bytes is not None:
            body["max_value_bytes"] = max_value_bytes
        return self.call("POST", "/stores", body)

    def list_stores(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/stores").get("stores", []))

    def describe_store(self, name: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/stores/{quote(name, safe='')}"))

    def delete_store(self, name: str) -> None:
        self.call("DELETE", f"/stores/{quote(name, safe='')}")


def load_schema(text: str) -> Any:
    """A schema given on the command line: a primitive name, Avro JSON text, or ``@path``.

    Returns what the controller takes (a primitive name or the parsed JSON object),
    after checking locally that it is a valid Avro schema.
    """
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SchemaError(f"cannot read schema file {path}: {exc.strerror or exc}") from None
    stripped = text.strip()
    if stripped.isidentifier():  # a bare name: only the primitives stand on their own
        if stripped not in _PRIMITIVES:
            raise SchemaError(f"{stripped!r} is not an Avro primitive type ({', '.join(sorted(_PRIMITIVES))})")
        return stripped
    parse_schema(stripped)  # raises SchemaError with the reason
    schema = orjson.loads(stripped)
    validate_schema(schema)  # what the controller checks, told before the request
    return schema


MAX_VALUE_SIZE = Integer(1, 4 << 20)
"""--max-value-size: bytes, up to what a version topic can carry (4 MiB; see docs/failure-model.md)."""


def _pretty(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode()


@click.group("store")
def store() -> None:
    """Create, list, describe and delete stores."""


@store.command("create")
@controller_option
@click.option("--name", required=True, help="Store name.")
@click.option("--key-schema", help="Key schema: a primitive name (long, string...), Avro JSON text, or @FILE.")
@click.option("--value-schema", help="Value schema: Avro JSON text, @FILE, or a primitive name.")
@click.option("--infer-from", "infer_from", type=click.Path(dir_okay=False), help="Infer both schemas from this input file.")
@click.option("--key-field", default="key", show_default=True, help="With --infer-from: the field holding the key (a,b for a record key).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="With --infer-from: input format (default: from the file name).")
@click.option("--partitions", default=DEFAULT_PARTITIONS, show_default=True, type=Integer(1, 1024))
@click.option("--replication-factor", default=DEFAULT_REPLICATION_FACTOR, show_default=True, type=Integer(1, 32))
@click.option("--max-value-size", "max_value_bytes", type=MAX_VALUE_SIZE, help="Largest serialized value in bytes a push may write (default 1 MiB).")
@handle_errors
def create(
    controller: str,
    name: str,
    key_schema: str | None,
    value_schema: str | None,
    infer_from: str | None,
    key_field: str,
    fmt: str | None,
    partitions: int,
    replication_factor: int,
    max_value_bytes: int | None,
) -> None:
    """Create a store from given schemas, or with schemas inferred from a data file."""
    if infer_from is not None:
        if key_schema or value_schema:
            raise click.UsageError("give either --infer-from or --key-schema/--value-schema, not both")
        from venice.push.infer import infer_schemas

        key, value = infer_schemas(infer_from, key_field, fmt=fmt, store_name=name)
        click.echo(f"inferred key schema: {orjson.dumps(key).decode()}")
        click.echo(f"inferred value schema:\n{_pretty(value)}")
    else:
        if not key_schema or not value_schema:
            raise click.UsageError("give --key-schema and --value-schema, or --infer-from FILE")
        key, value = load_schema(key_schema), load_schema(value_schema)
    ControllerClient(controller).create_store(name, key, value, partitions, replication_factor, max_value_bytes=max_value_bytes)
    click.echo(f"created store {name} ({partitions} partitions, replication factor {replication_factor})")


@store.command("list")
@controller_option
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON descriptions.")
@handle_errors
def list_(controller: str, as_json: bool) -> None:
    """List stores with their current version."""
    stores = ControllerClient(controller).list_stores()
    if as_json:
        click.echo(_pretty(stores))
        return
    if not stores:
        click.echo("no stores")
        return
    rows = [("NAME", "CURRENT", "PARTITIONS", "RF", "VERSIONS")]
    for item in sorted(stores, key=lambda s: str(s.get("name"))):
        versions = ",".join(f"{v.get('version')}:{v.get('status')}" for v in item.get("versions") or []) or "-"
        current = item.get("current_version")
        rows.append((str(item.get("name")), "-" if current is None else f"v{current}",
                     str(item.get("partitions")), str(item.get("replication_factor")), versions))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@store.command("describe")
@controller_option
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON description.")
@handle_errors
def describe(controller: str, name: str, as_json: bool) -> None:
    """Show a store: schemas, partitioning and versions."""
    info = ControllerClient(controller).describe_store(name)
    if as_json:
        click.echo(_pretty(info))
        return
    current = info.get("current_version")
    click.echo(f"store:              {info.get('name')}")
    click.echo(f"partitions:         {info.get('partitions')}")
    click.echo(f"replication factor: {info.get('replication_factor')}")
    click.echo(f"current version:    {'none (push data first)' if current is None else current}")
    click.echo(f"max value size:     {info.get('max_value_bytes')} bytes")
    click.echo(f"incarnation:        {info.get('incarnation')}")
    click.echo(f"key schema:         {orjson.dumps(info.get('key_schema')).decode()}")
    for schema_id, schema in sorted((info.get("value_schemas") or {}).items(), key=lambda kv: int(kv[0])):
        click.echo(f"value schema {schema_id}:\n{_pretty(schema)}")
    versions = info.get("versions") or []
    click.echo("versions:" if versions else "versions:           none")
    for version in versions:
        marker = " (current)" if version.get("version") == current else ""
        reason = f": {version['reason']}" if version.get("reason") else ""
        click.echo(f"  v{version.get('version')} {version.get('status')}{marker}{reason}")


@store.command("update")
@controller_option
@click.argument("name")
@click.option("--keep-versions", type=Integer(1, 100), help="ONLINE versions to keep: the current one plus backups (default 2).")
@click.option("--push-timeout", "push_timeout_s", type=Seconds(1, 7 * 86400), help="Seconds a push may take before its version goes to ERROR (default 3600).")
@click.option("--max-value-size", "max_value_bytes", type=MAX_VALUE_SIZE, help="Largest serialized value in bytes a push may write (default 1 MiB); applies to the next push.")
@handle_errors
def update(
    controller: str, name: str, keep_versions: int | None, push_timeout_s: float | None, max_value_bytes: int | None
) -> None:
    """Change a store's retention, push timeout or value size limit."""
    if keep_versions is None and push_timeout_s is None and max_value_bytes is None:
        raise click.UsageError("nothing to change: give --keep-versions, --push-timeout and/or --max-value-size")
    body = {"keep_versions": keep_versions, "push_timeout_s": push_timeout_s, "max_value_bytes": max_value_bytes}
    info = ControllerClient(controller).call("PATCH", f"/stores/{quote(name, safe='')}", body)
    click.echo(
        f"store {name}: keeps {info['keep_versions']} version(s), push timeout {info['push_timeout_s']:g} s, "
        f"values up to {info['max_value_bytes']} bytes"
    )


@store.command("delete")
@controller_option
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def delete(controller: str, name: str, yes: bool) -> None:
    """Delete a store with all its versions and data."""
    client = ControllerClient(controller)
    if not yes:
        client.describe_store(name)  # fail with "does not exist" before asking
        click.confirm(f"delete store {name!r} and all its data?", abort=True)
    client.delete_store(name)
    click.echo(f"deleted store {name}")
