"""``cpuu-fleet status``: a run's counts per state, the hosts that need attention with the
follow-up for each, and the pending hosts. A run whose controller died reads ``interrupted``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.options import JournalOption, JsonOption, ReportsOption, existing_journal
from cpuu_fleet.cli.present import counts_table, state_cell, stdout_console
from cpuu_fleet.engine.lease import live_status
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal
from cpuu_fleet.redact import printable


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    @app.command(
        help="Per-state counts of a run (default: the latest) and the hosts needing action."
    )
    def status(
        run: Annotated[str | None, typer.Argument(help="Run id (default: the latest run).")] = None,
        reports: ReportsOption = Path("reports"),
        journal: JournalOption = None,
        as_json: JsonOption = False,
    ) -> None:
        _status(run, reports, as_json, journal)


def _status(run_id: str | None, reports: Path, as_json: bool, url: str | None = None) -> None:
    with existing_journal(reports, url) as journal:
        run = journal.run(run_id) if run_id else journal.latest_run()
        if run is None:
            raise InputError(
                f"no run {run_id!r} in the journal" if run_id else "no runs in the journal",
                where=journal.path,
            )
        run = shown_run(journal, run)  # a dead controller's run: interrupted
        rows = _status_rows(run, journal.hosts(run["run_id"]), reports)
    counts = dict(Counter(row["state"] for row in rows))
    hosts = [h for h in rows if vocabulary.state(h["state"]).attention]
    pending = [h["host"] for h in rows if h["state"] in vocabulary.PENDING_STATES]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run": {k: run[k] for k in ("run_id", "kind", "status", "stop_reason", "mode")},
                    "counts": counts,
                    "needs_action": [
                        {
                            **{k: h[k] for k in ("host", "state", "error_class", "error_message")},
                            "follow_up": h["follow_up"],
                        }
                        for h in hosts
                    ],
                    "pending": pending,
                },
                ensure_ascii=False,
            )
        )
        return
    console = stdout_console()
    title = f"Run {run['run_id']} ({run['kind']}, {run['mode'] or '-'}): {run['status']}"
    # Above the table, not as its title: a title wraps to the width of a two-column table.
    console.print(title, markup=False, soft_wrap=True)
    console.print(counts_table(counts, None))
    if run.get("stop_reason"):
        console.print(f"[bold yellow]Stopped:[/] {escape(run['stop_reason'])}")
    if hosts:
        table = Table(title="Hosts needing action")
        for column in ("host", "wave", "state", "error", "message"):
            table.add_column(column, overflow="fold")
        for host in hosts:
            table.add_row(
                escape(printable(host["host"])),
                escape(printable(host["wave"] or "-")),
                state_cell(host["state"]),
                escape(host["error_class"] or "-"),
                escape(printable((host["error_message"] or "")[:200])),
            )
        console.print(table)
        _print_follow_ups(console, hosts)
    if pending:
        follow_up = vocabulary.BY_KEY[vocabulary.PENDING].follow_up_for(run["run_id"], reports)
        console.print(f"pending ({len(pending)}): {follow_up}", markup=False, soft_wrap=True)


def _print_follow_ups(console: Console, hosts: list[dict[str, Any]]) -> None:
    """One line per state shown: what to do next about its hosts (the vocabulary's follow-up)."""
    counts = Counter(host["state"] for host in hosts)
    follow_ups = {host["state"]: host["follow_up"] for host in hosts}
    for key in sorted(counts, key=list(vocabulary.BY_KEY).index):
        line = f"{vocabulary.label(key)} ({counts[key]}): {follow_ups[key]}"
        console.print(line, markup=False, soft_wrap=True)


def shown_run(journal: Journal, run: dict[str, Any]) -> dict[str, Any]:
    """The run's row with its status as an operator reads it (a dead controller's run reads
    ``interrupted``); ``status`` and ``runs`` show the same."""
    return {**run, "status": live_status(journal, run)}


def shown_state(run: dict[str, Any], state: str) -> str:
    """A host's state as ``status`` and ``runs`` show it: a run that is over has its transient
    states settled (as in the report). ``run`` is a :func:`shown_run` row."""
    return state if run["status"] == vocabulary.RUN_RUNNING else vocabulary.settle(state)


def _status_rows(
    run: dict[str, Any], rows: list[dict[str, Any]], reports: Path
) -> list[dict[str, Any]]:
    """The run's host rows as ``status`` shows them: a run that is over has its transient states
    settled (as in the report), and every row carries its follow-up from the vocabulary."""
    shown = []
    for row in rows:
        key = shown_state(run, row["state"])
        follow_up = vocabulary.state(key).follow_up_for(row["run_id"], reports)
        shown.append({**row, "state": key, "follow_up": follow_up})
    return shown
