"""The lab's stand-in for ``remote/audit.ps1``: where every user's profiles point, read-only.

Why a module of its own: the audit reads a part of the model (``mailprofiles``) no other script
touches, and it changes nothing, so it needs none of the file-system helpers of ``handlers``.
It follows ``docs/remote-scripts.md`` ("audit") as the script does: same keys, same bounds, same
order (users by profile folder, profiles in the order the hive lists them, accounts primary
first), ``HiveState`` ``Loaded`` for the logged-on user, ``Copied`` for a user whose hive it could
load from a copy, ``Locked`` for one whose NTUSER.DAT another process holds (a row, never a failed
step). The script's temporary hive copy is not modelled: it is removed before the script ends,
and nothing of the user's or of CPUU's changes.

Importing ``cpuu_fleet.lab.handlers`` registers this handler too.
"""

from __future__ import annotations

from typing import Any

from cpuu_fleet.lab.contract import PipelineHost, ScriptCall
from cpuu_fleet.lab.handlers import _bind, _int, _language_check
from cpuu_fleet.lab.mailprofiles import (
    HiveState,
    hive_state,
    is_default,
    mailboxes_of,
    ost_path,
    server_of,
    users_with_hives,
)
from cpuu_fleet.lab.registry import register
from cpuu_fleet.lab.workstation import OutlookProfile, Workstation

MAX_USERS = 64
MAX_PROFILES = 32
MAX_ACCOUNTS = 8
MAX_TEXT = 256
DEFAULT_MAX_ROWS = 2000


def _text(value: str | None) -> str | None:
    """The script's ``Limit-Text``: at most 256 characters, empty is null."""
    if value is None:
        return None
    value = value.rstrip("\0")[:MAX_TEXT]
    return value or None


def _profile_rows(ws: Workstation, user: str, profile: OutlookProfile) -> list[dict[str, Any]]:
    path = ost_path(user, profile)
    facts = {
        "Profile": _text(profile.name),
        "OfficeVersion": ws.outlook_version or "16.0",
        "Default": is_default(ws, user, profile),
        "CachedMode": not profile.online,
        "OstPath": _text(path),
        "OstBytes": profile.ost_size if path is not None else None,
    }
    if not profile.has_exchange_service:
        return [{**facts, "Server": None, "Mailbox": None}]
    server = server_of(ws.mail, profile)
    return [
        {**facts, "Server": _text(server), "Mailbox": _text(mailbox)}
        for mailbox in mailboxes_of(profile)[:MAX_ACCOUNTS]
    ]


def _user_rows(ws: Workstation, user: str) -> list[dict[str, Any]]:
    state = hive_state(ws, user)
    head = {
        "Sid": ws.sid_of(user),
        "User": _text(user),
        "HiveState": state.value,
        "NewOutlook": False,
    }
    rows: list[dict[str, Any]] = []
    if state is not HiveState.LOCKED:
        head["NewOutlook"] = ws.mail.hive(user).new_outlook
        for profile in ws.profiles_of(user)[:MAX_PROFILES]:
            rows.extend({**head, **facts} for facts in _profile_rows(ws, user, profile))
    if not rows:
        empty = dict.fromkeys(
            ("Profile", "OfficeVersion", "Default", "CachedMode", "OstPath", "OstBytes"), None
        )
        rows.append({**head, **empty, "Server": None, "Mailbox": None})
    return rows


@register("audit")
def audit(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Read-only: one row per host, user, profile and Exchange account, at most ``-MaxRows``."""
    _bind(call, "audit")
    _language_check(ws, call)
    max_rows = _int(call, "MaxRows", DEFAULT_MAX_ROWS, 1, 100000)
    with ws.lock:
        ws.refresh()
        host_facts = {
            "ComputerName": ws.name.upper(),
            "FreeBytes": ws.fs.free_bytes,
            "OutlookVersion": ws.outlook_version,
            "Truncated": False,
        }
        users = sorted(users_with_hives(ws), key=lambda u: u.split("\\")[-1].casefold())
        truncated = len(users) > MAX_USERS
        rows: list[dict[str, Any]] = []
        for user in users[:MAX_USERS]:
            for row in _user_rows(ws, user):
                if len(rows) >= max_rows:
                    truncated = True
                    break
                rows.append({**row, **host_facts})
    if truncated and rows:
        rows[-1]["Truncated"] = True
    for row in rows:
        host.write_output(row)
