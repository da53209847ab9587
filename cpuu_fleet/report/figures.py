"""The report's figures as one model: what ``report.html`` shows and ``report --json`` prints.

Why one model: the HTML, its charts and the JSON are all drawn from :class:`Figures`, which is
built once from the report's frames, so they can never disagree with each other (and the frames
already agree with the workbook and the CSVs).

The model is a list of **headline lines** and a list of **tables**, each made by one builder in
:data:`LINES` or :data:`SECTIONS`. A new part of the report (per-wave causes with their owner and
next step; a go/no-go line) is one builder added to one of those tuples: the HTML renders every
table alike (a title, an optional chart, the rows), and the JSON carries it under its key.

Every value is plain JSON (text, int, float, ``None``; times as ISO-8601 UTC text). Text that
came from a workstation is kept as data and made printable (:func:`cpuu_fleet.redact.printable`:
no control or bidi character survives); the HTML escapes it on the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from cpuu_fleet import vocabulary as V
from cpuu_fleet.redact import printable
from cpuu_fleet.report import states
from cpuu_fleet.report import summary as lead
from cpuu_fleet.report.frames import wave_count_key
from cpuu_fleet.report.mailboxes import BATCH_COLUMNS, MAILBOX_COLUMNS
from cpuu_fleet.report.progress import BY_DAY, BY_RUN, HOSTS, MAILBOXES, progress_groups
from cpuu_fleet.report.sheets import DATE, INT, TEXT, Column
from cpuu_fleet.report.workbook import ACTION_COLUMNS, RUN_COLUMNS, SUMMARY_COLUMNS

if TYPE_CHECKING:
    from cpuu_fleet.report import ReportResult

#: Rows a list (hosts or mailboxes needing a person) shows at the most; the rest are counted and
#: the reader sent to the workbook. An e-mail of 100,000 rows is read by nobody.
MAX_LISTED = 200

SUMMARY_KEY, BATCHES_KEY, ACTIONS_KEY, MAILBOX_ACTIONS_KEY = (
    "summary",
    "batches",
    "actions",
    "mailboxes_not_done",
)
PROGRESS_KEY, PROGRESS_DAYS_KEY = "progress", "progress_by_day"
MAILBOX_PROGRESS_KEY = "mailbox_progress"
RUNS_KEY = "runs"
CAUSES_KEY = "causes"

#: The charts the HTML draws, by the key of the table each is drawn from.
SUMMARY_CHART, PROGRESS_CHART = SUMMARY_KEY, PROGRESS_KEY


@dataclass
class Table:
    """One table of the report: its columns (key, header, kind) and its rows as plain values."""

    key: str
    title: str
    columns: tuple[Column, ...]
    rows: list[dict[str, Any]]
    left_out: int = 0  # rows not listed here (the workbook has them)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": [{"key": c.key, "header": c.header, "kind": c.kind} for c in self.columns],
            "rows": self.rows,
            "left_out": self.left_out,
            "note": self.note,
        }


@dataclass
class Figures:
    """Everything the HTML shows and ``report --json`` prints."""

    title: str
    generated_at: str
    run_ids: list[str]
    lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)

    def table(self, key: str) -> Table | None:
        return next((table for table in self.tables if table.key == key), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "generated_at": self.generated_at,
            "runs": self.run_ids,
            "lines": self.lines,
            "tables": {table.key: table.to_dict() for table in self.tables},
        }


def build_figures(result: ReportResult) -> Figures:
    """The model of one report: every line and table builder, in order."""
    ids = result.run_ids
    runs = ", ".join(ids) if len(ids) <= 2 else f"{len(ids)} runs, {ids[0]} … {ids[-1]}"
    figures = Figures(
        title=printable(f"CPUU migration report: {runs}"),
        generated_at=_iso(pd.Timestamp(datetime.now(timezone.utc)).tz_convert(None)),
        run_ids=[printable(run) for run in ids],
    )
    for make_lines in LINES:
        figures.lines.extend(printable(line) for line in make_lines(result))
    for make_table in SECTIONS:
        table = make_table(result)
        if table is not None:
            figures.tables.append(table)
    return figures


# ------------------------------------------------------------------------------ values
def _iso(value: Any) -> str | None:
    """A naive UTC time as ISO-8601 with a ``Z`` (seconds), or None."""
    if value is None or pd.isna(value):
        return None
    return f"{pd.Timestamp(value):%Y-%m-%dT%H:%M:%S}Z"


def _plain(value: Any, kind: str) -> Any:
    """One cell as a JSON value of its column's kind (None where it is empty)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if kind == TEXT:
        return printable(str(value))
    if kind == INT:
        return int(value)
    if kind == DATE:
        return _iso(value)
    return float(value)


