"""The ``venice`` command."""

from __future__ import annotations

import click

from venice.cli.cluster import cluster
from venice.cli.push import push
from venice.cli.quickstart import quickstart
from venice.cli.services import controller, router, server
from venice.cli.status import status
from venice.cli.store import store
from venice.cli.tail import tail
from venice.cli.token import token
from venice.cli.version import version
from venice.cli.write import delete, encode, put, update, write

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="venice-py")
def main() -> None:
    """Venice: serve derived data by key, replaced whole by versioned pushes and kept
    fresh by nearline writes."""


for command in (
    quickstart, controller, server, router, store, version, push, tail, put, delete, update, write, encode, status, token, cluster,
):
    main.add_command(command)
