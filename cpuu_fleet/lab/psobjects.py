"""PowerShell objects the lab sends as Windows serialises them: the PSVersionTable of its
ApplicationPrivateData and ErrorRecords for terminating and non-terminating errors."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from psrpcore.types import ErrorCategory, ErrorCategoryInfo, ErrorRecord, NETException, PSVersion
from psrpcore.types._serializer import _serialize_string


def _load_private_data() -> dict[str, Any]:
    """The PSVersionTable of a real Windows host (taken as data from pypsrp's recordings)."""
    raw = json.loads(
        resources.files("cpuu_fleet.lab").joinpath("data/psversiontable.json").read_text("utf-8")
    )
    table: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, list):
            table[key] = [PSVersion(v) for v in value]
        elif key == "PSEdition":
            table[key] = value
        else:
            table[key] = PSVersion(value)
    return {"PSVersionTable": table}


_PRIVATE_DATA: dict[str, Any] | None = None


def private_data() -> dict[str, Any]:
    global _PRIVATE_DATA
    if _PRIVATE_DATA is None:
        _PRIVATE_DATA = _load_private_data()
    return _PRIVATE_DATA


def _category(name: str) -> ErrorCategory:
    try:
        return ErrorCategory[name]
    except KeyError:
        return ErrorCategory.NotSpecified


def error_record(
    message: str,
    *,
    error_id: str,
    category: str,
    exception_type: str = "System.Management.Automation.RuntimeException",
    target: str | None = None,
) -> ErrorRecord:
    """An ErrorRecord shaped like the one PowerShell serialises for ``throw``/``Write-Error``."""
    exc = NETException(Message=message)
    chain = [exception_type]
    if exception_type.startswith("System.Management.Automation.") and not exception_type.endswith(
        ".RuntimeException"
    ):
        chain.append("System.Management.Automation.RuntimeException")
    exc.PSObject.type_names = [
        *chain,
        "System.SystemException",
        "System.Exception",
        "System.Object",
    ]
    info = ErrorCategoryInfo(
        Category=_category(category),
        Reason=exception_type.rsplit(".", 1)[-1],
        TargetName=target or "",
        TargetType="String" if target else "",
    )
    record = ErrorRecord(
        Exception=exc,
        CategoryInfo=info,
        FullyQualifiedErrorId=error_id or message,
        TargetObject=target,
    )
    # psrpcore writes ToString as it is, where PowerShell escapes it like any string (_x001B_):
    # a message with an ESC would otherwise be XML that no client can read.
    record.PSObject.to_string = _serialize_string(message)
    return record
