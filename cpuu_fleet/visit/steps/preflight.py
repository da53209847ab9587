"""Step one, preflight: a read-only look at the host before anything is changed on it.

One ``preflight`` pipeline reports the language mode, who is logged on (every interactive
session, the console's and RDP users alike), Outlook, the free disk, Cleanup's marker, and the
SHA-256 of exactly the files this visit would push (``push.outgoing_files``, nothing else), so
push skips what is already staged and run can refuse an Undo after Cleanup. Everything the host
reports is checked and bounded here before the other steps read it from the context.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cpuu_fleet.redact import printable
from cpuu_fleet.visit.session import HostSession
from cpuu_fleet.visit.steps.context import (
    STAGING_ROOT,
    STATE_DIR,
    HostContext,
    _protocol_error,
    _text,
    version_dir,
)
from cpuu_fleet.visit.steps.push import outgoing_files


@dataclass(frozen=True)
class PreflightResult:
    computer_name: str | None
    os_caption: str | None
    os_version: str | None
    free_bytes: int | None
    logged_on_user: str | None
    outlook_running: bool
    outlook_version: str | None
    staged_files: dict[str, str]
    """Relative path (lower-cased for comparison) → lowercase SHA-256, in the staging folder, of
    the files this visit would push (preflight hashes only those)."""
    cleanup_done: str | None
    locked: tuple[str, ...] = ()
    """Files to push that another process held open exclusively: not hashed, so pushed again."""
    sessions: tuple[dict[str, Any], ...] = ()
    """Every user with an interactive shell (``user``, ``sid``, ``kind``: console, rdp or unknown,
    ``state``: active, disconnected or None when the host could not tell, ``session_id``,
    ``logon_time``), the console's user included: RDP users are seen here only."""

    def details(self) -> dict[str, Any]:
        return {
            "computer_name": self.computer_name,
            "os": " ".join(x for x in (self.os_caption, self.os_version) if x),
            "free_bytes": self.free_bytes,
            "user": self.logged_on_user,
            "outlook_running": self.outlook_running,
            "outlook_version": self.outlook_version,
            "staged_files": len(self.staged_files),
            "cleanup_done": bool(self.cleanup_done),
            **({"locked": list(self.locked)} if self.locked else {}),
            **({"sessions": list(self.sessions)} if self.sessions else {}),
        }


MAX_SESSIONS = 500
"""Sessions kept from a preflight report (a Remote Desktop Session Host may have hundreds)."""
_SESSION_KINDS = ("console", "rdp")
_SESSION_STATES = ("active", "disconnected")
_SID = re.compile(r"S-1-[0-9]+(-[0-9]+){1,15}")


def _sessions(value: Any) -> tuple[dict[str, Any], ...]:
    """preflight's ``Sessions``, each field checked: host text bounded and printable, a kind
    we know or ``unknown``, a session id that is a number."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value[:MAX_SESSIONS]:
        if not isinstance(item, dict) or not isinstance(item.get("User"), str):
            continue
        session_id = item.get("SessionId")
        sid = item.get("Sid")
        kind = item.get("Kind")
        state = item.get("State")
        logon = item.get("LogonTime")
        found.append(
            {
                "user": printable(item["User"][:256]),
                "sid": sid if isinstance(sid, str) and _SID.fullmatch(sid) else None,
                "kind": kind if kind in _SESSION_KINDS else "unknown",
                "state": state if state in _SESSION_STATES else None,
                "session_id": session_id
                if isinstance(session_id, int) and not isinstance(session_id, bool)
                else None,
                "logon_time": printable(logon[:40]) if isinstance(logon, str) else None,
            }
        )
    return tuple(found)


def _staged_paths(ctx: HostContext) -> list[str]:
    """The relative paths preflight hashes: what this visit would push, nothing else."""
    return sorted({item.relative for item in outgoing_files(ctx)}, key=str.lower)


def preflight(ctx: HostContext, session: HostSession) -> PreflightResult:
    """Read-only look at the host: language mode, user, Outlook, disk, which of the files to push
    are already staged (locked ones listed apart), Cleanup marker."""
    directory = version_dir(ctx.version) if ctx.version else f"{STAGING_ROOT}\\none"
    parameters: dict[str, Any] = {"Directory": directory, "StateDirectory": STATE_DIR}
    paths = _staged_paths(ctx)
    if paths:
        parameters["Paths"] = paths
    result = session.run("preflight", parameters, during="preflight")
    data = result.first
    if not isinstance(data, dict):
        raise _protocol_error(f"preflight: expected one hashtable, got {type(data).__name__}")
    staged_raw = data.get("StagedFiles") or {}
    if not isinstance(staged_raw, dict):
        raise _protocol_error("preflight: StagedFiles is not a hashtable")
    staged = {str(k).replace("/", "\\").lower(): str(v).lower() for k, v in staged_raw.items()}
    locked_raw = data.get("Locked") or []
    if not isinstance(locked_raw, list):
        locked_raw = [locked_raw]
    free = data.get("FreeBytes")
    found = PreflightResult(
        computer_name=_text(data.get("ComputerName")),
        os_caption=_text(data.get("OSCaption")),
        os_version=_text(data.get("OSVersion")),
        free_bytes=int(free) if free is not None else None,
        logged_on_user=_text(data.get("LoggedOnUser")) or None,
        outlook_running=bool(data.get("OutlookRunning")),
        outlook_version=_text(data.get("OutlookVersion")),
        staged_files=staged,
        cleanup_done=_text(data.get("CleanupDone")) or None,
        locked=tuple(str(x) for x in locked_raw[: len(paths)] if x is not None),
        sessions=_sessions(data.get("Sessions")),
    )
    ctx.preflight = found
    ctx.user = found.logged_on_user
    return found
