"""Progress over time (issue 11, point 4): hosts and mailboxes done per run and per day.

The journal below is written through the Journal API as the engine writes it, over two days:
a first run, a retry the next day in which one host that had succeeded fails again, and a
check-mode run that must change nothing.
"""

from __future__ import annotations

import csv
import random
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.inputs.mailboxes import load_mailboxes
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from cpuu_fleet.report.progress import BY_DAY, BY_RUN, HOSTS, MAILBOXES, PROGRESS_CSV
from tests.report.test_mailboxes import BATCH, MAP

DAY1, DAY2 = "2026-11-20", "2026-11-21"


def _pass(journal: Journal, run: str, host: str, state: str, day: str) -> None:
    journal.set_host(
        run,
        host,
        state=state,
        attempts=1,
        started_at=f"{day}T09:00:00.000+00:00",
        ended_at=f"{day}T09:05:00.000+00:00",
    )


def _dated(journal: Journal, run: str, day: str) -> None:
    """Date a run (the journal stamps runs with the time they ran: this one ran on ``day``)."""
    with journal.connection() as connection:
        connection.execute(
            "UPDATE runs SET started_at = ?, ended_at = ? WHERE run_id = ?",
            (f"{day}T08:00:00.000+00:00", f"{day}T18:00:00.000+00:00", run),
        )


@pytest.fixture
def two_days(tmp_path):
    journal = Journal(tmp_path / "reports" / "journal.sqlite3")
    first = journal.start_run(run_id="r1-first")
    journal.add_hosts(
        first,
        [HostEntry(h, wave="wave1") for h in ("h1", "h2", "h3")] + [HostEntry("h4", wave="wave2")],
    )
    _pass(journal, first, "h1", J.SUCCEEDED, DAY1)
    _pass(journal, first, "h2", J.FAILED, DAY1)
    _pass(journal, first, "h3", J.SUCCEEDED, DAY1)
    journal.set_host(first, "h4", state=J.NOT_RUN)
    journal.finish_run(first, "stopped")
    _dated(journal, first, DAY1)

    retry = journal.start_run(run_id="r2-retry", kind="retry")
    journal.add_hosts(retry, [HostEntry(h, wave="wave1") for h in ("h2", "h3")])
    journal.add_hosts(retry, [HostEntry("h4", wave="wave2")])
    _pass(journal, retry, "h2", J.SUCCEEDED, DAY2)
    _pass(journal, retry, "h3", J.FAILED, DAY2)  # it had succeeded: it drops out again
    _pass(journal, retry, "h4", J.SUCCEEDED, DAY2)
    journal.finish_run(retry, "completed")
    _dated(journal, retry, DAY2)

    dry = journal.start_run(run_id="r3-check", check_mode=True)
    journal.add_hosts(dry, [HostEntry("h1", wave="wave1")])
    _pass(journal, dry, "h1", J.FAILED, DAY2)  # a dry run changed nothing
    journal.finish_run(dry, "completed")
    _dated(journal, dry, DAY2)
    return journal, [first, retry, dry]


def _done(result, unit: str, step: str) -> dict[tuple[str, str], int]:
    part = result.progress.part(unit, step)
    return {
        (p, g): int(d) for p, g, d in zip(part["point"], part["group"], part["done"], strict=True)
    }


def test_hosts_done_per_run_replays_the_latest_attempt_rule(two_days, tmp_path):
    journal, runs = two_days
    result = write_report(journal, runs, tmp_path / "out")
    assert _done(result, HOSTS, BY_RUN) == {
        ("r1-first", "wave1"): 2,
        ("r1-first", "wave2"): 0,
        ("r2-retry", "wave1"): 2,  # h2 came in, h3 fell out
        ("r2-retry", "wave2"): 1,
        ("r3-check", "wave1"): 2,  # the check-mode run's "failed" counts as not run
        ("r3-check", "wave2"): 1,
    }


def test_hosts_done_per_day_and_the_last_point_is_the_summary(two_days, tmp_path):
    journal, runs = two_days
    result = write_report(journal, runs, tmp_path / "out")
    assert _done(result, HOSTS, BY_DAY) == {
        (DAY1, "wave1"): 2,
        (DAY1, "wave2"): 0,
        (DAY2, "wave1"): 2,
        (DAY2, "wave2"): 1,
    }
    summary = result.summary.set_index("wave")
    for step in (BY_RUN, BY_DAY):
        last = result.progress.part(HOSTS, step).groupby("group").last()
        for wave in ("wave1", "wave2"):
            assert last.loc[wave, "done"] == summary.loc[wave, "succeeded"], (step, wave)
            assert last.loc[wave, "total"] == summary.loc[wave, "targeted"], (step, wave)


