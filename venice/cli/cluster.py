"""``venice cluster``: the storage servers the controller knows, and removing one.

A server id is bound to the URL it first registered with: a heartbeat naming another URL
is refused (409), so nobody can take over a server's replicas by reusing its id. An admin
removes the id (``remove-server``) to move a server to a new address for good.
"""

from __future__ import annotations

import click

from venice.cli.store import cli_token, controller_option, handle_errors
from venice.controller_client import ControllerClient

__all__ = ["cluster"]


@click.group("cluster")
def cluster() -> None:
    """List the storage servers; remove one (admin)."""


@cluster.command("servers")
@controller_option
@handle_errors
def servers(controller: str) -> None:
    """The storage servers the controller knows: id, URL, alive, draining."""
    with ControllerClient(controller, token=cli_token()) as client:
        known = client.cluster().get("servers") or []
    if not known:
        click.echo("no servers")
        return
    for server in sorted(known, key=lambda s: str(s.get("server_id"))):
        state = "alive" if server.get("alive") else "dead"
        if server.get("draining"):
            state += ", draining"
        click.echo(f"{server.get('server_id')}  {server.get('url')}  {state}")


@cluster.command("remove-server")
@controller_option
@click.argument("server_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def remove_server(controller: str, server_id: str, yes: bool) -> None:
    """Forget SERVER_ID: its replicas move to other servers at once, and the id may
    register again, at any URL, with its next heartbeat."""
    if not yes:
        click.confirm(f"remove server {server_id!r} (its replicas move elsewhere)?", abort=True)
    with ControllerClient(controller, token=cli_token()) as client:
        client.remove_server(server_id)
    click.echo(f"removed server {server_id}")
