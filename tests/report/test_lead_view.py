"""The lead's view (issue 11, point 3): where each wave and batch stands, the causes with their
owner and next step, the go/no-go line, and a Summary sheet that prints on landscape pages.

Fleet (tests/support/report.py): wave1 pc-01 succeeded, pc-02 succeeded on retry, pc-03
unreachable, pc-04 partial (an offline profile, code 6); wave2 pc-05 skipped, pc-06 pending,
pc-07 not run, pc-08 succeeded, pc-09 failed (timeout).
"""

from __future__ import annotations

import warnings
import zipfile

import openpyxl
import pytest

from cpuu_fleet import journal as J
from cpuu_fleet import vocabulary as V
from cpuu_fleet.cpuu import FLAG_REMEDIES, PROFILE_CODES, ExitFlags, exit_cause
from cpuu_fleet.inputs.mailboxes import load_mailboxes
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from cpuu_fleet.report.frames import load_frames
from cpuu_fleet.report.summary import causes, go_no_go, wave_status


@pytest.fixture
def frames(fleet):
    return load_frames(fleet.journal, [fleet.first_run, fleet.retry_run])


def _open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return openpyxl.load_workbook(path)


def test_each_wave_reads_done_needs_action_waiting_not_started(frames):
    table = wave_status(frames).set_index("wave")
    assert table.loc["wave1"].to_dict() == {
        "targeted": 4, "done": 2, "needs action": 2, "waiting": 0, "not started": 0,
    }  # fmt: skip
    assert table.loc["wave2"].to_dict() == {
        "targeted": 5, "done": 1, "needs action": 1, "waiting": 2, "not started": 1,
    }  # fmt: skip
    assert table.loc["Total", "targeted"] == 9


def test_causes_are_grouped_per_wave_with_owner_and_next_step(frames):
    table = causes(frames)
    rows = {(r["group"], r["cause"]): r for r in table.to_dict("records")}
    unreachable = rows[("wave1", "error: unreachable")]
    assert unreachable["count"] == 1 and unreachable["owner"] == V.OWNER_DESKTOP
    assert unreachable["next_step"] == V.ERROR_CLASS_REMEDIES[V.ErrorClass.UNREACHABLE].next_step
    offline = rows[("wave1", "profile code 6 PROFILE_IS_OFFLINE")]
    assert offline["next_step"] == PROFILE_CODES[6].hint
    pending = rows[("wave2", "pending")]
    assert (pending["status"], pending["owner"]) == (V.USER_WAITING, V.OWNER_USER)
    assert rows[("wave2", "not run")]["status"] == V.USER_NOT_STARTED
    # Done hosts have no cause; every host not done has exactly one.
    assert table["count"].sum() == 9 - 3
    # Worst status first within a wave.
    wave2 = table[table["group"] == "wave2"]["status"].tolist()
    assert wave2 == sorted(wave2, key=V.USER_STATES.index)


def test_the_action_list_hint_and_the_cause_share_one_definition(frames):
    actions = frames.actions.set_index("host")
    step = V.ERROR_CLASS_REMEDIES[V.ErrorClass.UNREACHABLE].next_step
    assert actions.loc["pc-03", "hint"] == step
    assert set(V.ERROR_CLASS_REMEDIES) == set(V.ErrorClass)


def test_exit_codes_name_their_cause_and_owner():
    aborted = exit_cause(int(ExitFlags.SUCCESS | ExitFlags.USER_ABORT | ExitFlags.SWITCH_ERR))
    assert aborted.name == "USER_ABORT" and aborted.remedy.owner == V.OWNER_USER
    assert exit_cause(2).remedy == FLAG_REMEDIES[ExitFlags.NO_SWITCH_MSG]
    assert exit_cause(2).remedy.owner == V.OWNER_EXCHANGE
    closed = exit_cause(0xC000013A)
    assert closed.name == "CONSOLE_CLOSED" and closed.remedy.owner == V.OWNER_USER
    assert exit_cause(0xC0001234).known is False  # a Windows status nobody listed
    assert exit_cause(1 | 1024).known is False  # bits the vendor never documented
    assert exit_cause(1) is None and exit_cause(None) is None
    assert exit_cause(1, killed=True).name == "KILLED_ON_DEADLINE"


def _journal(tmp_path, waves: dict[str, list[tuple[str, str | None]]]) -> tuple[Journal, str]:
    """A run whose waves hold hosts in the given (state, error class)."""
    journal = Journal(tmp_path / "reports" / "journal.sqlite3")
    run = journal.start_run(run_id="r1")
    for wave, hosts in waves.items():
        names = [f"{wave}-pc{i}" for i in range(len(hosts))]
        journal.add_hosts(run, [HostEntry(name, wave=wave) for name in names])
        for name, (state, error_class) in zip(names, hosts, strict=True):
            exit_code = 2 if state == J.NOT_SWITCHED else None
            journal.set_host(run, name, state=state, error_class=error_class, exit_code=exit_code)
    return journal, run


