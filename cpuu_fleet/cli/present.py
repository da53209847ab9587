"""What every wave command shows: the progress processors, the end-of-run summary, the state
cells and counts, and the exit codes. Presentation only: the work is in ``cpuu_fleet.engine``.

Exit codes (also in each command's ``--help``): 0 no host needs attention; 2 bad input (nothing
touched); 3 at least one host is in a state that needs attention (:mod:`cpuu_fleet.vocabulary`);
4 the controller could not write (disk full, a read-only or unwritable folder; the run is
recorded interrupted where the journal can still be written); 130 interrupted (Ctrl-C, SIGTERM
or SIGHUP; ``--resume RUN`` carries on).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.inventory import warn
from cpuu_fleet.redact import printable

EXIT_CODES_HELP = (
    "Exit codes: 0 no host needs attention; 2 bad input, nothing touched; 3 some hosts need "
    f"attention ({vocabulary.describe(vocabulary.EXIT_3_STATES, 'or')}); "
    "4 the controller could not write (disk full, read-only folder; the run is interrupted, "
    "--resume RUN once there is room); 130 interrupted (Ctrl-C, SIGTERM, SIGHUP)."
)


def stdout_console() -> Console:
    """Where tables and summaries go (stdout; errors go to stderr as one line)."""
    return Console(stderr=False, highlight=False)


def processors(reports: Path, as_json: bool, verbosity: int = 0) -> list[Any]:
    """The JSON event lines, as the operator asked; else the live display on a terminal (lines
    above it as ``verbosity`` asks), plain lines on a pipe, ``nohup`` or CI (where stdout is no
    terminal: every event, whatever the verbosity)."""
    from cpuu_fleet.cli.progress import JsonLinesPrinter, LiveProgress, PlainLines

    # Presentation only: the runner writes run.log itself.
    if as_json:
        return [JsonLinesPrinter()]
    return [LiveProgress(verbosity=verbosity) if sys.stdout.isatty() else PlainLines()]


def warn_one(message: str) -> None:
    """The engine's warnings, printed as ``inventory`` prints its own."""
    warn([message])


def ask_pass_prompt(enabled: bool) -> Any:
    """``--ask-pass``: a prompt for the secrets the environment and keyring do not give."""
    if not enabled:
        return None
    from cpuu_fleet.inputs.credentials import AskPass

    return AskPass()


READINESS_SHOWN = 200
"""Hosts listed in preflight's readiness table (the rest: the report's Hosts sheet)."""


def _readiness_row(host: str, outcome: Any) -> list[str]:
    """One host's readiness: the report's reading of its preflight facts
    (:func:`cpuu_fleet.report.preflight.preflight_facts`), made printable (a workstation wrote
    them)."""
    from cpuu_fleet.report.preflight import PREFLIGHT_COLUMNS, preflight_facts

    facts = dict(
        zip(
            PREFLIGHT_COLUMNS,
            preflight_facts((outcome.details or {}).get("preflight")),
            strict=True,
        )
    )
    outlook = facts["preflight_outlook_version"] or "-"
    if facts["preflight_outlook_running"] == "yes":
        outlook += " (running)"
    note = outcome.error_message or ""
    if facts["preflight_locked_files"]:
        note = (
            note + "; " if note else ""
        ) + f"{facts['preflight_locked_files']} staged file(s) locked"
    free = facts["preflight_free_gb"]
    sessions = facts["preflight_sessions"]
    staged = ((outcome.details or {}).get("preflight") or {}).get("staged_files", "-")
    return [
        escape(host),
        state_cell(outcome.state),
        escape(printable(str(facts["preflight_user"] or "-"))),
        str(sessions) if sessions else "-",
        escape(printable(outlook)),
        f"{free:.1f} GB" if free is not None else "-",
        escape(printable(str(staged))),
        escape(printable(note)[:120]),
    ]


def print_readiness(console: Console, result: Any) -> None:
    """``preflight``'s answer to "can this wave go?": each host's state and the facts that
    decide it (user, sessions, Outlook, free disk, staged files), hosts needing attention first."""
    outcomes = result.summary.outcomes
    order = {key: rank for rank, key in enumerate(vocabulary.WORST_FIRST)}
    hosts = sorted(outcomes, key=lambda h: (order.get(outcomes[h].state, -1), h))
    table = Table(title="Readiness (preflight; nothing was changed)")
    for column in ("host", "state", "user", "sessions", "Outlook", "free disk", "staged", "why"):
        table.add_column(column, overflow="fold")
    for host in hosts[:READINESS_SHOWN]:
        table.add_row(*_readiness_row(host, outcomes[host]))
    console.print(table)
    if len(hosts) > READINESS_SHOWN:
        console.print(
            f"... and {len(hosts) - READINESS_SHOWN} more hosts in the report's Hosts sheet"
        )


