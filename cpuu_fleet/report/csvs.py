"""``hosts.csv``, ``profiles.csv``, ``actions.csv`` and ``retry.txt``.

The CSVs are meant to be opened in Excel by people and read by scripts, so:

* UTF-8 **with a BOM**: without it Excel reads the file as the ANSI code page and ``Zoë`` turns
  into ``ZoÃ«``.
* **ISO-8601 UTC** times (``2026-11-21T10:02:30.500Z``) and a **stable column order** (the
  ``*_COLUMNS`` tuples below; new columns are only ever appended).
* **Terminal hygiene**: text from workstations (a user name, an error message) keeps no live
  control or bidi character: each becomes its escape (``\\x1b``, ``\\u202e``), as in every other
  place that shows workstation text (:func:`cpuu_fleet.redact.printable`).
* **Formula injection** (OWASP "CSV Injection"): Excel executes a cell that starts with ``=``,
  ``+``, ``-`` or ``@`` (and, through some importers, a leading TAB or CR). Every *text* cell that
  starts with one of those characters is written with a leading ``'``, so Excel shows it as
  text. The price: a script reading the CSV sees the ``'``; it can strip one leading quote
  before those characters. Numeric columns (codes, counts) are never prefixed; negative numbers
  stay numbers. The workbook needs no such trick: its cells are typed as text.

``retry.txt`` lists the action list's hosts (every host whose state needs attention in
:mod:`cpuu_fleet.vocabulary`), one per line, for ``--limit @retry.txt``; ``pending.txt`` lists the
hosts waiting for their next logon, for a later ``cpuu-fleet collect --limit @pending.txt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cpuu_fleet.redact import printable
from cpuu_fleet.report import states
from cpuu_fleet.report.frames import ReportFrames

HOST_COLUMNS = (
    "wave", "host", "user", "state", "exit_code", "exit_flags", "profiles_ok", "profiles_failed",
    "started_at", "ended_at", "duration_s", "attempts", "error_class", "error_message",
    "result_dir", "run_id", "batch", "address", "log_file",
)  # fmt: skip
PROFILE_COLUMNS = (
    "wave", "host", "user", "profile", "current_code", "current_name", "previous_code",
    "previous_name", "outcome", "meaning", "hint", "result_file", "run_id",
)  # fmt: skip
ACTION_COLUMNS = (
    "wave", "host", "user", "state", "reason", "exit_code", "exit_flags", "error_class",
    "error_message", "problem_profiles", "hint", "result_dir", "run_id", "follow_up",
)  # fmt: skip

#: A text cell starting with one of these is a formula to Excel (OWASP's list).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_TRIGGERS = frozenset(FORMULA_TRIGGERS)


def neutralise_formulas(series: pd.Series) -> pd.Series:
    """Prefix ``'`` to text that Excel would run as a formula; leave everything else alone."""
    if not _is_text(series):
        return series
    values = [
        "'" + value if isinstance(value, str) and value[:1] in _TRIGGERS else value
        for value in series.astype(object).tolist()
    ]
    return pd.Series(values, index=series.index, dtype=object)


def escape_controls(series: pd.Series) -> pd.Series:
    """Control and bidi characters in text cells as their escapes (:func:`redact.printable`):
    a user name's ESC must not reach a terminal that prints the file, nor its RLO turn a cell
    around. Everything else is left alone."""
    if not _is_text(series):
        return series
    values = [printable(v) if isinstance(v, str) else v for v in series.astype(object).tolist()]
    return pd.Series(values, index=series.index, dtype=object)


def _is_text(series: pd.Series) -> bool:
    return bool(pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series))


def _iso(series: pd.Series) -> pd.Series:
    """Naive UTC datetimes as ISO-8601 with milliseconds and a ``Z``; empty where missing."""
    stamps = np.datetime_as_string(series.to_numpy(dtype="datetime64[ms]"), unit="ms")
    text = pd.Series(stamps, index=series.index, dtype=object) + "Z"
    return text.where(series.notna().to_numpy(), "")


def _csv_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[column] = _iso(series)
        elif isinstance(series.dtype, pd.CategoricalDtype):
            out[column] = neutralise_formulas(escape_controls(series.astype(str)))
        else:
            out[column] = neutralise_formulas(escape_controls(series))
    return out


def write_csv(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> Path:
    _csv_frame(frame, columns).to_csv(
        path, index=False, encoding="utf-8-sig", lineterminator="\r\n"
    )
    return path


def write_host_list(hosts: pd.Series, path: Path) -> Path:
    """Host names, once each, one per line: a file for ``--limit @<file>``."""
    names = list(dict.fromkeys(hosts))
    path.write_text("".join(f"{host}\n" for host in names), encoding="utf-8")
    return path


def write_retry_file(frames: ReportFrames, path: Path) -> Path:
    """The hosts that need a person, one per line: ``cpuu-fleet play ... --limit @retry.txt``."""
    return write_host_list(frames.actions["host"], path)


def write_pending_file(frames: ReportFrames, path: Path) -> Path:
    """The hosts whose CPUU waits for the next logon: ``cpuu-fleet collect --limit @pending.txt``."""
    pending = frames.hosts["state"].isin(states.PENDING_LABELS)
    return write_host_list(frames.hosts.loc[pending, "host"], path)


def write_csvs(frames: ReportFrames, out_dir: Path) -> dict[str, Path]:
    return {
        "hosts.csv": write_csv(frames.hosts, HOST_COLUMNS, out_dir / "hosts.csv"),
        "profiles.csv": write_csv(frames.profiles, PROFILE_COLUMNS, out_dir / "profiles.csv"),
        "actions.csv": write_csv(frames.actions, ACTION_COLUMNS, out_dir / "actions.csv"),
        "retry.txt": write_retry_file(frames, out_dir / "retry.txt"),
        "pending.txt": write_pending_file(frames, out_dir / "pending.txt"),
    }
