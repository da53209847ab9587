"""hosts.csv, profiles.csv, actions.csv and retry.txt: what Excel and scripts will read."""

from __future__ import annotations

import codecs
import csv
import io

import openpyxl
import pandas as pd
import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.report import write_report
from cpuu_fleet.report.csvs import HOST_COLUMNS, neutralise_formulas
from tests.support.report import ACCENTED_USER, DDE, HYPERLINK


@pytest.fixture
def out(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run, fleet.retry_run], tmp_path / "out")
    return result.out_dir


def _rows(path):
    raw = path.read_bytes()
    assert raw.startswith(codecs.BOM_UTF8), f"{path.name} has no UTF-8 BOM"
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


def test_csvs_are_utf8_with_bom_so_excel_shows_accented_names(out):
    hosts = {row["host"]: row for row in _rows(out / "hosts.csv")}
    assert hosts["pc-08"]["user"] == ACCENTED_USER
    profiles = [row["profile"] for row in _rows(out / "profiles.csv")]
    assert "Büro" in profiles


def test_columns_are_in_a_stable_documented_order(out):
    header = (out / "hosts.csv").read_bytes().decode("utf-8-sig").splitlines()[0]
    assert header.split(",") == list(HOST_COLUMNS)


def test_times_are_dates_a_spreadsheet_parses_in_utc_and_local_time(fleet, tmp_path):
    result = write_report(
        fleet.journal, [fleet.first_run], tmp_path / "out", timezone="Europe/Paris"
    )
    hosts = {row["host"]: row for row in _rows(result.out_dir / "hosts.csv")}
    pc01 = hosts["pc-01"]
    assert pc01["started_utc"] == "2026-11-21 10:00:00"
    assert pc01["ended_utc"] == "2026-11-21 10:02:30"  # seconds: every locale parses it
    assert pc01["duration_s"] == "150.5"  # the milliseconds live on in the duration
    assert (pc01["started_local"], pc01["time_zone"]) == ("2026-11-21 11:00:00", "Europe/Paris")
    assert hosts["pc-07"]["started_utc"] == hosts["pc-07"]["started_local"] == ""  # never ran
    book = openpyxl.load_workbook(result.workbook, read_only=True)
    header = next(book["Hosts"].iter_rows(max_row=1, values_only=True))
    assert "Start (UTC)" in header and "Start (Europe/Paris)" in header


def test_an_unknown_time_zone_or_dialect_is_the_operators_error(fleet, tmp_path):
    with pytest.raises(InputError, match="unknown time zone 'Europe/Pariss'"):
        write_report(fleet.journal, [fleet.first_run], tmp_path / "a", timezone="Europe/Pariss")
    with pytest.raises(InputError, match="unknown CSV dialect 'fr'"):
        write_report(fleet.journal, [fleet.first_run], tmp_path / "b", csv_dialect="fr")


def test_the_eu_dialect_separates_with_semicolons_and_writes_decimal_commas(fleet, tmp_path):
    result = write_report(fleet.journal, [fleet.first_run], tmp_path / "out", csv_dialect="eu")
    text = (result.out_dir / "hosts.csv").read_bytes().decode("utf-8-sig")
    assert text.splitlines()[0].split(";") == list(HOST_COLUMNS)
    rows = {row["host"]: row for row in csv.DictReader(io.StringIO(text), delimiter=";")}
    assert rows["pc-01"]["duration_s"] == "150,5"
    assert rows["pc-09"]["error_message"] == "'=1+2 CPUU ran past 600 s"  # still text


def test_formula_like_text_is_neutralised_for_excel(out):
    profiles = [row["profile"] for row in _rows(out / "profiles.csv")]
    assert "'" + HYPERLINK in profiles
    assert "'" + DDE in profiles
    hosts = {row["host"]: row for row in _rows(out / "hosts.csv")}
    assert hosts["pc-09"]["error_message"] == "'=1+2 CPUU ran past 600 s"
    assert hosts["pc-01"]["exit_code"] == "1"  # numbers are never prefixed
    actions = {row["host"]: row for row in _rows(out / "actions.csv")}
    assert actions["pc-04"]["problem_profiles"].startswith("'=HYPERLINK(")


def test_neutralise_formulas_only_touches_risky_text():
    values = pd.Series(
        ["=SUM(A1)", "+1", "-2", "@x", "\tcmd", "plain", "a=b", None, 5], dtype=object
    )
    assert neutralise_formulas(values).tolist() == [
        "'=SUM(A1)", "'+1", "'-2", "'@x", "'\tcmd", "plain", "a=b", None, 5,
    ]  # fmt: skip
    numbers = pd.Series([-1, 2])
    assert neutralise_formulas(numbers).tolist() == [-1, 2]


def test_actions_csv_and_retry_txt_list_the_hosts_that_need_a_person(out):
    actions = [row["host"] for row in _rows(out / "actions.csv")]
    assert actions == ["pc-04", "pc-03", "pc-09", "pc-07"]
    assert (out / "retry.txt").read_text(encoding="utf-8") == "pc-04\npc-03\npc-09\npc-07\n"
    hint = _rows(out / "actions.csv")[1]["hint"]
    assert "WinRM" in hint
