"""CLI: ``cpuu-fleet report``, the migration report from the journal (wiring and printing only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from cpuu_fleet.cli.mailboxes import (
    ColumnOption,
    DevicesOption,
    MailboxesOption,
    read_mailbox_options,
)
from cpuu_fleet.cli.options import JournalOption, JsonOption, ReportsOption, existing_journal
from cpuu_fleet.errors import InputError

CsvDialectOption = Annotated[
    str,
    typer.Option(
        "--csv-dialect",
        metavar="en|eu",
        help="CSV flavour: en = comma and decimal point (scripts, English Excel), eu = semicolon"
        " and decimal comma (what French, German, ... Excel opens as columns in one click).",
    ),
]
TimezoneOption = Annotated[
    Optional[str],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "--timezone",
        metavar="ZONE",
        help="IANA time zone of the local-time columns (e.g. Europe/Paris). Default: the"
        " controller's.",
    ),
]


def check_report_style(csv_dialect: str, timezone: str | None) -> None:
    """Reject an unknown dialect or zone before anything runs (exit code 2)."""
    from cpuu_fleet.report.style import dialect, zone_name

    dialect(csv_dialect)
    zone_name(timezone)


def report(
    run: Annotated[
        list[str] | None,
        typer.Option(
            "--run",
            metavar="ID",
            help="Run id to report on (repeat for several). Default: the latest run.",
        ),
    ] = None,
    all_runs: Annotated[
        bool, typer.Option("--all", help="Report on every run in the journal.")
    ] = False,
    wave: Annotated[
        str | None,
        typer.Option(
            "--wave",
            metavar="PAT",
            help="Only these waves: globs separated by ',' or ':', '!' excludes.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Where to write. Default: <reports>/<run id>/ for one run,"
            " <reports>/report-<UTC time>/ for several; with --wave, a wave-<PAT>/ folder in it.",
        ),
    ] = None,
    reports: ReportsOption = Path("reports"),
    journal: JournalOption = None,
    mailboxes: MailboxesOption = None,
    devices: DevicesOption = None,
    mailbox_columns: ColumnOption = None,
    as_json: JsonOption = False,
    csv_dialect: CsvDialectOption = "en",
    timezone: TimezoneOption = None,
) -> None:
    """Write report.xlsx, report.html, the CSVs, retry.txt and pending.txt, and print the summary.

    With --json the figures report.html shows are printed as one JSON object instead.
    """
    # Imported here: pandas takes a moment to load, and other commands need not pay for it.
    from cpuu_fleet.report import default_out_dir, summary_table, write_report
    from cpuu_fleet.report.selection import resolve_runs
    from cpuu_fleet.report.summary import causes_table, plain

    if run and all_runs:
        raise InputError("--run and --all cannot be used together")
    check_report_style(csv_dialect, timezone)
    batch = read_mailbox_options(mailboxes, devices, mailbox_columns)
    with existing_journal(reports, journal) as opened:
        run_ids = resolve_runs(opened, run, all_runs=all_runs)
        out_dir = out if out is not None else default_out_dir(reports, run_ids, wave)
        result = write_report(
            opened,
            run_ids,
            out_dir,
            wave=wave,
            mailboxes=batch,
            csv_dialect=csv_dialect,
            timezone=timezone,
        )
    if as_json and result.figures is not None:
        typer.echo(json.dumps(result.figures.to_dict(), ensure_ascii=False, indent=2))
        return

    # Paths and names are the operator's and the journal's text: printed as plain text, never markup.
    console = Console(highlight=False)
    console.print(summary_table(result))
    if (lead := causes_table(result)) is not None:
        console.print(lead)
    for sheet, parts in result.sheets.items():
        if len(parts) > 1:
            console.print(
                f"{sheet} did not fit on one sheet: continued on {len(parts) - 1} more.",
                style="yellow",
                markup=False,
            )
    actions = len(result.frames.actions) if result.frames is not None else 0
    if actions:
        console.print(
            plain(
                f"{actions:,} host(s) need a person: see the Action list, or rerun them with "
                f"--limit @{result.paths['retry.txt']}"
            )
        )
    pending = result.paths["pending.txt"]
    if pending.stat().st_size:
        console.print(
            plain(
                f"Pending hosts (after the next logon): cpuu-fleet collect ... --limit @{pending}"
            )
        )
    if result.mailboxes is not None:
        from cpuu_fleet.report.mailboxes import batch_lines

        for line in batch_lines(result.mailboxes):
            console.print(plain(line))
    console.print("Written:")
    for path in result.paths.values():
        console.print(plain(f"  {path}"), soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the root app."""
    app.command("report")(report)
