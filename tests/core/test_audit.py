"""The audit's controller side: hostile rows, source/target patterns, predictions, comparisons."""

from __future__ import annotations

from dataclasses import replace

import openpyxl
import pytest

from cpuu_fleet.audit import (
    PREDICT_ALREADY,
    PREDICT_DISK,
    PREDICT_NEW_OUTLOOK,
    PREDICT_NO_PROFILE,
    PREDICT_OFFLINE,
    PREDICT_UNKNOWN_SERVER,
    PREDICT_UNREADABLE,
    PREDICT_UPDATE,
    AuditPolicy,
    AuditRow,
    compare,
    judge,
    patterns_of,
)
from cpuu_fleet.errors import InputError
from cpuu_fleet.limits import Limits
from cpuu_fleet.report.audit import (
    moved_frame,
    read_audit_csv,
    write_audit,
    write_audit_workbook,
)
from cpuu_fleet.visit.audit import parse_rows
from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.vocabulary import ErrorClass

POLICY = AuditPolicy(source=("exch*.source.example",), target=("*.TARGET.example",))


def _row(**fields) -> dict:
    row = {
        "ComputerName": "PC-1",
        "FreeBytes": 10_000,
        "OutlookVersion": "16.0",
        "Sid": "S-1-5-21-1-2-3-1001",
        "User": "CORP\\ana",
        "HiveState": "Loaded",
        "NewOutlook": False,
        "Profile": "Outlook",
        "OfficeVersion": "16.0",
        "Default": True,
        "CachedMode": False,
        "OstPath": "C:\\Users\\ana\\ana.ost",
        "OstBytes": 100,
        "Server": "exch01.source.example",
        "Mailbox": "ana@corp.example",
        "Truncated": False,
    }
    row.update(fields)
    return row


def _judged(policy: AuditPolicy = POLICY, **fields) -> AuditRow:
    return judge(parse_rows("pc-1", [_row(**fields)]).rows, policy)[0]


def test_servers_are_classified_by_the_inventorys_patterns_ignoring_case():
    assert POLICY.classify("EXCH01.Source.Example") == "source"
    assert POLICY.classify("outlook.target.example") == "target"
    assert POLICY.classify("mail.elsewhere.example") == "unknown"
    assert POLICY.classify("") == "unknown"
    both = AuditPolicy(source=("*.example",), target=("*.target.example",))
    assert both.classify("outlook.target.example") == "unknown"  # overlapping patterns: not a guess


def test_inventory_values_become_patterns_only_when_they_are_strings():
    assert patterns_of("exch*") == ("exch*",)
    assert patterns_of(["a*", 3, "", "b"]) == ("a*", "b")
    assert patterns_of(None) == () and patterns_of({"a": 1}) == ()


@pytest.mark.parametrize(
    ("fields", "policy", "prediction", "code"),
    [
        ({}, POLICY, PREDICT_UPDATE, 10),
        ({"Server": "outlook.target.example"}, POLICY, PREDICT_ALREADY, 2),
        ({"CachedMode": True}, POLICY, PREDICT_OFFLINE, 6),
        ({"CachedMode": True}, replace(POLICY, process_offline=True), PREDICT_UPDATE, 10),
        ({"OstBytes": 10_001}, POLICY, PREDICT_DISK, 22),
        ({"OstBytes": 10_001, "CachedMode": True}, POLICY, PREDICT_OFFLINE, 6),
        ({"NewOutlook": True}, POLICY, PREDICT_NEW_OUTLOOK, None),
        ({"Profile": None, "Server": None}, POLICY, PREDICT_NO_PROFILE, None),
        ({"HiveState": "Locked", "Profile": None}, POLICY, PREDICT_UNREADABLE, None),
        ({"Server": "mail.other.example"}, POLICY, PREDICT_UNKNOWN_SERVER, None),
    ],
)
def test_the_prediction_follows_cpuus_checks(fields, policy, prediction, code):
    row = _judged(policy, **fields)
    assert (row.prediction, row.predicted_code) == (prediction, code)


