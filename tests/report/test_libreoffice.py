"""The workbook opens in LibreOffice as written: it converts headless, every sheet is read, and
hostile text is still text there (LibreOffice would compute a formula and show its result). The
``eu`` CSVs open as columns and numbers in a French and a German spreadsheet.

LibreOffice is optional: these tests skip with the reason when ``soffice`` is not installed
(``apt-get install libreoffice-calc-nogui``).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import warnings
from datetime import datetime

import openpyxl
import pytest

from cpuu_fleet import journal as J
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import write_report
from tests.support.report import DDE, HOSTILE, HYPERLINK, hostile_journal

SOFFICE = shutil.which("soffice")
pytestmark = pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
# LibreOffice's CSV filter: comma, double quote, UTF-8, first line 1, ..., last token -1 = every sheet.
EVERY_SHEET_AS_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"


def _convert(
    workbook, target: str, out_dir, profile, infilter: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--norestore",
            *([f"--infilter={infilter}"] if infilter else []),
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
    # Printed as a lead prints it: each sheet of this small report on one landscape page (the
    # Summary's chart above its tables, every sheet fitted to the page's width), never a chart
    # cut across pages or columns spilling onto pages of their own.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sheets = openpyxl.load_workbook(workbook, read_only=True).sheetnames
    pages = re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes())
    assert len(pages) == len(sheets), (len(pages), sheets)


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


# What a one-click open of a CSV in a French or German Excel does, as LibreOffice's CSV filter
# options: split on the region's list separator (";" in fr-FR and de-DE: token 1 = 59), read
# UTF-8 (the BOM says so: token 3 = 76), and recognise numbers and dates by the region's
# settings (decimal comma: token 6 = the language, 1036 fr-FR, 1031 de-DE).
ONE_CLICK = "Text - txt - csv (StarCalc):59,34,76,1,,{language}"
LOCALES = {"fr-FR": 1036, "de-DE": 1031}


def _timed_journal(path) -> tuple[Journal, str]:
    """Hosts whose visit took 1.454 s (the duration a de-DE import once turned into 1454)."""
    journal = Journal(path)
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="w1"), HostEntry("pc-2", wave="w1")])
    journal.set_host(
        run, "pc-1", state=J.SUCCEEDED, exit_code=1,
        started_at="2026-11-21T10:00:00.000+00:00", ended_at="2026-11-21T10:00:01.454+00:00",
    )  # fmt: skip
    journal.set_host(
        run, "pc-2", state=J.FAILED, error_class="remote", error_message="=1+2; a, b",
        started_at="2026-11-21T10:00:00.000+00:00", ended_at="2026-11-21T10:00:02.500+00:00",
    )  # fmt: skip
    return journal, run


@pytest.mark.parametrize("locale", list(LOCALES))
def test_the_eu_csvs_open_as_columns_and_numbers_in_a_french_or_german_spreadsheet(
    tmp_path, locale
):
    journal, run = _timed_journal(tmp_path / "reports" / "journal.sqlite3")
    result = write_report(
        journal, [run], tmp_path / "out", csv_dialect="eu", timezone="Europe/Berlin"
    )
    journal.close()
    out = tmp_path / locale
    infilter = ONE_CLICK.format(language=LOCALES[locale])
    completed = _convert(
        result.out_dir / "hosts.csv", "xlsx", out, tmp_path / "lo-profile", infilter
    )
    assert completed.returncode == 0, completed.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sheet = openpyxl.load_workbook(out / "hosts.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    assert header[:4] == ["wave", "host", "user", "state"]  # columns, not one column A
    by_host = {row[1]: dict(zip(header, row, strict=False)) for row in rows[1:]}
    pc1, pc2 = by_host["pc-1"], by_host["pc-2"]
    assert pc1["duration_s"] == pytest.approx(1.454)  # 1.454 s, not 1454
    assert pc2["duration_s"] == pytest.approx(2.5)
    assert pc1["exit_code"] == 1 and isinstance(pc1["exit_code"], int)
    assert pc1["started_utc"] == datetime(2026, 11, 21, 10, 0, 0)  # a date, not text
    assert pc1["started_local"] == datetime(2026, 11, 21, 11, 0, 0)
    assert pc1["time_zone"] == "Europe/Berlin"
    assert pc2["error_message"] == "'=1+2; a, b"  # text: never computed, never split
