"""The per-host pipeline the runner calls: open a session, run the play's steps in order, close.

Why the journal is written around every step (before it starts and when it ends): a controller may
die at any instant, and the one thing that must never happen is CPUU running twice on a
workstation, or a collected result being lost. So the run step's scheduled-task name is journalled
before the task exists, and a later visit (a retry in the same run, or ``--resume``) that finds an
unfinished run step asks the host what became of that task instead of starting CPUU again.

Nornir's tone: everything that goes wrong on a host ends as a :class:`~cpuu_fleet.visit.outcome.HostOutcome` with a state and
an error class; only bugs escape as exceptions (the runner turns those into ``internal`` failures).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cpuu_fleet import journal as states
from cpuu_fleet.audit import AuditPolicy
from cpuu_fleet.cpuu import ExitStatus, Mode, ProfileResult
from cpuu_fleet.inputs.connection import DEFAULTS
from cpuu_fleet.inputs.payload import Payload
from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.journal import Journal, LeaseLost
from cpuu_fleet.limits import DEFAULT_LIMITS, Limits
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.visit.audit import HostAudit, read_audit
from cpuu_fleet.visit.each_user import (
    finished_runs,
    host_verdict,
    profile_results,
    run_each_user,
)
from cpuu_fleet.visit.outcome import HostOutcome, RunResult, judge, judge_audit
from cpuu_fleet.visit.session import (
    HostSession,
    Interrupted,
    SessionError,
    local_error,
)
from cpuu_fleet.visit.settle import MIN_GAP_S, SettlePacer, elapsed_since
from cpuu_fleet.visit.shelf import SessionShelf
from cpuu_fleet.visit.steps.collect import CollectResult, collect
from cpuu_fleet.visit.steps.context import HostContext, run_dir
from cpuu_fleet.visit.steps.explain import explain
from cpuu_fleet.visit.steps.preflight import preflight
from cpuu_fleet.visit.steps.push import PushPlan, plan_push, push
from cpuu_fleet.visit.steps.run import (
    StartedRun,
    cpuu_task_name,
    is_task_of,
    read_task_report,
    remove_task,
    resume_cpuu,
    run_cpuu,
    start_cpuu,
    task_active,
    task_status,
    write_cleanup_marker,
)
from cpuu_fleet.vocabulary import ErrorClass

#: Opens a session for a host; tests and the benchmark may wrap it (to count round trips).
SessionFactory = Callable[[str, Any], HostSession]


def open_session(name: str, connection: Any) -> HostSession:
    """A :class:`HostSession` from the foundation's ``ConnectionSettings``."""
    kwargs = connection.pypsrp_kwargs()
    REDACTOR.add(kwargs.get("password"))
    return HostSession(
        name,
        connection.address,
        kwargs,
        configuration_name=getattr(connection, "configuration_name", None)
        or DEFAULTS["configuration_name"],
    )


