"""Hostile text from a workstation survives the workbook literally, on both cell-writing paths.

XlsxWriter writes a string of the form ``<r>...</r>`` unescaped (its pre-built rich strings):
without care, a profile name can close the cell and add a live formula. These tests pin that down.
"""

from __future__ import annotations

import re
import warnings
import zipfile

import openpyxl
import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.report import write_report
from cpuu_fleet.report.frames import load_frames
from cpuu_fleet.report.rowxml import escape, escape_all
from cpuu_fleet.report.workbook import write_workbook
from tests.support.report import HOSTILE, RICH_INJECTION, hostile_journal


def excel_text(value):
    """Decode Excel's ``_xHHHH_`` escapes as Excel does (openpyxl leaves them as they are)."""
    if not isinstance(value, str):
        return value
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), value)


@pytest.fixture
def hostile_frames(tmp_path):
    journal, run = hostile_journal(tmp_path / "j.sqlite3")
    yield load_frames(journal, [run])
    journal.close()


@pytest.mark.parametrize("fast", [True, False], ids=["rowxml", "xlsxwriter-api"])
def test_hostile_text_is_stored_literally_and_never_as_a_formula(hostile_frames, tmp_path, fast):
    path = tmp_path / f"report-{fast}.xlsx"
    write_workbook(hostile_frames, path, fast=fast)
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.startswith("xl/worksheets/sheet"):
                xml = archive.read(name).decode()
                assert not re.search(r"<f[ >]", xml), f"{name} holds a formula"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        book = openpyxl.load_workbook(path)
    profiles = [
        excel_text(row[3]) for row in book["Profiles"].iter_rows(min_row=2, values_only=True)
    ]
    assert profiles[: len(HOSTILE)] == HOSTILE
    assert profiles[-1] == "L" * 32_767  # Excel's cell limit, not a broken file
    hosts = list(book["Hosts"].iter_rows(min_row=2, values_only=True))
    assert hosts[0][0] == "<r>w</r>"  # the wave name
    assert RICH_INJECTION in hosts[0]  # the error message
    summary = [cell for row in book["Summary"].iter_rows(values_only=True) for cell in row]
    assert RICH_INJECTION in summary  # the operator, in the runs' metadata
    assert book["Profiles"]["Z1"].value is None  # where the injection would have put its formula


def test_escape_protects_markup_control_characters_and_excel_escapes():
    assert escape("<r>&</r>") == "&lt;r&gt;&amp;&lt;/r&gt;"
    assert escape("a\x07b") == "a_x0007_b"
    assert escape("_x0041_") == "_x005F_x0041_"
    texts = ["a<b", "c\ue000d", "e&f"]
    assert escape_all(texts) == [escape(text) for text in texts]


def test_a_report_folder_that_cannot_be_written_is_one_clear_line(tmp_path):
    journal, run = hostile_journal(tmp_path / "j.sqlite3")
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the folder should be\n")
    try:
        with pytest.raises(InputError) as caught:
            write_report(journal, [run], blocker / run)
    finally:
        journal.close()
    assert caught.value.render().startswith(f"{blocker / run}: cannot write the report (")
