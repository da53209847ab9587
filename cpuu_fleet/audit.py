"""The read-only audit: where every user's Outlook profiles point, and what CPUU would say.

Why: leads ask "who still points to the old server?" before a wave (to plan it) and after (to
chase stragglers), and CPUU's result files answer only for the users it ran for. ``audit.ps1``
reads every user's hive on a host (``docs/remote-scripts.md``, "audit"); this module turns its
rows into facts an operator can act on:

* **parse** (:mod:`cpuu_fleet.visit.audit`, the wire side): every field a host sends is hostile.
* **classify** each Exchange account as ``source``, ``target`` or ``unknown`` from the inventory's
  fnmatch patterns ``cpuu_source_servers`` / ``cpuu_target_servers`` (case-insensitive, matched
  against the server the account points to; a server both lists match is ``unknown``: the
  patterns overlap, and guessing would hide it).
* **predict** what CPUU will say for the profile, in the vendor's order: already on the target → 2;
  cached ("offline") without ``cpuu_process_offline`` → 6; OST larger than the free disk → 22;
  New Outlook → not applicable. Assumption (the vendor is silent on the order of its checks): the
  lab's emulator checks in this order; CPUU's own backups use disk as it goes, so a host near
  full may meet 22 on a later profile than predicted.
  A prediction is for a CPUU run as that user: a user who is not logged on gets one too, for
  the run in their own session that a later wave (or an at-logon task) would make.
* **compare** two audits (before and after a wave): what moved to the target, what did not.

This module is data and judgement only (the report imports it); visiting the hosts is
:mod:`cpuu_fleet.visit.audit`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cpuu_fleet.cpuu import code_info

SOURCE_VAR = "cpuu_source_servers"
"""Inventory variable: fnmatch patterns of the source Exchange servers (a list or one string)."""
TARGET_VAR = "cpuu_target_servers"
"""Inventory variable: fnmatch patterns of the target Exchange servers."""
PROCESS_OFFLINE_VAR = "cpuu_process_offline"
"""Inventory variable: the play runs CPUU with ``-ProcessOfflineProfiles On`` (cached profiles
are then switched too, not skipped with code 6)."""

SOURCE = "source"
TARGET = "target"
UNKNOWN = "unknown"
POINTS_TO = (SOURCE, TARGET, UNKNOWN)
"""Where an account points, as the audit classifies it."""

PREDICT_UPDATE = "update"
PREDICT_ALREADY = "already_updated"
PREDICT_OFFLINE = "offline_skipped"
PREDICT_DISK = "no_disk_for_ost"
PREDICT_NEW_OUTLOOK = "not_applicable_new_outlook"
PREDICT_NO_PROFILE = "not_applicable_no_profile"
PREDICT_UNREADABLE = "unknown_hive_unreadable"
PREDICT_UNKNOWN_SERVER = "unknown_server"
PREDICTED_CODES: dict[str, int | None] = {
    PREDICT_UPDATE: 10,
    PREDICT_ALREADY: 2,
    PREDICT_OFFLINE: 6,
    PREDICT_DISK: 22,
    PREDICT_NEW_OUTLOOK: None,
    PREDICT_NO_PROFILE: None,
    PREDICT_UNREADABLE: None,
    PREDICT_UNKNOWN_SERVER: None,
}
"""Each prediction and the CPUU code it expects (None: CPUU has nothing to say, or we cannot tell)."""

HIVE_STATES = ("Loaded", "Copied", "Locked", "Missing", "Failed")
READABLE_HIVES = frozenset({"Loaded", "Copied"})
MAX_TEXT = 256
"""Characters kept of any text a host sends (the script cuts at the same length)."""


@dataclass(frozen=True)
class AuditRow:
    """One account of one profile of one user on one host (or the user's or host's only row)."""

    host: str
    user: str = ""
    sid: str = ""
    hive_state: str = ""
    new_outlook: bool = False
    profile: str = ""
    office_version: str = ""
    default: bool | None = None
    cached_mode: bool | None = None
    ost_path: str = ""
    ost_bytes: int | None = None
    free_bytes: int | None = None
    outlook_version: str = ""
    server: str = ""
    mailbox: str = ""
    points_to: str = ""
    prediction: str = ""
    predicted_code: int | None = None
    error_class: str = ""
    error_message: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What identifies the row across two audits: host, user (SID), profile, mailbox."""
        return (self.host.casefold(), self.sid.casefold(), self.profile, self.mailbox.casefold())


