"""The wave runner: plays → serial batches → hosts on ``forks`` worker threads, with retries.

Nornir's tone: what happens on one workstation is that host's *result*, never an exception that
stops the wave. The host's work is a plain callable supplied by the caller (the engine opens the
WinRM session and runs the steps); the runner owns everything around it:

* batches in order, each finished before the next starts (Ansible's ``serial``);
* at most ``forks`` hosts at once; a host's exception becomes a FAILED outcome (``internal``) with
  its traceback in the run log, and the other hosts carry on;
* transient failures (unreachable, timeout, dropped connection) tried again after an exponential
  backoff, without holding a worker while waiting; permanent ones never;
* after each batch, two stop rules, each naming itself in the run's stop reason: Ansible's
  ``max_fail_percentage`` over the batch's *reached* hosts, and ``max_unreachable_percentage``
  over the play's hosts so far (unreachable hosts counted apart: a desktop fleet always has some
  off; see :func:`~cpuu_fleet.inputs.playbook.max_unreachable_exceeded`). Later batches are not
  started and their hosts are recorded as not_run, with the reason. A ``--check`` plan
  (``RunPlan.stops`` false) is never stopped by them;
* Ctrl-C: the first stops starting hosts and lets running ones finish; the second also tells the
  running host work to stop (``HostJob.stopping``) and, after a grace period, leaves hosts that
  are still busy as ``running`` in the journal, which is exactly what ``--resume`` looks for;
  SIGTERM and SIGHUP each count as one Ctrl-C (see :data:`INTERRUPT_SIGNALS`);
* the journal's host rows and the run's status are written here; step attempts by the host work.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cpuu_fleet.engine.events import (
    RUN_LOG,
    BatchFinished,
    BatchPlan,
    BatchStarted,
    Event,
    Fanout,
    HostFinished,
    HostStarted,
    RunFinished,
    RunInterrupted,
    RunStarted,
    StepFinished,
    StepStarted,
)
from cpuu_fleet.engine.planning import (
    RETRY_FILE,
    PlannedHost,
    PlayPlan,
    ResumeHint,
    RunPlan,
    write_retry_file,
)
from cpuu_fleet.engine.run_log import RunLogProcessor
from cpuu_fleet.errors import write_fault
from cpuu_fleet.inputs.playbook import Play, max_fail_exceeded, max_unreachable_exceeded
from cpuu_fleet.journal import (
    FAILED,
    FINAL_STATES,
    NOT_RUN,
    QUEUED,
    RUNNING,
    UNREACHABLE,
    HostEntry,
    Journal,
    utcnow,
)
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.visit.outcome import HostOutcome

# Run statuses (the journal's ``runs.status``).
COMPLETED = "completed"
STOPPED = "stopped"  # max_fail_percentage or max_unreachable_percentage
INTERRUPTED = "interrupted"  # Ctrl-C

#: The signals that interrupt a run like Ctrl-C, each counting as one press. SIGTERM (``kill``,
#: ``systemctl stop``, a CI job cancelled) and SIGHUP (the SSH session dropped) used to kill the
#: controller on the spot, which is exactly the crash the journal must otherwise survive: CPUU
#: may be mid-run on hundreds of workstations, and only a controller that lets its run steps end
#: can journal how they ended (exit code, killed on deadline), so that ``--resume`` never has to
#: guess. So a first SIGTERM drains (no new hosts, the running ones finish) instead of aborting;
#: a second one (or Ctrl-C) aborts after the grace period, and whatever sends SIGKILL after its
#: own timeout (systemd's 90 s) still meets a journal that says ``running`` where it must.
INTERRUPT_SIGNALS: dict[str, str] = {"SIGINT": "Ctrl-C", "SIGTERM": "SIGTERM", "SIGHUP": "SIGHUP"}

INTERNAL = "internal"  # error_class of an exception inside the host work
LOCAL = "local"  # error_class of a host whose results the controller could not write
#: The start of a run's stop reason when the controller could not write (see _controller_fault).
FAULT_PREFIX = "the controller could not write"
INTERRUPTED_CLASS = "interrupted"  # error_class of a host abandoned on the second Ctrl-C
RETRYABLE_STATES = (FAILED, UNREACHABLE)

# Host columns the host work may fill through HostOutcome.host_fields; the runner owns the rest.
HOST_FIELDS_FROM_WORK = frozenset(
    {"user", "exit_code", "exit_flags", "killed", "result_dir", "task_name", "address"}
)


@dataclass
class HostJob:
    """Everything the host work needs for one attempt on one host."""

    run_id: str
    host: Any
    """The inventory host (``name``, ``groups``, ``vars``)."""
    play: Play
    batch: int
    wave: str
    attempt: int
    stopping: threading.Event
    """Set on the second Ctrl-C: stop at the next safe point (between steps, in waits) and return
    an outcome. A CPUU already started may be left running: resume will ask the host."""
    draining: threading.Event
    """Set on the first Ctrl-C: no new hosts start; the running ones should finish normally."""
    journal: Journal
    emitter: Callable[[Event], None]
    previous: HostOutcome | None = None
    """The outcome of the previous attempt on this host in this run, on a retry."""
    resume: ResumeHint | None = None
    """Set on ``--resume`` when this host's run step never ended: ask the host before running."""

    @property
    def name(self) -> str:
        return str(self.host.name)

    def emit(self, event: Event) -> None:
        self.emitter(event)

    def step_started(self, step: str) -> None:
        """Announce a step (call after ``journal.start_step``)."""
        self.emit(StepStarted(self.run_id, host=self.name, step=step, attempt=self.attempt))

    def step_finished(
        self,
        step: str,
        status: str,
        *,
        error_class: str | None = None,
        error_message: str | None = None,
        duration_s: float | None = None,
    ) -> None:
        self.emit(
            StepFinished(
                self.run_id,
                host=self.name,
                step=step,
                attempt=self.attempt,
                status=status,
                error_class=error_class,
                error_message=error_message,
                duration_s=duration_s,
            )
        )


