"""Progress over time: hosts (and mailboxes) done per wave (per batch), after each run and each day.

A lead reports progress ("wave 2: 310 of 400 done, 120 more since Monday"); the journal holds every
run's rows, so the report replays them. The rules (ours; neither the vendor nor MECM defines them):

* A **point** is what the report would have said had it been made then: each host's row is its
  latest tried row among the rows up to that point, by exactly the rule of :mod:`.frames` (run
  order, then journal order; a later untried row hides nothing). A host that failed after it
  succeeded therefore drops out again, and the **last point equals the Summary** (its targeted
  and succeeded columns).
* **Per run**: the rows of that run and of every earlier selected run. **Per day** (UTC, as every
  time in the report): the rows that ended on or before that day (a row that never ended counts
  from its start, an untried one from its run's start).
* A host is **done** when its state is the one :data:`cpuu_fleet.vocabulary.USER_STATE_OF_HOST`
  calls done (succeeded); ``total`` counts the hosts the runs had targeted by then.
* A **mailbox** is done at a point when every device of its user is done for that user then (the
  Mailboxes sheet's rule, :mod:`.mailboxes`, applied to the hosts as they stood). Its devices are
  those known at the end of the report: a device learnt later was still the user's before.
* Only the report's selected runs and waves are replayed: ``cpuu-fleet report --all`` shows the
  whole history, a play's own report that one run (by day).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from cpuu_fleet import vocabulary as V
from cpuu_fleet.inputs.mailboxes import MailboxInput
from cpuu_fleet.report import states
from cpuu_fleet.report.csvs import write_csv
from cpuu_fleet.report.frames import ReportFrames, _utc
from cpuu_fleet.report.mailboxes import _device_states, _links  # the Mailboxes sheet's own rules
from cpuu_fleet.report.sheets import Formats, print_wide, write_text

#: Host states that count as done (one definition: the vocabulary's user state of a host).
DONE_KEYS = frozenset(key for key, user in V.USER_STATE_OF_HOST.items() if user == V.USER_DONE)

BY_RUN, BY_DAY = "run", "day"
HOSTS, MAILBOXES = "hosts", "mailboxes"
#: The long frame's columns: what is counted, per run or day, which point, when, wave or batch.
COLUMNS = ("unit", "step", "point", "at", "group", "done", "total")


@dataclass
class Progress:
    """Done counts per point and group, long form (``COLUMNS``), hosts then mailboxes."""

    table: pd.DataFrame

    def part(self, unit: str, step: str) -> pd.DataFrame:
        """The rows of one unit (hosts or mailboxes) and one step (run or day)."""
        table = self.table
        return table[(table["unit"] == unit) & (table["step"] == step)]

    def wide(self, unit: str, step: str, groups: list[str]) -> pd.DataFrame:
        """One row per point (``point``, ``at``), one done column per group, then their total."""
        part = self.part(unit, step)
        done = part.pivot_table(
            index=["point", "at"], columns="group", values="done", aggfunc="sum", sort=False
        )
        done = done.reindex(columns=groups, fill_value=0).fillna(0).astype(int)
        done.columns = list(groups)
        done = done.reset_index()
        done["total"] = done[list(groups)].sum(axis=1) if groups else 0
        return done


def progress_frames(frames: ReportFrames, source: MailboxInput | None = None) -> Progress:
    """Replay the report's host rows run by run and day by day (see the module docstring)."""
    rows = frames.rows
    if rows is None or rows.empty:
        return Progress(pd.DataFrame(columns=list(COLUMNS)))
    history = _history(rows, frames.runs)
    points = _points(history, frames.runs)
    hosts, mailboxes = [], []
    links = _links(frames, source) if source is not None else None
    batches = list(dict.fromkeys(m.batch for m in source.mailboxes)) if source else []
    for step, point, at, mask in points:
        latest = _latest(history[mask])
        hosts.append(_count(latest, "wave", frames.waves, HOSTS, step, point, at))
        if source is not None and links is not None:
            done = _mailboxes_done(frames, links, latest, source)
            mailboxes.append(_count(done, "batch", batches, MAILBOXES, step, point, at))
    table = pd.concat(hosts + mailboxes, ignore_index=True)  # points are in order already
    return Progress(table[list(COLUMNS)])