# ------------------------------------------------------------------------------ judging


def patterns_of(value: Any) -> tuple[str, ...]:
    """An inventory value as patterns: a list of strings, or one string; nothing else counts."""
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if isinstance(v, str) and v.strip())
    return ()


@dataclass(frozen=True)
class AuditPolicy:
    """One host's patterns and options, from its inventory variables."""

    source: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    process_offline: bool = False

    def classify(self, server: str) -> str:
        """``source``, ``target`` or ``unknown`` (no server, no pattern, or both lists match)."""
        if not server:
            return UNKNOWN
        name = server.casefold()
        on_source = any(fnmatch.fnmatchcase(name, p.casefold()) for p in self.source)
        on_target = any(fnmatch.fnmatchcase(name, p.casefold()) for p in self.target)
        if on_source == on_target:
            return UNKNOWN
        return SOURCE if on_source else TARGET


def predict(row: AuditRow, policy: AuditPolicy) -> str:
    """What CPUU will say for this row's profile (see the module docstring for the order)."""
    if row.hive_state not in READABLE_HIVES:
        return PREDICT_UNREADABLE
    if row.new_outlook:
        return PREDICT_NEW_OUTLOOK
    if not row.profile:
        return PREDICT_NO_PROFILE
    if row.points_to == TARGET:
        return PREDICT_ALREADY
    if row.points_to == UNKNOWN:
        return PREDICT_UNKNOWN_SERVER
    if row.cached_mode and not policy.process_offline:
        return PREDICT_OFFLINE
    if row.ost_bytes and row.free_bytes is not None and row.ost_bytes > row.free_bytes:
        return PREDICT_DISK
    return PREDICT_UPDATE


def judge(rows: Iterable[AuditRow], policy: AuditPolicy) -> list[AuditRow]:
    """Classify each row's account and record the prediction."""
    judged = []
    for row in rows:
        row = replace(row, points_to=policy.classify(row.server) if row.profile else "")
        prediction = predict(row, policy)
        judged.append(
            replace(row, prediction=prediction, predicted_code=PREDICTED_CODES[prediction])
        )
    return judged


def describe_prediction(prediction: str) -> str:
    """A prediction in the words of the vendor's code table, for the summary."""
    code = PREDICTED_CODES.get(prediction)
    return prediction if code is None else f"{prediction} ({code} {code_info(code).name})"


def still_on_source(rows: Iterable[AuditRow]) -> list[AuditRow]:
    """The accounts that point to the source: the stragglers."""
    return [row for row in rows if row.points_to == SOURCE]


# ------------------------------------------------------------------------------ comparing


@dataclass
class Comparison:
    """Two audits of the same fleet: which accounts moved, which did not."""

    moved: list[tuple[AuditRow, AuditRow]] = field(default_factory=list)
    """On the source before, on the target after."""
    stayed: list[tuple[AuditRow, AuditRow]] = field(default_factory=list)
    """On the source before and after."""
    moved_back: list[tuple[AuditRow, AuditRow]] = field(default_factory=list)
    """On the target before, on the source after (an Undo, or a profile re-created)."""
    gone: list[AuditRow] = field(default_factory=list)
    """In the first audit only (a profile removed, a host not reached)."""
    new: list[AuditRow] = field(default_factory=list)
    """In the second audit only (CPUU's backup copies, new users)."""


def compare(before: Iterable[AuditRow], after: Iterable[AuditRow]) -> Comparison:
    """Match rows by host, SID, profile and mailbox, and sort them by what became of them."""
    first = {row.key: row for row in before if row.profile}
    second = {row.key: row for row in after if row.profile}
    result = Comparison()
    for key, old in first.items():
        new = second.get(key)
        if new is None:
            result.gone.append(old)
        elif old.points_to == SOURCE and new.points_to == TARGET:
            result.moved.append((old, new))
        elif old.points_to == SOURCE and new.points_to == SOURCE:
            result.stayed.append((old, new))
        elif old.points_to == TARGET and new.points_to == SOURCE:
            result.moved_back.append((old, new))
    result.new = [row for key, row in second.items() if key not in first]
    return result
