"""Links to collected files in the workbook (issue 11, point 6): relative, so the report folder
can be copied or shared whole; and a path a workstation named never leaves the reports folder,
never becomes a formula or a web link."""

from __future__ import annotations

import re
import warnings
import zipfile
from pathlib import Path, PureWindowsPath

import openpyxl
import pandas as pd
import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from cpuu_fleet.report.sheets import LinkBase, link_targets

HOSTILE_PATHS = {
    "pc-2": "../../etc/passwd",
    "pc-3": "r1/hosts/pc-3/a#b.log",
    "pc-4": "C:/Windows/win.ini",
    "pc-5": "r1/hosts/pc-5/%2e%2e/%2e%2e/x.log",
    "pc-6": "/etc/shadow",
    "pc-7": "r1\\hosts\\..\\..\\..\\x.log",
    "pc-8": '=HYPERLINK("http://evil.example")',
}


def _journal(reports: Path) -> tuple[Journal, str]:
    journal = Journal(reports / "journal.sqlite3")
    run = journal.start_run(run_id="r1")
    hosts = ["pc-1", *HOSTILE_PATHS]
    journal.add_hosts(run, [HostEntry(h, wave="w") for h in hosts])
    log = reports / "r1" / "hosts" / "pc-1" / "CPUU_pc-1.log"
    log.parent.mkdir(parents=True)
    log.write_text("log", encoding="utf-8")
    paths = {"pc-1": "r1/hosts/pc-1/CPUU_pc-1.log", **HOSTILE_PATHS}
    for host, path in paths.items():
        journal.add_file(
            run, host, kind="log", remote_path="C:\\x", local_path=path, sha256="0", size=3
        )
        journal.set_host(run, host, state=J.SUCCEEDED, exit_code=1)
    return journal, run


def _links(workbook: Path, sheet: str) -> dict[str, str]:
    """Cell → link target of one worksheet (by its name), from the file itself."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sheet_number = openpyxl.load_workbook(workbook, read_only=True).sheetnames.index(sheet) + 1
    with zipfile.ZipFile(workbook) as archive:
        xml = archive.read(f"xl/worksheets/sheet{sheet_number}.xml").decode()
        rels = archive.read(f"xl/worksheets/_rels/sheet{sheet_number}.xml.rels").decode()
    targets = dict(re.findall(r'Id="(rId\d+)"[^>]*Target="([^"]*)"', rels))
    targets.update({k: v for v, k in re.findall(r'Target="([^"]*)"[^>]*Id="(rId\d+)"', rels)})
    return {
        ref: targets[rid] for ref, rid in re.findall(r'<hyperlink ref="(\w+)" r:id="(rId\d+)"', xml)
    }


@pytest.mark.parametrize("fast", [True, False], ids=["streamed", "xlsxwriter-api"])
def test_the_log_link_opens_the_collected_file_from_the_workbooks_folder(tmp_path, fast):
    from cpuu_fleet.report.frames import load_frames
    from cpuu_fleet.report.workbook import write_workbook

    reports = tmp_path / "reports"
    journal, run = _journal(reports)
    out = reports / "report-x" / "wave-w"
    out.mkdir(parents=True)
    workbook = write_workbook(load_frames(journal, [run]), out / "report.xlsx", fast=fast).path
    links = _links(workbook, "Hosts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sheet = openpyxl.load_workbook(workbook)["Hosts"]
    header = [c.value for c in sheet[1]]
    col = header.index("CPUU log") + 1
    cell = sheet.cell(2, col)
    assert sheet.cell(2, 2).value == "pc-1" and cell.value == "r1/hosts/pc-1/CPUU_pc-1.log"
    target = links[cell.coordinate]
    assert target == "..\\..\\r1\\hosts\\pc-1\\CPUU_pc-1.log"  # relative, as Excel stores it
    opened = (out / Path(*PureWindowsPath(target).parts)).resolve()
    assert opened == (reports / "r1" / "hosts" / "pc-1" / "CPUU_pc-1.log").resolve()
    assert opened.read_text(encoding="utf-8") == "log"
    # Every hostile path keeps its text, and no link.
    for row in range(3, 3 + len(HOSTILE_PATHS)):
        host = sheet.cell(row, 2).value
        assert sheet.cell(row, col).value == HOSTILE_PATHS[host]
        assert sheet.cell(row, col).data_type == "s"
        assert sheet.cell(row, col).coordinate not in links, host


def test_link_targets_stay_in_the_reports_folder(tmp_path):
    base = LinkBase(tmp_path / "reports", tmp_path / "reports" / "r1")
    paths = pd.Series(["r1/hosts/pc/x.log", "r1\\hosts\\pc\\y.log", *HOSTILE_PATHS.values(), None])
    targets = link_targets(paths, base)
    assert targets[:2] == ["hosts/pc/x.log", "hosts/pc/y.log"]
    assert targets[2:] == [None] * (len(HOSTILE_PATHS) + 1)


def test_the_report_links_its_files_where_the_play_writes_it(tmp_path):
    reports = tmp_path / "reports"
    journal, run = _journal(reports)
    result = write_report(journal, [run], reports / run)
    targets = set(_links(result.workbook, "Hosts").values())
    assert {"hosts\\pc-1", "hosts\\pc-1\\CPUU_pc-1.log"} <= targets  # pc-1's folder and log
    assert all(t.startswith("hosts\\") and ".." not in t for t in targets), targets