def _history(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows in the order the report's latest-row rule reads them, with the day each counts."""
    history = rows.copy()
    history["tried"] = ~history["state"].isin(states.UNTRIED_KEYS)
    run_start = history["run_id"].map(runs.set_index("run_id")["started_at"])
    ended = _utc(history["ended_at"]).fillna(_utc(history["started_at"]))
    history["day"] = ended.where(history["tried"]).fillna(run_start).dt.floor("D")
    return history.sort_values(["host", "tried", "run_rank", "seq"], kind="stable")


def _points(history: pd.DataFrame, runs: pd.DataFrame) -> list[tuple[str, str, object, pd.Series]]:
    """(step, point, at, mask of the rows it covers): one per run, then one per day."""
    points = []
    for rank, run in enumerate(runs.itertuples(index=False)):
        at = run.ended_at if pd.notna(run.ended_at) else run.started_at
        points.append((BY_RUN, str(run.run_id), at, history["run_rank"] <= rank))
    for day in sorted(history["day"].dropna().unique()):
        day = pd.Timestamp(day)
        points.append((BY_DAY, f"{day:%Y-%m-%d}", day, history["day"] <= day))
    return points


def _latest(history: pd.DataFrame) -> pd.DataFrame:
    """Each host's row as the report would pick it from these rows (:mod:`.frames`' rule)."""
    latest = history.drop_duplicates("host", keep="last")
    return latest.assign(is_done=latest["tried"] & latest["state"].isin(DONE_KEYS))


def _count(
    latest: pd.DataFrame, by: str, groups: list[str], unit: str, step: str, point: str, at: object
) -> pd.DataFrame:
    """done / total per group at one point (every group listed, in report order)."""
    counts = latest.groupby(by, sort=False)["is_done"].agg(["sum", "size"])
    counts = counts.reindex(groups, fill_value=0)
    return pd.DataFrame(
        {
            "unit": unit,
            "step": step,
            "point": point,
            "at": at,
            "group": groups,
            "done": counts["sum"].astype(int).to_numpy(),
            "total": counts["size"].astype(int).to_numpy(),
        }
    )


def _mailboxes_done(
    frames: ReportFrames, links: pd.DataFrame, latest: pd.DataFrame, source: MailboxInput
) -> pd.DataFrame:
    """One row per mailbox of the batch file: its batch and whether it was done at this point."""
    settled = latest["state"].replace(states.TRANSIENT_TO_FINAL).map(states.LABELS)
    hosts = latest[["host", "run_id", "error_class", "wave", "user"]].assign(state=settled)
    devices = _device_states(replace(frames, hosts=hosts), links)
    done_everywhere = (devices["user_state"] == V.USER_DONE).groupby(devices["key"]).all()
    keys = pd.Series([m.key for m in source.mailboxes], dtype=object)
    return pd.DataFrame(
        {
            "batch": [m.batch for m in source.mailboxes],
            "is_done": keys.map(done_everywhere).fillna(False).astype(bool).to_numpy(),
        }
    )


# ------------------------------------------------------------------------------ sheet and CSV
PROGRESS_CSV = "progress.csv"
SHEET = "Progress"
#: Rows the chart takes above the tables (a laptop screen shows it whole, as on the Summary).
CHART_ROWS = 18
_TITLES = {
    (HOSTS, BY_RUN): "Hosts done after each run",
    (HOSTS, BY_DAY): "Hosts done by the end of each day (UTC)",
    (MAILBOXES, BY_RUN): "Mailboxes done after each run (every device done)",
    (MAILBOXES, BY_DAY): "Mailboxes done by the end of each day (UTC)",
}
NOTE = (
    "Each row is what the report would have said then: each host's latest attempt up to that"
    " point (a host that failed after succeeding drops out again). The last rows equal the"
    " Summary's succeeded column and the Mailbox batches' done column."
)


def progress_groups(progress: Progress, unit: str) -> list[str]:
    """The waves (or batches) of one unit, in report order."""
    return list(dict.fromkeys(progress.part(unit, BY_RUN)["group"]))


def write_progress_csv(progress: Progress, out_dir: Path) -> dict[str, Path]:
    """``progress.csv``: the long table (one row per unit, step, point and group)."""
    return {PROGRESS_CSV: write_csv(progress.table, COLUMNS, out_dir / PROGRESS_CSV)}


def write_progress_sheet(book: Workbook, formats: Formats, progress: Progress) -> None:
    """The Progress sheet: a stacked column chart of hosts done per run and wave, above the
    tables it is drawn from (per run and per day; then the mailboxes' when a batch file was
    given). Written top to bottom, as ``constant_memory`` requires."""
    sheet = book.add_worksheet(SHEET)
    print_wide(sheet)
    sheet.set_column(0, 0, 22)
    sheet.set_column(1, 1, 19)
    sheet.set_column(2, 40, 12)
    row = CHART_ROWS
    write_text(sheet, row, 0, NOTE)
    row += 2
    chart_at = None
    for unit in (HOSTS, MAILBOXES):
        groups = progress_groups(progress, unit)
        for step in (BY_RUN, BY_DAY):
            wide = progress.wide(unit, step, groups)
            if wide.empty:
                continue
            if (unit, step) == (HOSTS, BY_RUN):
                chart_at = (row + 1, len(wide), groups)
            row = _write_wide(sheet, formats, row, _TITLES[unit, step], step, wide, groups) + 2
    if chart_at is not None:
        _insert_progress_chart(book, sheet, *chart_at)


def _write_wide(
    sheet: Worksheet,
    formats: Formats,
    row: int,
    title: str,
    step: str,
    wide: pd.DataFrame,
    groups: list[str],
) -> int:
    """A title, a header row and one row per point; returns the last row written."""
    write_text(sheet, row, 0, title, formats.title)
    row += 1
    by_run = step == BY_RUN
    first = 2 if by_run else 1  # a run has a time of its own; a day is its time
    headers = ["Run", "Time (UTC)"] if by_run else ["Day (UTC)"]
    for col, header in enumerate([*headers, *groups, "Total"]):
        write_text(sheet, row, col, header, formats.header)
    for record in wide.itertuples(index=False):
        row += 1
        write_text(sheet, row, 0, str(record[0]), formats.text)
        if by_run and pd.notna(record[1]):
            sheet.write_datetime(row, 1, pd.Timestamp(record[1]).to_pydatetime(), formats.date)
        for col, value in enumerate(record[2:], start=first):
            sheet.write_number(row, col, int(value), formats.int)
    return row


def _insert_progress_chart(
    book: Workbook, sheet: Worksheet, header_row: int, points: int, groups: list[str]
) -> None:
    """Stacked columns: one bar per run, one colour per wave (the height is all hosts done)."""
    chart = book.add_chart({"type": "column", "subtype": "stacked"})
    for offset, _group in enumerate(groups):
        col = 2 + offset
        chart.add_series(
            {
                "name": [SHEET, header_row, col],
                "categories": [SHEET, header_row + 1, 0, header_row + points, 0],
                "values": [SHEET, header_row + 1, col, header_row + points, col],
                "gap": 60,
            }
        )
    chart.set_title({"name": _TITLES[HOSTS, BY_RUN] + ", by wave"})
    chart.set_x_axis({"name": "Run"})
    chart.set_y_axis({"name": "Hosts done", "major_gridlines": {"visible": True}})
    chart.set_legend({"position": "bottom"})
    chart.set_size({"width": 720, "height": 340})
    sheet.insert_chart(0, 0, chart)
