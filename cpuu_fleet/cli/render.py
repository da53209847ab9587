"""CLI: ``cpuu-fleet render``, what each host would receive, written out for review.

The review copy always has secrets masked (``********``): it is meant to be read, diffed and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cpuu_fleet.cli.inventory import InventoryOption, JsonOption, LimitOption, warn
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.credentials import AskPass
from cpuu_fleet.datafiles import load_data_file, parse_yaml
from cpuu_fleet.errors import InputError
from cpuu_fleet.inventory import Inventory
from cpuu_fleet.render import Renderer

DEFAULT_TEMPLATES = Path("playbooks/templates")


def parse_extra_vars(values: list[str]) -> dict[str, Any]:
    """Ansible's ``-e``: ``key=value`` pairs, a YAML/JSON mapping, or ``@file``; later ones win."""
    result: dict[str, Any] = {}
    for value in values:
        if value.startswith("@"):
            data = load_data_file(Path(value[1:]))
            source = value[1:]
        elif value.lstrip().startswith("{"):
            data = parse_yaml(value, "--extra-vars")
            source = "--extra-vars"
        else:
            data = {}
            for pair in value.split():
                key, sep, item = pair.partition("=")
                if not sep or not key:
                    raise InputError(f"expected key=value, got {pair!r}", where="--extra-vars")
                data[key] = item
            source = "--extra-vars"
        if not isinstance(data, dict):
            raise InputError("extra vars must be a mapping", where=source)
        result.update(data)
    return result


def render(
    inventory: InventoryOption,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the review copy: OUT/<host>/<file>.")
    ],
    limit: LimitOption = None,
    mode: Annotated[
        str, typer.Option("--mode", "-m", help="update, undo (rollback) or cleanup.")
    ] = "update",
    templates: Annotated[
        Path,
        typer.Option("--templates", "-t", help="Folder of *.j2 templates and templates.yml."),
    ] = DEFAULT_TEMPLATES,
    extra_vars: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer reads this annotation at run time
        typer.Option(
            "-e", "--extra-vars", help="key=value, a YAML mapping, or @file; highest precedence."
        ),
    ] = None,
    ask_pass: Annotated[
        bool,
        typer.Option(
            "--ask-pass", "-k", help="Prompt for secrets that are not set (never echoed)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Render each host's CPUU.ini and batch file for review (secrets are always masked)."""
    chosen_mode = Mode.parse(mode)
    inv = Inventory.load(inventory, ask_pass=AskPass() if ask_pass else None)
    hosts = inv.select(limit)
    renderer = Renderer(templates)
    extra = parse_extra_vars(extra_vars or [])
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