HostWork = Callable[[HostJob], HostOutcome]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    status: str
    stop_reason: str | None
    states: dict[str, str]
    """Each targeted host's final state in this run."""
    outcomes: dict[str, HostOutcome]
    """The final outcome of each host the run started."""
    retry_file: Path
    run_dir: Path
    fault: str | None = None
    """Why the controller could not write (disk full, read-only folder), if it could not."""
    recorded: bool = True
    """False when the journal itself could not record how the run ended (it still says running)."""

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(self.states.values()))


@dataclass
class _Task:
    planned: PlannedHost
    attempt: int = 1
    previous: HostOutcome | None = None
    started_at: str | None = None
    first_monotonic: float | None = None
    parked: bool = False
    """A detached host whose CPUU runs: its next call settles it (no new HostStarted)."""
    began: float | None = None
    """When this attempt began (monotonic), kept while the host is parked."""
    details: dict[str, Any] = field(default_factory=dict)
    """What the visits of this attempt that parked the host reported (preflight, push): the
    settling visit's outcome carries them on, so the host's details are whole."""


@dataclass
class _Batch:
    """One batch's shared state between the dispatcher and its workers."""

    play: Play
    number: int
    hosts: tuple[PlannedHost, ...]
    cond: threading.Condition = field(default_factory=threading.Condition)
    heap: list[tuple[float, int, _Task]] = field(default_factory=list)
    in_flight: dict[str, _Task] = field(default_factory=dict)
    finals: dict[str, HostOutcome] = field(default_factory=dict)
    abandoned: bool = False
    dropped: list[_Task] = field(default_factory=list)
    """Hosts taken off the heap by a drain (not started, or waiting for a retry)."""


