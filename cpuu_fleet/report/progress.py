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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from xlsxwriter.workbook import Workbook
from xlsxwriter.worksheet import Worksheet

from cpuu_fleet import vocabulary as V
from cpuu_fleet.inputs.mailboxes import MailboxInput, host_key, user_key
from cpuu_fleet.report import states
from cpuu_fleet.report.csvs import write_csv
from cpuu_fleet.report.frames import ReportFrames, _utc
from cpuu_fleet.report.mailboxes import _distinct, _links  # the Mailboxes sheet's own rules
from cpuu_fleet.report.sheets import Formats, print_wide, write_text
from cpuu_fleet.report.style import DEFAULT_DIALECT, DIALECTS, CsvDialect

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


def progress_frames(
    frames: ReportFrames, source: MailboxInput | None = None, links: pd.DataFrame | None = None
) -> Progress:
    """Replay the report's host rows run by run and day by day (see the module docstring).

    ``links`` are the user-device pairs the Mailboxes sheet used (``MailboxFrames.links``);
    without them they are found again.

    Not one replay per point (a long migration has hundreds of runs and days): each host's
    rows become the **segments** of points during which each row is its latest, and the counts
    are running sums of where segments start and end. The work is a few sorts of the rows,
    whatever the number of points.
    """
    rows = frames.rows
    if rows is None or rows.empty:
        return Progress(pd.DataFrame(columns=list(COLUMNS)))
    history = _history(rows, frames.runs)
    runs = frames.runs
    run_at = runs["ended_at"].where(runs["ended_at"].notna(), runs["started_at"])
    days = sorted(pd.Timestamp(day) for day in history["day"].dropna().unique())
    history["day_rank"] = history["day"].map({day: rank for rank, day in enumerate(days)})
    steps = (
        (BY_RUN, "run_rank", [str(run) for run in runs["run_id"]], list(run_at)),
        (BY_DAY, "day_rank", [f"{day:%Y-%m-%d}" for day in days], days),
    )
    if source is not None:
        links = links if links is not None else _links(frames, source)
        history["host_key"] = _distinct(history["host"], host_key)
        history["ran_for"] = _distinct(history["user"].astype(object), user_key)
    hosts, mailboxes = [], []
    for step, rank, names, ats in steps:
        segments = _segments(history, rank)
        points = pd.DataFrame({"unit": HOSTS, "step": step, "point": names, "at": ats})
        done, total = _running(segments, "wave", len(names), frames.waves)
        hosts.append(_long(points, frames.waves, done, total))
        if source is not None and links is not None:
            batches = list(dict.fromkeys(m.batch for m in source.mailboxes))
            done, total = _mailboxes_running(segments, links, source, len(names), batches)
            mailboxes.append(_long(points.assign(unit=MAILBOXES), batches, done, total))
    table = pd.concat(hosts + mailboxes, ignore_index=True)
    return Progress(table[list(COLUMNS)])


