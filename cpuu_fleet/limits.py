"""How much a workstation may send: bounds on everything that comes back over WinRM.

Why: everything a workstation sends is hostile until proven otherwise. A host that claims a 2 GB
file, streams without end, spews output objects or writes a result file of millions of lines must
cost the controller a bounded amount of disk, memory and time, and end as a failed host with error
class ``limit`` (never as ``succeeded``, never as a controller that runs out of memory).

A play sets them under ``limits:`` (``docs/playbooks.md``); every key is optional:

=================  ==========  ====================================================================
key                default     what it bounds
=================  ==========  ====================================================================
``file_size``      64 MiB      one collected file (CPUU's result CSVs and logs are kilobytes)
``output_size``    16 MiB      what one remote script's output objects and error, warning, verbose
                               and progress records may hold in the controller's memory (a
                               preflight answer is a few kilobytes; streamed downloads do not count,
                               ``file_size`` bounds them)
``step_time``      3600 s      how long one remote script may run when the step has no deadline of
                               its own (the run step's is its ``timeout``)
``result_rows``    10000       lines one result file may have (a user has a handful of profiles)
=================  ==========  ====================================================================

Sizes are a whole number of bytes or a number with a unit: ``512 KiB``, ``64MiB``, ``1 GB``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "kib": KIB,
    "k": KIB,
    "mb": 1000**2,
    "mib": MIB,
    "m": MIB,
    "gb": 1000**3,
    "gib": 1024**3,
    "g": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Limits:
    """The bounds of one play (see the module docstring for what each one bounds and why)."""

    file_bytes: int = 64 * MIB
    output_bytes: int = 16 * MIB
    step_seconds: float = 3600.0
    result_rows: int = 10_000


DEFAULT_LIMITS = Limits()

#: Play key → (Limits field, kind): the playbook's ``limits:`` mapping.
LIMIT_KEYS: dict[str, tuple[str, str]] = {
    "file_size": ("file_bytes", "size"),
    "output_size": ("output_bytes", "size"),
    "step_time": ("step_seconds", "seconds"),
    "result_rows": ("result_rows", "count"),
}


def parse_size(value: Any) -> int:
    """``65536``, ``"64 MiB"``, ``"512KiB"``, ``"1 GB"`` → bytes; ValueError for anything else."""
    if isinstance(value, bool):
        raise ValueError("expected a size")
    if isinstance(value, int):
        number, unit = float(value), ""
    else:
        match = _SIZE.match(str(value))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"{value!r} is not a size (e.g. 65536, '512 KiB', '64 MiB')")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * _UNITS[unit])
    if size < 1:
        raise ValueError(f"{value!r} is not a size above zero")
    return size


class BadLimit(ValueError):
    """A ``limits:`` value that cannot be used; ``key`` names it (for the playbook's line)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def parse_limits(raw: Mapping[str, Any]) -> Limits:
    """A play's ``limits:`` mapping → :class:`Limits`; :class:`BadLimit` names key and problem."""
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in LIMIT_KEYS:
            raise BadLimit(key, f"unknown key {key!r} (allowed: {', '.join(LIMIT_KEYS)})")
        field_name, kind = LIMIT_KEYS[key]
        if kind == "size":
            try:
                values[field_name] = parse_size(value)
            except ValueError as exc:
                raise BadLimit(key, f"{key!r}: {exc}") from None
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        if kind == "count" and not (number and isinstance(value, int)):
            raise BadLimit(key, f"{key!r} must be a whole number > 0")
        if not number:
            raise BadLimit(key, f"{key!r} must be a number of seconds > 0")
        values[field_name] = value if kind == "count" else float(value)
    return Limits(**values)


def describe_size(size: int) -> str:
    """``67108864`` → ``64 MiB`` (for messages an operator reads)."""
    for unit, factor in (("GiB", 1024**3), ("MiB", MIB), ("KiB", KIB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor:,} {unit}"
    return f"{size:,} bytes"
