"""Preflight's facts as real columns of hosts.csv and the Hosts sheet (issue 11, point 6), read
from what a workstation sent: bounded, typed, never a formula."""

from __future__ import annotations

import codecs
import csv
import io
import warnings

import openpyxl

from cpuu_fleet import journal as J
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from cpuu_fleet.report.preflight import MAX_TEXT

GOOD = {
    "computer_name": "PC-1",
    "os": "Microsoft Windows 11 Enterprise 10.0.22631",
    "free_bytes": 52_345_678_901,
    "user": "CORP\\jdoe",
    "outlook_running": True,
    "outlook_version": "16.0.17928",
    "staged_files": 0,
    "cleanup_done": False,
    "sessions": [{"user": "CORP\\jdoe"}, {"user": "CORP\\ann"}],
    "locked": ["CPUU.exe"],
}
HOSTILE = {
    "os": '=HYPERLINK("http://evil.example","x")' + "A" * 1000,
    "free_bytes": "lots",
    "user": ["not", "text"],
    "outlook_running": "yes",
    "sessions": "many",
}


def _journal(tmp_path) -> tuple[Journal, str]:
    journal = Journal(tmp_path / "reports" / "journal.sqlite3")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry(h, wave="w") for h in ("pc-1", "pc-2", "pc-3")])
    for host, details in (("pc-1", GOOD), ("pc-2", HOSTILE)):
        step = journal.start_step(run, host, "preflight", 1)
        journal.end_step(step, "ok", details=details)
        journal.set_host(run, host, state=J.SUCCEEDED, exit_code=1)
    journal.set_host(run, "pc-3", state=J.UNREACHABLE, error_class="unreachable")
    return journal, run


def test_preflight_facts_are_columns_a_lead_can_filter(tmp_path):
    journal, run = _journal(tmp_path)
    result = write_report(journal, [run], tmp_path / "out")
    raw = (result.out_dir / "hosts.csv").read_bytes()
    rows = {r["host"]: r for r in csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))}
    assert raw.startswith(codecs.BOM_UTF8)
    pc1 = rows["pc-1"]
    assert pc1["preflight_os"] == GOOD["os"]
    assert pc1["preflight_free_gb"] == "52.35"
    assert pc1["preflight_user"] == "CORP\\jdoe"
    assert pc1["preflight_outlook_running"] == "yes"
    assert (pc1["preflight_sessions"], pc1["preflight_locked_files"]) == ("2", "1")
    # Wrong types stay empty; text is bounded and never a formula.
    pc2 = rows["pc-2"]
    assert pc2["preflight_os"].startswith("'=HYPERLINK(")
    assert len(pc2["preflight_os"]) == MAX_TEXT + 1
    assert pc2["preflight_free_gb"] == pc2["preflight_user"] == pc2["preflight_sessions"] == ""
    assert pc2["preflight_outlook_running"] == ""
    assert rows["pc-3"]["preflight_os"] == ""  # never got to preflight

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sheet = openpyxl.load_workbook(result.workbook)["Hosts"]
    header = [c.value for c in sheet[1]]
    by_host = {
        row[1]: dict(zip(header, row, strict=True)) for row in sheet.iter_rows(2, values_only=True)
    }
    assert by_host["pc-1"]["Free disk GB"] == 52.35  # a number Excel can sort and filter
    assert by_host["pc-2"]["OS (preflight)"].startswith("=HYPERLINK(")  # text, not a formula
    assert sheet.cell(3, header.index("OS (preflight)") + 1).data_type == "s"
