"""``hosts.csv``, ``profiles.csv``, ``actions.csv`` and ``retry.txt``.

The CSVs are meant to be opened in Excel by people and read by scripts, so:

* UTF-8 **with a BOM**: without it Excel reads the file as the ANSI code page and ``Zoë`` turns
  into ``ZoÃ«``.
* A **dialect**: ``en`` (comma, decimal point) or ``eu`` (semicolon, decimal comma), and why
  ``en`` is the default: :mod:`.style`.
* Times as ``YYYY-MM-DD HH:MM:SS``, which Excel and LibreOffice parse as dates in every locale
  (ISO's ``T`` and ``Z`` make them text): ``*_utc`` columns in UTC, ``*_local`` in the zone the
  ``time_zone`` column names (:mod:`.style`). Durations keep their milliseconds as a decimal.
* A **stable column order** (the ``*_COLUMNS`` tuples below; new columns are only ever
  appended). ``started_at``/``ended_at`` became ``started_utc``/``ended_utc`` (issue 11: the
  zone in the name) and their ISO ``T…Z`` form became the one above.
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
from cpuu_fleet.report.preflight import PREFLIGHT_COLUMNS
from cpuu_fleet.report.style import DEFAULT_DIALECT, DIALECTS, UTC, CsvDialect, to_local

HOST_COLUMNS = (
    "wave", "host", "user", "state", "exit_code", "exit_flags", "profiles_ok", "profiles_failed",
    "started_utc", "ended_utc", "duration_s", "attempts", "error_class", "error_message",
    "result_dir", "run_id", "batch", "address", "log_file", "started_local", "ended_local",
    "time_zone", *PREFLIGHT_COLUMNS,
)  # fmt: skip
#: The frame's columns under the names the CSV gives them.
_RENAMED = {"started_at": "started_utc", "ended_at": "ended_utc"}
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


def _stamp(series: pd.Series) -> pd.Series:
    """Naive datetimes as ``YYYY-MM-DD HH:MM:SS`` (what spreadsheets parse as a date in every
    locale); empty where missing."""
    stamps = np.datetime_as_string(series.to_numpy(dtype="datetime64[s]"), unit="s")
    text = pd.Series(stamps, index=series.index, dtype=object).str.replace("T", " ", n=1)
    return text.where(series.notna().to_numpy(), "")


def _csv_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for column in columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[column] = _stamp(series)
        elif pd.api.types.is_float_dtype(series):
            out[column] = series.round(3)  # durations: milliseconds, no binary noise
        elif isinstance(series.dtype, pd.CategoricalDtype):
            out[column] = neutralise_formulas(escape_controls(series.astype(str)))
        else:
            out[column] = neutralise_formulas(escape_controls(series))
    return out


def write_csv(
    frame: pd.DataFrame,
    columns: tuple[str, ...],
    path: Path,
    dialect: CsvDialect = DIALECTS[DEFAULT_DIALECT],
) -> Path:
    _csv_frame(frame, columns).to_csv(
        path,
        index=False,
        encoding="utf-8-sig",
        lineterminator="\r\n",
        sep=dialect.separator,
        decimal=dialect.decimal,
    )
    return path


def with_local_times(hosts: pd.DataFrame, zone: str = UTC) -> pd.DataFrame:
    """The Hosts frame with local-time columns in ``zone`` (``started_local``, ``ended_local``,
    ``time_zone``), for the CSV and the workbook alike."""
    out = hosts.copy()
    out["started_local"] = to_local(hosts["started_at"], zone)
    out["ended_local"] = to_local(hosts["ended_at"], zone)
    out["time_zone"] = zone
    return out


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


def write_csvs(
    frames: ReportFrames,
    out_dir: Path,
    dialect: CsvDialect = DIALECTS[DEFAULT_DIALECT],
    zone: str = UTC,
) -> dict[str, Path]:
    hosts = with_local_times(frames.hosts, zone).rename(columns=_RENAMED)
    return {
        "hosts.csv": write_csv(hosts, HOST_COLUMNS, out_dir / "hosts.csv", dialect),
        "profiles.csv": write_csv(
            frames.profiles, PROFILE_COLUMNS, out_dir / "profiles.csv", dialect
        ),
        "actions.csv": write_csv(frames.actions, ACTION_COLUMNS, out_dir / "actions.csv", dialect),
        "retry.txt": write_retry_file(frames, out_dir / "retry.txt"),
        "pending.txt": write_pending_file(frames, out_dir / "pending.txt"),
    }
