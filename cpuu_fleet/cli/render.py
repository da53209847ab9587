"""CLI: ``cpuu-fleet render``, what each host would receive, written out for review.

The review copy always has secrets masked (``********``): it is meant to be read, diffed and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cpuu_fleet.cli.inventory import warn
from cpuu_fleet.cli.options import (
    AskPassOption,
    AskVaultPassOption,
    ExtraVarsOption,
    InventoryOption,
    JsonOption,
    LimitOption,
    ModeOption,
    VaultIdOption,
    VaultPasswordFileOption,
    parse_extra_vars,
)
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.credentials import AskPass
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.render import Renderer
from cpuu_fleet.inputs.shipped import LOCAL_TEMPLATES, default_templates

DEFAULT_TEMPLATES = LOCAL_TEMPLATES


def render(
    inventory: InventoryOption,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the review copy: OUT/<host>/<file>.")
    ],
    limit: LimitOption = None,
    mode: ModeOption = "update",
    templates: Annotated[
        Path,
        typer.Option("--templates", "-t", help="Folder of *.j2 templates and templates.yml."),
    ] = DEFAULT_TEMPLATES,
    extra_vars: ExtraVarsOption = None,
    ask_pass: AskPassOption = False,
    vault_password_file: VaultPasswordFileOption = None,
    vault_id: VaultIdOption = None,
    ask_vault_pass: AskVaultPassOption = False,
    as_json: JsonOption = False,
) -> None:
    """Render each host's CPUU.ini and batch file for review (secrets are always masked)."""
    chosen_mode = Mode.parse(mode)
    inv = Inventory.load(inventory, ask_pass=AskPass() if ask_pass else None)
    hosts = inv.select(limit)
    renderer = Renderer(default_templates() if templates == DEFAULT_TEMPLATES else templates)
    extra = parse_extra_vars(extra_vars)
    warn(inv.warnings)
    summary: list[dict[str, Any]] = []
    for host in hosts:
        rendered = renderer.render_host(host, chosen_mode, extra)
        folder = out / host.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in rendered.masked.items():
                (folder / name).write_bytes(data)
        except OSError as exc:
            raise InputError(
                f"cannot write the review copy ({exc.strerror})", where=folder
            ) from None
        warn(rendered.warnings)
        summary.append(
            {
                "host": host.name,
                "folder": str(folder),
                "files": {name: len(data) for name, data in rendered.files.items()},
            }
        )
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    table = Table(
        title=escape(
            f"{chosen_mode.value}: {len(summary)} host(s) rendered into {out} (secrets masked)"
        )
    )
    table.add_column("host")
    table.add_column("files")
    for row in summary:
        files = ", ".join(f"{n} ({s} B)" for n, s in row["files"].items())
        table.add_row(Text(row["host"]), Text(files))
    Console().print(table)


def register(app: typer.Typer) -> None:
    """Add ``render`` to the root app."""
    app.command("render")(render)
