"""What a person should do about a host, from what the journal knows about it.

The per-profile hints and the exit-flag hints are the vendor's facts and live in
:mod:`cpuu_fleet.cpuu`; the hints for *our* error classes (how the connection or a step failed) are
ours and live here. Everything is computed once per distinct value, never once per row: a fleet has
100,000 hosts but only a handful of distinct exit codes and error classes.
"""

from __future__ import annotations

from cpuu_fleet.cpuu import FLAG_HINTS, ExitFlags, ExitStatus
from cpuu_fleet.vocabulary import ErrorClass

_HINTS: dict[ErrorClass, str] = {
    ErrorClass.UNREACHABLE: "The workstation did not answer: check that it is on, on the network,"
    " and that WinRM listens (winrm quickconfig); then retry.",
    ErrorClass.AUTHENTICATION: "WinRM refused the credentials: check the account, its password and"
    " that it is a local administrator on the workstation. A Kerberos error message says what to"
    " fix (ticket, clock, name): see docs/kerberos.md.",
    ErrorClass.CERTIFICATE: "The WinRM HTTPS certificate was not trusted: fix the workstation's"
    " certificate or the CA bundle (do not turn validation off).",
    ErrorClass.TIMEOUT: "A step ran past its deadline: check the link and the workstation's load,"
    " then retry.",
    ErrorClass.REMOTE: "A remote command failed on the workstation: read the error message and the"
    " step's output in the Attempts sheet.",
    ErrorClass.PROTOCOL: "The WinRM conversation broke (proxy, size limits, dropped connection):"
    " retry; if it repeats, check MaxEnvelopeSizekb and any proxy in between.",
    ErrorClass.POLICY: "The play's policy stopped this host (for example nobody logged on): see the"
    " error message; rerun when the condition is met.",
    ErrorClass.CPUU: "CPUU did not do its job: read the CPUU log collected from the workstation.",
    ErrorClass.INTERNAL: "A fault in cpuu-fleet stopped this host's visit: the run's run.log has"
    " its traceback; report it, then retry the host.",
    ErrorClass.LOCAL: "The controller could not store what it received (disk full, no permission"
    " on the reports folder): fix that, then run collect for this host.",
    ErrorClass.LIMIT: "The workstation sent more than the play's limits allow (a file too big or"
    " longer than announced, endless output, too many result rows): look at the host (a huge"
    " CPUU log, a tampered machine); raise the play's 'limits' only if the data is genuine.",
    ErrorClass.INTERRUPTED: "The controller stopped while this host was running: run resume to"
    " collect what happened before running it again.",
}
"""What to do about each error class: every class has one (a test holds it)."""
ERROR_CLASS_HINTS: dict[str, str] = {cls.value: hint for cls, hint in _HINTS.items()}
"""What to do per error class, keyed by the value the journal stores (``hosts.error_class``)."""


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
        return "CPUU ran past its deadline and was stopped: find out why it hangs (a dialog, a lock) and rerun."
    if code is None:
        return ""
    status = ExitStatus(int(code))
    if status.windows is not None:
        return status.windows[1][:1].upper() + status.windows[1][1:] + "."
    flags = status.flags
    return " ".join(
        hint for flag, hint in FLAG_HINTS.items() if flag in flags and flag != ExitFlags.SUCCESS
    )
