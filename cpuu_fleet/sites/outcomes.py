"""A visit's outcome as the journal's ``site_visits`` row keeps it (JSON), both ways."""

from __future__ import annotations

import dataclasses
from typing import Any

from cpuu_fleet.visit.outcome import HostOutcome

_FIELDS = tuple(f.name for f in dataclasses.fields(HostOutcome))


def outcome_to_json(outcome: HostOutcome) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in _FIELDS}


def outcome_from_json(data: dict[str, Any]) -> HostOutcome:
    """Only HostOutcome's own fields are taken (a row is data, never code)."""
    values = {name: data[name] for name in _FIELDS if name in data}
    values["details"] = dict(values.get("details") or {})
    values["host_fields"] = dict(values.get("host_fields") or {})
    return HostOutcome(**values)
