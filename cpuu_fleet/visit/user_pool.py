"""Up to N users' CPUU at once on one host: ``run: {users: each, per_host: N}`` (RDS, Citrix).

Why a pool of detached runs on one session, not N attached ``Run`` pipelines at once: pypsrp
documents no thread safety, and one session's NTLM sealing and fragment counters are shared
state (``winrm-notes.md``), so the visit keeps its one session and talks over it one pipeline at
a time. Each user's run is the detached machinery of a workstation's run step, kept inside the
visit: ``run-task -Action Start`` (claims the user's own marker and starts the user's own task,
then returns), ``Status`` while it runs, and ``Run`` only past the host's deadline (which kills
CPUU) or when the task never came up. The next user is started when one ends, so at most N run
at any time.

Never twice per user per run: each user's task and marker are their own
(:func:`~cpuu_fleet.visit.each_user.user_task_name`), a user's journal ``run`` attempt is opened
before its ``Start`` and stays ``running`` until its CPUU ended (overlapping attempts, each ended
by :meth:`Recorder.finish`), and a second ``Start`` for the same task (a retry, ``--resume``)
reads the host's marker instead of starting CPUU again.

A failure of one user's own run (never came up, killed but still alive) ends that user's attempt;
no further user is started, but the runs already at work are waited for and read, so no CPUU is
left running unrecorded. A lost link fails every open attempt (transient: the retry's ``Start``
reads each marker). A second Ctrl-C leaves the open attempts ``running`` for ``--resume``.

Measured on the lab (one RDS host, six users, CPUU 5 s each, a playbook of all four steps):
the whole visit took 31.2 s with ``per_host: 1``, 16.8 s with 2, 11.7 s with 3 and 6.0 s with 6,
for 20, 34, 38 and 50 WS-Man Commands (each ``Status`` is one pipeline; ``expected_seconds``, or
the median time of the users that ended first, saves most of them).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.visit.outcome import RunResult
from cpuu_fleet.visit.session import HostSession, Interrupted, SessionError
from cpuu_fleet.visit.settle import GAP_SHARE, MAX_GAP_S, MIN_GAP_S, SettlePacer, elapsed_since
from cpuu_fleet.visit.steps.context import HostContext
from cpuu_fleet.visit.steps.run import (
    StartedRun,
    read_task_report,
    run_cpuu,
    start_cpuu,
    task_active,
    task_status,
)

_EARLY_S = 0.05
"""A user due within this is asked with the others now, rather than after a wait of nothing."""


class Recorder(Protocol):
    """The visit's step journal (``host_visit._StepRecorder``): what the pool needs of it."""

    attempt_id: int

    def run(
        self,
        step: str,
        action: Callable[[], Any],
        status_of: Callable[[Any], str],
        *,
        leave_open: Callable[[Any], bool] | None = None,
    ) -> Any: ...

    def finish(
        self,
        attempt_id: int,
        step: str,
        action: Callable[[], Any],
        status_of: Callable[[Any], str],
        *,
        leave_open: Callable[[Any], bool] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class UserRun:
    """One user's run to make: its task, the user's name, and whom run-task is told."""

    task: str
    user: str
    who: str


@dataclass
class _Open:
    """A user's CPUU at work: its journal attempt and the marker's start (host clock)."""

    run: UserRun
    attempt_id: int
    started_at: str | None
    claimed: bool
    """Started by this visit's ``Start`` (else found at work, started by an earlier one)."""
    asked_at: float = 0.0
    """Seconds CPUU had run when it was last asked (0: not asked yet)."""


class UserPool:
    """Runs the users' CPUU at most ``options.per_host`` at a time on one session."""

    def __init__(
        self,
        ctx: HostContext,
        session: HostSession,
        options: RunOptions,
        steps: Recorder,
        status_of: Callable[[RunResult], str],
        into: list[RunResult],
    ):
        self.ctx = ctx
        self.session = session
        self.options = options
        self.steps = steps
        self.status_of = status_of
        self.into = into
        self.open: dict[str, _Open] = {}
        self.failure: SessionError | None = None
        """The first failure of one user's own run: no user is started after it."""
        self.seen: list[float] = []
        """How long the users' CPUU that ended by themselves ran: what to expect of the rest."""

    def run(self, todo: list[UserRun]) -> None:
        """Start, ask and end every user's run; each ended run is appended to ``into``."""
        waiting = deque(todo)
        try:
            while waiting or self.open:
                while waiting and self.failure is None and len(self.open) < self.options.per_host:
                    self._start(waiting.popleft())
                if self.failure is not None:
                    waiting.clear()
                if self.open:
                    self._pause(min(self._until_due(entry) for entry in self.open.values()))
                    due = [
                        t for t, entry in self.open.items() if self._until_due(entry) <= _EARLY_S
                    ]
                    for task in due:
                        self._ask(task)
        except Interrupted:
            raise  # the open attempts stay "running": --resume asks the host about each
        except SessionError as lost:
            self._fail_open(lost)
            raise
        if self.failure is not None:
            raise self.failure

    def _start(self, user: UserRun) -> None:
        """Open the user's attempt and start their task; ended at once (nobody in that session,
        refused, or a run the marker says ended): the attempt ends with it."""

        def action() -> RunResult | StartedRun:
            found = start_cpuu(self.ctx, self.session, self.options, user.task, users=(user.who,))
            return found if isinstance(found, StartedRun) else _theirs(found, user)

        try:
            value = self.steps.run(
                "run", action, self.status_of, leave_open=lambda v: isinstance(v, StartedRun)
            )
        except SessionError as exc:
            self._note(exc)
            return
        if isinstance(value, StartedRun):
            self.open[user.task] = _Open(
                user, self.steps.attempt_id, value.started_at, value.claimed
            )
        else:
            self.into.append(value)

    def _ask(self, task: str) -> None:
        """One ``Status``: still at work and not due → leave it open; else end its attempt."""
        entry = self.open[task]
        status = task_status(self.session, task)
        started = status.get("StartedAt")
        if isinstance(started, str):
            entry.started_at = started  # the marker's: the host's deadline counts from it
        elapsed = elapsed_since(entry.started_at)
        active = task_active(status)
        has_run = status.get("LastRunTime") is not None
        if active and not SettlePacer.due(elapsed, self.options.timeout, has_run):
            entry.asked_at = elapsed
            return
        del self.open[task]
        user = entry.run

        def action() -> RunResult:
            if active:  # past the deadline (Run kills CPUU) or never came up (Run disables it)
                run = run_cpuu(self.ctx, self.session, self.options, task, users=(user.who,))
            else:
                run = read_task_report(status, task, self.options.when_no_user, elapsed)
                if run.ran and not run.killed:
                    self.seen.append(elapsed)
            # Started by this visit: not a resume, whatever the host's report calls it.
            resumed = None if entry.claimed else run.resumed or "waited"
            return replace(_theirs(run, user), seconds=round(elapsed, 3), resumed=resumed)

        try:
            self.into.append(self.steps.finish(entry.attempt_id, "run", action, self.status_of))
        except SessionError as exc:
            self._note(exc)

    def _note(self, error: SessionError) -> None:
        """A user's own run failed (its attempt is journalled failed): a lost link or a second
        Ctrl-C is the whole pool's; anything else stops further starts only."""
        if error.transient or isinstance(error, Interrupted):
            raise error
        self.failure = self.failure or error

    def _until_due(self, entry: _Open) -> float:
        """Seconds until this user's CPUU is to be asked: after a fifth of the time it has run
        (1 s to 30 s, as :mod:`.settle` asks detached hosts), first when CPUU is expected to
        have ended (the play's ``expected_seconds``, else the median time of the users whose
        CPUU ended so far on this host), never past its deadline."""
        expected = self.options.expected_seconds or (
            statistics.median(self.seen) if self.seen else 0
        )
        last = entry.asked_at
        ask_at = max(expected, last + min(MAX_GAP_S, max(MIN_GAP_S, GAP_SHARE * last)))
        return min(ask_at, float(self.options.timeout)) - elapsed_since(entry.started_at)

    def _pause(self, wait: float) -> None:
        """Wait ``wait`` seconds (the next user due a question); a second Ctrl-C cuts it short."""
        started = time.monotonic()
        if self.ctx.stopping.wait(max(0.0, wait)):
            raise Interrupted(
                f"run: abandoned by the operator (Ctrl-C) after {time.monotonic() - started:.0f}"
                f" s, with {len(self.open)} user(s)' CPUU at work"
            )

    def _fail_open(self, error: SessionError) -> None:
        """The link is gone: every open attempt ends failed with it (a retry asks each marker)."""
        for entry in list(self.open.values()):

            def lost() -> RunResult:
                raise error

            with contextlib.suppress(SessionError):  # journalled failed; the error is raised
                self.steps.finish(entry.attempt_id, "run", lost, self.status_of)
        self.open.clear()


def _theirs(run: RunResult, user: UserRun) -> RunResult:
    """The run as this user's: named (the host may not say who) and expected as asked."""
    return replace(run, user=run.user or user.user, expected=(user.who,))