def _history(rows: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The rows with the day each counts from and their ``order`` by the report's latest-row
    rule (:mod:`.frames`: tried before untried, then run order, then journal order)."""
    history = rows.copy()
    history["tried"] = ~history["state"].isin(states.UNTRIED_KEYS)
    run_start = history["run_id"].map(runs.set_index("run_id")["started_at"])
    ended = _utc(history["ended_at"]).fillna(_utc(history["started_at"]))
    history["day"] = ended.where(history["tried"]).fillna(run_start).dt.floor("D")
    history = history.sort_values(["tried", "run_rank", "seq"], kind="stable")
    history["order"] = np.arange(len(history))
    history["is_done"] = history["tried"] & history["state"].isin(DONE_KEYS)
    return history


def _segments(history: pd.DataFrame, rank: str) -> pd.DataFrame:
    """Each row that is its host's latest from point ``start`` (its ``rank``) until ``end``
    (the next such row's point; NaN: to the last point). At a point, the latest row is the one
    of highest order among the rows up to it, so a row starts a segment exactly when its order
    is higher than every earlier one's of that host."""
    ordered = history.sort_values(["host", rank, "order"], kind="stable")
    by_host = ordered.groupby("host", sort=False)["order"]
    before = by_host.cummax().groupby(ordered["host"], sort=False).shift()
    segments = ordered[before.isna() | (ordered["order"] > before)].copy()
    segments["start"] = segments[rank]
    segments["end"] = segments.groupby("host", sort=False)["start"].shift(-1)
    # Several rows at one point: only the last of them is the latest there.
    return segments[segments["end"].isna() | (segments["end"] > segments["start"])]


def _running(
    segments: pd.DataFrame, by: str, points: int, groups: list[str], flag: str = "is_done"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(done, total) per point (rows) and group (columns): running sums of the segments'
    starts (+1) and ends (-1)."""
    starts = pd.DataFrame(
        {"point": segments["start"], "group": segments[by], "n": 1, "done": segments[flag]}
    )
    ended = segments[segments["end"].notna()]
    ends = pd.DataFrame(
        {"point": ended["end"], "group": ended[by], "n": -1, "done": -ended[flag].astype(int)}
    )
    events = pd.concat([starts, ends], ignore_index=True)
    events["done"] = events["done"].astype(int)
    summed = events.groupby(["point", "group"], sort=False)[["n", "done"]].sum()
    grid = pd.MultiIndex.from_product([range(points), groups], names=["point", "group"])
    summed = summed.reindex(grid, fill_value=0)

    def running(column: str) -> pd.DataFrame:
        return summed[column].unstack("group").reindex(columns=groups).cumsum()

    return running("done"), running("n")


def _mailboxes_running(
    segments: pd.DataFrame,
    links: pd.DataFrame,
    source: MailboxInput,
    points: int,
    batches: list[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(done, total) per point and batch: a mailbox is done while every device of its user is
    done for that user (the rule of :func:`.mailboxes._device_states`: a host's success speaks
    for the user CPUU ran for, so a device done for another user is not done for this one)."""
    pairs = links[["key", "host_key"]].drop_duplicates()
    hosts = segments[["host_key", "start", "end", "is_done", "ran_for"]]
    device = pairs.merge(hosts, on="host_key")
    ran_for_another = device["ran_for"].notna() & (device["ran_for"] != device["key"])
    device["ok"] = device["is_done"] & ~ran_for_another
    # Per user: how many of their devices are done, at each point where that changes.
    device = device[device["ok"]]
    changes = pd.concat(
        [
            pd.DataFrame({"key": device["key"], "point": device["start"], "n": 1}),
            pd.DataFrame({"key": device["key"], "point": device["end"], "n": -1}).dropna(),
        ],
        ignore_index=True,
    )
    changes = changes.groupby(["key", "point"])["n"].sum().reset_index()
    changes["devices_done"] = changes.groupby("key")["n"].cumsum()
    changes["devices"] = changes["key"].map(pairs.groupby("key").size())
    everywhere = (changes["devices_done"] == changes["devices"]).astype(int)
    changes["flip"] = everywhere - everywhere.groupby(changes["key"]).shift(fill_value=0)
    flips = changes[changes["flip"] != 0]
    rows = pd.DataFrame(
        {"batch": [m.batch for m in source.mailboxes], "key": [m.key for m in source.mailboxes]}
    )
    events = rows.merge(flips[["key", "point", "flip"]], on="key")
    summed = events.groupby(["point", "batch"])["flip"].sum()
    grid = pd.MultiIndex.from_product([range(points), batches], names=["point", "batch"])
    done = summed.reindex(grid, fill_value=0).unstack("batch").reindex(columns=batches).cumsum()
    sizes = rows.groupby("batch", sort=False).size().reindex(batches, fill_value=0)
    total = pd.DataFrame([sizes.to_numpy()] * points, columns=batches)
    return done, total


def _long(
    points: pd.DataFrame, groups: list[str], done: pd.DataFrame, total: pd.DataFrame
) -> pd.DataFrame:
    """One row per point and group (points in order, groups in report order)."""
    rows = points.loc[points.index.repeat(len(groups))].reset_index(drop=True)
    rows["group"] = groups * len(points)
    rows["done"] = done.to_numpy(dtype="int64").reshape(-1) if groups else []
    rows["total"] = total.to_numpy(dtype="int64").reshape(-1) if groups else []
    return rows


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


def write_progress_csv(
    progress: Progress, out_dir: Path, dialect: CsvDialect = DIALECTS[DEFAULT_DIALECT]
) -> dict[str, Path]:
    """``progress.csv``: the long table (one row per unit, step, point and group), in the
    report's CSV dialect."""
    return {PROGRESS_CSV: write_csv(progress.table, COLUMNS, out_dir / PROGRESS_CSV, dialect)}


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