def test_go_when_only_exchange_and_users_hold_hosts_back(tmp_path):
    hosts = [(J.SUCCEEDED, None)] * 17 + [(J.NOT_SWITCHED, None)] * 2 + [(J.PENDING, None)]
    journal, run = _journal(tmp_path, {"w1": hosts, "w2": [(J.NOT_RUN, None)] * 3})
    verdicts, headline = go_no_go(load_frames(journal, [run]))
    assert [v.word for v in verdicts] == ["GO", "—"]  # w2 never started: nothing to judge
    assert headline.startswith("Next wave: GO (judged on w1:")


def test_no_go_when_the_desktop_team_owns_too_many(tmp_path):
    hosts = [(J.SUCCEEDED, None)] * 18 + [(J.UNREACHABLE, "unreachable")] * 2
    journal, run = _journal(tmp_path, {"w1": hosts})
    (verdict,), headline = go_no_go(load_frames(journal, [run]))
    assert verdict.go is False and "2 of 20 host(s) (10%) need the desktop team" in headline


def test_one_unknown_failure_is_a_no_go(tmp_path):
    hosts = [(J.SUCCEEDED, None)] * 99 + [(J.FAILED, None)]
    journal, run = _journal(tmp_path, {"w1": hosts})
    (verdict,), _ = go_no_go(load_frames(journal, [run]))
    assert verdict.go is False and "unknown cause" in verdict.reason


def test_the_summary_sheet_puts_the_verdict_and_chart_first(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out")
    sheet = _open(result.workbook)["Summary"]
    values = [[c.value for c in row] for row in sheet.iter_rows()]
    assert values[1][0].startswith("Next wave: NO-GO (judged on wave2:")
    first_table = next(i for i, row in enumerate(values) if row[0] == "Wave")
    with zipfile.ZipFile(result.workbook) as archive:
        drawing = archive.read("xl/drawings/drawing1.xml").decode()
    anchor_row = int(drawing.split("<xdr:from>")[1].split("<xdr:row>")[1].split("<")[0])
    anchor_col = int(drawing.split("<xdr:from>")[1].split("<xdr:col>")[1].split("<")[0])
    end_row = int(drawing.split("<xdr:to>")[1].split("<xdr:row>")[1].split("<")[0])
    assert anchor_col == 0 and anchor_row < end_row < first_table  # above every table
    header = values[first_table]
    assert header[:8] == [
        "Wave", "Targeted", "Done", "Needs action", "Waiting", "Not started", "Success %",
        "Next wave",
    ]  # fmt: skip
    cause_head = next(i for i, row in enumerate(values) if row[0] == "Causes per wave")
    assert values[cause_head + 1][:9] == [
        "Wave", "Hosts", "Status", "Cause", None, None, "Owner", None, "Next step",
    ]  # fmt: skip
    causes_shown = {(row[0], row[3]): row for row in values[cause_head + 2 : cause_head + 8]}
    assert causes_shown[("wave1", "error: unreachable")][6] == V.OWNER_DESKTOP


def test_runs_included_take_one_row_each(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out")
    values = [[c.value for c in row] for row in _open(result.workbook)["Summary"].iter_rows()]
    title = next(i for i, row in enumerate(values) if row[0] == "Runs included")
    assert values[title + 1][0] == "Run"
    assert [values[title + 2][0], values[title + 3][0]] == [fleet.first_run, fleet.retry_run]
    assert values[title + 4][0] is None  # then a gap and the notes


def test_every_sheet_prints_landscape_fit_to_width_with_its_header(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out")
    with zipfile.ZipFile(result.workbook) as archive:
        sheets = [n for n in archive.namelist() if n.startswith("xl/worksheets/sheet")]
        workbook_xml = archive.read("xl/workbook.xml").decode()
        for name in sheets:
            xml = archive.read(name).decode()
            assert 'orientation="landscape"' in xml, name
            assert '<pageSetUpPr fitToPage="1"/>' in xml and 'fitToHeight="0"' in xml, name
    # Print titles: the header row of each table sheet, the verdict rows of the Summary.
    assert workbook_xml.count("_xlnm.Print_Titles") == len(sheets)
    assert "Summary!$1:$2" in workbook_xml and "Hosts!$1:$1" in workbook_xml


BATCH = (
    "EmailAddress;User;BatchName\n"
    "jdoe@corp.example;CORP\\jdoe;Finance\n"
    "ghost@corp.example;CORP\\ghost;Finance\n"
)


def test_causes_per_batch_count_mailboxes_under_their_worst_device(fleet, tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_text(BATCH, encoding="utf-8")
    source = load_mailboxes(batch, None)
    result = write_report(
        fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out", mailboxes=source
    )
    table = causes(result.frames, result.mailboxes)
    by_batch = table[table["scope"] == "batch"].set_index("cause")
    # jdoe's worst device is pc-03 (unreachable); ghost has no known device.
    assert by_batch.loc["error: unreachable", "count"] == 1
    assert by_batch.loc["no known device", "owner"] == V.OWNER_DESKTOP
    values = [[c.value for c in row] for row in _open(result.workbook)["Summary"].iter_rows()]
    title = next(i for i, row in enumerate(values) if row[0] == "Causes per mailbox batch")
    assert values[title + 1][:2] == ["Batch", "Mailboxes"]
    assert {row[3] for row in values[title + 2 : title + 4]} == {
        "error: unreachable",
        "no known device",
    }
