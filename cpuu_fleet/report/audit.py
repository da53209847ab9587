"""The audit's files: ``audit.csv``, ``still-on-source.csv``, ``audit.xlsx`` and, given an
earlier audit, ``moved.csv``.

Why the same CSV rules as the wave's report (:mod:`cpuu_fleet.report.csvs`): UTF-8 with a BOM
for Excel, a stable column order, every text cell from a workstation printable and never a
formula. ``audit.csv`` has one row per host, user, profile and Exchange account (a user without
profiles, or whose hive was locked, has one row; a host that could not be audited one row with its
error). Reading an ``audit.csv`` back (:func:`read_audit_csv`) gives the rows a comparison needs;
both sides of a comparison are read from their files, so a cell's formula guard is the same on
both. ``audit.xlsx`` holds the same rows as sheets (Audit, Still on source, Moved), written as the
wave's workbook is; a play's ``audit`` step puts the same sheets into ``report.xlsx`` and the same
CSVs beside it (:func:`journal_audit` reads its rows back from the journal) (:mod:`cpuu_fleet.report.workbook`: text cells never formulas, long tables
continued on ``<name> (2)``).
"""

from __future__ import annotations

import csv
import json
import sqlite3
from collections import Counter
from dataclasses import asdict, fields
from pathlib import Path

import pandas as pd

from cpuu_fleet.audit import AuditRow, Comparison, describe_prediction, still_on_source
from cpuu_fleet.errors import InputError
from cpuu_fleet.report.csvs import write_csv
from cpuu_fleet.report.reader import JournalReader
from cpuu_fleet.report.sheets import INT, TEXT, Column, Formats, write_table
from cpuu_fleet.report.workbook import WRITER_OPTIONS

AUDIT_COLUMNS = tuple(f.name for f in fields(AuditRow))
"""``audit.csv``'s columns: :class:`AuditRow`'s fields, in order (new ones only appended)."""
SOURCE_COLUMNS = (
    "host", "user", "profile", "mailbox", "server", "hive_state", "cached_mode", "ost_bytes",
    "free_bytes", "prediction", "predicted_code",
)  # fmt: skip
MOVED_COLUMNS = ("change", "host", "user", "profile", "mailbox", "server_before", "server_after")
AUDIT_XLSX = "audit.xlsx"
AUDIT_CSV = "audit.csv"
SOURCE_CSV = "still-on-source.csv"
MOVED_CSV = "moved.csv"
SHOWN_FAILURES = 10
"""Hosts that could not be audited named in the summary (all of them are in ``audit.csv``)."""
_FLAGS = ("new_outlook", "default", "cached_mode")
_COUNTS = ("ost_bytes", "free_bytes", "predicted_code")


def _frame(rows: list[AuditRow], columns: tuple[str, ...]) -> pd.DataFrame:
    records = [{k: v for k, v in asdict(row).items() if k in columns} for row in rows]
    frame = pd.DataFrame.from_records(records, columns=list(columns))
    for name in set(_COUNTS) & set(columns):
        frame[name] = frame[name].astype("Int64")
    for name in set(_FLAGS) & set(columns):
        frame[name] = frame[name].astype("boolean")
    return frame


