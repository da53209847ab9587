"""What a person should do about a host, from what the journal knows about it.

The per-profile hints and the exit-flag hints are the vendor's facts and live in
:mod:`cpuu_fleet.cpuu`; the remedies for *our* error classes (how the connection or a step failed)
live in :mod:`cpuu_fleet.vocabulary`, each with its owner; this module only reads them. Everything is computed once per distinct value, never once per row: a fleet has
100,000 hosts but only a handful of distinct exit codes and error classes.
"""

from __future__ import annotations

from cpuu_fleet.cpuu import FLAG_HINTS, KILLED_REMEDY, ExitFlags, ExitStatus
from cpuu_fleet.vocabulary import ERROR_CLASS_REMEDIES

ERROR_CLASS_HINTS: dict[str, str] = {
    cls.value: remedy.next_step for cls, remedy in ERROR_CLASS_REMEDIES.items()
}
"""What to do per error class, keyed by the value the journal stores (``hosts.error_class``);
the text and its owner are defined once, in :data:`cpuu_fleet.vocabulary.ERROR_CLASS_REMEDIES`."""


def exit_flag_names(code: int | None, killed: bool = False) -> str:
    """``SUCCESS|SWITCH_ERR`` for a CPUU exit code; a kill on deadline says so (its 1 is no success)."""
    if code is None:
        return ""
    names = "|".join(ExitStatus(int(code)).names())
    return f"KILLED_ON_DEADLINE (exit {names} is not success)" if killed else names


def exit_code_hint(code: int | None, killed: bool = False) -> str:
    """The vendor's advice for each problem flag set in an exit code (what a Windows code means,
    when the code is Windows' rather than CPUU's)."""
    if killed:
        return KILLED_REMEDY.next_step
    if code is None:
        return ""
    status = ExitStatus(int(code))
    if status.windows is not None:
        return status.windows[1][:1].upper() + status.windows[1][1:] + "."
    flags = status.flags
    return " ".join(
        hint for flag, hint in FLAG_HINTS.items() if flag in flags and flag != ExitFlags.SUCCESS
    )
