"""report.xlsx, read back with openpyxl the way a migration lead's Excel would see it."""

from __future__ import annotations

import re
import warnings
import zipfile
from datetime import datetime

import openpyxl
import pytest

from cpuu_fleet.report import states, write_report
from tests.support.report import ACCENTED_USER, DDE, HYPERLINK

SHEETS = ["Summary", "Progress", "Hosts", "Profiles", "Return codes", "Action list", "Attempts"]
DASHBOARDS = ("Summary", "Progress")  # a chart above small tables: no filter to sort them with


def _open(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl drops the data-bar extension it cannot read
        return openpyxl.load_workbook(path)


def _table(sheet):
    """Header row and data rows of a table sheet, as dicts keyed by header."""
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    return [
        dict(zip(header, row, strict=True)) for row in rows[1:] if any(v is not None for v in row)
    ]


def _summary_table(sheet, first_header):
    """One table of the Summary (its header row is the one whose second cell is
    ``first_header``), as dicts keyed by header, down to the first empty row."""
    rows = list(sheet.iter_rows(values_only=True))
    start = next(i for i, row in enumerate(rows) if len(row) > 2 and row[2] == first_header)
    table = []
    for row in rows[start + 1 :]:
        if row[0] is None:
            break
        table.append(dict(zip(rows[start], row, strict=True)))
    return table


def _cells(sheet, header):
    """The cells of one column, below the header."""
    col = [cell.value for cell in sheet[1]].index(header) + 1
    return [sheet.cell(row, col) for row in range(2, sheet.max_row + 1)]


@pytest.fixture
def report(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out")
    return result, _open(result.workbook)


def test_the_workbook_has_every_sheet_with_frozen_headers_and_filters(report):
    _, book = report
    assert book.sheetnames == SHEETS
    for name in (name for name in SHEETS if name not in DASHBOARDS):
        sheet = book[name]
        assert sheet.freeze_panes == "A2", name
        assert sheet.auto_filter.ref and sheet.auto_filter.ref.startswith("A1:"), name
        assert sheet.column_dimensions["B"].width > 8, name  # widths set, not Excel's default


def test_summary_counts_per_state_per_wave_match_the_journal(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run], tmp_path / "one")
    sheet = _open(result.workbook)["Summary"]
    summary = {row["Wave"]: row for row in _summary_table(sheet, "Succeeded")}
    sql = "SELECT wave, state, COUNT(*) FROM hosts WHERE run_id = ? GROUP BY wave, state"
    expected: dict[str, dict[str, int]] = {}
    for wave, state, count in fleet.journal.connection().execute(sql, (fleet.first_run,)):
        expected.setdefault(wave, {})[state] = count
    headers = {
        "succeeded": "Succeeded",
        "partial": "Partially succeeded",
        "failed": "Failed",
        "unreachable": "Unreachable",
        "skipped": "Skipped",
        "pending": "Pending",
        "not_run": "Not run",
    }
    for wave, counts in expected.items():
        for state, header in headers.items():
            assert summary[wave][header] == counts.get(state, 0), (wave, state)
        assert summary[wave]["Targeted"] == sum(counts.values())
    assert summary["Total"]["Targeted"] == 9
    assert summary["wave1"]["Success %"] == pytest.approx(0.25)


def test_summary_shows_percentages_a_chart_and_the_runs_metadata(report, fleet):
    result, book = report
    sheet = book["Summary"]
    header = next(r for r in sheet.iter_rows() if r[2].value == "Succeeded")
    col = [cell.value for cell in header].index("Success %")
    assert "%" in sheet.cell(header[0].row + 1, col + 1).number_format
    texts = [cell.value for row in sheet.iter_rows() for cell in row if cell.value is not None]
    assert fleet.first_run in texts and fleet.retry_run in texts
    assert "ab" * 32 in texts  # payload SHA-256
    assert {"alice", "bob", "update.yml", "inventories/prod.yml", "0.1.0"} <= set(texts)
    assert "max_fail_percentage 20% exceeded" in texts
    starts = [
        cell.value
        for row in sheet.iter_rows()
        for cell in row
        if getattr(cell, "is_date", False) and isinstance(cell.value, datetime)
    ]
    assert len(starts) >= 4  # each run's start and end are real dates
    with zipfile.ZipFile(result.workbook) as archive:
        chart = archive.read("xl/charts/chart1.xml").decode()
    assert 'grouping val="stacked"' in chart
    assert chart.count("<c:ser>") == len(states.STATE_LABELS)  # one series per state


def test_hosts_sheet_decodes_exit_codes_and_keeps_dates_as_dates(report):
    _, book = report
    hosts = {row["Host"]: row for row in _table(book["Hosts"])}
    assert hosts["pc-04"]["Exit code"] == 5
    assert hosts["pc-04"]["Exit flags"] == "SUCCESS|SWITCH_ERR"
    assert hosts["pc-04"]["State"] == "partially succeeded"
    assert hosts["pc-04"]["Profiles OK"] == 1 and hosts["pc-04"]["Profiles failed"] == 2
    assert hosts["pc-02"]["State"] == "succeeded" and hosts["pc-02"]["Attempts"] == 2
    assert hosts["pc-08"]["User"] == ACCENTED_USER
    assert hosts["pc-01"]["Start (UTC)"] == datetime(2026, 11, 21, 10, 0, 0)
    assert hosts["pc-01"]["End (UTC)"] == datetime(2026, 11, 21, 10, 2, 30, 500000)
    assert hosts["pc-01"]["Duration"].total_seconds() == pytest.approx(150.5)
    assert hosts["pc-03"]["Collected files"] == "20261121-100000-aaaa/hosts/pc-03"
    start_cells = _cells(book["Hosts"], "Start (UTC)")
    assert start_cells[0].is_date


def test_states_are_colour_coded(report):
    _, book = report
    sheet = book["Hosts"]
    ranges = {
        str(rule_range.sqref): rules
        for rule_range, rules in sheet.conditional_formatting._cf_rules.items()
    }
    state_rules = ranges["D2:D10"]
    formulas = {rule.formula[0] for rule in state_rules}
    assert {'"failed"', '"succeeded"', '"partially succeeded"', '"unreachable"'} <= formulas


def test_profiles_sheet_names_current_and_previous_codes(report):
    _, book = report
    rows = _table(book["Profiles"])
    odd = next(row for row in rows if row["Profile"] == "Odd")
    assert odd["Code"] == 99 and odd["Code name"] == "UNKNOWN_99" and odd["Outcome"] == "unknown"
    archive = next(row for row in rows if row["Profile"] == "Archive")
    assert (
        archive["Previous code"] == 10 and archive["Previous code name"] == "PROFILE_MODIFYING_OK"
    )
    codes = {row["Code"]: row for row in _table(book["Return codes"])}
    assert codes[6]["Name"] == "PROFILE_IS_OFFLINE" and codes[6]["wave1"] == 1
    assert "ProcessOfflineProfiles" in codes[6]["What to do"]


def test_text_from_workstations_is_stored_as_text_never_as_a_formula(report):
    result, book = report
    profiles = _cells(book["Profiles"], "Profile")
    by_value = {cell.value: cell for cell in profiles}
    for hostile in (HYPERLINK, DDE):
        assert by_value[hostile].data_type == "s"
    messages = [cell.value for cell in _cells(book["Hosts"], "Error message")]
    assert "=1+2 CPUU ran past 600 s" in messages
    with zipfile.ZipFile(result.workbook) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/sheet"):
                xml = archive.read(name).decode()
                assert not re.search(r"<f[ >]", xml), f"{name} holds a formula"
            # The only links are ours: collected files, relative, inside the reports folder.
            if name.startswith("xl/worksheets/_rels/"):
                rels = archive.read(name).decode()
                for target in re.findall(r'Target="([^"]*)"[^>]*TargetMode="External"', rels):
                    assert "://" not in target and not target.startswith(("\\", "/")), target
                    assert target.startswith("..\\") and "\\hosts\\" in target, target


def test_action_list_and_attempts(report, fleet):
    _, book = report
    actions = _table(book["Action list"])
    assert [row["Host"] for row in actions] == ["pc-04", "pc-03", "pc-09", "pc-07"]
    assert all(row["What to do"] for row in actions if row["Host"] != "pc-07")
    assert all(row["Then"] for row in actions)  # not run (pc-07): no cause, but a follow-up
    attempts = _table(book["Attempts"])
    journal_attempts = fleet.journal.attempts(fleet.first_run) + fleet.journal.attempts(
        fleet.retry_run
    )
    assert len(attempts) == len(journal_attempts)
    assert {row["Step"] for row in attempts} == {"connect", "preflight", "push", "run", "collect"}


def test_a_sheet_past_the_row_limit_continues_and_the_summary_says_so(fleet, tmp_path):
    result = write_report(
        fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "split", max_rows=4
    )
    book = _open(result.workbook)
    assert [n for n in book.sheetnames if n.startswith("Hosts")] == [
        "Hosts",
        "Hosts (2)",
        "Hosts (3)",
    ]
    hosts = [
        row["Host"] for name in ("Hosts", "Hosts (2)", "Hosts (3)") for row in _table(book[name])
    ]
    assert hosts == [f"pc-0{i}" for i in range(1, 10)]
    for name in ("Hosts", "Hosts (2)"):
        assert book[name].max_row == 4  # header + 3 rows: never past the limit
        assert book[name].freeze_panes == "A2"
    notes = [cell.value for row in book["Summary"].iter_rows() for cell in row if cell.value]
    assert "Hosts: 9 rows exceed one sheet's limit; continued on Hosts (2), Hosts (3)." in notes
    assert any(str(note).startswith("Attempts:") for note in notes)
    assert "Action list (2)" in book.sheetnames  # 4 hosts need a person: header + 3 fit


def test_both_cell_writers_produce_the_same_workbook_content(fleet, tmp_path):
    """The streamed rows (rowxml) and XlsxWriter's own API give identical cells and types."""
    from cpuu_fleet.report.frames import load_frames
    from cpuu_fleet.report.workbook import write_workbook

    frames = load_frames(fleet.journal, [fleet.first_run, fleet.retry_run])
    books = {}
    for fast in (True, False):
        path = tmp_path / f"fast-{fast}.xlsx"
        write_workbook(frames, path, fast=fast, max_rows=5)
        books[fast] = _open(path)
    assert books[True].sheetnames == books[False].sheetnames
    for name in books[True].sheetnames[1:]:  # the Summary is written by XlsxWriter either way
        streamed = [
            [(c.value, c.data_type, c.number_format, c.alignment.vertical) for c in row]
            for row in books[True][name].iter_rows()
        ]
        api = [
            [(c.value, c.data_type, c.number_format, c.alignment.vertical) for c in row]
            for row in books[False][name].iter_rows()
        ]
        assert streamed == api, name


@pytest.mark.parametrize("with_host", [False, True], ids=["no-hosts", "no-profiles"])
def test_a_run_with_nothing_to_show_still_gives_a_valid_report(tmp_path, with_host):
    from cpuu_fleet import journal as J
    from cpuu_fleet.journal import HostEntry, Journal

    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r0")
    if with_host:
        journal.add_hosts(run, [HostEntry("pc-1", wave="w")])
        journal.set_host(run, "pc-1", state=J.UNREACHABLE, error_class="unreachable")
    result = write_report(journal, [run], tmp_path / "out")
    book = _open(result.workbook)
    assert book.sheetnames == SHEETS
    summary = {row["Wave"]: row for row in _summary_table(book["Summary"], "Succeeded")}
    assert summary["Total"]["Targeted"] == (1 if with_host else 0)
    assert [row["Host"] for row in _table(book["Action list"])] == (["pc-1"] if with_host else [])
    assert (tmp_path / "out" / "retry.txt").read_text() == ("pc-1\n" if with_host else "")