def test_hostile_fields_are_bounded_printable_and_typed():
    hostile = _row(
        User="CORP\\ev\x1b[2J\u202eil",
        Profile='=HYPERLINK("http://x")' + "A" * 5000,
        OstBytes="12",  # a string where a number belongs
        FreeBytes=-5,
        CachedMode="yes",
        HiveState="Pwned",
        Server=["not", "a", "string"],
    )
    row = parse_rows("pc-1", [hostile]).rows[0]
    assert "\x1b" not in row.user and "\u202e" not in row.user and "\\x1b" in row.user
    assert len(row.profile) <= 256
    assert row.ost_bytes is None and row.free_bytes is None and row.cached_mode is None
    assert row.hive_state == "" and row.server == ""


def test_too_many_rows_or_a_row_that_is_not_a_table_fail_the_host():
    with pytest.raises(SessionError) as limit:
        parse_rows("pc-1", [_row()] * 6, Limits(result_rows=5))
    assert limit.value.error_class is ErrorClass.LIMIT
    with pytest.raises(SessionError) as protocol:
        parse_rows("pc-1", [_row(), "a string"])
    assert protocol.value.error_class is ErrorClass.PROTOCOL


def test_the_csv_never_holds_a_formula_and_reads_back(tmp_path):
    rows = [
        _judged(Profile="=cmd|' /C calc'!A0", User="@evil"),
        _judged(Profile="Outlook", Server="outlook.target.example"),
    ]
    paths = write_audit(rows, tmp_path)
    text = paths["audit.csv"].read_text(encoding="utf-8-sig")
    assert ",'=cmd" in text and ",'@evil" in text
    back = read_audit_csv(paths["audit.csv"])
    assert [r.points_to for r in back] == ["source", "target"]
    assert back[0].ost_bytes == 100 and back[0].cached_mode is False
    source = paths["still-on-source.csv"].read_text(encoding="utf-8-sig").splitlines()
    assert len(source) == 2 and "'=cmd" in source[1]


def test_two_audits_compare_into_moved_stayed_and_new():
    before = [
        _judged(Profile="A"),
        _judged(Profile="B"),
        _judged(Profile="C", Server="outlook.target.example"),
    ]
    after = [
        _judged(Profile="A", Server="outlook.target.example"),
        _judged(Profile="B"),
        _judged(Profile="C"),
        _judged(Profile="A_CPUU_Backup"),
    ]
    result = compare(before, after)
    assert [old.profile for old, _ in result.moved] == ["A"]
    assert [old.profile for old, _ in result.stayed] == ["B"]
    assert [old.profile for old, _ in result.moved_back] == ["C"]
    assert [row.profile for row in result.new] == ["A_CPUU_Backup"]
    assert result.gone == []


def test_the_workbook_has_the_audit_sheets_and_formulas_stay_text(tmp_path):
    rows = [_judged(Profile="=cmd|' /C calc'!A0"), _judged(Profile="B", OstBytes=7)]
    moved = moved_frame(compare(rows, [replace(rows[1], points_to="target")]))
    book = openpyxl.load_workbook(write_audit_workbook(rows, tmp_path / "audit.xlsx", moved))
    assert book.sheetnames == ["Audit", "Still on source", "Moved"]
    audit = list(book["Audit"].iter_rows(values_only=True))
    header = audit[0]
    profile, ost = header.index("Profile"), header.index("Ost bytes")
    assert audit[1][profile] == "=cmd|' /C calc'!A0"  # a string cell, never a formula
    assert book["Audit"].cell(row=2, column=profile + 1).data_type == "s"
    assert audit[2][ost] == 7
    assert [r[0] for r in book["Moved"].iter_rows(min_row=2, values_only=True)] == [
        "moved",
        "gone",
    ]


def test_an_earlier_audit_that_is_not_one_is_bad_input(tmp_path):
    other = tmp_path / "hosts.csv"
    other.write_text("wave,host,user\r\nw1,pc-1,ana\r\n", encoding="utf-8-sig")
    with pytest.raises(InputError, match=r"not an audit\.csv"):
        read_audit_csv(other)
    with pytest.raises(InputError, match="cannot read the audit"):
        read_audit_csv(tmp_path / "missing.csv")
