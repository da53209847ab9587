"""CLI: ``cpuu-fleet init DIR``, a new project folder, and what to do next."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from cpuu_fleet.inputs.config import PROJECT_FILE
from cpuu_fleet.inputs.project import create_project


def init(
    folder: Annotated[Path, typer.Argument(help="The project folder (made if missing).")],
) -> None:
    """Make a project folder: settings, an inventory skeleton, the playbooks and templates.

    Existing files are never overwritten: if any would be, they are named and nothing is written.
    """
    written = create_project(folder)
    typer.echo(f"created {folder}/ with {len(written)} files:")
    for rel in written:
        typer.echo(f"  {rel}")
    where = shlex.quote(str(folder))
    typer.echo(
        "\nNext:\n"
        f"  cd {where}\n"
        "  cpuu-fleet demo                 # a whole wave against simulated workstations\n"
        "  edit inventories/fleet.yml      # your workstations, in wave1, wave2, ...\n"
        "  edit inventories/group_vars/windows.yml and all.yml   # WinRM and CPUU settings\n"
        "  copy the vendor's CPUU folder into playbooks/payload/\n"
        "  export CPUU_FLEET_WINRM_PASSWORD CPUU_FLEET_CPUU_PASSWORD CPUU_FLEET_CPUU_PASSWORD_TRG\n"
        "  cpuu-fleet inventory graph\n"
        "  cpuu-fleet play playbooks/preflight.yml --limit wave1\n"
        "  cpuu-fleet play playbooks/update.yml --limit wave1\n"
        f"Settings (inventory, reports, forks) are in {PROJECT_FILE}; -i and --reports override it."
    )


def register(app: typer.Typer) -> None:
    """Add ``init`` to the root app."""
    app.command("init")(init)
