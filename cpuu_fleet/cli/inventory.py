"""CLI: ``cpuu-fleet inventory list`` and ``inventory graph``, to check an inventory before a wave."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cpuu_fleet.cli.options import (
    AskVaultPassOption,
    InventoryOption,
    JsonOption,
    LimitOption,
    VaultIdOption,
    VaultPasswordFileOption,
)
from cpuu_fleet.inputs.inventory import Inventory

inventory_app = typer.Typer(
    help="Read an Ansible-style inventory: hosts, groups and connection settings.",
    no_args_is_help=True,
)


def warn(messages: list[str]) -> None:
    """Inventory warnings (a group_vars file for no group...) go to stderr, apart from the data."""
    for message in messages:
        typer.echo(f"cpuu-fleet: warning: {message}", err=True)


@inventory_app.command("list")
def list_hosts(
    inventory: InventoryOption,
    limit: LimitOption = None,
    as_json: JsonOption = False,
    vault_password_file: VaultPasswordFileOption = None,
    vault_id: VaultIdOption = None,
    ask_vault_pass: AskVaultPassOption = False,
) -> None:
    """List hosts with their groups and effective connection settings (secrets masked)."""
    inv = Inventory.load(inventory)
    hosts = inv.select(limit)
    rows = [host.describe() for host in hosts]
    warn(inv.warnings)
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    table = Table(title=escape(f"{len(rows)} host(s) in {inventory}"))
    for column in ("host", "groups", "address", "port", "auth", "user", "password", "certs"):
        table.add_column(column, overflow="fold")
    for row in rows:
        conn = row["connection"]
        cells = (
            row["name"],
            ", ".join(row["groups"]),
            conn["address"],
            f"{conn['port']}/{conn['protocol']}",
            conn["auth"],
            conn["user"] or "-",
            conn["password"] or "-",
            "validate" if conn["cert_validation"] else "ignore",
        )
        table.add_row(*(Text(str(cell)) for cell in cells))  # values are text, not rich markup
    Console().print(table)


@inventory_app.command("graph")
def graph(
    inventory: InventoryOption,
    vault_password_file: VaultPasswordFileOption = None,
    vault_id: VaultIdOption = None,
    ask_vault_pass: AskVaultPassOption = False,
) -> None:
    """Draw the group tree, like ``ansible-inventory --graph``."""
    inv = Inventory.load(inventory)
    warn(inv.warnings)
    typer.echo(inv.graph())


def register(app: typer.Typer) -> None:
    """Add ``inventory list`` and ``inventory graph`` to the root app."""
    app.add_typer(inventory_app, name="inventory")
