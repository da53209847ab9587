"""``cpuu-fleet runs``: the journal's runs, oldest first, each with its status and its hosts'
counts per state. Read-only: it opens the journal, never a host.

What it shows is what ``status`` shows for one run (:func:`cpuu_fleet.cli.status.shown_run`,
:func:`~cpuu_fleet.cli.status.shown_state`): a run whose controller died reads ``interrupted``,
and a run that is over has no host left ``queued`` or ``running``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cpuu_fleet.cli.options import JournalOption, JsonOption, ReportsOption, existing_journal
from cpuu_fleet.cli.present import stdout_console
from cpuu_fleet.cli.status import shown_run, shown_state
from cpuu_fleet.engine.run_log import summary_line
from cpuu_fleet.journal import Journal
from cpuu_fleet.redact import printable

_FIELDS = (
    "run_id",
    "kind",
    "parent_run",
    "started_at",
    "ended_at",
    "mode",
    "status",
    "stop_reason",
)


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    @app.command(help="The journal's runs, oldest first, with their status and counts.")
    def runs(
        last: Annotated[
            int | None,
            typer.Option("--last", "-n", min=1, metavar="N", help="Only the latest N runs."),
        ] = None,
        reports: ReportsOption = Path("reports"),
        journal: JournalOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with existing_journal(reports, journal) as opened:
            listed = run_rows(opened)
        if last is not None:
            listed = listed[-last:]
        if as_json:
            typer.echo(json.dumps(listed, ensure_ascii=False))
            return
        _print(listed)


def run_rows(journal: Journal) -> list[dict[str, Any]]:
    """Each run of the journal as ``runs`` lists it: its fields, ``check``, and ``counts``."""
    listed = []
    for row in journal.runs():
        run = shown_run(journal, row)
        states = (shown_state(run, host["state"]) for host in journal.hosts(run["run_id"]))
        listed.append(
            {
                **{key: run[key] for key in _FIELDS},
                "check": bool(run["check_mode"]),
                "counts": dict(Counter(states)),
            }
        )
    return listed


def _print(listed: list[dict[str, Any]]) -> None:
    console = stdout_console()
    if not listed:
        console.print("no runs in the journal yet", markup=False)
        return
    table = Table()
    for column in ("run", "kind", "started (UTC)", "status", "hosts", "counts", "stop reason"):
        table.add_column(column, overflow="fold")
    for run in listed:
        kind = run["kind"] + (" --check" if run["check"] else "")
        if run["parent_run"]:
            kind += f" of {run['parent_run']}"
        table.add_row(
            run["run_id"],
            escape(kind),
            (run["started_at"] or "")[:19].replace("T", " "),
            escape(run["status"]),
            str(sum(run["counts"].values())),
            escape(summary_line(run["counts"]) or "-"),
            escape(printable(run["stop_reason"] or "")[:200]),
        )
    console.print(table)
