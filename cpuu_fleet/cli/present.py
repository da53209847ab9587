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


def processors(reports: Path, as_json: bool) -> list[Any]:
    """The JSON event lines, as the operator asked; else the live display on a terminal, plain
    lines on a pipe, ``nohup`` or CI (where stdout is no terminal)."""
    from cpuu_fleet.cli.progress import JsonLinesPrinter, LiveProgress, PlainLines

    # Presentation only: the runner writes run.log itself.
    if as_json:
        return [JsonLinesPrinter()]
    return [LiveProgress() if sys.stdout.isatty() else PlainLines()]


def warn_one(message: str) -> None:
    """The engine's warnings, printed as ``inventory`` prints its own."""
    warn([message])


def ask_pass_prompt(enabled: bool) -> Any:
    """``--ask-pass``: a prompt for the secrets the environment and keyring do not give."""
    if not enabled:
        return None
    from cpuu_fleet.inputs.credentials import AskPass

    return AskPass()


def print_result(result: Any, *, as_json: bool, check: bool) -> None:
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


def finish(result: Any, *, as_json: bool, check: bool = False) -> None:
    """Show the run's end and leave with its exit code."""
    print_result(result, as_json=as_json, check=check)
    raise typer.Exit(int(result.exit_code))
