"""Preflight's facts about each host as columns a lead can filter (issue 11): the OS, free disk
space, who was logged on, whether Outlook ran and which version, how many sessions, locked files.

Where they come from: the details preflight recorded with its attempt (``attempts.details_json``,
written by :meth:`cpuu_fleet.visit.steps.preflight.PreflightResult.details`), the host's latest preflight in
the run its row comes from. That text came from a workstation: it is parsed defensively (a value
of the wrong type is left empty, text is cut to :data:`MAX_TEXT`), and written by the same rules
as every other workstation text (never a formula, control characters escaped).

Cost: one ``json.loads`` per host (about 10 µs): preflight runs once per host and visit.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

MAX_TEXT = 256
"""Characters kept of a text fact (an OS caption, a user name, a version)."""

#: The columns added to the Hosts frame, in order.
PREFLIGHT_COLUMNS: tuple[str, ...] = (
    "preflight_os", "preflight_free_gb", "preflight_user", "preflight_outlook_running",
    "preflight_outlook_version", "preflight_sessions", "preflight_locked_files",
)  # fmt: skip
_GB = 1_000_000_000


def add_preflight_columns(hosts: pd.DataFrame, attempts: pd.DataFrame) -> pd.DataFrame:
    """``hosts`` with :data:`PREFLIGHT_COLUMNS` (empty where no preflight was recorded)."""
    mine = attempts[(attempts["step"] == "preflight") & attempts["details_json"].notna()]
    mine = mine.merge(hosts[["run_id", "host"]], on=["run_id", "host"])
    latest = mine.drop_duplicates("host", keep="last")  # attempts come sorted by id
    facts = pd.DataFrame(
        [_facts(text) for text in latest["details_json"].tolist()],
        index=latest["host"].to_numpy(),
        columns=list(PREFLIGHT_COLUMNS),
    )
    out = hosts.join(facts, on="host")
    out["preflight_free_gb"] = pd.to_numeric(out["preflight_free_gb"], errors="coerce")
    out["preflight_sessions"] = out["preflight_sessions"].astype("Int64")
    out["preflight_locked_files"] = out["preflight_locked_files"].astype("Int64")
    return out


def _facts(text: object) -> tuple[Any, ...]:
    """One preflight's journalled details as the column values; empty where unreadable."""
    try:
        data = json.loads(str(text))
    except ValueError:
        data = None
    return preflight_facts(data)


def preflight_facts(data: object) -> tuple[Any, ...]:
    """One preflight's details (:meth:`~cpuu_fleet.visit.steps.preflight.PreflightResult.details`) as the
    values of :data:`PREFLIGHT_COLUMNS`, None where a value is missing or of the wrong type: the
    one reading the report's columns and the console's readiness table share."""
    if not isinstance(data, dict):
        return (None,) * len(PREFLIGHT_COLUMNS)
    free = data.get("free_bytes")
    running = data.get("outlook_running")
    sessions = data.get("sessions")
    locked = data.get("locked")
    return (
        _text(data.get("os")),
        round(free / _GB, 2) if isinstance(free, int | float) and free >= 0 else None,
        _text(data.get("user")),
        ("yes" if running else "no") if isinstance(running, bool) else None,
        _text(data.get("outlook_version")),
        len(sessions) if isinstance(sessions, list) else None,
        len(locked) if isinstance(locked, list) else None,
    )


def _text(value: object) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) and value else None