@dataclass
class PlaySettings:
    """What every host of one play in one run shares."""

    run_id: str
    journal: Journal
    reports_dir: Path
    steps: tuple[str, ...]
    run: RunOptions | None = None
    payload: Payload | None = None
    version: str | None = None
    rendered: dict[str, tuple[dict[str, bytes], dict[str, bytes]]] = field(default_factory=dict)
    """Host name → (wire files, masked files), rendered before the wave starts."""
    check: bool = False
    resume_tasks: dict[str, str] = field(default_factory=dict)
    """Host name → task name of an unfinished run step in an earlier run (``--retry-failed``
    after a run step that never ended): the host is asked about that task, never a new one."""
    session_factory: SessionFactory = open_session
    limits: Limits = DEFAULT_LIMITS
    """What each host may send back (the play's ``limits:``)."""
    cpuu_run_id: str | None = None
    """The run whose CPUU this run carries on (``--resume``); None: this run is its own."""
    cpuu_runs: tuple[str, ...] = ()
    """Every run of that same CPUU run, this one included (``Journal.cpuu_runs``)."""
    expected_users: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Host name → the user an at-logon task is for (inventory variable ``cpuu_user``)."""
    audit_policies: dict[str, AuditPolicy] = field(default_factory=dict)
    """Host name → its source/target patterns, for the ``audit`` step."""
    pacer: SettlePacer | None = None
    """When to ask detached hosts again (shared by the play's hosts); made from ``run``."""
    shelf: SessionShelf[HostSession] | None = None
    """Parked hosts' sessions kept for their settling visit (:mod:`.shelf`); None: every parked
    host's session is closed (a relay, whose next visit of the host may be on another relay).
    The play's owner closes what is left on it when the play ends."""
    guard: Callable[[str], str | None] | None = None
    """Asked before each step with its name: a text stops the visit there, before the step's
    row (a relay whose lease moved on must not act: cpuu_fleet/sites/relay.py)."""

    def __post_init__(self) -> None:
        if self.pacer is None:
            expected = self.run.expected_seconds if self.run is not None else None
            self.pacer = SettlePacer(float(expected) if expected else None)

    @property
    def detached(self) -> bool:
        """Does the run step start CPUU and release the host (``run: {attached: false}``)?
        One run per user (``users: each``) stays attached: its runs follow one another."""
        run = self.run
        return run is not None and not run.attached and run.users != "each" and not self.check

    @property
    def same_cpuu_runs(self) -> tuple[str, ...]:
        return self.cpuu_runs or (self.run_id,)


Emit = Callable[[str, str, dict[str, Any]], None]
"""``emit(kind, step, data)``: ``step_started`` / ``step_finished`` notifications for progress."""


def _no_emit(kind: str, step: str, data: dict[str, Any]) -> None:
    return None


class _StepRecorder:
    """Journals each step attempt around its execution and tells the progress display."""

    def __init__(self, play: PlaySettings, host: str, attempt: int, emit: Emit):
        self.play = play
        self.host = host
        self.attempt = attempt
        self.emit = emit
        self.attempt_id = 0
        """The journal id of the latest step attempt (rows of its own refer to it)."""

    def run(
        self,
        step: str,
        action: Callable[[], Any],
        status_of: Callable[[Any], str],
        *,
        leave_open: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Journal ``step`` around ``action``; ``leave_open(value)`` true: the attempt stays
        ``running`` (a detached run step whose CPUU runs on), for :meth:`finish` to end."""
        why = self.play.guard(step) if self.play.guard is not None else None
        if why:
            raise Interrupted(f"{step} not started: {why}")
        try:
            attempt_id = self.play.journal.start_step(
                self.play.run_id, self.host, step, self.attempt
            )
        except LeaseLost as lost:  # another controller or relay holds the host now: never act
            raise SessionError(ErrorClass.POLICY, str(lost), transient=False) from None
        self.emit("step_started", step, {"attempt": self.attempt})
        return self.finish(attempt_id, step, action, status_of, leave_open=leave_open)

    def finish(
        self,
        attempt_id: int,
        step: str,
        action: Callable[[], Any],
        status_of: Callable[[Any], str],
        *,
        leave_open: Callable[[Any], bool] | None = None,
    ) -> Any:
        """Run ``action`` and end the journal attempt ``attempt_id`` (started by :meth:`run`,
        maybe by an earlier visit or run) with what it returned or raised."""
        journal = self.play.journal
        self.attempt_id = attempt_id  # rows of the step's own (an audit's) refer to it
        started = time.monotonic()
        try:
            value = action()
        except Interrupted as error:
            # Deliberately left "running" in the journal: CPUU may still be working on the host,
            # and an unfinished run step is what --resume looks for to ask the host first.
            self._emit_end(step, "interrupted", started, error)
            raise
        except SessionError as raised:
            error = explain(raised)  # an error id an operator can act on, said as such
            self._fail(attempt_id, step, started, error)
            if error is raised:
                raise
            raise error from None
        except OSError as exc:  # our own disk (reports folder): a host result, not a bug
            error = local_error(step, exc)
            if step != "run":
                self._fail(attempt_id, step, started, error)
            raise error from exc
        except Exception as exc:
            # A bug. Any step but run is closed as failed/internal, so the journal never shows it
            # running for ever (and --resume does not take it as unfinished). A run step is left
            # "running" on purpose: the bug may have struck after the task was registered (its
            # name is journalled first) or while CPUU ran, so whether CPUU ran is unknown, and an
            # unfinished run step is exactly what makes a retry or --resume ask the host before
            # starting CPUU, never a second run.
            if step != "run":
                text = " ".join((str(exc) or "").split())[:300]
                error = SessionError(
                    ErrorClass.INTERNAL, f"{step}: {type(exc).__name__}: {text}", transient=False
                )
                self._fail(attempt_id, step, started, error)
            raise
        if leave_open is not None and leave_open(value):
            return value
        status = status_of(value)
        details = value.details() if hasattr(value, "details") else None
        journal.end_step(attempt_id, status, details=details)
        self.emit(
            "step_finished",
            step,
            {"attempt": self.attempt, "status": status, "duration_s": time.monotonic() - started},
        )
        return value

    def _fail(self, attempt_id: int, step: str, started: float, error: SessionError) -> None:
        self.play.journal.end_step(
            attempt_id,
            "failed",
            error_class=error.error_class.value,
            error_message=error.message,
            details={"error_id": error.error_id} if error.error_id else None,
        )
        self._emit_end(step, "failed", started, error)

    def _emit_end(self, step: str, status: str, started: float, error: SessionError) -> None:
        self.emit(
            "step_finished",
            step,
            {
                "attempt": self.attempt,
                "status": status,
                "error_class": error.error_class.value,
                "error_message": error.message,
                "duration_s": time.monotonic() - started,
            },
        )


def _run_status(run: RunResult) -> str:
    if run.killed:
        return "killed"
    if run.refused:
        return "failed"
    if run.no_user and not run.pending:
        return "skipped"
    return "changed" if run.ran else "ok"


def _finished_run(journal: Journal, run_ids: tuple[str, ...], host: str) -> RunResult | None:
    """A run step of this host that already ended in this CPUU run (this run, or the run a
    ``--resume`` carries on): a retry or a resume reuses it and never runs CPUU again."""
    for run_id in reversed(run_ids):
        for attempt in reversed(journal.attempts(run_id, host)):
            if attempt["step"] != "run" or attempt["status"] in ("running", "failed"):
                continue
            return RunResult.from_details(json.loads(attempt["details_json"] or "{}"))
    return None


def _run_profile_rows(play: PlaySettings, host: str) -> list[dict[str, Any]]:
    """The journal's profile rows of this host in this CPUU run (each with its user)."""
    return [row for run_id in play.same_cpuu_runs for row in play.journal.profiles(run_id, host)]


def _run_profiles(play: PlaySettings, host: str) -> list[ProfileResult]:
    """Every profile journalled for this host by this CPUU run. Collect journals each result
    file the moment it is complete, so this is the run's whole output: what an earlier attempt
    or a controller that died in collect fetched counts as much as this visit's files."""
    return profile_results(_run_profile_rows(play, host))


def visit_host(
    play: PlaySettings,
    name: str,
    connection: Any,
    *,
    attempt: int = 1,
    stopping: threading.Event | None = None,
    emit: Emit = _no_emit,
) -> HostOutcome:
    """Visit one host: session → the play's steps in order → close → the host's verdict.

    The visit's non-guard journal writes are deferred to its guard writes and its end
    (``Journal.deferred``: one round trip each on PostgreSQL, no change on SQLite), and its
    questions about the host's history (earlier run steps, pending task, collected files,
    profile rows) are answered from one read (``Journal.visit_view``)."""
    with play.journal.deferred(), play.journal.visit_view(name, play.same_cpuu_runs):
        return _Visit(play, name, connection, attempt, stopping or threading.Event(), emit).run()


class _Visit:
    """One visit of one host; each step of the play is one method."""

    def __init__(
        self,
        play: PlaySettings,
        name: str,
        connection: Any,
        attempt: int,
        stopping: threading.Event,
        emit: Emit,
    ):
        files, masked = play.rendered.get(name, ({}, {}))
        self.play = play
        self.connection = connection
        self.ctx = HostContext(
            run_id=play.run_id,
            host=name,
            journal=play.journal,
            reports_dir=play.reports_dir,
            payload=play.payload,
            rendered_files=files,
            rendered_masked=masked,
            version=play.version,
            stopping=stopping,
            cpuu_run_id=play.cpuu_run_id,
            cpuu_runs=play.same_cpuu_runs,
            expected_users=play.expected_users.get(name, ()),
        )
        self.steps = _StepRecorder(play, name, attempt, emit)
        self.details: dict[str, Any] = {}
        self.run_result: RunResult | None = None
        self.user_runs: list[RunResult] = []
        """With ``run: {users: each}``: each user's run (``run_result`` is then the one that
        decided the host's state)."""
        self.users_unfinished = False
        """The run step broke off before every user's run ended."""
        self.collected = CollectResult()
        self.audit: HostAudit | None = None
        """The latest ``audit`` step's rows (a play may audit before and after its run)."""
        self.plan: PushPlan | None = None
        self.session: HostSession
        self.unsettled: tuple[int, str, str | None] | None = None
        """A detached run step of this CPUU run that started CPUU and has not ended: this visit
        settles it (asks the host, then collects) and repeats none of the steps before run
        (read from the journal in :meth:`run`, once it is time to ask)."""
        self.task_removed = False
        """The settling question (``Status -RemoveEnded``) already unregistered the ended task."""
        self.kept_session = False
        """The session came off the play's shelf (opened by an earlier visit, maybe gone)."""

    def run(self) -> HostOutcome:
        play, ctx = self.play, self.ctx
        steps = play.steps
        wait: float | None = None
        if play.detached:
            wait = self._known_wait()
            if wait is not None and wait > 0:  # not yet time to ask: no session, no journal
                return self._not_yet_time(wait)
            self.unsettled = _unsettled_run(play, ctx.host)
        if self.unsettled is not None:
            wait = self._not_yet() if wait is None else wait
            if wait > 0:  # not yet time to ask: no session, no journal row
                return self._not_yet_time(wait)
            steps = steps[steps.index("run") :] if "run" in steps else steps
        try:
            self.session = self._connect()
        except SessionError as exc:
            return self._finish(judge(None, (), exc))
        self.session.limits = play.limits
        error: SessionError | None = None
        stopped = False
        try:
            for step in steps:
                if ctx.stopping.is_set() and step == "run" and self.unsettled is None:
                    stopped = True  # Ctrl-C: never start CPUU once the operator asked to stop
                    break
                getattr(self, f"_{step}")()
        except _Parked as parked:  # CPUU runs on: release the host until the runner asks again
            self._park_session(parked.after)
            return HostOutcome(states.RUNNING, details=self.details, settle_in=parked.after)
        except SessionError as exc:
            error = exc
        except Exception:  # a bug: the runner reports it; the host's pool must still go away
            self.session.close()
            raise
        visit = replace(self._verdict(error, stopped), details=self.details)
        self._after_cleanup(visit)
        self.session.close()
        return self._finish(visit)

    def _connect(self) -> HostSession:
        """The visit's session. A settling visit's is not journalled as a step: most of them
        only ask and park again, and a waiting host must cost one journal row, not one a poll."""
        play, ctx = self.play, self.ctx
        if self.unsettled is not None:
            kept = play.shelf.take(ctx.host) if play.shelf is not None else None
            if kept is not None:
                self.kept_session = True
                return kept
            return play.session_factory(ctx.host, self.connection).open()
        return self.steps.run(
            "connect", lambda: play.session_factory(ctx.host, self.connection).open(), _ok
        )

    def _not_yet_time(self, wait: float) -> HostOutcome:
        """A wake that asks nothing: park again (and drop a kept session put off too long)."""
        if self.play.shelf is not None:
            self.play.shelf.recheck(self.ctx.host, self._question_in(wait))
        return HostOutcome(states.RUNNING, settle_in=wait)

    def _park_session(self, wake_in: float) -> None:
        """Keep the session for the host's settling visit if it comes soon, else close it."""
        if self.play.shelf is None:
            self.session.close()
        else:
            self.play.shelf.keep(self.ctx.host, self.session, self._question_in(wake_in))

    def _question_in(self, wake_in: float) -> float:
        """Seconds until the host's next question at the soonest: its next wake, or later when
        the pacer can tell that wake will not ask (the canary has run longer than this host)."""
        pacer = self.play.pacer
        elapsed = pacer.elapsed(self.ctx.host) if pacer is not None else None
        if pacer is None or elapsed is None:
            return wake_in
        return max(wake_in, pacer.not_before(self.ctx.host, elapsed))

    def _status(self, task_name: str) -> dict[str, Any]:
        """The settling question. On a kept session that fails (its connection closed while it
        waited: an idle timeout, a middlebox), asked again once on a fresh session. Safe: the
        question starts nothing, and a message on a dead logon is refused unread (:mod:`.shelf`).
        A host that fails on the fresh session too fails as any settling visit does."""
        try:
            return task_status(self.session, task_name, remove_ended=True)
        except Interrupted:
            raise
        except SessionError as exc:
            if not self.kept_session or exc.error_class in _HOST_ANSWERED:
                raise
        self.session.drop()
        self.kept_session = False
        self.session = self._connect()
        self.session.limits = self.play.limits
        return task_status(self.session, task_name, remove_ended=True)

    def _known_wait(self) -> float | None:
        """Seconds until a host this controller parked is to be asked, without reading the
        journal (None: the pacer does not know the host, e.g. a first visit or a ``--resume``).
        A parked host wakes often (just after each of the canary's answers); each wake that is
        not yet time to ask then costs nothing but this. Asked once per visit: the pacer's
        safeguard lets one host through per period, and a second call would not."""
        pacer = self.play.pacer
        if pacer is None or self.play.run is None:
            return None
        elapsed = pacer.elapsed(self.ctx.host)
        if elapsed is None:
            return None
        return pacer.wait(self.ctx.host, elapsed, self.play.run.timeout)

    def _not_yet(self) -> float:
        """Seconds until this settling host is to be asked. Counted from what the ``Start``
        call's answer said CPUU had run (the marker, the clock the expected run time is learned
        on), then by our clock; from the run step's journal start, which came before that call,
        only after a ``--resume``."""
        assert self.unsettled is not None and self.play.run is not None
        assert self.play.pacer is not None
        elapsed = self.play.pacer.elapsed(self.ctx.host)
        if elapsed is None:
            elapsed = elapsed_since(self.unsettled[2])
        return self.play.pacer.wait(self.ctx.host, elapsed, self.play.run.timeout)  # type: ignore[union-attr]

    # ------------------------------------------------------------------------------ steps

    def _preflight(self) -> None:
        found = self.steps.run("preflight", lambda: preflight(self.ctx, self.session), _ok)
        self.details["preflight"] = found.details()
        if self.play.check and (self.play.payload or self.ctx.rendered_files):
            self.plan = plan_push(self.ctx)

    def _audit(self) -> None:
        """Read-only: where every user's profiles point; the rows journalled with the step."""
        policy = self.play.audit_policies.get(self.ctx.host, AuditPolicy())
        audit = self.steps.run(
            "audit",
            lambda: read_audit(self.session, self.ctx.host, policy, self.play.limits),
            _ok,
        )
        self.play.journal.add_audit_rows(
            self.play.run_id, self.ctx.host, self.steps.attempt_id, map(asdict, audit.rows)
        )
        self.audit = audit
        self.details["audit"] = audit.details()

    def _push(self) -> None:
        if self.play.check:
            self.plan = self.plan or plan_push(self.ctx)
            return
        pushed = self.steps.run(
            "push",
            lambda: push(self.ctx, self.session),
            lambda result: "changed" if result.changed else "ok",
        )
        self.details["push"] = pushed.details()

    def _run(self) -> None:
        if self.play.run is None or self.play.check:
            return
        if self.play.run.users == "each":
            self._ran_each(self.play.run)
            return
        if self.play.detached:
            self._ran(self._detached_run_step())
            return
        self._ran(_cpuu_run_step(self.play, self.ctx, self.session, self.steps))

    def _detached_run_step(self) -> RunResult:
        """The run step in two halves: start CPUU and release the host (:class:`_Parked`), then,
        on a later visit, settle it. The same three never-twice layers as attached: an ended run
        step is reused, an earlier CPUU run's task is asked attached as before, and the host's
        marker turns any second start into "read or wait for the first"."""
        play, ctx = self.play, self.ctx
        assert play.run is not None
        if self.unsettled is not None:
            return self._settle(self.unsettled)
        done = _finished_run(play.journal, play.same_cpuu_runs, ctx.host)
        if done is not None:
            return done
        if play.resume_tasks.get(ctx.host) or _pending_task(play, ctx.host):
            return _cpuu_run_step(play, ctx, self.session, self.steps)
        value = self.steps.run(
            "run",
            lambda: start_cpuu(ctx, self.session, play.run),  # type: ignore[arg-type]
            _run_status,
            leave_open=lambda found: isinstance(found, StartedRun),
        )
        if isinstance(value, StartedRun):
            self.details["run"] = {"task_name": value.task_name, "started_at": value.started_at}
            elapsed = elapsed_since(value.started_at)
            play.pacer.started(ctx.host, elapsed)  # type: ignore[union-attr]
            raise _Parked(self._next_gap(elapsed))
        return value

    def _settle(self, unsettled: tuple[int, str, str | None]) -> RunResult:
        """Ask the host (one ``Status``) whether CPUU ended; still at work and not yet due:
        park again. Ended: its report is the run step's end. Due (past its deadline, or never
        came up): the ``Run`` call, which kills CPUU on the host's own deadline."""
        play, ctx, session = self.play, self.ctx, self.session
        attempt_id, started_in, _ = unsettled
        options, pacer = play.run, play.pacer
        assert options is not None and pacer is not None
        task_name = cpuu_task_name(ctx, options.mode)
        status = self._status(task_name)
        session = self.session
        self.task_removed = status.get("Removed") is True
        elapsed = elapsed_since(_text_of(status.get("StartedAt")))
        active = task_active(status)
        has_run = status.get("LastRunTime") is not None
        if active and not pacer.due(elapsed, options.timeout, has_run):
            pacer.asked(ctx.host, elapsed)
            self.details["run"] = {"task_name": task_name, "started_at": status.get("StartedAt")}
            raise _Parked(self._next_gap(elapsed))

        def action() -> RunResult:
            if active:
                pacer.settled(ctx.host, None)  # killed or never came up: no run time to learn
                run = run_cpuu(ctx, session, options, task_name)
            else:
                run = read_task_report(status, task_name, options.when_no_user, elapsed)
                pacer.settled(ctx.host, None if run.killed else elapsed)
                if run.user:
                    ctx.user = run.user
            # Started by this run: not a resume, whatever the host's report calls it.
            resumed = None if started_in == play.run_id else run.resumed or "finished"
            return replace(run, resumed=resumed, seconds=round(elapsed, 3))

        if started_in == play.run_id:  # one row from CPUU's start to its end
            return self.steps.finish(attempt_id, "run", action, _run_status)
        # A --resume: its own row says how the run it carries on ended (as attached resumes do).
        return self.steps.run("run", action, _run_status)

    def _next_gap(self, elapsed: float) -> float:
        """When to wake this host again (at least a second: the task was just seen at work)."""
        assert self.play.run is not None and self.play.pacer is not None
        wait = self.play.pacer.wait(self.ctx.host, elapsed, self.play.run.timeout)
        return max(wait, MIN_GAP_S)

    def _ran_each(self, options: RunOptions) -> None:
        """One CPUU run per logged-on user (:mod:`.each_user`); each task removed once ended."""
        play, ctx = self.play, self.ctx
        earlier = finished_runs(play.journal, play.same_cpuu_runs, ctx.host)
        runs = self.user_runs
        self.users_unfinished = True
        run_each_user(ctx, self.session, options, earlier, self.steps, _run_status, runs)
        self.users_unfinished = False
        self.run_result = runs[0] if runs else None
        self.details["run"] = [run.details() for run in runs]
        for run in runs:
            if run.ran:
                _remove_task_quietly(self.session, run, self.details)

    def _collect(self) -> None:
        if self.play.check:
            return
        if self.user_runs:
            self._collect_each()
            return
        if self.play.run is None and self.run_result is None:
            picked = _pick_up_pending(self.play, self.ctx, self.session, self.steps)
            if picked is not None:
                self._ran(picked)
        run = self.run_result
        if run is not None and not run.ran:
            return  # nothing ran: no new results to fetch
        try:
            self.steps.run(
                "collect",
                lambda: collect(
                    self.ctx,
                    self.session,
                    into=self.collected,
                    since=run.started_at if run else None,
                    directory=self._results_folder(),
                ),
                lambda result: "changed" if result.files else "ok",
            )
        finally:  # what was collected before a failure is journalled and reported too
            self.details["collect"] = self.collected.details()

    def _collect_each(self) -> None:
        """Each user's results from that user's run folder, journalled as that user's."""
        ran = [run for run in self.user_runs if run.ran]
        if not ran:
            return

        def action() -> CollectResult:
            for run in ran:
                self.ctx.user = run.user
                collect(
                    self.ctx,
                    self.session,
                    into=self.collected,
                    since=run.started_at,
                    directory=run_dir(run.task_name),
                )
            return self.collected

        try:
            self.steps.run("collect", action, lambda result: "changed" if result.files else "ok")
        finally:
            self.details["collect"] = self.collected.details()

    def _results_folder(self) -> str | None:
        """Where CPUU wrote the results to collect: the folder of this visit's run step, else of
        the host's latest run step in the journal (``cpuu-fleet run`` then ``collect``); None
        (the staging folder) when no run step is known."""
        run = self.run_result
        task = run.task_name if run is not None else self.play.journal.latest_task(self.ctx.host)
        return run_dir(task) if task else None

    def _ran(self, run: RunResult) -> None:
        self.run_result = run
        self.details["run"] = run.details()
        if run.ran and not self.task_removed:
            _remove_task_quietly(self.session, run, self.details)

    # ------------------------------------------------------------------------------ the end

    def _verdict(self, error: SessionError | None, stopped: bool) -> HostOutcome:
        if self.play.check and self.plan is not None:
            self.details["would_push"] = {
                "files": [f.relative for f in self.plan.send],
                "bytes": self.plan.bytes_to_send,
                "skipped": len(self.plan.skip),
            }
            if self.play.run is not None:
                self.details["would_run"] = self.play.run.mode.value
        ran = self.run_result is not None and self.run_result.ran
        if self.user_runs:
            rows = _run_profile_rows(self.play, self.ctx.host)
            verdict, self.run_result = host_verdict(
                self.user_runs, rows, error, unfinished=self.users_unfinished
            )
            self.ctx.user = ", ".join(dict.fromkeys(r.user for r in self.user_runs if r.user))
        elif self.audit is not None and self.run_result is None and error is None:
            verdict = judge_audit(self.audit.rows)  # no run: what the audit predicts
        else:
            profiles = _run_profiles(self.play, self.ctx.host) if ran else self.collected.profiles
            verdict = judge(self.run_result, profiles, error, check_mode=self.play.check)
        if stopped and error is None:
            verdict = HostOutcome(states.NOT_RUN, None, "stopped (Ctrl-C) before CPUU was started")
        problems = self.collected.problems
        if problems:
            note = f"{len(problems)} result-file problem(s), e.g. {problems[0]}"
            message = f"{verdict.error_message}; {note}" if verdict.error_message else note
            verdict = replace(verdict, error_message=message)
        return verdict

    def _after_cleanup(self, visit: HostOutcome) -> None:
        """After a successful Cleanup, tell the host itself (a later Undo is refused there too)."""
        run = self.run_result
        if (
            self.play.run is None
            or self.play.run.mode is not Mode.CLEANUP
            or run is None
            or not run.ran
            or visit.state not in (states.SUCCEEDED, states.PARTIAL)
        ):
            return
        try:
            write_cleanup_marker(self.ctx, self.session, run.exit_code)
        except SessionError as exc:
            visit.details["cleanup_marker"] = f"not written: {exc.message}"

    def _finish(self, visit: HostOutcome) -> HostOutcome:
        """The journal host columns the runner stores with the final state."""
        ctx, run = self.ctx, self.run_result
        if self.unsettled is not None and self.play.pacer is not None:
            # A settling visit that failed (unreachable, dropped) before its run step ended: the
            # pacer forgets the host, so that a canary gone away holds no other host back.
            self.play.pacer.settled(ctx.host, None)
        fields: dict[str, Any] = {}
        if ctx.user:
            fields["user"] = ctx.user
        if run is not None and run.exit_code is not None:
            fields["exit_code"] = run.exit_code
            fields["exit_flags"] = "|".join(ExitStatus(run.exit_code).names())
            fields["killed"] = int(run.killed)
        if ctx.host_dir.exists():
            fields["result_dir"] = ctx.host_dir.relative_to(self.play.reports_dir).as_posix()
        visit.host_fields.update(fields)
        return visit


_HOST_ANSWERED = frozenset({ErrorClass.REMOTE, ErrorClass.LIMIT, ErrorClass.LOCAL})
"""Failures of a settling question that the host's own answer caused: a fresh session would
hear the same, so a kept session is not blamed for them."""


def _ok(_: Any) -> str:
    return "ok"


class _Parked(Exception):
    """A detached run step's CPUU is still at work: end this visit, ask again ``after`` s."""

    def __init__(self, after: float):
        super().__init__(f"ask again in {after:.1f} s")
        self.after = after


def _text_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _unsettled_run(play: PlaySettings, host: str) -> tuple[int, str, str | None] | None:
    """The journal attempt of this host's run step in this CPUU run (this run, or the runs a
    ``--resume`` carries on) that started CPUU and never ended, if the latest run step is one:
    its id, the run it belongs to, and when it started (our clock)."""
    for run_id in reversed(play.same_cpuu_runs):
        runs = [a for a in play.journal.attempts(run_id, host) if a["step"] == "run"]
        if runs:
            latest = runs[-1]
            if latest["status"] != "running":
                return None
            return int(latest["id"]), run_id, latest["started_at"]
    return None


def _cpuu_run_step(
    play: PlaySettings, ctx: HostContext, session: HostSession, steps: _StepRecorder
) -> RunResult:
    """The run step, never starting CPUU a second time for this host and this run.

    The one place that decides, in order: a run step that already ended in this CPUU run (a
    retry after a later step failed, a ``--resume`` after a kill in collect) is reused from the
    journal without asking the host; an earlier run's unfinished run step (``--retry-failed``)
    is asked about under its own task name; an at-logon task left pending by an earlier run is
    adopted if it ran (same mode) or unregistered if it did not, so that two at-logon tasks never
    wait for the same logon. Otherwise the host is told to run CPUU under this run's task name,
    and the host itself refuses a second start: its marker (``run-task``) turns the call into
    "wait for it" or "read its exit code" when the run was claimed before, by anybody.
    """
    assert play.run is not None
    options = play.run
    mode = options.mode
    done = _finished_run(play.journal, play.same_cpuu_runs, ctx.host)
    if done is not None:
        return done
    earlier = play.resume_tasks.get(ctx.host)
    pending = None if earlier else _pending_task(play, ctx.host)

    def action() -> RunResult:
        if earlier:
            return resume_cpuu(ctx, session, options, earlier)
        if pending:
            adopted = _at_logon_result(session, pending, ctx)
            if adopted is not None and adopted.ran and is_task_of(pending, mode):
                return adopted
            if adopted is not None:
                remove_task(session, pending)
        return run_cpuu(ctx, session, options)

    return steps.run("run", action, _run_status)


def _pending_task(play: PlaySettings, host: str) -> str | None:
    """The at-logon task of this host's latest earlier run step, if that left the host pending
    (runs of this same CPUU run are not "earlier": their task is this run's own)."""
    return play.journal.pending_task(host, excluding=play.same_cpuu_runs)


def _at_logon_result(session: HostSession, task_name: str, ctx: HostContext) -> RunResult | None:
    """What became of an at-logon task: None when it is gone from the host, a pending result when
    it has not run (or runs right now), else its exit code (killed or not)."""
    status = task_status(session, task_name)
    if not status.get("Exists"):
        return None
    run = read_task_report(status, task_name, "at_logon", 0.0, "at_logon")
    # Who ran it: the one user the task is for (its trigger and principal are that user's SID);
    # a task an older cpuu-fleet registered for BUILTIN\Users ran for whoever logged on.
    user = run.user if run.user and run.user.casefold() != "builtin\\users" else ctx.user
    if user and run.ran:
        ctx.user = user
    # Whom it was for (cpuu_user): a run by anybody else never marks them done (outcome.judge).
    return replace(
        run, user=user if run.ran else None, seconds=None, expected=tuple(ctx.expected_users)
    )


def _pick_up_pending(
    play: PlaySettings, ctx: HostContext, session: HostSession, steps: _StepRecorder
) -> RunResult | None:
    """A collect on a host left pending by an at-logon task: did CPUU run since? Take its exit
    code (the task is then removed), or keep the host pending."""
    task_name = _pending_task(play, ctx.host)
    if task_name is None:
        return None

    def action() -> RunResult:
        found = _at_logon_result(session, task_name, ctx)
        if found is None:
            raise SessionError(
                ErrorClass.REMOTE,
                f"the at-logon task {task_name!r} is gone from the host (removed by hand?)",
                transient=False,
            )
        return found

    play.journal.set_host(play.run_id, ctx.host, task_name=task_name)
    return steps.run("run", action, _run_status)


def _remove_task_quietly(session: HostSession, run: RunResult, details: dict[str, Any]) -> None:
    """Unregister a finished one-shot task; a failure here is noted, never fatal."""
    if run.pending or not run.task_name:
        return
    try:
        remove_task(session, run.task_name)
    except SessionError as exc:
        details["task_removal"] = f"failed: {exc.message}"