def write_audit(rows: list[AuditRow], out_dir: Path) -> dict[str, Path]:
    """``audit.csv`` and ``still-on-source.csv`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        AUDIT_CSV: write_csv(_frame(rows, AUDIT_COLUMNS), AUDIT_COLUMNS, out_dir / AUDIT_CSV),
        SOURCE_CSV: write_csv(
            _frame(still_on_source(rows), SOURCE_COLUMNS), SOURCE_COLUMNS, out_dir / SOURCE_CSV
        ),
    }


def _value(name: str, text: str) -> object:
    if name in _FLAGS:
        return {"True": True, "False": False}.get(text)
    if name in _COUNTS:
        return int(text) if text.isdigit() else None
    return text


def read_audit_csv(path: Path) -> list[AuditRow]:
    """The rows of an ``audit.csv`` this program wrote (InputError for anything else)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = set(AUDIT_COLUMNS) - set(reader.fieldnames or ())
            if missing:
                raise InputError(f"not an audit.csv: no column {sorted(missing)[0]}", where=path)
            return [
                AuditRow(**{name: _value(name, record[name] or "") for name in AUDIT_COLUMNS})
                for record in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read the audit: {exc}", where=path) from None


def moved_frame(comparison: Comparison) -> pd.DataFrame:
    """Every account that moved, stayed, moved back, went or came: one row each."""
    records = []
    for change, pairs in (
        ("moved", comparison.moved),
        ("stayed on source", comparison.stayed),
        ("moved back to source", comparison.moved_back),
    ):
        for old, new in pairs:
            records.append((change, old, old.server, new.server))
    records += [("gone", row, row.server, "") for row in comparison.gone]
    records += [("new", row, "", row.server) for row in comparison.new]
    return pd.DataFrame.from_records(
        [
            (change, r.host, r.user, r.profile, r.mailbox, before, after)
            for change, r, before, after in records
        ],
        columns=list(MOVED_COLUMNS),
    )


def write_moved(frame: pd.DataFrame, out_dir: Path) -> Path:
    """``moved.csv`` from :func:`moved_frame`."""
    return write_csv(frame, MOVED_COLUMNS, out_dir / MOVED_CSV)


def summary_lines(rows: list[AuditRow]) -> list[str]:
    """What an operator reads after an audit: hosts, users, accounts by where they point, and the
    predictions. Text here is already printable (the parser made it so)."""
    hosts = {row.host for row in rows}
    failed = {row.host for row in rows if row.error_class}
    users = {(row.host, row.sid) for row in rows if row.sid}
    locked = {(row.host, row.sid) for row in rows if row.hive_state == "Locked"}
    points = Counter(row.points_to for row in rows if row.profile)
    predictions = Counter(row.prediction for row in rows if row.prediction)
    lines = [
        f"hosts: {len(hosts)} audited, {len(failed)} failed;"
        f" users: {len(users)} ({len(locked)} with a locked hive)",
        "accounts: "
        + ", ".join(f"{points.get(k, 0)} on {k}" for k in ("source", "target", "unknown")),
    ]
    lines += [f"  {count:6d}  {describe_prediction(p)}" for p, count in sorted(predictions.items())]
    errors = [row for row in rows if row.error_class]
    lines += [
        f"not audited: {row.host} ({row.error_class}: {row.error_message[:200]})"
        for row in errors[:SHOWN_FAILURES]
    ]
    if len(errors) > SHOWN_FAILURES:
        lines.append(f"not audited: {len(errors) - SHOWN_FAILURES} more host(s), see audit.csv")
    return lines


def _sheet_columns(keys: tuple[str, ...]) -> tuple[Column, ...]:
    return tuple(
        Column(key, key.replace("_", " ").capitalize(), INT if key in _COUNTS else TEXT, 16)
        for key in keys
    )


def _as_text_flags(frame: pd.DataFrame) -> pd.DataFrame:
    """Flags as the words the CSV shows (``True``/``False``, empty when unknown)."""
    for name in set(_FLAGS) & set(frame.columns):
        frame[name] = frame[name].astype(object).map(lambda v: "" if pd.isna(v) else str(v))
    return frame


AuditTable = tuple[str, pd.DataFrame, tuple[Column, ...]]


def audit_tables(rows: list[AuditRow], moved: pd.DataFrame | None = None) -> list[AuditTable]:
    """The sheets an audit adds (Audit, Still on source; Moved when two audits were compared):
    ``audit.xlsx`` and a wave's ``report.xlsx`` write the same ones."""
    tables = [
        ("Audit", _as_text_flags(_frame(rows, AUDIT_COLUMNS)), AUDIT_COLUMNS),
        (
            "Still on source",
            _as_text_flags(_frame(still_on_source(rows), SOURCE_COLUMNS)),
            SOURCE_COLUMNS,
        ),
    ]
    if moved is not None:
        tables.append(("Moved", moved, MOVED_COLUMNS))
    return [(name, frame, _sheet_columns(keys)) for name, frame, keys in tables]


def write_audit_workbook(
    rows: list[AuditRow], path: Path, moved: pd.DataFrame | None = None
) -> Path:
    """``audit.xlsx``: the Audit sheet, Still on source, and Moved when two audits were compared."""
    with pd.ExcelWriter(
        path, engine="xlsxwriter", engine_kwargs={"options": dict(WRITER_OPTIONS)}
    ) as writer:
        formats = Formats(writer.book)
        for name, frame, columns in audit_tables(rows, moved):
            write_table(writer.book, formats, name, frame, columns, state_key=None)
    return path


def journal_audit(reader: JournalReader, run_ids: list[str], hosts: set[str]) -> list[AuditRow]:
    """The rows of each host's latest ``audit`` step in the selected runs (a play that audits
    before and after its run: the after), for the hosts the report shows. A journal written
    before the audit step has no such table: no rows."""
    try:
        table = reader.table("audit_rows", "id, host, attempt_id, row_json", run_ids)
    except (pd.errors.DatabaseError, sqlite3.Error):
        return []
    table = table[table["host"].isin(hosts)]
    if table.empty:
        return []
    latest = table.groupby("host")["attempt_id"].transform("max")
    table = table[table["attempt_id"] == latest].sort_values("id")
    names = set(AUDIT_COLUMNS)
    rows = []
    for text in table["row_json"]:
        data = json.loads(text)
        rows.append(AuditRow(**{k: v for k, v in data.items() if k in names}))
    return rows