def rows_of(frame: pd.DataFrame, columns: Sequence[Column]) -> list[dict[str, Any]]:
    """A frame's rows as plain dicts keyed by the columns' keys."""
    values = {
        column.key: [_plain(value, column.kind) for value in frame[column.key].tolist()]
        for column in columns
    }
    return [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]


def _table(
    key: str, title: str, frame: pd.DataFrame, columns: Sequence[Column], note: str = ""
) -> Table:
    """A table of at most :data:`MAX_LISTED` rows, counting the rest. A column the frame does
    not have is left out (a sheet's column list may name one it computes itself)."""
    columns = [column for column in columns if column.key in frame.columns]
    listed = frame.head(MAX_LISTED)
    return Table(
        key, title, tuple(columns), rows_of(listed, columns), len(frame) - len(listed), note
    )


# ------------------------------------------------------------------------------ lines
def _headline(result: ReportResult) -> list[str]:
    """Hosts (and mailboxes) by what a lead asks: done, needs a person, waiting, not started."""
    total = result.summary.iloc[-1]  # the last row is the total
    by_user_state: dict[str, int] = dict.fromkeys(reversed(V.USER_STATES), 0)  # done first
    for key in states.STATE_KEYS:
        by_user_state[V.USER_STATE_OF_HOST[key]] += int(total[V.label(key)])
    waves = len(result.summary) - 1
    lines = [f"{int(total['targeted']):,} host(s) in {waves} wave(s): " + _counts(by_user_state)]
    if result.mailboxes is not None:
        batches = result.mailboxes.batches
        row = batches.iloc[-1]
        counts = {state: int(row[state]) for state in (*reversed(V.USER_STATES), V.USER_NO_DEVICE)}
        lines.append(
            f"{int(row['mailboxes']):,} mailbox(es) in {len(batches) - 1} batch(es): "
            + _counts(counts)
        )
    return lines


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{value:,} {state}" for state, value in counts.items() if value]
    return ", ".join(shown) if shown else "none yet"


def _go_no_go(result: ReportResult) -> list[str]:
    """The verdict for the next wave, and the rule it follows (:mod:`.summary`, one definition
    with the workbook's Summary and the terminal)."""
    if result.frames is None:
        return []
    _, headline = lead.go_no_go(result.frames)
    return [headline, f"Rule: {lead.GO_RULE}"]


#: The headline builders, in order.
LINES: tuple[Callable[[ReportResult], list[str]], ...] = (_headline, _go_no_go)


# ------------------------------------------------------------------------------ tables
def _pick(columns: Sequence[Column], *keys: str) -> tuple[Column, ...]:
    """The workbook's columns of these keys, in this order: the page's headers are the sheets'."""
    by_key = {column.key: column for column in columns}
    return tuple(by_key[key] for key in keys)


SUMMARY_FIELDS = SUMMARY_COLUMNS
ACTION_FIELDS = _pick(
    ACTION_COLUMNS, "wave", "host", "user", "state", "reason", "error_message",
    "problem_profiles", "hint", "follow_up",
)  # fmt: skip
MAILBOX_FIELDS = _pick(
    MAILBOX_COLUMNS, "batch", "mailbox", "user", "status", "worst_device", "worst_state",
    "follow_up",
)  # fmt: skip
RUN_FIELDS = _pick(RUN_COLUMNS, "run_id", "kind", "status", "stop_reason", "started_at", "ended_at")


