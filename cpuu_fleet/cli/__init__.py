"""The ``cpuu-fleet`` command line: wiring and presentation only, no logic.

Each area registers its commands from its own module, so the pieces stay small and separate.
An :class:`~cpuu_fleet.errors.InputError` anywhere becomes one line on stderr and exit code 2; the
controller failing to write its own files (disk full, a read-only or unwritable folder) one line
and exit code 4, never a traceback.
"""

from __future__ import annotations

import sqlite3
import sys

import typer

from cpuu_fleet import __version__
from cpuu_fleet.cli import (
    audit,
    codes,
    demo,
    init,
    inventory,
    journal_copy,
    lab,
    mailboxes,
    play,
    relay,
    render,
    report,
    results,
    runs,
    status,
    steps,
    template,
)
from cpuu_fleet.cli.help_text import readable_metavars
from cpuu_fleet.cli.settings import apply_settings
from cpuu_fleet.errors import (
    CONTROLLER_WRITE_EXIT,
    ControllerWriteError,
    InputError,
    write_fault,
)
from cpuu_fleet.redact import REDACTOR

app = typer.Typer(
    name="cpuu-fleet",
    help="Switch Outlook profiles to a new Exchange server with CPUU, wave by wave, over WinRM.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, pwsh)
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cpuu-fleet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Switch Outlook profiles to a new Exchange server with CPUU, wave by wave, over WinRM."""
    apply_settings(ctx)  # cpuu-fleet.toml and CPUU_FLEET_* become the options' defaults


for _module in (
    inventory,
    render,
    template,
    results,
    codes,
    lab,
    play,
    steps,
    status,
    runs,
    demo,
    report,
    mailboxes,
    audit,
    init,
    relay,
    journal_copy,
):
    _module.register(app)


def main() -> None:
    """Console-script entry point: bad input and a controller that cannot write are one line."""
    try:
        command = readable_metavars(typer.main.get_command(app))
        command(prog_name="cpuu-fleet")  # the name help and shell completion use, also under -m
    except InputError as exc:
        typer.echo(f"cpuu-fleet: error: {exc.render()}", err=True)
        sys.exit(2)
    except ControllerWriteError as exc:
        typer.echo(f"cpuu-fleet: error: {exc.render()}", err=True)
        sys.exit(CONTROLLER_WRITE_EXIT)
    except (OSError, sqlite3.Error) as exc:
        # Any command writing on a full disk (a report, a template) that no layer below named.
        why = write_fault(exc)
        if why is None:
            raise
        line = ControllerWriteError(f"the controller could not write ({why})").render()
        typer.echo(f"cpuu-fleet: error: {line}", err=True)
        sys.exit(CONTROLLER_WRITE_EXIT)
    except Exception as exc:
        # The journal's PostgreSQL server gone or refusing mid-command (psycopg's errors, which
        # name no password): one line, the controller's fault (exit 4), not a traceback.
        if not type(exc).__module__.startswith("psycopg"):
            raise
        why = REDACTOR.scrub(" ".join(str(exc).split())[:300])
        line = ControllerWriteError(f"the journal's database failed ({why})").render()
        typer.echo(f"cpuu-fleet: error: {line}", err=True)
        sys.exit(CONTROLLER_WRITE_EXIT)
    except KeyboardInterrupt:
        typer.echo("cpuu-fleet: interrupted", err=True)
        sys.exit(130)
