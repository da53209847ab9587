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
from cpuu_fleet.report import summary as lead
from cpuu_fleet.report.csvs import with_local_times
from cpuu_fleet.report.frames import ReportFrames, wave_count_key
from cpuu_fleet.report.mailboxes import MailboxFrames, sheet_tables
from cpuu_fleet.report.progress import Progress, write_progress_sheet
from cpuu_fleet.report.sheets import (
    DATE,
    DURATION,
    EXCEL_MAX_ROWS,
    INT,
    LINK,
    NUMBER,
    PERCENT,
    TEXT,
    Column,
    Formats,
    LinkBase,
    SheetPart,
    cell_values,
    print_wide,
    sheet_names,
    write_table,
    write_text,
)
from cpuu_fleet.report.style import UTC

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
    Column("result_dir", "Collected files", LINK, 36),
    Column("log_file", "CPUU log", LINK, 36),
    Column("run_id", "Run", TEXT, 22),
    Column("batch", "Batch", INT, 7),
    Column("address", "Address", TEXT, 16),
)


def host_columns(zone: str) -> tuple[Column, ...]:
    """The Hosts sheet's columns: :data:`HOST_COLUMNS`, then the local times, named by zone."""
    return (
        *HOST_COLUMNS,
        Column("started_local", f"Start ({zone})", DATE, 19),
        Column("ended_local", f"End ({zone})", DATE, 19),
        Column("preflight_os", "OS (preflight)", TEXT, 30),
        Column("preflight_free_gb", "Free disk GB", NUMBER, 9),
        Column("preflight_user", "Logged on (preflight)", TEXT, 22),
        Column("preflight_outlook_running", "Outlook running", TEXT, 9),
        Column("preflight_outlook_version", "Outlook version", TEXT, 14),
        Column("preflight_sessions", "Sessions", INT, 8),
        Column("preflight_locked_files", "Locked files", INT, 8),
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
    Column("result_file", "Result file", TEXT, 40),  # its host's row links the folder
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
    Column("result_dir", "Collected files", LINK, 36),
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
    zone: str = UTC,
) -> WorkbookResult:
    """Write every sheet; ``max_rows`` (Excel's limit by default) is lowered by tests.
    ``extra``: more tables, after the others (a play's audit: :func:`.audit.audit_tables`).

    ``fast=False`` writes every cell through XlsxWriter's API instead of :mod:`.rowxml` (the
    fallback path, kept tested and measured).
    """
    tables = [
        ("Hosts", with_local_times(frames.hosts, zone), host_columns(zone)),
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
        _write_summary(book, formats, frames, planned, mailboxes)
        if progress is not None:
            write_progress_sheet(book, formats, progress)
        # Collected files are recorded relative to the journal's folder (the reports folder).
        links = LinkBase(frames.reports_dir or Path(frames.journal_path).parent, Path(path).parent)
        for name, frame, columns in tables:
            result.sheets[name] = write_table(
                book, formats, name, frame, columns, max_rows=max_rows, fast=fast, links=links
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


#: The chart's place: above every table, from the sheet's top left, so a laptop shows it first.
CHART_ROW = 3
CHART_SIZE = {"width": 760, "height": 300}
#: The first table's row: below the chart (300 px at Excel's default 20 px a row, and a gap).
FIRST_TABLE_ROW = CHART_ROW + 16
#: The last Summary column a wide text (a cause's next step, a note) spans: the state table's.
LAST_COL = len(SUMMARY_COLUMNS) - 1
STATUS_TABLE = (
    Column("wave", "Wave", TEXT),
    Column("targeted", "Targeted", INT),
    *(Column(status, status.capitalize(), INT) for status in lead.STATUS_COLUMNS),
    Column("success_pct", "Success %", PERCENT),
    Column("verdict", "Next wave", TEXT),
)
#: A cause row: (first column, last column, key, header) per cell; the next step wraps.
CAUSE_CELLS = (
    (0, 0, "group", "Wave"),
    (1, 1, "count", "Hosts"),
    (2, 2, "status", "Status"),
    (3, 5, "cause", "Cause"),
    (6, 7, "owner", "Owner"),
    (8, LAST_COL, "next_step", "Next step"),
)
#: A run row, one per run: (first column, last column, column of RUN_COLUMNS).
RUN_CELLS = (
    (0, 0, "run_id"), (1, 1, "kind"), (2, 2, "status"), (3, 4, "started_at"),
    (5, 6, "ended_at"), (7, 7, "operator"), (8, 8, "mode"), (9, 9, "tool_version"),
    (10, 10, "playbook"), (11, 11, "inventory"), (12, 12, "stop_reason"),
    (13, LAST_COL, "payload_sha256"),
)  # fmt: skip
_LINE_HEIGHT = 15


def _write_summary(
    book: Workbook,
    formats: Formats,
    frames: ReportFrames,
    planned: dict[str, list[SheetPart]],
    mailboxes: MailboxFrames | None = None,
) -> None:
    """The lead's page, top to bottom (constant memory: rows are written in order): the go/no-go
    line, the chart, where each wave stands, the causes with owners and next steps, the hosts per
    state (the chart's data), the runs included (one row each) and notes.

    A dashboard, not a table: no autofilter (sorting would move the Total rows into the waves).
    Printed landscape, fitted to one page wide, the go/no-go line on every page.
    """
    sheet = book.add_worksheet("Summary")
    print_wide(sheet, header_rows=2)
    for col, column in enumerate(SUMMARY_COLUMNS):
        sheet.set_column(col, col, column.width)
    verdicts, headline = lead.go_no_go(frames)
    write_text(sheet, 0, 0, "Where the waves stand", formats.title)
    judged = [v.go for v in verdicts if v.go is not None]
    headline_format = formats.text if not judged else (formats.go if judged[-1] else formats.no_go)
    sheet.merge_range(1, 0, 1, LAST_COL, "", headline_format)
    write_text(sheet, 1, 0, headline, headline_format)
    write_text(sheet, 2, 0, "Rule: " + lead.GO_RULE)
    if frames.waves:
        _insert_chart(book, sheet, len(frames.waves), FIRST_TABLE_ROW + len(frames.waves) + 4)
    row = _write_status_table(sheet, formats, frames, verdicts, FIRST_TABLE_ROW)
    row = _write_state_table(sheet, formats, frames.summary, row + 2)
    causes = lead.causes(frames, mailboxes)
    row = _write_causes(sheet, formats, causes[causes["scope"] == "wave"], "Wave", row + 2)
    if mailboxes is not None:
        by_batch = causes[causes["scope"] == "batch"]
        row = _write_causes(sheet, formats, by_batch, "Batch", row + 2, counted="Mailboxes")
    row = _write_runs(sheet, formats, frames.runs, row + 2)
    _write_notes(sheet, formats, frames, planned, row + 2)


def _write_status_table(
    sheet: Worksheet, formats: Formats, frames: ReportFrames, verdicts: list, row: int
) -> int:
    """Per wave and in total: targeted, done / needs action / waiting / not started, success %,
    and the wave's go/no-go. Returns the last row written."""
    table = lead.wave_status(frames)
    table["success_pct"] = frames.summary["success_pct"].to_numpy()
    table["verdict"] = [v.word for v in verdicts] + [""]
    return _write_block(sheet, formats, table, STATUS_TABLE, row)


def _write_state_table(sheet: Worksheet, formats: Formats, summary: pd.DataFrame, row: int) -> int:
    """Hosts per state, per wave (the chart's data), with a success-rate data bar."""
    write_text(sheet, row, 0, "Hosts per state", formats.title)
    header = row + 1
    last = _write_block(sheet, formats, summary, SUMMARY_COLUMNS, header, state_headers=True)
    success_col = [c.key for c in SUMMARY_COLUMNS].index("success_pct")
    if last - header > 1:
        sheet.conditional_format(
            header + 1,
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
    return last


def _write_block(
    sheet: Worksheet,
    formats: Formats,
    table: pd.DataFrame,
    columns: tuple[Column, ...],
    header: int,
    *,
    state_headers: bool = False,
) -> int:
    """A header row and one row per record, the last one (the total) in bold; returns its row."""
    for col, column in enumerate(columns):
        chosen = formats.state_headers.get(column.key) if state_headers else None
        write_text(sheet, header, col, column.header, chosen or formats.header)
    values = [cell_values(table[column.key], column.kind) for column in columns]
    last = header + len(table)
    for row, row_values in enumerate(zip(*values, strict=False), start=header + 1):
        is_total = row == last
        for col, (column, value) in enumerate(zip(columns, row_values, strict=True)):
            if column.kind == TEXT:
                text_format = formats.total if is_total else formats.text
                write_text(sheet, row, col, value or "", text_format)
                continue
            if is_total:
                cell_format = formats.total_percent if column.kind == PERCENT else formats.total
            else:
                cell_format = formats.for_kind(column.kind)
            if value is None and column.kind == PERCENT:
                sheet.write_blank(row, col, None, cell_format)  # no host tried: no rate
            else:
                sheet.write_number(row, col, value or 0, cell_format)
    return last


def _write_causes(
    sheet: Worksheet,
    formats: Formats,
    causes: pd.DataFrame,
    group: str,
    row: int,
    *,
    counted: str = "Hosts",
) -> int:
    """Per wave (or batch), each cause of what is not done: count, owner and next step."""
    title = "Causes per wave" if group == "Wave" else "Causes per mailbox batch"
    write_text(sheet, row, 0, title, formats.title)
    row += 1
    headers = {"group": group, "count": counted}
    for first, last, key, header in CAUSE_CELLS:
        _span(sheet, row, first, last, headers.get(key, header), formats.header)
    if causes.empty:
        write_text(sheet, row + 1, 0, "Nothing stops any host: every one is done.")
        return row + 1
    for record in causes.to_dict("records"):
        row += 1
        for first, last, key, _ in CAUSE_CELLS:
            value = record[key]
            if key == "count":
                sheet.write_number(row, first, int(value), formats.int)
            else:
                _span(sheet, row, first, last, str(value), formats.wrap)
        sheet.set_row(row, _height(str(record["next_step"]), _width(8, LAST_COL)))
    return row


def _write_runs(sheet: Worksheet, formats: Formats, runs: pd.DataFrame, row: int) -> int:
    """One row per run, its values side by side (the hash wraps in the last columns)."""
    write_text(sheet, row, 0, "Runs included", formats.title)
    row += 1
    by_key = {column.key: column for column in RUN_COLUMNS}
    for first, last, key in RUN_CELLS:
        _span(sheet, row, first, last, by_key[key].header, formats.header)
    values = {key: cell_values(runs[key], by_key[key].kind) for _, _, key in RUN_CELLS}
    for index in range(len(runs)):
        row += 1
        lines = 1
        for first, last, key in RUN_CELLS:
            value = values[key][index]
            if by_key[key].kind == DATE:
                if first == last:
                    sheet.write(row, first, value, formats.date_left)
                else:
                    sheet.merge_range(row, first, row, last, value, formats.date_left)
                continue
            text = "" if value is None else str(value)
            _span(sheet, row, first, last, text, formats.wrap)
            lines = max(lines, -(-len(text) // max(int(_width(first, last)), 1)))
        sheet.set_row(row, _LINE_HEIGHT * min(lines, 6))
    return row


def _write_notes(
    sheet: Worksheet,
    formats: Formats,
    frames: ReportFrames,
    planned: dict[str, list[SheetPart]],
    row: int,
) -> None:
    notes = [
        f"Report generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC from {frames.journal_path}.",
        f"Covers {len(frames.runs)} run(s) from {_when(frames.runs['started_at'].min())} "
        f"to {_when(frames.runs['ended_at'].max())} (UTC).",
        "A host's row is its latest attempt across these runs; its attempts add up over them.",
        "Success % = succeeded hosts / targeted hosts.",
        "Done / needs action / waiting / not started: each host's state as a mailbox status"
        " (docs/report.md).",
        *split_notes(planned),
        *frames.notes[:MAX_NOTES],
    ]
    if len(frames.notes) > MAX_NOTES:
        notes.append(f"... and {len(frames.notes) - MAX_NOTES:,} more notes like these.")
    write_text(sheet, row, 0, "Notes", formats.title)
    for note in notes:
        row += 1
        write_text(sheet, row, 0, note)


def _span(sheet: Worksheet, row: int, first: int, last: int, text: str, cell_format) -> None:
    """Text in one cell or across merged cells (always as text: :func:`write_text`)."""
    if first != last:
        sheet.merge_range(row, first, row, last, "", cell_format)
    write_text(sheet, row, first, text, cell_format)


def _width(first: int, last: int) -> float:
    """The characters that fit in Summary columns ``first`` to ``last``."""
    return sum(SUMMARY_COLUMNS[col].width for col in range(first, last + 1))


def _height(text: str, width: float) -> float:
    """A row tall enough for ``text`` wrapped at ``width`` characters (merged cells never grow
    by themselves in Excel)."""
    return _LINE_HEIGHT * max(1, -(-len(text) // max(int(width), 1)))


def _when(value: pd.Timestamp) -> str:
    return "?" if pd.isna(value) else f"{value:%Y-%m-%d %H:%M:%S}"


def _insert_chart(book: Workbook, sheet: Worksheet, wave_count: int, header_row: int) -> None:
    """Stacked columns: one bar per wave, one colour per state (the cells' colours), from the
    state table whose header is at ``header_row``; placed above every table."""
    chart = book.add_chart({"type": "column", "subtype": "stacked"})
    keys = [column.key for column in SUMMARY_COLUMNS]
    first, last = header_row + 1, header_row + wave_count
    for label in states.STATE_LABELS:
        col = keys.index(label)
        chart.add_series(
            {
                "name": ["Summary", header_row, col],
                "categories": ["Summary", first, 0, last, 0],
                "values": ["Summary", first, col, last, col],
                "fill": {"color": states.CHART_COLOURS[label]},
                "gap": 60,
            }
        )
    chart.set_title({"name": "Hosts per state, by wave"})
    chart.set_x_axis({"name": "Wave"})
    chart.set_y_axis({"name": "Hosts", "major_gridlines": {"visible": True}})
    chart.set_legend({"position": "right"})
    chart.set_size(CHART_SIZE)
    sheet.insert_chart(CHART_ROW, 0, chart, {"x_offset": 4, "y_offset": 4})