class Runner:
    """Executes a :class:`~cpuu_fleet.engine.planning.RunPlan` with a caller-supplied host work.

    ``retry_backoff`` overrides every play's backoff (tests inject a tiny one). ``abort_grace_s``
    is how long the second Ctrl-C waits for running hosts before leaving them to ``--resume``.

    The run's own files are the runner's job, whoever calls it (the CLI, ``run_play()`` from
    Python, a test): ``run.log`` (a :class:`~cpuu_fleet.engine.run_log.RunLogProcessor` ahead
    of the caller's ``processors``, which only present) and ``failed.retry``.
    """

    def __init__(
        self,
        journal: Journal,
        reports_dir: str | Path,
        processors: Iterable[Any] = (),
        *,
        handle_sigint: bool = True,
        retry_backoff: float | None = None,
        abort_grace_s: float = 30.0,
        on_fault: Callable[[], None] | None = None,
    ):
        self.journal = journal
        self.reports_dir = Path(reports_dir)
        self.events = Fanout([RunLogProcessor(self.reports_dir), *processors])
        self.handle_sigint = handle_sigint
        self.retry_backoff = retry_backoff
        self.abort_grace_s = abort_grace_s
        self.on_fault = on_fault
        """Called once, at the first controller write fault (the engine frees its disk reserve)."""
        self.draining = threading.Event()
        self.stopping = threading.Event()
        self._interrupts = 0
        self._interrupt_lock = threading.Lock()
        self._cause = "Ctrl-C"  # what interrupted the run first, for its stop reason
        self._signals_received: list[str] = []  # appended by the signal handler only (no locks)
        self._signals_handled = 0
        self._seq = itertools.count()
        self._run_id = ""
        self._abandon_now = False
        self.fault: str | None = None
        """Set by the first controller write fault: the run drains and ends interrupted."""

    # ---------------------------------------------------------------------------- interruption

    def interrupt(self, cause: str = "Ctrl-C") -> None:
        """What Ctrl-C does; callable from any thread (not from a signal handler).

        First call: stop starting hosts. Second: also ask running host work to stop, and leave
        hosts still busy after ``abort_grace_s`` to ``--resume``. Third: do not wait for the grace.
        ``cause`` names what interrupted (``Ctrl-C``, ``SIGTERM``, ``SIGHUP``) in the messages.
        """
        with self._interrupt_lock:
            self._interrupts += 1
            level = self._interrupts
            if level == 1:
                self._cause = cause
        if level == 1:
            self.draining.set()
            message = (
                f"{cause}: no new hosts will start; waiting for the running ones to finish"
                " (Ctrl-C again to abort them)"
            )
        elif level == 2:
            self.draining.set()
            self.stopping.set()
            message = (
                f"{cause} again: aborting the running hosts; a CPUU already started is left to"
                " finish on the workstation (--resume asks it)"
            )
        else:
            # Third and later: the operator will not wait for the grace period.
            self._abandon_now = True
            message = f"{cause} a third time: leaving the busy hosts to --resume now"
        RUN_LOG.warning(message, extra={"run_id": self._run_id})
        if self._run_id:
            self.events.emit(RunInterrupted(self._run_id, level=level, message=message))

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        self._signals_received.append(INTERRUPT_SIGNALS.get(name, name))

    def _poll_signals(self) -> None:
        while self._signals_handled < len(self._signals_received):
            cause = self._signals_received[self._signals_handled]
            self._signals_handled += 1
            self.interrupt(cause)

    # ---------------------------------------------------------------------------- the run

    def run(
        self,
        plan: RunPlan,
        work: HostWork,
        *,
        run_id: str | None = None,
        **run_fields: Any,
    ) -> RunSummary:
        """Run every play of the plan; returns once the journal says how each host ended.

        ``run_id``: a run the caller already started in the journal; otherwise one is started
        with ``run_fields`` (kind, parent_run, playbook, inventory, limit_pattern, mode, ...).
        """
        if run_id is None:
            run_id = self.journal.start_run(**run_fields)
        self._run_id = run_id
        run_dir = self.reports_dir / run_id
        began = time.monotonic()
        names = plan.host_names
        states: dict[str, str] = {}
        outcomes: dict[str, HostOutcome] = {}
        previous_handler = self._install_sigint()
        status, stop_reason = COMPLETED, None
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._register_hosts(run_id, plan)
            self.events.emit(
                RunStarted(
                    run_id,
                    run_kind=str(run_fields.get("kind", "play")),
                    playbook=str(plan.playbook.path) if plan.playbook else None,
                    total_hosts=len(names),
                    batches=tuple(
                        BatchPlan(pp.play.name, n, len(b), pp.play.forks)
                        for pp in plan.plays
                        for n, b in enumerate(pp.batches, 1)
                    ),
                    parent_run=run_fields.get("parent_run"),
                )
            )
            for index, play_plan in enumerate(plan.plays):
                more = any(p.batches for p in plan.plays[index + 1 :])
                stop_reason = self._run_play(
                    run_id, play_plan, work, states, outcomes, more, stops=plan.stops
                )
                if stop_reason or self.draining.is_set():
                    break
            if self.draining.is_set():
                status = INTERRUPTED
                left = [n for n in names if n not in states]
                stop_reason = self._interrupt_reason() + (
                    f": {len(left)} host(s) not started" if left else ""
                )
            elif stop_reason:
                status = STOPPED
            self._mark_not_run(run_id, plan, states, stop_reason)
        except BaseException as exc:
            # A bug, a hard stop or a full disk in the runner itself: tell the workers to wind
            # down and leave the journal saying "interrupted", never "completed". Hosts still
            # busy stay running.
            self.draining.set()
            self.stopping.set()
            status = INTERRUPTED
            why = write_fault(exc)
            if why is None:
                stop_reason = f"runner aborted: {type(exc).__name__}: {exc}"
                RUN_LOG.exception("runner aborted", extra={"run_id": run_id})
                with contextlib.suppress(Exception):
                    self._mark_not_run(run_id, plan, states, stop_reason)
                raise
            self._controller_fault(why)  # reported by the caller, as one line (exit 4)
        finally:
            self._restore_sigint(previous_handler)
            retry_file = run_dir / RETRY_FILE
            self._guarded_write(lambda: write_retry_file(self.journal, run_id, run_dir))
            if self.fault is not None and not (stop_reason or "").startswith(FAULT_PREFIX):
                status = INTERRUPTED  # the fault struck after the plays, or in the runner itself
                stop_reason = self._interrupt_reason()
            recorded = self._guarded_write(
                lambda: self.journal.finish_run(run_id, status, stop_reason)
            )
            self.events.emit(
                RunFinished(
                    run_id,
                    status=status,
                    stop_reason=stop_reason,
                    counts=self.journal.state_counts(run_id),
                    duration_s=round(time.monotonic() - began, 3),
                    retry_file=str(retry_file),
                )
            )
        return RunSummary(
            run_id=run_id,
            status=status,
            stop_reason=stop_reason,
            states=states,
            outcomes=outcomes,
            retry_file=retry_file,
            run_dir=run_dir,
            fault=self.fault,
            recorded=recorded,
        )

    # ---------------------------------------------------------------------------- controller faults

    def _controller_fault(self, why: str) -> None:
        """The controller cannot write (disk full, read-only folder): stop starting hosts.

        Like a first Ctrl-C: hosts already running finish as well as they can (a CPUU already
        started is waited for, so its end is journalled if anything still can be), no new host
        starts, and the run ends ``interrupted`` for ``--resume`` once there is room. Starting
        more hosts would run CPUU on workstations whose results could not be kept.
        """
        with self._interrupt_lock:
            if self.fault is not None:
                return
            self.fault = why
        self.draining.set()
        if self.on_fault is not None:
            with contextlib.suppress(Exception):
                self.on_fault()
        message = f"{FAULT_PREFIX} ({why}): no new hosts will start"
        RUN_LOG.error(message, extra={"run_id": self._run_id})
        if self._run_id:
            self.events.emit(RunInterrupted(self._run_id, level=1, message=message))

    def _interrupt_reason(self) -> str:
        if self.fault is not None:
            return f"{FAULT_PREFIX} ({self.fault})"
        return f"interrupted by {self._cause}"

    def _guarded_write(self, write: Callable[[], Any]) -> bool:
        """Run one bookkeeping write; a full disk becomes the run's fault, never a traceback."""
        try:
            write()
        except Exception as exc:
            why = write_fault(exc)
            if why is None:
                raise
            self._controller_fault(why)
            return False
        return True

    def _register_hosts(self, run_id: str, plan: RunPlan) -> None:
        entries: dict[str, HostEntry] = {}
        for play_plan in plan.plays:
            for host in play_plan.hosts:
                entries.setdefault(
                    host.name,
                    HostEntry(
                        host=host.name,
                        play=play_plan.play.name,
                        wave=host.wave,
                        batch=host.batch,
                        address=host.address,
                        groups=host.groups,
                    ),
                )
        with self.journal.batch():
            self.journal.add_hosts(run_id, entries.values())

    def _run_play(
        self,
        run_id: str,
        play_plan: PlayPlan,
        work: HostWork,
        states: dict[str, str],
        outcomes: dict[str, HostOutcome],
        more_after: bool,
        *,
        stops: bool = True,
    ) -> str | None:
        """Run a play's batches; returns why the run must stop, or None.

        A threshold crossed by the very last batch of the run stops nothing, so it is not a stop;
        nor does any threshold when ``stops`` is false (a ``--check``).
        """
        play = play_plan.play
        total = len(play_plan.batches)
        play_hosts = len(play_plan.hosts)
        unreachable_so_far = 0
        for position, planned_batch in enumerate(play_plan.batches, 1):
            self._poll_signals()
            if self.draining.is_set():
                return None
            # Ansible's tone: a host that failed in an earlier play sits out the later ones.
            hosts = tuple(h for h in planned_batch if states.get(h.name) not in RETRYABLE_STATES)
            if not hosts:
                continue
            number = hosts[0].batch
            self.events.emit(
                BatchStarted(
                    run_id,
                    play=play.name,
                    batch=number,
                    batches=total,
                    hosts=tuple(h.name for h in hosts),
                )
            )
            batch = _Batch(play=play, number=number, hosts=hosts)
            self._run_batch(run_id, batch, work)
            for name, outcome in batch.finals.items():
                states[name] = outcome.state
                outcomes[name] = outcome
            failed = sum(1 for o in batch.finals.values() if o.state == FAILED)
            unreachable = sum(1 for o in batch.finals.values() if o.state == UNREACHABLE)
            unreachable_so_far += unreachable
            reason = None
            last = position == total and not more_after
            if stops and not last and not self.draining.is_set():
                reason = _stop_reason(
                    play, number, len(hosts), failed, unreachable, unreachable_so_far, play_hosts
                )
            counts = dict(Counter(outcome.state for outcome in batch.finals.values()))
            self.events.emit(
                BatchFinished(
                    run_id,
                    play=play.name,
                    batch=number,
                    size=len(hosts),
                    counts=counts,
                    failed=failed,
                    unreachable=unreachable,
                    stop_reason=reason,
                )
            )
            if reason:
                RUN_LOG.warning(reason, extra={"run_id": run_id})
                return reason
        return None

    def _mark_not_run(
        self, run_id: str, plan: RunPlan, states: dict[str, str], reason: str | None
    ) -> None:
        """Hosts the run never got to: not_run in the journal, with the reason."""
        message = f"not started: {reason}" if reason else "not started"
        waiting = []
        for play_plan in plan.plays:
            for host in play_plan.hosts:
                if host.name not in states:
                    states[host.name] = NOT_RUN
                    waiting.append((play_plan.play, host))
        if not waiting:
            return
        with self.journal.batch():
            for _play, host in waiting:
                self.journal.set_host(
                    run_id, host.name, state=NOT_RUN, error_message=message, attempts=0
                )
        for play, host in waiting:
            self.events.emit(
                HostFinished(
                    run_id,
                    host=host.name,
                    play=play.name,
                    batch=host.batch,
                    wave=host.wave,
                    state=NOT_RUN,
                    attempt=0,
                    error_message=message,
                )
            )

    # ---------------------------------------------------------------------------- one batch

    def _run_batch(self, run_id: str, batch: _Batch, work: HostWork) -> None:
        for planned in batch.hosts:
            heapq.heappush(batch.heap, (0.0, next(self._seq), _Task(planned)))
        workers = [
            threading.Thread(
                target=self._worker,
                args=(run_id, batch, work),
                name=f"cpuu-fleet-worker-{n}",
                daemon=True,  # a host stuck after the second Ctrl-C must not keep the process
            )
            for n in range(min(batch.play.forks, len(batch.hosts)))
        ]
        for thread in workers:
            thread.start()
        notified_drain = False
        abort_deadline: float | None = None
        while True:
            alive = [t for t in workers if t.is_alive()]
            if not alive:
                break
            try:
                alive[0].join(timeout=0.05)
            except KeyboardInterrupt:
                # Our handler is not installed (handle_sigint=False, or another one replaced it):
                # a Ctrl-C that arrives as an exception still takes the graceful path.
                self.interrupt()
            self._poll_signals()
            if self.draining.is_set() and not notified_drain:
                notified_drain = True
                with batch.cond:
                    batch.cond.notify_all()
            if self.stopping.is_set():
                if abort_deadline is None:
                    abort_deadline = time.monotonic() + self.abort_grace_s
                elif self._abandon_now or time.monotonic() >= abort_deadline:
                    self._abandon(run_id, batch)
                    break
        self._finish_leftovers(run_id, batch)

    def _worker(self, run_id: str, batch: _Batch, work: HostWork) -> None:
        while True:
            with batch.cond:
                task = self._next_task(batch)
                if task is None:
                    return
                batch.in_flight[task.planned.name] = task
            try:
                self._attempt(run_id, batch, task, work)
            finally:
                with batch.cond:
                    batch.in_flight.pop(task.planned.name, None)
                    batch.cond.notify_all()

    def _next_task(self, batch: _Batch) -> _Task | None:
        """Called with the batch's lock held: the next host that may start, or None when done.

        After a first Ctrl-C only parked hosts (detached, CPUU started) are still taken, to be
        settled; after a second none are: they stay ``running`` for ``--resume``."""
        while True:
            if self.stopping.is_set() or batch.abandoned:
                return None
            if self.draining.is_set():
                self._drop_unstarted(batch)
            if not batch.heap:
                if not batch.in_flight:
                    return None
                batch.cond.wait()  # a running host may come back for a retry
                continue
            ready_at, _, task = batch.heap[0]
            delay = ready_at - time.monotonic()
            if delay <= 0:
                heapq.heappop(batch.heap)
                return task
            batch.cond.wait(delay)

    @staticmethod
    def _drop_unstarted(batch: _Batch) -> None:
        """A drain: keep only parked hosts on the heap (called with the batch's lock held)."""
        if all(task.parked for _, _, task in batch.heap):
            return
        batch.dropped.extend(task for _, _, task in batch.heap if not task.parked)
        batch.heap[:] = [entry for entry in batch.heap if entry[2].parked]
        heapq.heapify(batch.heap)

    def _attempt(self, run_id: str, batch: _Batch, task: _Task, work: HostWork) -> None:
        """One attempt at a host, its journal writes deferred to its guard writes and its end
        (``Journal.deferred``: the host row's ``running`` goes with the first step's write-ahead
        row on PostgreSQL; no change on SQLite)."""
        with self.journal.deferred():
            self._attempt_now(run_id, batch, task, work)
            self._send_held(run_id, task.planned.name)

    def _send_held(self, run_id: str, name: str) -> None:
        """The attempt's held journal writes, sent: a failure is logged (or a controller fault),
        like any host row write, and the wave goes on."""
        try:
            self.journal.flush()
        except Exception as exc:
            self._journal_failed(run_id, name, exc)

    def _attempt_now(self, run_id: str, batch: _Batch, task: _Task, work: HostWork) -> None:
        if task.started_at is None:
            task.started_at = utcnow()
            task.first_monotonic = time.monotonic()
        if not task.parked:
            task.began = time.monotonic()
            self._announce(run_id, batch, task)
        outcome = self._call(run_id, work, self._job(run_id, batch, task))
        began = task.began if task.began is not None else time.monotonic()
        duration = round(time.monotonic() - began, 3)
        if task.details:
            outcome = replace(outcome, details={**task.details, **outcome.details})
        if outcome.settle_in is not None:
            # Detached: CPUU runs on the host, which is released. A timer, not a fork.
            task.parked = True
            task.details = outcome.details
            with batch.cond:
                ready = time.monotonic() + max(0.0, outcome.settle_in)
                heapq.heappush(batch.heap, (ready, next(self._seq), task))
                batch.cond.notify_all()
            return
        self._judge_attempt(run_id, batch, task, outcome, duration)

    def _announce(self, run_id: str, batch: _Batch, task: _Task) -> None:
        """The host row says running and the console hears of the attempt."""
        planned, play = task.planned, batch.play
        self._write_host(
            run_id,
            planned.name,
            state=RUNNING,
            started_at=task.started_at,
            attempts=task.attempt,
            play=play.name,
            wave=planned.wave,
            batch=planned.batch,
        )
        self._emit(
            batch,
            HostStarted(
                run_id,
                host=planned.name,
                play=play.name,
                batch=planned.batch,
                wave=planned.wave,
                attempt=task.attempt,
            ),
        )

    def _job(self, run_id: str, batch: _Batch, task: _Task) -> HostJob:
        planned = task.planned
        return HostJob(
            run_id=run_id,
            host=planned.host,
            play=batch.play,
            batch=planned.batch,
            wave=planned.wave,
            attempt=task.attempt,
            stopping=self.stopping,
            draining=self.draining,
            journal=self.journal,
            emitter=lambda event: self._emit(batch, event),
            previous=task.previous,
            resume=planned.resume,
        )

    def _judge_attempt(
        self, run_id: str, batch: _Batch, task: _Task, outcome: HostOutcome, duration: float
    ) -> None:
        """A final outcome of one attempt: retry it later, or the host's result."""
        planned, play = task.planned, batch.play
        if outcome.state == RUNNING:  # the controller could not write: how it ended is unknown
            self._leave_running(run_id, batch, task, outcome)
            return
        if outcome.error_class == LOCAL:  # the host work could not store what it received
            self._controller_fault(f"{planned.name}: {outcome.error_message or 'a local file'}")
        backoff = play.retry_backoff if self.retry_backoff is None else self.retry_backoff
        retry = (
            outcome.transient
            and outcome.state in RETRYABLE_STATES
            and task.attempt <= play.retries
            and not self.draining.is_set()
        )
        if retry:
            wait = backoff * (2 ** (task.attempt - 1))
            self._write_host(
                run_id,
                planned.name,
                state=QUEUED,
                error_class=outcome.error_class,
                error_message=outcome.error_message,
            )
            self._emit(batch, _host_finished(run_id, play, planned, task, outcome, duration, wait))
            with batch.cond:
                heapq.heappush(
                    batch.heap,
                    (
                        time.monotonic() + wait,
                        next(self._seq),
                        _Task(planned, task.attempt + 1, outcome, task.started_at),
                    ),
                )
            return
        self._finalise(run_id, batch, task, outcome, duration)

    def _finalise(
        self, run_id: str, batch: _Batch, task: _Task, outcome: HostOutcome, duration: float | None
    ) -> None:
        planned = task.planned
        if batch.abandoned:
            # The run already ended without this host; record what really happened, quietly.
            self._write_final(run_id, planned.name, outcome, task.attempt)
            return
        with batch.cond:
            batch.finals[planned.name] = outcome
        self._write_final(run_id, planned.name, outcome, task.attempt)
        self._emit(batch, _host_finished(run_id, batch.play, planned, task, outcome, duration))

    def _write_final(self, run_id: str, name: str, outcome: HostOutcome, attempts: int) -> None:
        fields = {k: v for k, v in outcome.host_fields.items() if k in HOST_FIELDS_FROM_WORK}
        self._write_host(
            run_id,
            name,
            state=outcome.state,
            error_class=outcome.error_class,
            error_message=outcome.error_message,
            ended_at=utcnow(),
            attempts=attempts,
            **fields,
        )

    def _write_host(self, run_id: str, name: str, **fields: Any) -> None:
        """A host row update from a worker: a failed write is logged, the wave goes on."""
        try:
            self.journal.set_host(run_id, name, **fields)
        except Exception as exc:
            self._journal_failed(run_id, name, exc)

    def _journal_failed(self, run_id: str, name: str, exc: Exception) -> None:
        """A journal write of a worker failed: a controller fault when the disk says so (full,
        read-only), else logged; the wave goes on either way."""
        why = write_fault(exc)
        if why is not None:
            self._controller_fault(why)
            return
        RUN_LOG.exception("journal write failed for %s", name, extra={"run_id": run_id})

    def _call(self, run_id: str, work: HostWork, job: HostJob) -> HostOutcome:
        """Run the host work; whatever goes wrong inside becomes this host's FAILED outcome."""
        try:
            outcome = work(job)
        except Exception as exc:
            why = write_fault(exc)
            if why is not None:
                # Not the host's doing, and not known how far it got (the journal may have
                # missed the run step's end): the host stays running, for --resume to ask.
                self._controller_fault(why)
                return HostOutcome(
                    RUNNING, LOCAL, f"{FAULT_PREFIX} ({why}); --resume asks the host"
                )
            RUN_LOG.error(
                "host %s attempt %d: host work raised\n%s",
                job.name,
                job.attempt,
                traceback.format_exc(),
                extra={"run_id": run_id},
            )
            # An exception's text may quote anything (a URL with a password): scrub it here,
            # since the summary reaches the console without passing through the journal.
            text = REDACTOR.scrub(f"internal error: {type(exc).__name__}: {exc}")
            return HostOutcome(FAILED, INTERNAL, text)
        parked = isinstance(outcome, HostOutcome) and outcome.settle_in is not None
        if parked and outcome.state == RUNNING:
            return outcome
        if not isinstance(outcome, HostOutcome) or outcome.state not in FINAL_STATES:
            shown = outcome.state if isinstance(outcome, HostOutcome) else type(outcome).__name__
            RUN_LOG.error(
                "host %s: host work returned %r, not a final HostOutcome",
                job.name,
                shown,
                extra={"run_id": run_id},
            )
            return HostOutcome(FAILED, INTERNAL, f"internal error: host work returned {shown!r}")
        unknown = set(outcome.host_fields) - HOST_FIELDS_FROM_WORK
        if unknown:
            RUN_LOG.error(
                "host %s: host work set runner-owned or unknown fields %s",
                job.name,
                sorted(unknown),
                extra={"run_id": run_id},
            )
        return outcome

    def _emit(self, batch: _Batch, event: Event) -> None:
        if not batch.abandoned:
            self.events.emit(event)

    def _leave_running(self, run_id: str, batch: _Batch, task: _Task, outcome: HostOutcome) -> None:
        """A host whose end could not be journalled: ``running`` with the reason, if writable."""
        name = task.planned.name
        self._write_host(
            run_id, name, error_class=outcome.error_class, error_message=outcome.error_message
        )
        with batch.cond:
            batch.finals.setdefault(name, outcome)
        self._emit(batch, _host_finished(run_id, batch.play, task.planned, task, outcome, None))

    def _abandon(self, run_id: str, batch: _Batch) -> None:
        """Second Ctrl-C, grace over: leave busy hosts ``running`` for ``--resume``."""
        with batch.cond:
            batch.abandoned = True
            busy = list(batch.in_flight.values())
            batch.cond.notify_all()
        message = (
            "still running when the run was aborted (second Ctrl-C); --resume asks the host"
            " what happened"
        )
        for task in busy:
            name = task.planned.name
            self._write_host(
                run_id,
                name,
                state=RUNNING,
                error_class=INTERRUPTED_CLASS,
                error_message=message,
            )
            outcome = HostOutcome(RUNNING, INTERRUPTED_CLASS, message)
            batch.finals.setdefault(name, outcome)
            self.events.emit(_host_finished(run_id, batch.play, task.planned, task, outcome, None))

    def _finish_leftovers(self, run_id: str, batch: _Batch) -> None:
        """After a drain: hosts waiting for a retry keep their last outcome as their result.

        Hosts that never started are left to :meth:`_mark_not_run`, which records the reason.
        """
        with batch.cond:
            waiting = [task for _, _, task in batch.heap] + batch.dropped
            batch.heap.clear()
            batch.dropped.clear()
        for task in waiting:
            if task.parked:
                self._leave_parked(run_id, batch, task)
                continue
            if task.previous is None:
                continue
            tried = _Task(task.planned, task.attempt - 1, None, task.started_at)
            with batch.cond:
                batch.finals[task.planned.name] = task.previous
            self._write_final(run_id, task.planned.name, task.previous, tried.attempt)
            self.events.emit(
                _host_finished(run_id, batch.play, task.planned, tried, task.previous, None)
            )

    def _leave_parked(self, run_id: str, batch: _Batch, task: _Task) -> None:
        """A second Ctrl-C: a detached host whose CPUU was started and not settled stays
        ``running`` in the journal (its run step too), which is what ``--resume`` settles."""
        name = task.planned.name
        message = (
            "CPUU was started and not yet settled when the run was aborted; --resume asks the host"
        )
        self._write_host(
            run_id, name, state=RUNNING, error_class=INTERRUPTED_CLASS, error_message=message
        )
        outcome = HostOutcome(RUNNING, INTERRUPTED_CLASS, message)
        with batch.cond:
            batch.finals.setdefault(name, outcome)
        self.events.emit(_host_finished(run_id, batch.play, task.planned, task, outcome, None))

    # ---------------------------------------------------------------------------- signals

    def _install_sigint(self) -> dict[int, Any]:
        """Ctrl-C, SIGTERM and SIGHUP (where the platform has them) → :meth:`interrupt`.

        Returns the handlers replaced, for :meth:`_restore_sigint`.
        """
        if not self.handle_sigint or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for name in INTERRUPT_SIGNALS:
            number = getattr(signal, name, None)  # no SIGHUP on Windows
            if number is not None:
                previous[number] = signal.signal(number, self._on_signal)
        return previous

    def _restore_sigint(self, previous: dict[int, Any]) -> None:
        for number, handler in previous.items():
            if handler is not None:  # None: the old handler was not Python's; leave ours
                signal.signal(number, handler)
        self._poll_signals()


