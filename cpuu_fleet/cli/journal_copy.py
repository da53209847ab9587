"""``cpuu-fleet journal-copy --to URL``: the SQLite journal in ``--reports`` copied, whole, into
an empty shared PostgreSQL journal (:mod:`cpuu_fleet.journal_copy`), so the earlier runs' history
goes along when a team moves to ``--journal URL``.

Wiring only: the lease rule (is the source's controller still alive?) is
:mod:`cpuu_fleet.engine.lease`'s, handed down to the copy, which sits below the engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cpuu_fleet import journal_pg
from cpuu_fleet.cli.options import ReportsOption
from cpuu_fleet.engine.lease import describe, is_dead
from cpuu_fleet.journal import Journal
from cpuu_fleet.journal_copy import copy_journal


def live_lease(row: dict[str, Any]) -> str | None:
    """The lease's run and controller, said as other refusals say it, while it may be alive."""
    if is_dead(json.loads(row.get("owner_json") or "{}"), row.get("heartbeat_at") or ""):
        return None
    return describe(row)


def _progress(table: str, rows: int, done: bool) -> None:
    """Rows copied per table, on stderr (stdout keeps the one result line)."""
    typer.echo(f"journal-copy: {table}: {rows:,} rows{'' if done else ' ...'}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``journal-copy`` to the root app."""

    @app.command(
        "journal-copy",
        help="Copy the SQLite journal in --reports, every run, into an empty shared PostgreSQL"
        " journal (all or nothing); then use it with --journal URL.",
    )
    def journal_copy(
        to: Annotated[
            str,
            typer.Option(
                "--to",
                metavar="URL",
                help="The empty PostgreSQL journal (postgresql://USER@HOST/DB; the password from"
                " PGPASSWORD, ~/.pgpass or the keyring, never the URL).",
            ),
        ],
        reports: ReportsOption = Path("reports"),
    ) -> None:
        source = reports / Journal.FILENAME
        summary = copy_journal(source, to, live_lease=live_lease, progress=_progress)
        shown = journal_pg.shown(to)
        typer.echo(
            f"copied {summary.line()} from {source} to {shown}; from now on add"
            f" --journal {shown} --reports {reports} to play, status, runs and report"
        )
