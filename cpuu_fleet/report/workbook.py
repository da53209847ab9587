"""``report.xlsx``: Summary, Hosts, Profiles, Return codes, Action list, Attempts (and, given a
batch file, Mailboxes and Mailbox batches: :mod:`.mailboxes`).

The workbook is written through pandas' ``ExcelWriter`` with the XlsxWriter engine and these
options, for the reasons given:

* ``strings_to_formulas`` / ``strings_to_urls`` / ``strings_to_numbers`` off: text from a
  workstation is data. A profile named ``=HYPERLINK(...)`` or ``+cmd|...`` appears literally.
* ``constant_memory`` on: each row goes to disk as soon as the next begins, so memory stays flat
  however large the fleet (every sheet is therefore written top to bottom, Summary first).

Sheets that pass Excel's row limit continue on ``<name> (2)``, and the Summary says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from cpuu_fleet.report import states
from cpuu_fleet.report.frames import ReportFrames, wave_count_key
from cpuu_fleet.report.mailboxes import MailboxFrames, sheet_tables
from cpuu_fleet.report.progress import Progress, write_progress_sheet
from cpuu_fleet.report.sheets import (
    DATE,
    DURATION,
    EXCEL_MAX_ROWS,
    INT,
    NUMBER,
    PERCENT,
    TEXT,
    Column,
    Formats,
    SheetPart,
    cell_values,
    print_wide,
    sheet_names,
    write_table,
    write_text,
)

HOST_COLUMNS = (
    Column("wave", "Wave", TEXT, 12),
    Column("host", "Host", TEXT, 22),
    Column("user", "User", TEXT, 22),
    Column("state", "State", TEXT, 18),
    Column("exit_code", "Exit code", INT, 9),
    Column("exit_flags", "Exit flags", TEXT, 28),
    Column("profiles_ok", "Profiles OK", INT, 10),
    Column("profiles_failed", "Profiles failed", INT, 10),
    Column("started_at", "Start (UTC)", DATE, 19),
    Column("ended_at", "End (UTC)", DATE, 19),
    Column("duration_s", "Duration", DURATION, 10),
    Column("attempts", "Attempts", INT, 9),
    Column("error_class", "Error class", TEXT, 14),
    Column("error_message", "Error message", TEXT, 50),
    Column("result_dir", "Collected files", TEXT, 36),
    Column("log_file", "CPUU log", TEXT, 36),
    Column("run_id", "Run", TEXT, 22),
    Column("batch", "Batch", INT, 7),
    Column("address", "Address", TEXT, 16),
)

PROFILE_COLUMNS = (
    Column("wave", "Wave", TEXT, 12),
    Column("host", "Host", TEXT, 22),
    Column("user", "User", TEXT, 22),
    Column("profile", "Profile", TEXT, 30),
    Column("current_code", "Code", INT, 7),
    Column("current_name", "Code name", TEXT, 34),
    Column("previous_code", "Previous code", INT, 9),
    Column("previous_name", "Previous code name", TEXT, 34),
    Column("outcome", "Outcome", TEXT, 13),
    Column("meaning", "Meaning", TEXT, 40),
    Column("hint", "What to do", TEXT, 60),
    Column("result_file", "Result file", TEXT, 40),
    Column("run_id", "Run", TEXT, 22),
)

ACTION_COLUMNS = (
    Column("wave", "Wave", TEXT, 12),
    Column("host", "Host", TEXT, 22),
    Column("user", "User", TEXT, 22),
    Column("state", "State", TEXT, 18),
    Column("reason", "Why", TEXT, 36),
    Column("exit_code", "Exit code", INT, 9),
    Column("exit_flags", "Exit flags", TEXT, 28),
    Column("error_class", "Error class", TEXT, 14),
    Column("error_message", "Error message", TEXT, 50),
    Column("problem_profiles", "Profiles to fix", TEXT, 40),
    Column("hint", "What to do", TEXT, 70),
    Column("follow_up", "Then", TEXT, 44),
    Column("result_dir", "Collected files", TEXT, 36),
    Column("run_id", "Run", TEXT, 22),
)

ATTEMPT_COLUMNS = (
    Column("run_id", "Run", TEXT, 22),
    Column("wave", "Wave", TEXT, 12),
    Column("host", "Host", TEXT, 22),
    Column("step", "Step", TEXT, 10),
    Column("attempt", "Attempt", INT, 8),
    Column("status", "Status", TEXT, 9),
    Column("error_class", "Error class", TEXT, 14),
    Column("error_message", "Error message", TEXT, 50),
    Column("started_at", "Start (UTC)", DATE, 19),
    Column("ended_at", "End (UTC)", DATE, 19),
    Column("duration_s", "Duration (s)", NUMBER, 10),
    Column("details_json", "Details", TEXT, 40),
)

SUMMARY_COLUMNS = (
    Column("wave", "Wave", TEXT, 22),  # wide enough for the run ids listed below it
    Column("targeted", "Targeted", INT, 10),
    *(Column(label, label.capitalize(), INT, 11) for label in states.STATE_LABELS),
    Column("success_pct", "Success %", PERCENT, 10),
    Column("profiles_switched", "Profiles switched", INT, 16),  # and for the payload hash
    Column("profiles_failed", "Profiles failed", INT, 10),
)

RUN_COLUMNS = (
    Column("run_id", "Run", TEXT),
    Column("kind", "Kind", TEXT),
    Column("status", "Status", TEXT),
    Column("stop_reason", "Stop reason", TEXT),
    Column("started_at", "Start (UTC)", DATE),
    Column("ended_at", "End (UTC)", DATE),
    Column("operator", "Operator", TEXT),
    Column("playbook", "Playbook", TEXT),
    Column("inventory", "Inventory", TEXT),
    Column("mode", "Mode", TEXT),
    Column("payload_sha256", "Payload SHA-256", TEXT),
    Column("tool_version", "Tool version", TEXT),
)

#: The last Summary column a run's metadata value spans (from column B).
RUN_VALUE_SPAN = 6

#: Notes on the Summary beyond this are counted, not listed (the sheet stays readable).
MAX_NOTES = 200

WRITER_OPTIONS = {
    "strings_to_formulas": False,
    "strings_to_urls": False,
    "strings_to_numbers": False,
    "constant_memory": True,
}


@dataclass
class WorkbookResult:
    path: Path
    sheets: dict[str, list[SheetPart]] = field(default_factory=dict)


def code_columns(waves: list[str]) -> tuple[Column, ...]:
    return (
        Column("code", "Code", INT, 7),
        Column("name", "Name", TEXT, 34),
        Column("outcome", "Outcome", TEXT, 13),
        Column("meaning", "Meaning", TEXT, 40),
        *(Column(wave_count_key(wave), wave, INT, 10) for wave in waves),
        Column("total", "Total", INT, 10),
        Column("hint", "What to do", TEXT, 70),
    )


def write_workbook(
    frames: ReportFrames,
    path: Path,
    *,
    max_rows: int = EXCEL_MAX_ROWS,
    fast: bool = True,
    mailboxes: MailboxFrames | None = None,
    progress: Progress | None = None,
    extra: Sequence[tuple[str, pd.DataFrame, Sequence[Column]]] = (),
) -> WorkbookResult:
    """Write every sheet; ``max_rows`` (Excel's limit by default) is lowered by tests.
    ``extra``: more tables, after the others (a play's audit: :func:`.audit.audit_tables`).

    ``fast=False`` writes every cell through XlsxWriter's API instead of :mod:`.rowxml` (the
    fallback path, kept tested and measured).
    """
    tables = [
        ("Hosts", frames.hosts, HOST_COLUMNS),
        ("Profiles", frames.profiles, PROFILE_COLUMNS),
        ("Return codes", frames.codes, code_columns(frames.waves)),
        ("Action list", frames.actions, ACTION_COLUMNS),
        ("Attempts", frames.attempts, ATTEMPT_COLUMNS),
        *(sheet_tables(mailboxes) if mailboxes is not None else []),
        *extra,
    ]
    planned = {name: sheet_names(name, len(frame), max_rows) for name, frame, _ in tables}
    result = WorkbookResult(path)
    with pd.ExcelWriter(
        path, engine="xlsxwriter", engine_kwargs={"options": dict(WRITER_OPTIONS)}
    ) as writer:
        book = writer.book
        formats = Formats(book)
        _write_summary(book, formats, frames, planned)
        if progress is not None:
            write_progress_sheet(book, formats, progress)
        for name, frame, columns in tables:
            result.sheets[name] = write_table(
                book, formats, name, frame, columns, max_rows=max_rows, fast=fast
            )
    return result


def split_notes(planned: dict[str, list[SheetPart]]) -> list[str]:
    """One line per table that did not fit on one sheet."""
    notes = []
    for name, parts in planned.items():
        if len(parts) > 1:
            rows = sum(part.rows for part in parts)
            continued = ", ".join(part.name for part in parts[1:])
            notes.append(
                f"{name}: {rows:,} rows exceed one sheet's limit; continued on {continued}."
            )
    return notes


def _write_summary(
    book: Workbook, formats: Formats, frames: ReportFrames, planned: dict[str, list[SheetPart]]
) -> None:
    """Per-wave counts, the total, the runs' metadata, notes and a stacked bar chart of states.

    A dashboard, not a table: its header is frozen but it has no autofilter (sorting would move
    the Total row into the waves).
    """
    sheet = book.add_worksheet("Summary")
    print_wide(sheet)
    summary = frames.summary
    for col, column in enumerate(SUMMARY_COLUMNS):
        sheet.set_column(col, col, column.width)
        header_format = formats.state_headers.get(column.key, formats.header)
        write_text(sheet, 0, col, column.header, header_format)
    sheet.freeze_panes(1, 1)
    values = [cell_values(summary[column.key], column.kind) for column in SUMMARY_COLUMNS]
    last = len(summary)
    for row, row_values in enumerate(zip(*values, strict=False), start=1):
        is_total = row == last
        for col, (column, value) in enumerate(zip(SUMMARY_COLUMNS, row_values, strict=True)):
            if column.kind == TEXT:
                write_text(
                    sheet, row, col, value or "", formats.total if is_total else formats.text
                )
            else:
                if is_total:
                    cell_format = formats.total_percent if column.kind == PERCENT else formats.total
                else:
                    cell_format = formats.for_kind(column.kind)
                if value is None and column.kind == PERCENT:
                    sheet.write_blank(row, col, None, cell_format)  # no host tried: no rate
                else:
                    sheet.write_number(row, col, value or 0, cell_format)
    success_col = [c.key for c in SUMMARY_COLUMNS].index("success_pct")
    if last > 1:
        sheet.conditional_format(
            1,
            success_col,
            last - 1,
            success_col,
            {
                "type": "data_bar",
                "bar_color": "#70AD47",
                "bar_solid": True,
                "min_type": "num",
                "min_value": 0,
                "max_type": "num",
                "max_value": 1,
            },
        )

    row = last + 2
    write_text(sheet, row, 0, "Runs included", formats.title)
    # One label/value block per run: the values (dates, paths, a 64-digit hash) need more room
    # than the count columns above them give, so each value spans several of those columns.
    run_values = [cell_values(frames.runs[column.key], column.kind) for column in RUN_COLUMNS]
    for run_row in zip(*run_values, strict=False):
        row += 1
        for column, value in zip(RUN_COLUMNS, run_row, strict=True):
            row += 1
            write_text(sheet, row, 0, column.header, formats.header)
            if column.kind == TEXT:
                sheet.merge_range(row, 1, row, RUN_VALUE_SPAN, "", formats.text)
                if value is not None:
                    write_text(sheet, row, 1, value, formats.text)
            else:  # a date, left-aligned next to its label
                sheet.merge_range(row, 1, row, RUN_VALUE_SPAN, value, formats.date_left)

    notes = [
        f"Report generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC from {frames.journal_path}.",
        f"Covers {len(frames.runs)} run(s) from {_when(frames.runs['started_at'].min())} "
        f"to {_when(frames.runs['ended_at'].max())} (UTC).",
        "A host's row is its latest attempt across these runs; its attempts add up over them.",
        "Success % = succeeded hosts / targeted hosts.",
        *split_notes(planned),
        *frames.notes[:MAX_NOTES],
    ]
    if len(frames.notes) > MAX_NOTES:
        notes.append(f"... and {len(frames.notes) - MAX_NOTES:,} more notes like these.")
    row += 2
    write_text(sheet, row, 0, "Notes", formats.title)
    for note in notes:
        row += 1
        write_text(sheet, row, 0, note)

    if frames.waves:
        _insert_chart(book, sheet, len(frames.waves), len(SUMMARY_COLUMNS) + 1)


def _when(value: pd.Timestamp) -> str:
    return "?" if pd.isna(value) else f"{value:%Y-%m-%d %H:%M:%S}"


def _insert_chart(book: Workbook, sheet: Worksheet, wave_count: int, at_col: int) -> None:
    """Stacked columns: one bar per wave, one colour per state (the cells' colours)."""
    chart = book.add_chart({"type": "column", "subtype": "stacked"})
    keys = [column.key for column in SUMMARY_COLUMNS]
    for label in states.STATE_LABELS:
        col = keys.index(label)
        chart.add_series(
            {
                "name": ["Summary", 0, col],
                "categories": ["Summary", 1, 0, wave_count, 0],
                "values": ["Summary", 1, col, wave_count, col],
                "fill": {"color": states.CHART_COLOURS[label]},
                "gap": 60,
            }
        )
    chart.set_title({"name": "Hosts per state, by wave"})
    chart.set_x_axis({"name": "Wave"})
    chart.set_y_axis({"name": "Hosts", "major_gridlines": {"visible": True}})
    chart.set_legend({"position": "bottom"})
    chart.set_size({"width": 720, "height": 360})
    sheet.insert_chart(0, at_col, chart)
