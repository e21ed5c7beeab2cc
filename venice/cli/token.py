"""``venice token``: make, list and revoke bearer tokens in the controller's token file.

Run where the token file lives (the controller's machine): the file holds SHA-256 digests
only, so a new token is printed once, here, and kept nowhere. The controller notices the
changed file within a second; routers and storage servers get the new table from it.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from venice.auth import Role, TokensFile
from venice.cli.store import handle_errors

__all__ = ["token"]

tokens_file_option = click.option(
    "--tokens-file",
    required=True,
    envvar="VENICE_TOKENS_FILE",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The controller's token file (created if missing, mode 0600).",
)


@click.group("token")
def token() -> None:
    """Create, list and revoke bearer tokens (admin, writer, reader, monitor)."""


@token.command("create")
@tokens_file_option
@click.option("--role", required=True, type=click.Choice([r.value for r in Role if r is not Role.CLUSTER]), help="admin: stores, versions, servers; writer: pushes and writes of a store; reader: reads of a private store; monitor: /metrics and /overview only.")
@click.option("--store", help="The one store a writer or reader token is for (default: every store).")
@click.option("--note", default="", help="A note kept beside the digest (who or what the token is for).")
@handle_errors
def create(tokens_file: Path, role: str, store: str | None, note: str) -> None:
    """Make a token and print it once (only its digest is kept)."""
    secret, entry = TokensFile(tokens_file).create(Role(role), store, note)
    click.echo(secret)
    scope = f" of store {store}" if store else ""
    click.echo(f"created {role} token {entry.token_id}{scope}: keep it now, it is not shown again", err=True)


@token.command("list")
@tokens_file_option
@handle_errors
def list_(tokens_file: Path) -> None:
    """The tokens in the file: id, role, store, when made, note (never the tokens)."""
    entries = TokensFile(tokens_file).load().entries()
    if not entries:
        click.echo("no tokens")
        return
    for entry in entries:
        made = datetime.datetime.fromtimestamp(entry.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        click.echo(f"{entry.token_id}  {entry.role.value:<7}  {entry.store or '*':<20}  {made}  {entry.note}".rstrip())


@token.command("revoke")
@tokens_file_option
@click.argument("token_id")
@handle_errors
def revoke(tokens_file: Path, token_id: str) -> None:
    """Remove the token with this id (from ``venice token list``)."""
    entry = TokensFile(tokens_file).revoke(token_id)
    click.echo(f"revoked {entry.role.value} token {entry.token_id}")