def test_progress_csv_and_the_progress_sheet_with_its_chart(two_days, tmp_path):
    journal, runs = two_days
    result = write_report(journal, runs, tmp_path / "out")
    with open(result.paths[PROGRESS_CSV], encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    day2 = [r for r in rows if r["step"] == BY_DAY and r["point"] == DAY2]
    assert {(r["group"], r["done"], r["total"]) for r in day2} == {
        ("wave1", "2", "3"),
        ("wave2", "1", "1"),
    }
    # UTC, written as every CSV of the report writes times: a date Excel parses.
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", rows[0]["at"]), rows[0]["at"]

    sheet = openpyxl.load_workbook(result.workbook)["Progress"]
    cells = [[c for c in row if c is not None] for row in sheet.iter_rows(values_only=True)]
    header = cells.index(["Run", "Time (UTC)", "wave1", "wave2", "Total"])
    assert [row[0] for row in cells[header + 1 : header + 4]] == runs
    assert [row[2:] for row in cells[header + 1 : header + 4]] == [[2, 0, 2], [2, 1, 3], [2, 1, 3]]
    day_header = cells.index(["Day (UTC)", "wave1", "wave2", "Total"])
    assert cells[day_header + 1 : day_header + 3] == [[DAY1, 2, 0, 2], [DAY2, 2, 1, 3]]
    with zipfile.ZipFile(result.workbook) as book:
        charts = [book.read(n).decode() for n in book.namelist() if n.startswith("xl/charts/")]
    assert any("Progress!$C$" in chart for chart in charts), "no chart drawn from the sheet"


def mailbox_source(folder: Path) -> tuple[Path, Path]:
    """The batch file and device map of ``test_mailboxes``, written into ``folder``."""
    batch = folder / "batch.csv"
    batch.write_text(BATCH, encoding="utf-8-sig")
    devices = folder / "map.csv"
    devices.write_text(MAP, encoding="utf-16")
    return batch, devices


def test_mailboxes_done_per_batch_end_where_the_batches_sheet_does(fleet, tmp_path):
    source = load_mailboxes(*mailbox_source(tmp_path))
    runs = [fleet.first_run, fleet.retry_run]
    result = write_report(fleet.journal, runs, tmp_path / "out", mailboxes=source)
    batches = result.mailboxes.batches.set_index("batch")
    for step in (BY_RUN, BY_DAY):
        last = result.progress.part(MAILBOXES, step).groupby("group").last()
        for name in ("Finance", "Sales"):
            assert last.loc[name, "done"] == batches.loc[name, "done"], (step, name)
            assert last.loc[name, "total"] == batches.loc[name, "mailboxes"], (step, name)
    assert sum(_done(result, MAILBOXES, BY_RUN).values()) > 0


def test_a_report_of_no_host_has_an_empty_progress(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r0")
    result = write_report(journal, [run], tmp_path / "out")
    assert result.progress.table.empty
    assert "Progress" in openpyxl.load_workbook(result.workbook).sheetnames


def test_many_runs_and_days_count_as_a_replay_point_by_point_would(tmp_path):
    """Random runs over several days, checked against the plain rule applied at every point:
    each host's latest tried row among the rows up to it (run order, then journal order)."""
    rng = random.Random(11)
    journal = Journal(tmp_path / "j.sqlite3")
    hosts = [f"pc-{i:02}" for i in range(30)]
    choices = (J.SUCCEEDED, J.SUCCEEDED, J.FAILED, J.UNREACHABLE, J.PENDING, J.NOT_RUN, J.NOT_RUN)
    runs = []
    for number in range(8):
        day = f"2026-11-{20 + number // 2:02}"
        run = journal.start_run(run_id=f"r{number}")
        targeted = rng.sample(hosts, 20)
        journal.add_hosts(run, [HostEntry(h, wave=f"w{int(h[-2:]) % 3}") for h in targeted])
        for host in targeted:
            state = rng.choice(choices)
            if state == J.NOT_RUN:
                journal.set_host(run, host, state=state)
            else:
                _pass(journal, run, host, state, day)
        journal.finish_run(run, "completed")
        _dated(journal, run, day)
        runs.append(run)
    result = write_report(journal, runs, tmp_path / "out")

    sql = (
        "SELECT h.host, h.wave, h.state, h.ended_at, r.started_at, r.run_id"
        " FROM hosts h JOIN runs r USING (run_id) ORDER BY r.started_at, r.run_id, h.rowid"
    )
    rows = journal.connection().execute(sql).fetchall()

    def replay(upto) -> dict[str, int]:
        latest: dict[str, tuple[bool, str, str]] = {}
        for index, (host, wave, state, ended, started, run) in enumerate(rows):
            if not upto(index, (ended or started)[:10], run):
                continue
            tried = state not in (J.NOT_RUN, J.QUEUED)
            if tried or not latest.get(host, (False,))[0]:
                latest[host] = (tried, wave, state)
        done = dict.fromkeys(result.frames.waves, 0)
        for _tried, wave, state in latest.values():
            done[wave] += state == J.SUCCEEDED
        return done

    for rank, run in enumerate(runs):
        expected = replay(lambda _i, _d, r, rank=rank: runs.index(r) <= rank)
        assert _by_point(result, BY_RUN, run) == expected, run
    for day in sorted({(row[3] or row[4])[:10] for row in rows}):
        expected = replay(lambda _i, d, _r, day=day: d <= day)
        assert _by_point(result, BY_DAY, day) == expected, day


def _by_point(result, step: str, point: str) -> dict[str, int]:
    part = result.progress.part(HOSTS, step)
    part = part[part["point"] == point]
    return dict(zip(part["group"], part["done"].astype(int), strict=True))
