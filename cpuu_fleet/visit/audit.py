"""The audit's wire side: one read-only ``audit`` pipeline per host, its rows parsed as hostile.

Why apart from :mod:`cpuu_fleet.audit`: that module is data and judgement, which the report reads;
this one opens sessions. Every field a host sends is hostile: rows are bounded
(``limits.result_rows``, also passed to the script as ``-MaxRows``), text is cut to
:data:`~cpuu_fleet.audit.MAX_TEXT` characters and made printable (:func:`redact.printable`),
numbers and flags must have their type or become empty. A host that sends something else fails
with class ``protocol`` or ``limit``, as in every other step; a failed host is a row with its
error class, never an exception that stops the others. Nothing here writes to a host: no upload,
no task, no CPUU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cpuu_fleet.audit import (
    HIVE_STATES,
    MAX_TEXT,
    PROCESS_OFFLINE_VAR,
    SOURCE_VAR,
    TARGET_VAR,
    AuditPolicy,
    AuditRow,
    judge,
    patterns_of,
    still_on_source,
)
from cpuu_fleet.inputs.hostvars import bool_word
from cpuu_fleet.limits import DEFAULT_LIMITS, Limits
from cpuu_fleet.redact import printable
from cpuu_fleet.visit.session import HostSession, SessionError, limit_error
from cpuu_fleet.vocabulary import ErrorClass

_INT64 = 2**63 - 1


@dataclass
class HostAudit:
    """What one host's audit gave: its rows, or why there are none."""

    host: str
    rows: list[AuditRow] = field(default_factory=list)
    error: SessionError | None = None
    truncated: bool = False

    def details(self) -> dict[str, Any]:
        """What the audit step's journal attempt says (its rows have a table of their own)."""
        return {
            "rows": len(self.rows),
            "on_source": len(still_on_source(self.rows)),
            "truncated": self.truncated,
        }


def audit_policy(scope: Any) -> AuditPolicy:
    """A host's patterns and options from its inventory variables (a ``HostScope`` revealing
    vaulted values: server lists may be vaulted, and are not secrets once matched)."""
    return AuditPolicy(
        source=patterns_of(scope.value(SOURCE_VAR)),
        target=patterns_of(scope.value(TARGET_VAR)),
        process_offline=bool_word(scope.value(PROCESS_OFFLINE_VAR, False)) is True,
    )


def _text(value: Any) -> str:
    """Host text, bounded and printable; anything that is not a string is empty."""
    if not isinstance(value, str):
        return ""
    return printable(value[:MAX_TEXT])


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT64:
        return None
    return value


def parse_rows(host: str, output: list[Any], limits: Limits = DEFAULT_LIMITS) -> HostAudit:
    """The script's output as rows; a SessionError when it is not what the contract says."""
    if len(output) > limits.result_rows:
        raise limit_error(
            f"the audit sent {len(output)} rows, more than result_rows ({limits.result_rows})"
        )
    audit = HostAudit(host)
    for item in output:
        if not isinstance(item, Mapping):
            raise SessionError(
                ErrorClass.PROTOCOL, "the audit sent something that is not a row", transient=False
            )
        state = _text(item.get("HiveState"))
        audit.rows.append(
            AuditRow(
                host=host,
                user=_text(item.get("User")),
                sid=_text(item.get("Sid")),
                hive_state=state if state in HIVE_STATES else "",
                new_outlook=item.get("NewOutlook") is True,
                profile=_text(item.get("Profile")),
                office_version=_text(item.get("OfficeVersion")),
                default=_flag(item.get("Default")),
                cached_mode=_flag(item.get("CachedMode")),
                ost_path=_text(item.get("OstPath")),
                ost_bytes=_count(item.get("OstBytes")),
                free_bytes=_count(item.get("FreeBytes")),
                outlook_version=_text(item.get("OutlookVersion")),
                server=_text(item.get("Server")),
                mailbox=_text(item.get("Mailbox")),
            )
        )
        audit.truncated = audit.truncated or item.get("Truncated") is True
    return audit


SessionOpener = Callable[[str, Any], HostSession]


def audit_host(
    name: str,
    connection: Any,
    policy: AuditPolicy,
    open_session: SessionOpener,
    limits: Limits = DEFAULT_LIMITS,
) -> HostAudit:
    """One host: one session, one read-only pipeline. A failure is a result, never raised."""
    try:
        with open_session(name, connection) as session:
            session.limits = limits
            return read_audit(session, name, policy, limits)
    except SessionError as error:
        return _failed(name, error)
    except Exception as exc:  # a bug of ours must not stop the other hosts
        return _failed(name, SessionError(ErrorClass.INTERNAL, f"{type(exc).__name__}: {exc}"))


def read_audit(
    session: HostSession, name: str, policy: AuditPolicy, limits: Limits = DEFAULT_LIMITS
) -> HostAudit:
    """One read-only ``audit`` pipeline on an open session, its rows parsed and judged (the
    ``audit`` command's visit and a play's ``audit`` step alike). Raises SessionError."""
    result = session.run("audit", {"MaxRows": min(limits.result_rows, 100000)}, during="audit")
    audit = parse_rows(name, result.output, limits)
    audit.rows = judge(audit.rows, policy)
    return audit


def _failed(name: str, error: SessionError) -> HostAudit:
    row = AuditRow(
        host=name,
        error_class=error.error_class.value,
        error_message=printable(str(error))[:1000],
    )
    return HostAudit(name, rows=[row], error=error)


@dataclass
class AuditRun:
    """Every host's audit, in inventory order, and how long it took."""

    hosts: list[HostAudit]
    seconds: float

    @property
    def rows(self) -> list[AuditRow]:
        return [row for host in self.hosts for row in host.rows]

    @property
    def failed(self) -> list[HostAudit]:
        return [host for host in self.hosts if host.error is not None]


def audit_fleet(
    targets: list[tuple[str, Any, AuditPolicy]],
    open_session: SessionOpener,
    *,
    forks: int = 10,
    limits: Limits = DEFAULT_LIMITS,
) -> AuditRun:
    """Audit each (host, connection, policy), ``forks`` at a time."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, forks)) as pool:
        futures = [
            pool.submit(audit_host, name, connection, policy, open_session, limits)
            for name, connection, policy in targets
        ]
        hosts = [future.result() for future in futures]
    return AuditRun(hosts, time.monotonic() - started)
