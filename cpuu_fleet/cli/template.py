"""CLI: ``cpuu-fleet template import``, the wizard's own files turned into templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpuu_fleet.cli.render import DEFAULT_TEMPLATES
from cpuu_fleet.inputs.wizard_import import import_wizard

template_app = typer.Typer(
    help="Make templates from the vendor wizard's files.", no_args_is_help=True
)

_ENV_FOR = {
    "cpuu_password": "CPUU_FLEET_CPUU_PASSWORD",
    "cpuu_password_trg": "CPUU_FLEET_CPUU_PASSWORD_TRG",
}


@template_app.command("import")
def import_templates(
    wizard_dir: Annotated[
        Path, typer.Argument(help="Folder with the wizard's CPUU.ini and batch files.")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Templates folder to write.")
    ] = DEFAULT_TEMPLATES,
    force: Annotated[
        bool, typer.Option("--force", help="Replace templates that already exist.")
    ] = False,
) -> None:
    """Import CPUU.ini and the batch files byte for byte; passwords become secret variables."""
    result = import_wizard(wizard_dir, out, force=force)
    for imported in result.files:
        fmt = imported.format
        typer.echo(
            f"{imported.source} -> {imported.template} ({fmt.encoding}, {fmt.newline.upper()})"
        )
        for line, variable in imported.secrets:
            base, _, number = variable.rpartition("_")
            if number.isdigit():  # a second, different Password value: cpuu_password_2
                env = f"{_ENV_FOR[base]}_{number}" if base in _ENV_FOR else None
            else:
                env = _ENV_FOR.get(variable)
            hint = f"lookup('env', '{env}')" if env else "an env or keyring lookup"
            typer.echo(
                f"  {imported.source}:{line}: the encrypted value is now {{{{ {variable} }}}}; "
                f"define {variable} in group_vars with {hint}"
            )
    if result.skipped:
        typer.echo(f"not templates (left alone): {', '.join(result.skipped)}")
    for message in result.warnings:
        typer.echo(f"cpuu-fleet: warning: {message}", err=True)
    typer.echo(
        f"formats recorded in {out / 'templates.yml'}; now replace per-host parts with variables"
    )


def register(app: typer.Typer) -> None:
    """Add ``template import`` to the root app."""
    app.add_typer(template_app, name="template")
