"""CLI: ``cpuu-fleet codes``, the vendor's per-profile codes and exit flags with our hints."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from cpuu_fleet.cpuu import (
    FLAG_HINTS,
    FLAG_MEANINGS,
    PROFILE_CODES,
    WINDOWS_EXIT_CODES,
    ExitFlags,
)


def codes() -> None:
    """Show CPUU's per-profile return codes and exit-code flags, and the Windows exit codes that
    can stand in their place, with what to do about each."""
    console = Console()
    table = Table(title="Per-profile return codes (result CSV)")
    for column in ("code", "name", "meaning", "outcome", "what to do"):
        table.add_column(column, overflow="fold")
    for info in PROFILE_CODES.values():
        table.add_row(str(info.code), info.name, info.meaning, info.outcome.value, info.hint)
    console.print(table)

    flags = Table(title="Exit code flags (bit mask; several may be set)")
    for column in ("value", "flag", "meaning", "what to do"):
        flags.add_column(column, overflow="fold")
    flags.add_row("0", "CANNOT_START", "nothing to do (not success)", "")
    for flag in ExitFlags:
        flags.add_row(
            str(int(flag)), flag.name or "", FLAG_MEANINGS[flag], FLAG_HINTS.get(flag, "")
        )
    console.print(flags)

    windows = Table(title="Exit codes that are Windows', not CPUU's (never read as flags)")
    for column in ("value", "name", "meaning and what to do"):
        windows.add_column(column, overflow="fold")
    for value, (name, meaning) in WINDOWS_EXIT_CODES.items():
        windows.add_row(f"{value} (0x{value:X})", name, meaning)
    console.print(windows)


def register(app: typer.Typer) -> None:
    """Add ``codes`` to the root app."""
    app.command("codes")(codes)
