"""How the report is written for the reader's locale: the CSV dialect and the local time zone.

Without pandas, so that ``play`` checks ``--csv-dialect`` and ``--timezone`` before it touches a
host (pandas takes a moment to load).

CSV dialects: ``en`` (comma, decimal point: RFC 4180, what scripts and an English-language Excel
read) or ``eu`` (semicolon, decimal comma: what Excel and LibreOffice in French, German and most
of continental Europe split and parse on a double click, their list separator being ``;`` and
their decimal sign ``,``). ``en`` is the default: the CSVs are also the scripted interface (a
stable column order), and the workbook, whose cells are typed, opens as columns and numbers in
every locale; a lead in Paris or Berlin asks for ``eu`` once (``--csv-dialect eu``).

Local time:

The journal stores UTC and the report's frames keep it (Excel has no time zones); a lead reads
local time. The zone is the operator's choice (``--timezone`` on ``report`` and ``play``, an IANA
name such as ``Europe/Paris``); without one, the controller's own zone (``TZ``, then
``/etc/localtime``), and UTC where neither names one (a Windows controller: its zone has no IANA
name that the standard library can read). Zones come from :mod:`zoneinfo`; where the system has no zone data (a Windows controller) the
``tzdata`` package provides it (a dependency on Windows only), so daylight saving time is applied
per timestamp, never one offset for the whole report.
"""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cpuu_fleet.errors import InputError

if TYPE_CHECKING:  # pandas takes a moment to load: play checks --timezone before a host is touched
    import pandas as pd


@dataclass(frozen=True)
class CsvDialect:
    """How a CSV separates fields and writes decimals."""

    name: str
    separator: str
    decimal: str
    meaning: str


DIALECTS: dict[str, CsvDialect] = {
    "en": CsvDialect("en", ",", ".", "comma-separated, decimal point (RFC 4180; English Excel)"),
    "eu": CsvDialect(
        "eu", ";", ",", "semicolon-separated, decimal comma (French, German, ... Excel)"
    ),
}
DEFAULT_DIALECT = "en"


def dialect(name: str) -> CsvDialect:
    """The dialect of that name; an unknown one is an :class:`InputError`."""
    if name not in DIALECTS:
        raise InputError(f"unknown CSV dialect {name!r} (expected: {', '.join(DIALECTS)})")
    return DIALECTS[name]


UTC = "UTC"
_SYSTEM_ZONES = Path("/etc/localtime")


def zone_name(name: str | None) -> str:
    """The IANA name of the zone to show: ``name`` checked, or the controller's zone.

    An unknown name is an :class:`InputError` (an operator's typo must not turn into UTC)."""
    if name:
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InputError(
                f"unknown time zone {name!r} (an IANA name such as Europe/Paris)"
            ) from None
        return name
    return _controller_zone()


def _controller_zone() -> str:
    """The controller's zone by name, or UTC when it has none we can read."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(_SYSTEM_ZONES.resolve())
        candidates.append(target.split("/zoneinfo/", 1)[1] if "/zoneinfo/" in target else "")
    except OSError:
        pass
    for candidate in candidates:
        if candidate:
            try:
                zoneinfo.ZoneInfo(candidate)
                return candidate
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                continue
    return UTC


def to_local(series: pd.Series, zone: str) -> pd.Series:
    """Naive UTC datetimes as naive local datetimes of ``zone`` (NaT stays NaT)."""
    import pandas as pd

    stamps = pd.to_datetime(series)
    return stamps.dt.tz_localize(UTC).dt.tz_convert(zoneinfo.ZoneInfo(zone)).dt.tz_localize(None)