def _host_finished(
    run_id: str,
    play: Play,
    planned: PlannedHost,
    task: _Task,
    outcome: HostOutcome,
    duration: float | None,
    retry_in: float | None = None,
) -> HostFinished:
    return HostFinished(
        run_id,
        host=planned.name,
        play=play.name,
        batch=planned.batch,
        wave=planned.wave,
        state=outcome.state,
        attempt=task.attempt,
        error_class=outcome.error_class,
        error_message=outcome.error_message,
        duration_s=duration,
        retry_in_s=retry_in,
    )


def _percent(value: float) -> str:
    return f"{round(value, 1):g}"


def _stop_reason(
    play: Play,
    batch: int,
    size: int,
    failed: int,
    unreachable: int,
    unreachable_so_far: int,
    play_hosts: int,
) -> str | None:
    """Why the play stops after this batch, naming the rule; None when neither rule says stop.

    Failures are judged first: a change that breaks hosts is the reason that matters most.
    """
    where = f"play {play.name!r} batch {batch}"
    reached = size - unreachable
    apart = f"; {unreachable} unreachable, counted apart" if unreachable else ""
    if max_fail_exceeded(failed, reached, play.max_fail_percentage):
        if play.max_fail_percentage is None:
            return (
                f"{where}: all {reached} reached hosts failed{apart} (no max_fail_percentage:"
                " a batch where every reached host failed stops)"
            )
        return (
            f"{where}: {failed} of {reached} reached hosts failed"
            f" ({_percent(100 * failed / reached)}%{apart})"
            f" > max_fail_percentage {_percent(play.max_fail_percentage)}"
        )
    if max_unreachable_exceeded(unreachable_so_far, play_hosts, play.max_unreachable_percentage):
        return (
            f"{where}: {unreachable_so_far} of the play's {play_hosts} hosts unreachable so far"
            f" ({_percent(100 * unreachable_so_far / play_hosts)}%)"
            f" > max_unreachable_percentage {_percent(play.max_unreachable_percentage)}"
        )
    return None