def print_result(result: Any, *, as_json: bool, check: bool, readiness: bool = False) -> None:
    """The end of a run: summary table (or one JSON object), where the files are."""
    if as_json:
        data = {
            "event": "result",
            "run_id": result.run_id,
            "status": result.summary.status,
            "stop_reason": result.summary.stop_reason,
            "counts": result.counts,
            "exit_code": int(result.exit_code),
            "run_dir": str(result.run_dir),
        }
        if check:
            data["check"] = {h: _check_line(d) for h, d in result.details.items()}
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = stdout_console()
    if readiness:
        print_readiness(console, result)
    if check:
        _print_check(console, result)
    if result.report is not None:
        from cpuu_fleet.report import summary_table
        from cpuu_fleet.report.summary import causes_table

        console.print(summary_table(result.report))
        if (lead := causes_table(result.report)) is not None:
            console.print(lead)
    else:
        console.print(counts_table(result.counts, f"Run {result.run_id}"))
        if result.report_error:
            console.print(result.report_error, style="yellow", markup=False)
    if result.summary.stop_reason:
        console.print(f"[bold yellow]Stopped:[/] {escape(result.summary.stop_reason)}")
    console.print(f"Run [bold]{result.run_id}[/]: {result.summary.status}")
    # Paths are the operator's text (a folder may be called "reports[old]") and must survive a
    # copy and paste: plain text, never markup, never broken across lines.
    lines = [f"Files:   {result.run_dir}"]
    if result.report is not None:
        lines.append(f"Report:  {result.report.workbook}")
        page = result.report.paths.get("report.html")
        if page is not None:
            lines.append(f"Page:    {page}   (for a status e-mail; summary.png beside it)")
    lines.append(f"Journal: {result.journal_path}")
    if result.summary.status == "interrupted" and result.kind != "step":
        # Interrupted: the hosts not started (not_run) and those left running are in no retry
        # file; only --resume carries on with all of them, and asks the host where CPUU may run.
        lines.append(f"Resume:  cpuu-fleet play --resume {result.run_id}")
    elif result.summary.retry_file and Path(result.summary.retry_file).stat().st_size:
        limit = f"--limit @{result.summary.retry_file}"
        if result.kind == "step":  # no playbook to continue: repeat the step on those hosts
            lines.append(f"Retry:   the same command with {limit}")
        else:
            lines.append(
                f"Retry:   cpuu-fleet play ... --retry-failed {result.run_id}   (or {limit})"
            )
    pending = result.report.paths.get("pending.txt") if result.report is not None else None
    if pending is not None and pending.stat().st_size:
        lines.append(f"Pending: cpuu-fleet collect ... --limit @{pending}   (after the next logon)")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def print_plan(plan: Any, *, as_json: bool) -> None:
    """``play --list-hosts``: each play's hosts batch by batch, as Ansible's ``--list-hosts``
    lists them, with the wave each host reports under."""
    plays = [
        {
            "play": play_plan.play.name,
            "hosts_pattern": play_plan.play.hosts,
            "batches": [
                [{"host": host.name, "wave": host.wave} for host in batch]
                for batch in play_plan.batches
            ],
        }
        for play_plan in plan.plays
    ]
    if as_json:
        typer.echo(json.dumps({"plays": plays, "hosts": plan.host_names}, ensure_ascii=False))
        return
    lines = []
    for number, play in enumerate(plays, 1):
        count = sum(len(batch) for batch in play["batches"])
        lines.append(f"play #{number} ({play['play']}): {play['hosts_pattern']}  hosts ({count}):")
        for index, batch in enumerate(play["batches"], 1):
            lines.append(f"  batch {index} ({len(batch)}):")
            lines.extend(f"    {printable(h['host'])}  [{printable(h['wave'])}]" for h in batch)
    lines.append(f"{len(plan.host_names)} host(s) in all; nothing was contacted.")
    for line in lines:
        typer.echo(line)


def _check_line(details: dict[str, Any]) -> dict[str, Any]:
    would = details.get("would_push") or {}
    return {
        "files": would.get("files", []),
        "bytes": would.get("bytes", 0),
        "already_there": would.get("skipped", 0),
        "run": details.get("would_run"),
        "user": (details.get("preflight") or {}).get("user"),
    }


def _print_check(console: Console, result: Any) -> None:
    table = Table(title="Check mode: what a real run would do (nothing was changed)")
    for column in ("host", "user", "files to push", "bytes", "already there", "run"):
        table.add_column(column)
    for host, details in sorted(result.details.items()):
        line = _check_line(details)
        files = line["files"]
        shown = ", ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "")
        table.add_row(
            escape(host),
            escape(printable(str(line["user"] or "-"))),
            escape(shown or "-"),
            f"{line['bytes']:,}",
            str(line["already_there"]),
            str(line["run"] or "-"),
        )
    console.print(table)


def state_cell(key: str) -> str:
    """A state as the operator reads it: the vocabulary's label in its colour."""
    known = vocabulary.BY_KEY.get(key)
    if known is None:  # a state this version does not know: shown as it is
        return escape(key)
    return f"[{known.style}]{escape(known.label)}[/]"


def counts_table(counts: dict[str, int], title: str | None) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("hosts", justify="right")
    order = {key: rank for rank, key in enumerate(vocabulary.BY_KEY)}
    for state, count in sorted(counts.items(), key=lambda item: order.get(item[0], len(order))):
        table.add_row(state_cell(state), str(count))
    table.add_row("[bold]total[/]", str(sum(counts.values())))
    return table


def finish(result: Any, *, as_json: bool, check: bool = False, readiness: bool = False) -> None:
    """Show the run's end and leave with its exit code."""
    print_result(result, as_json=as_json, check=check, readiness=readiness)
    raise typer.Exit(int(result.exit_code))
