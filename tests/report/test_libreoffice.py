"""The workbook opens in LibreOffice as written: it converts headless, every sheet is read, and
hostile text is still text there (LibreOffice would compute a formula and show its result).

LibreOffice is optional: these tests skip with the reason when ``soffice`` is not installed
(``apt-get install libreoffice-calc-nogui``).
"""

from __future__ import annotations

import csv
import shutil
import subprocess

import pytest

from cpuu_fleet.report import write_report
from tests.support.report import DDE, HOSTILE, HYPERLINK, hostile_journal

SOFFICE = shutil.which("soffice")
pytestmark = pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
# LibreOffice's CSV filter: comma, double quote, UTF-8, first line 1, ..., last token -1 = every sheet.
EVERY_SHEET_AS_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"


def _convert(workbook, target: str, out_dir, profile) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(out_dir),
            str(workbook),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture
def workbook(fleet, tmp_path):
    result = write_report(
        fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out", max_rows=4
    )
    return result.workbook


def test_libreoffice_converts_the_workbook_to_pdf(workbook, tmp_path):
    completed = _convert(workbook, "pdf", tmp_path / "pdf", tmp_path / "lo-profile")
    pdf = tmp_path / "pdf" / "report.pdf"
    assert completed.returncode == 0, completed.stderr
    assert pdf.exists(), f"no PDF: {completed.stdout} {completed.stderr}"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 2_000


def test_libreoffice_reads_every_sheet_and_keeps_hostile_text_literal(workbook, tmp_path):
    out = tmp_path / "csv"
    completed = _convert(workbook, EVERY_SHEET_AS_CSV, out, tmp_path / "lo-profile")
    assert completed.returncode == 0, completed.stderr
    written = sorted(path.name for path in out.glob("*.csv"))
    assert "report-Summary.csv" in written and "report-Hosts (3).csv" in written
    profiles = []
    for path in sorted(out.glob("report-Profiles*.csv")):
        with open(path, encoding="utf-8", newline="") as handle:
            profiles += [row["Profile"] for row in csv.DictReader(handle)]
    assert HYPERLINK in profiles and DDE in profiles
    with open(out / "report-Summary.csv", encoding="utf-8", newline="") as handle:
        summary = {row[0]: row for row in csv.reader(handle) if row}
    assert summary["Total"][1] == "9"


def test_libreoffice_shows_hostile_text_exactly_as_the_workstation_sent_it(tmp_path):
    journal, run = hostile_journal(tmp_path / "reports" / "journal.sqlite3")
    workbook = write_report(journal, [run], tmp_path / "out").workbook
    journal.close()
    out = tmp_path / "csv"
    completed = _convert(workbook, EVERY_SHEET_AS_CSV, out, tmp_path / "lo-profile")
    assert completed.returncode == 0, completed.stderr
    with open(out / "report-Profiles.csv", encoding="utf-8", newline="") as handle:
        profiles = [row["Profile"] for row in csv.DictReader(handle)]
    assert profiles[: len(HOSTILE)] == HOSTILE
