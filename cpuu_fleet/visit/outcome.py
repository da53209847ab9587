"""A host's final state, decided from what happened to it: errors, the run, CPUU's exit flags, profiles.

One table, in one place, so the runner, the report and an operator reading the docs agree on what
"succeeded" means. The vendor documents the exit bit mask and the per-profile codes but not how to
judge a workstation as a whole; the judgement below is ours (the ``cpuu.py`` outcome classes of the
profile codes do most of the work):

=====================================================  ============  ==============
what happened                                          state         error class
=====================================================  ============  ==============
connection refused / reset / dropped, DNS, connect      unreachable   unreachable
timeout
any other session error (401, TLS, read timeout,       failed        that class
WSMan fault, remote script error)
the controller could not write (disk full, reports     failed        local
folder not writable)
the workstation sent more than the play's ``limits``   failed        limit
allow (a file too big or longer than announced,
endless output, too many result rows), even after
CPUU ran
aborted by the operator (second Ctrl-C) while CPUU     failed        interrupted
ran; the run step stays unfinished for --resume
Undo refused: Cleanup already succeeded on the host    failed        policy
nobody logged on, policy ``skip``                      skipped       policy
the expected user (``cpuu_user``, a ``users: each``    waiting       policy
user) not logged on, policy ``skip``
nobody logged on, policy ``at_logon``                  pending       —
CPUU ran for a user the host is not for (an at-logon   waiting       policy
task that fired for another user)
the user's session is disconnected, policy              waiting       policy
``disconnected: skip``
exit 0 and no profile line at all (no Outlook profile) not_applicable —
an audit and no run step: a profile predicted to fail  predicted_fail cpuu
(code 6 or 22)
an audit and no run step: every user New Outlook or    not_applicable —
without a profile
CPUU killed on our deadline (its exit code 1 is NOT    failed        cpuu
success)
a Windows exit code, not CPUU's mask (9009: cmd      failed        cpuu
could not find the exe; 0xC000013A: the console
window was closed; an NTSTATUS crash code)
exit code with bits the vendor never listed            failed        cpuu
exit 0 (CANNOT_START, "nothing to do"), no bad         succeeded if  —
profile                                                some profile
                                                       is OK (e.g.
                                                       code 2),
                                                       else skipped
CRASH or GLOBAL_ERR set (the run did not complete),     failed        cpuu
even with SUCCESS
SUCCESS, no failure flag, no NO_SWITCH_MSG, no bad     succeeded     —
profile
SUCCESS plus a failure flag, NO_SWITCH_MSG or a bad    partial       cpuu
profile
no SUCCESS, only NO_SWITCH_MSG (mailbox not switched   not_switched  cpuu
yet: rerun after the switch; not a failure)
no SUCCESS, anything else; or exit 0 with bad          failed        cpuu
profiles and none OK (partial when some are OK)
=====================================================  ============  ==============

A *bad* profile is one whose code's outcome class is failed, needs-action or unknown. A failure
after the run (collecting results) keeps the run's state and adds the error: CPUU's verdict stands,
the missing files are reported with it. Except a ``limit`` failure: what that host sent cannot be
trusted, so it fails, with CPUU's verdict in its message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cpuu_fleet import journal as states
from cpuu_fleet.audit import PREDICT_NEW_OUTLOOK, PREDICT_NO_PROFILE, AuditRow, describe_prediction
from cpuu_fleet.cpuu import FAILURE_FLAGS, ExitFlags, ExitStatus, Outcome, ProfileResult, code_info
from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.vocabulary import NOT_APPLICABLE, PREDICTED_FAIL, WAITING, ErrorClass


@dataclass(frozen=True)
class RunResult:
    """What became of CPUU on a host in one visit: the run step's result and what :func:`judge`
    reads (one definition for both, so a field added to one cannot be missed by the other)."""

    task_name: str
    ran: bool = False
    """CPUU ran to an end (on its own, or killed by us)."""
    exit_code: int | None = None
    killed: bool = False
    no_user: bool = False
    pending: bool = False
    """An at-logon task is registered and has not run yet."""
    refused: str | None = None
    """Why we refused to run (Undo after Cleanup)."""
    user: str | None = None
    resumed: str | None = None
    """How a resumed visit found the task: ``finished``, ``waited``, ``started``, ``pending``."""
    seconds: float | None = None
    started_at: str | None = None
    """When CPUU started, by the host's clock (its run marker): collect takes files from then on."""
    other_users: tuple[str, ...] = ()
    """Who was logged on when CPUU did not run for them: not an expected user, or one of several
    users on a host that names none (run-task's ``OtherUsers``, made printable)."""
    expected: tuple[str, ...] = ()
    """Whom CPUU is for on this host (``cpuu_user``); empty: whoever is logged on."""
    disconnected: tuple[str, ...] = ()
    """Users passed over because their session is disconnected (the play's ``disconnected:
    skip``; run-task's ``Disconnected``, made printable)."""

    @property
    def unexpected_user(self) -> bool:
        """CPUU ran for somebody the host is not for: a name none of the expected users has.

        Assumption: the host reports the user as a name (run-task's ``User``), so an expected
        user given as a SID cannot be told apart from someone else here; such a run is not
        called unexpected (run-task's ``-ExpectedUser`` already refuses anybody else for a run
        it starts; this catches an at-logon task that fired for another user)."""
        if not (self.ran and self.user and self.expected):
            return False
        if any(name.upper().startswith("S-1-") for name in self.expected):
            return False
        return self.user.casefold() not in {name.casefold() for name in self.expected}

    @classmethod
    def from_details(cls, data: dict[str, Any], resumed: str = "finished") -> RunResult:
        """A run step the journal holds (its attempt's details), as a retry or resume reads it."""
        return cls(
            task_name=data.get("task", ""),
            ran=bool(data.get("ran")),
            exit_code=data.get("exit_code"),
            killed=bool(data.get("killed")),
            no_user=bool(data.get("no_user")),
            pending=bool(data.get("pending")),
            refused=data.get("refused"),
            user=data.get("user"),
            resumed=resumed,
            started_at=data.get("started_at"),
            expected=tuple(str(name) for name in data.get("expected") or ()),
            disconnected=tuple(str(name) for name in data.get("disconnected") or ()),
        )

    def details(self) -> dict[str, Any]:
        data: dict[str, Any] = {"task": self.task_name}
        for key in ("exit_code", "user", "resumed", "refused", "started_at"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        for key in ("ran", "killed", "no_user", "pending"):
            if getattr(self, key):
                data[key] = True
        if self.other_users:
            data["other_users"] = list(self.other_users)
        if self.expected:
            data["expected"] = list(self.expected)
        if self.disconnected:
            data["disconnected"] = list(self.disconnected)
        if self.unexpected_user:
            data["unexpected_user"] = True
        if self.seconds is not None:
            data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class HostOutcome:
    """How one attempt on one host ended: the one result type the judgement, the host visit, the
    runner and the journal share (Nornir's ``Result``, Ansible's ``TaskResult``)."""

    state: str
    """A final state of :mod:`cpuu_fleet.vocabulary` (succeeded, partial, failed, ...)."""
    error_class: str | None = None
    """One of :class:`~cpuu_fleet.vocabulary.ErrorClass` (``internal`` and ``interrupted`` are set by
    the runner)."""
    error_message: str | None = None
    transient: bool = False
    """True when trying again later may help (unreachable, timeout, dropped connection). Must be
    False when a retry could start CPUU a second time."""
    details: dict[str, Any] = field(default_factory=dict)
    """What the report and ``--check`` show (step results, timings); not written by the runner."""
    host_fields: dict[str, Any] = field(default_factory=dict)
    """Journal host columns stored with the final state in the same write (user, exit_code,
    exit_flags, killed, result_dir)."""
    settle_in: float | None = None
    """Set (with state ``running``) when a detached run step started CPUU and released the host:
    the runner calls the host work again after this many seconds, without a fork or a session
    meanwhile. Never set on a final outcome."""


# Exit codes that are not CPUU's bit mask but Windows' own (cmd.exe, the Task Scheduler).
_BAD_OUTCOMES = (Outcome.FAILED, Outcome.NEEDS_ACTION, Outcome.UNKNOWN)


def _bad(profile: ProfileResult) -> bool:
    return profile.info.outcome in _BAD_OUTCOMES


def judge_exit(
    exit_code: int, profiles: Iterable[ProfileResult], *, killed: bool = False
) -> HostOutcome:
    """The state CPUU's own report gives a host (exit bit mask + per-profile codes)."""
    results = list(profiles)
    ok = sum(1 for p in results if p.info.outcome is Outcome.OK)
    bad = [p for p in results if _bad(p)]
    status = ExitStatus(exit_code)
    detail = f"exit {status.describe()}"
    if bad:
        detail += f"; {len(bad)} profile(s) not done: " + ", ".join(
            f"{p.profile!r}={p.info.name}" for p in bad[:5]
        )
    if killed:
        return HostOutcome(
            states.FAILED,
            ErrorClass.CPUU.value,
            f"CPUU killed on our deadline (its exit code {exit_code} is not success)",
        )
    if status.windows is not None:
        return HostOutcome(states.FAILED, ErrorClass.CPUU.value, f"{detail}: {status.windows[1]}")
    if status.unknown_bits:
        return HostOutcome(
            states.FAILED, ErrorClass.CPUU.value, f"{detail}: undocumented exit code"
        )
    flags = status.flags
    if status.cannot_start:
        if bad:
            state = states.PARTIAL if ok else states.FAILED
            return HostOutcome(state, ErrorClass.CPUU.value, detail)
        if ok:
            return HostOutcome(states.SUCCEEDED, None, "nothing left to do (" + detail + ")")
        if not results:
            return HostOutcome(
                NOT_APPLICABLE, None, "CPUU listed no Outlook profile (" + detail + ")"
            )
        return HostOutcome(states.SKIPPED, None, "nothing to do (" + detail + ")")
    if flags & (ExitFlags.CRASH | ExitFlags.GLOBAL_ERR):
        # The run did not complete: whatever it did before, the workstation is not done.
        return HostOutcome(states.FAILED, ErrorClass.CPUU.value, detail)
    if flags & ExitFlags.SUCCESS:
        if flags & FAILURE_FLAGS or flags & ExitFlags.NO_SWITCH_MSG or bad:
            return HostOutcome(states.PARTIAL, ErrorClass.CPUU.value, detail)
        return HostOutcome(states.SUCCEEDED, None, detail)
    log_only = (
        ExitFlags.FAILED_TO_WRITE_LOG
        | ExitFlags.FAILED_TO_CREATE_TMP_DIR
        | ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE
    )
    if flags & ExitFlags.NO_SWITCH_MSG and not flags & ~(ExitFlags.NO_SWITCH_MSG | log_only):
        return HostOutcome(
            states.NOT_SWITCHED,
            ErrorClass.CPUU.value,
            f"{detail}: mailbox not switched yet, rerun later",
        )
    if bad and ok:
        return HostOutcome(states.PARTIAL, ErrorClass.CPUU.value, detail)
    return HostOutcome(states.FAILED, ErrorClass.CPUU.value, detail)


def judge(
    run: RunResult | None,
    profiles: Iterable[ProfileResult] = (),
    error: SessionError | None = None,
    *,
    check_mode: bool = False,
) -> HostOutcome:
    """A host's final state. ``run`` is None when the play has no run step (or it never got there).

    ``error`` is the failure that ended the visit, if any; it decides alone when CPUU did not run,
    and is appended to CPUU's verdict when it happened afterwards (collecting results).
    """
    profiles = list(profiles)
    if run is not None and run.ran and run.exit_code is not None:
        verdict = judge_exit(run.exit_code, profiles, killed=run.killed)
        if run.unexpected_user:
            verdict = _not_theirs(run, verdict)
        if error is not None:
            message = f"{verdict.error_message}; afterwards: {error.message}"
            if error.error_class is ErrorClass.LIMIT:
                # What the host sent cannot be trusted: CPUU's verdict does not stand alone.
                return HostOutcome(states.FAILED, error.error_class.value, message)
            return HostOutcome(
                verdict.state,
                verdict.error_class or error.error_class.value,
                message,
                transient=error.transient,
            )
        return verdict
    if error is not None and error.error_class is ErrorClass.INTERRUPTED:
        return HostOutcome(
            states.FAILED,
            error.error_class.value,
            f"{error.message}; CPUU may still be running: --resume asks the host",
        )
    if error is not None:
        state = states.UNREACHABLE if error.error_class is ErrorClass.UNREACHABLE else states.FAILED
        return HostOutcome(state, error.error_class.value, error.message, transient=error.transient)
    if run is None:
        # preflight / push / collect only: reaching the end without an error is success.
        if profiles:
            return judge_exit(1, profiles)
        return HostOutcome(
            states.SUCCEEDED, None, "check mode: nothing changed" if check_mode else None
        )
    if run.refused:
        return HostOutcome(states.FAILED, ErrorClass.POLICY.value, run.refused)
    if run.pending:
        return HostOutcome(
            states.PENDING,
            None,
            f"{_who_is_on(run)}: CPUU will run at the next logon of"
            f" {_for_whom(run)}; collect later",
        )
    if run.no_user and run.disconnected:
        return HostOutcome(
            WAITING,
            ErrorClass.POLICY.value,
            f"{', '.join(run.disconnected[:5])}: session disconnected (policy disconnected:"
            f" skip), waiting for a later run"
            + (f"; logged on: {', '.join(run.other_users[:5])}" if run.other_users else ""),
        )
    if run.no_user and run.expected:
        return HostOutcome(
            WAITING,
            ErrorClass.POLICY.value,
            f"{_who_is_on(run)}: waiting for {_for_whom(run)} (no at-logon task: policy skip)",
        )
    if run.no_user:
        return HostOutcome(
            states.SKIPPED, ErrorClass.POLICY.value, f"{_who_is_on(run)} (policy: skip)"
        )
    return HostOutcome(
        states.FAILED, ErrorClass.INTERNAL.value, "the run step ended without a result"
    )


def _not_theirs(run: RunResult, verdict: HostOutcome) -> HostOutcome:
    """A run by somebody the host is not for: recorded as theirs, never the expected user's."""
    said = f"{verdict.state}" + (f": {verdict.error_message}" if verdict.error_message else "")
    return HostOutcome(
        WAITING,
        ErrorClass.POLICY.value,
        f"run by an unexpected user {run.user} (CPUU is for {_for_whom(run)}; their run: {said});"
        f" {_for_whom(run)} is still to be run for",
    )


def _who_is_on(run: RunResult) -> str:
    """Why CPUU did not run now, in the words of the users involved."""
    if not run.other_users:
        return "nobody logged on" if not run.expected else f"{_for_whom(run)} not logged on"
    others = ", ".join(run.other_users[:5]) + (", ..." if len(run.other_users) > 5 else "")
    if run.expected:
        return f"{_for_whom(run)} not logged on (logged on: {others})"
    return f"several users logged on ({others}) and no cpuu_user names whom CPUU is for"


def _for_whom(run: RunResult) -> str:
    return " or ".join(run.expected[:3]) if run.expected else "a user"


_NOT_APPLICABLE_PREDICTIONS = frozenset({PREDICT_NEW_OUTLOOK, PREDICT_NO_PROFILE})
SHOWN_PREDICTIONS = 5
"""Predicted failures named in a host's message (audit.csv has them all)."""


def judge_audit(rows: Iterable[AuditRow]) -> HostOutcome:
    """A visit with an audit and no run step: what the audit predicts CPUU will say.

    A profile predicted to end with a code that is not success (6: cached without
    ``cpuu_process_offline``; 22: OST larger than the free disk) makes the host ``predicted to
    fail``, the code in the message: fix it before the wave. Every user New Outlook or without
    a profile: ``not applicable``. Otherwise the audit found nothing in the way (``succeeded``).
    Predictions CPUU has no code for (an unknown server, a locked hive) fail nothing: the
    audit's rows name them."""
    rows = [row for row in rows if row.prediction]
    failing = [
        row
        for row in rows
        if row.predicted_code is not None and code_info(row.predicted_code).outcome in _BAD_OUTCOMES
    ]
    if failing:
        named = ", ".join(
            f"{row.user or row.sid} {row.profile!r}: {describe_prediction(row.prediction)}"
            for row in failing[:SHOWN_PREDICTIONS]
        )
        more = len(failing) - SHOWN_PREDICTIONS
        return HostOutcome(
            PREDICTED_FAIL,
            ErrorClass.CPUU.value,
            f"{len(failing)} profile(s) predicted to fail: {named}"
            + (f", +{more} more (audit.csv)" if more > 0 else ""),
        )
    if rows and all(row.prediction in _NOT_APPLICABLE_PREDICTIONS for row in rows):
        return HostOutcome(
            NOT_APPLICABLE, None, "the audit found nothing for CPUU (New Outlook or no profile)"
        )
    return HostOutcome(states.SUCCEEDED, None, f"audited: {len(rows)} row(s)")