def _summary(result: ReportResult) -> Table:
    return _table(SUMMARY_KEY, "Hosts per wave", result.summary, SUMMARY_FIELDS)


CAUSE_FIELDS = (
    Column("group", "Wave or batch"),
    Column("count", "Count", INT),
    Column("status", "Status"),
    Column("cause", "Cause"),
    Column("owner", "Owner"),
    Column("next_step", "Next step"),
)


def _causes(result: ReportResult) -> Table | None:
    """Why hosts (and mailboxes) are not done, grouped per wave and batch, each with who acts
    and what they do: the Summary sheet's causes, from the same function."""
    if result.frames is None:
        return None
    rows = lead.causes(result.frames, result.mailboxes)
    if rows.empty:
        return None
    note = "Owner and next step are defined once per cause (docs/report.md)."
    return _table(CAUSES_KEY, "Why not done, and who acts", rows, CAUSE_FIELDS, note)


def _batches(result: ReportResult) -> Table | None:
    if result.mailboxes is None:
        return None
    return _table(BATCHES_KEY, "Mailboxes per batch", result.mailboxes.batches, BATCH_COLUMNS)


def _progress(unit: str, step: str, key: str, title: str) -> Callable[[ReportResult], Table | None]:
    """A builder of one progress table: one row per point, a done column per wave or batch."""

    def build(result: ReportResult) -> Table | None:
        if result.progress is None:
            return None
        groups = progress_groups(result.progress, unit)
        wide = result.progress.wide(unit, step, groups)
        if wide.empty:
            return None
        keys = [wave_count_key(group) for group in groups]
        wide.columns = ["point", "at", *keys, "total"]
        when = (Column("at", "Time (UTC)", DATE),) if step == BY_RUN else ()  # a day is its time
        columns = (
            Column("point", "Run" if step == BY_RUN else "Day (UTC)"),
            *when,
            *(Column(k, group, INT) for k, group in zip(keys, groups, strict=True)),
            Column("total", "Total", INT),
        )
        return Table(key, title, columns, rows_of(wide, columns))

    return build


def _actions(result: ReportResult) -> Table | None:
    if result.frames is None:
        return None
    note = "Every host here is in retry.txt; the workbook's Action list has each one's details."
    return _table(
        ACTIONS_KEY, "Hosts that need a person", result.frames.actions, ACTION_FIELDS, note
    )


def _mailboxes_not_done(result: ReportResult) -> Table | None:
    if result.mailboxes is None:
        return None
    rows = result.mailboxes.mailboxes
    rows = rows[rows["status"] != V.USER_DONE].sort_values("status_rank", kind="stable")
    note = "Worst first; the workbook's Mailboxes sheet lists every mailbox and its devices."
    return _table(MAILBOX_ACTIONS_KEY, "Mailboxes not done yet", rows, MAILBOX_FIELDS, note)


def _runs(result: ReportResult) -> Table | None:
    if result.frames is None:
        return None
    return _table(RUNS_KEY, "Runs included", result.frames.runs, RUN_FIELDS)


#: The table builders, in the order the HTML shows them (``None``: nothing to show). A new table
#: is one more builder here.
SECTIONS: tuple[Callable[[ReportResult], Table | None], ...] = (
    _summary,
    _causes,
    _batches,
    _mailboxes_not_done,
    _actions,
    _progress(HOSTS, BY_RUN, PROGRESS_KEY, "Hosts done after each run"),
    _progress(HOSTS, BY_DAY, PROGRESS_DAYS_KEY, "Hosts done by day (UTC)"),
    _progress(MAILBOXES, BY_DAY, MAILBOX_PROGRESS_KEY, "Mailboxes done by day (UTC)"),
    _runs,
)
