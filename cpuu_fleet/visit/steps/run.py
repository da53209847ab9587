"""Step three, run: CPUU runs as the logged-on user through a one-shot scheduled task.

Run waits for CPUU inside one ``run-task -Action Run`` pipeline (the scheduled task starts in
the interactive user's session, which WinRM's own session cannot reach), long-polling for the
whole OperationTimeout; a detached run starts it (``-Action Start``) and settles it later
(``-Action Status``, then ``Run``). The host's marker makes every call safe to repeat: CPUU is
started at most once per run, and ``read_task_report`` is the one reading of what became of it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from cpuu_fleet.cpuu import NOT_AN_EXIT_CODE, TASK_TERMINATED, Mode
from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.journal import utcnow
from cpuu_fleet.redact import printable
from cpuu_fleet.visit.outcome import RunResult
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.context import STATE_DIR, HostContext, _protocol_error, _text, run_dir
from cpuu_fleet.visit.steps.push import OutgoingFile, upload
from cpuu_fleet.vocabulary import ErrorClass

MAX_OTHER_USERS = 20
"""Names of other logged-on users kept from a run-task report (an RDS host may have hundreds)."""
CLEANUP_MARKER = "cleanup-done.json"


def task_name_for(run_id: str, mode: Mode) -> str:
    """The scheduled task's name: unique per run and mode, recorded before it is registered."""
    return f"cpuu-fleet {mode.value} {run_id}"


def is_task_of(task_name: str, mode: Mode) -> bool:
    """Was this task (named by :func:`task_name_for`) registered for ``mode``?"""
    return task_name.startswith(f"cpuu-fleet {mode.value} ")


def undo_refusal(ctx: HostContext) -> str | None:
    """Why Undo must not run here: Cleanup succeeded (journal, or the host's own marker)."""
    earlier = ctx.journal.cleanup_succeeded(ctx.host)
    if earlier:
        return f"Undo refused: Cleanup succeeded on this host in run {earlier} (journal)"
    if ctx.preflight is not None and ctx.preflight.cleanup_done:
        return "Undo refused: the host's cleanup-done marker says Cleanup succeeded"
    return None


def _resumed(data: dict[str, Any], resumed: str | None) -> str | None:
    """How a call that did not start CPUU found it (None: this call started it)."""
    if resumed is not None or data.get("Claimed") or not data.get("Marker"):
        return resumed
    return "waited" if data.get("Waited") else "finished"


def _other_users(value: Any) -> tuple[str, ...]:
    """run-task's ``OtherUsers``: names from the host, so bounded and made printable."""
    if not isinstance(value, list):
        return ()
    return tuple(printable(v[:256]) for v in value[:MAX_OTHER_USERS] if isinstance(v, str))


def read_task_report(
    data: Any, task_name: str, when_no_user: str, seconds: float, resumed: str | None = None
) -> RunResult:
    """What ``run-task``'s report says became of CPUU: the one reading of it (a run, a resume, an
    at-logon task looked at by a later collect), so a kill or a missing start reads alike."""
    if not isinstance(data, dict):
        raise _protocol_error(f"run: expected one hashtable, got {type(data).__name__}")
    user = _text(data.get("User"))
    started_at = _text(data.get("StartedAt"))
    resumed = _resumed(data, resumed)
    others = _other_users(data.get("OtherUsers"))
    if data.get("NoUser") and not data.get("Exists") and not data.get("Marker"):
        return RunResult(
            task_name,
            no_user=True,
            seconds=seconds,
            resumed=resumed,
            other_users=others,
            disconnected=_other_users(data.get("Disconnected")),
        )
    if data.get("NotStarted"):
        # Start-ScheduledTask is asynchronous and the instance never came up (its user logged
        # off in between, the Task Scheduler was busy): the host disabled the task and keeps the
        # marker, so no call starts it again. Not a transient timeout: a retry would only wait.
        raise SessionError(
            ErrorClass.CPUU,
            "run: the task was started but CPUU never came up within the start grace period"
            " (did the user log off?); the task was disabled and CPUU is not started again for"
            " this run: check the host",
            transient=False,
        )
    last = data.get("LastTaskResult")
    not_yet = last is None or int(last) in NOT_AN_EXIT_CODE
    at_logon = data.get("Trigger") == "AtLogon" or (
        data.get("NoUser") and when_no_user == "at_logon"
    )
    if at_logon and not_yet and not data.get("Killed"):
        return RunResult(
            task_name,
            pending=True,
            no_user=True,
            user=user,
            seconds=seconds,
            resumed=resumed,
            started_at=started_at,
            other_users=others,
        )
    if data.get("Killed") and data.get("Settled") is False:
        # The kill was sent but the task (or a process it started) still lived when the host
        # stopped waiting for it: CPUU may still be changing profiles.
        raise SessionError(
            ErrorClass.CPUU,
            f"run: CPUU was killed on its deadline but its task still reads"
            f" {data.get('State') or 'Running'}: CPUU may still be running; not started again,"
            " check the host",
            transient=False,
        )
    if data.get("Killed"):
        # Killed on its deadline (by a Wait, maybe a controller ago) or by the time limit: never
        # success, whatever the exit code (CPUU's 1, or Task Scheduler's 267014).
        return RunResult(
            task_name,
            ran=True,
            exit_code=TASK_TERMINATED if not_yet else int(last),  # type: ignore[arg-type]
            killed=True,
            user=user,
            seconds=seconds,
            resumed=resumed,
            started_at=started_at,
        )
    state = str(data.get("State") or "")
    if data.get("Marker") and not data.get("Exists") and not_yet:
        # Started (the marker says so) and the task is gone with no exit code recorded: CPUU
        # may have run. Never started again; the operator must look at the host.
        raise SessionError(
            ErrorClass.CPUU,
            f"run: CPUU was started on this host for this run (at {started_at or 'an unknown time'})"
            " but its task is gone without an exit code: not started again; check the host",
            transient=False,
        )
    if state in ("Running", "Queued") or not_yet:
        raise SessionError(
            ErrorClass.TIMEOUT,
            f"run: the task is still {state or 'unfinished'} (no exit code yet)",
        )
    return RunResult(
        task_name,
        ran=True,
        exit_code=int(last),  # type: ignore[arg-type]
        user=user,
        seconds=seconds,
        resumed=resumed,
        started_at=started_at,
    )


def _client_deadline(session: HostSession, timeout_s: float) -> float:
    """Our own bound on a Wait: the remote timeout plus time to stop the task and answer."""
    return time.monotonic() + timeout_s + session.operation_timeout + 30


def cpuu_task_name(ctx: HostContext, mode: Mode) -> str:
    """The task of this run's CPUU on this host: a ``--resume`` uses the name of the run it
    carries on, so the host's marker recognises the run and never starts CPUU again."""
    return task_name_for(ctx.cpuu_run_id or ctx.run_id, mode)


def run_cpuu(
    ctx: HostContext,
    session: HostSession,
    options: RunOptions,
    task_name: str | None = None,
    *,
    users: tuple[str, ...] | None = None,
) -> RunResult:
    """Run the mode's batch file as the logged-on user through a one-shot scheduled task.

    Safe to call again for the same run, by anyone: the host's ``run-task`` claims the run with
    a marker file created only if absent, so a second call (a retry, ``--resume``, a second
    controller) waits for or reads the first one's CPUU instead of starting another. The task
    name is also written to the journal *before* the call, so what the controller knew survives
    its death. ``users`` overrides whom it is for (``-ExpectedUser``): one user's own run.
    """
    mode, when_no_user, timeout_s = options.mode, options.when_no_user, float(options.timeout)
    task_name, parameters = _task_call(ctx, options, task_name, "Run", users)
    if isinstance(parameters, RunResult):
        return parameters
    started = time.monotonic()
    result = session.run(
        "run-task",
        parameters,
        deadline=_client_deadline(session, timeout_s),
        during=f"run {mode.value}",
        abandon=ctx.stopping,
    )
    run = read_task_report(result.first, task_name, when_no_user, time.monotonic() - started)
    return _as_run(ctx, run, parameters)


def _task_call(
    ctx: HostContext,
    options: RunOptions,
    task_name: str | None,
    action: str,
    users: tuple[str, ...] | None,
) -> tuple[str, dict[str, Any] | RunResult]:
    """The task's name and ``run-task``'s parameters for its ``Run`` or ``Start`` call, the name
    journalled before the call; or, for an Undo after Cleanup, the refusal as the run's result,
    with nothing journalled and nothing sent."""
    task_name = task_name or cpuu_task_name(ctx, options.mode)
    refusal = undo_refusal(ctx) if options.mode is Mode.UNDO else None
    if refusal:
        return task_name, RunResult(task_name, refused=refusal)
    ctx.journal.set_host(ctx.run_id, ctx.host, task_name=task_name)
    return task_name, _task_parameters(ctx, options, task_name, action, users)


def _as_run(ctx: HostContext, run: RunResult, parameters: dict[str, Any]) -> RunResult:
    run = replace(run, expected=tuple(parameters.get("ExpectedUser", ())))
    if run.user:
        ctx.user = run.user
    return run


def _task_parameters(
    ctx: HostContext,
    options: RunOptions,
    task_name: str,
    action: str,
    users: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """run-task's parameters for a ``Run`` or a ``Start`` of this run's task (one definition)."""
    folder = run_dir(task_name)
    parameters: dict[str, Any] = {
        "Action": action,
        "TaskName": task_name,
        "Command": f"{folder}\\{options.command}",
        "WorkingDirectory": folder,
        "SourceDirectory": ctx.staging,
        "WhenNoUser": "AtLogon" if options.when_no_user == "at_logon" else "Skip",
        "Disconnected": "Run" if options.disconnected == "run" else "Skip",
        "TimeoutSeconds": int(options.timeout),
        "StateDirectory": STATE_DIR,
    }
    expected = ctx.expected_users if users is None else users
    if expected:
        parameters["ExpectedUser"] = list(expected)
    return parameters


@dataclass(frozen=True)
class StartedRun:
    """A detached run step's first half: CPUU's task was started (or found running) on the host
    and the host released; the runner settles it later (:func:`task_active`, then ``Run``)."""

    task_name: str
    started_at: str | None
    """The marker's ``StartedAt`` (host clock): the host's deadline counts from it."""
    user: str | None = None
    claimed: bool = True
    """This ``Start`` claimed the run (False: it found a run an earlier call had started)."""


def task_active(data: Any) -> bool:
    """Does a ``Start`` or ``Status`` report say CPUU's task is still at work (running, queued,
    or started on demand and not come up yet)? Anything else (ended, killed, pending at logon,
    never came up, gone) is for ``Run`` and :func:`read_task_report` to read."""
    if not isinstance(data, dict) or not data.get("Exists") or not data.get("Marker"):
        return False
    if data.get("Killed") or data.get("NotStarted") or data.get("Trigger") == "AtLogon":
        return False
    if str(data.get("State") or "") in ("Running", "Queued"):
        return True
    last = data.get("LastTaskResult")
    return last is None or int(last) in NOT_AN_EXIT_CODE


def start_cpuu(
    ctx: HostContext,
    session: HostSession,
    options: RunOptions,
    task_name: str | None = None,
    *,
    users: tuple[str, ...] | None = None,
) -> RunResult | StartedRun:
    """The detached run step's first half: claim and start CPUU's task (``run-task -Action
    Start``, never twice: the same marker as :func:`run_cpuu`) and return at once.

    A :class:`StartedRun` when CPUU is at work; a :class:`RunResult` when there is nothing to
    wait for (nobody logged on, pending at logon, refused, or a run that already ended).
    ``task_name`` and ``users`` as for :func:`run_cpuu` (one user's own run).
    """
    task_name, parameters = _task_call(ctx, options, task_name, "Start", users)
    if isinstance(parameters, RunResult):
        return parameters
    started = time.monotonic()
    result = session.run("run-task", parameters, during=f"start {options.mode.value}")
    data = result.first
    if task_active(data):
        user = _text(data.get("User"))
        if user:
            ctx.user = user
        return StartedRun(task_name, _text(data.get("StartedAt")), user, bool(data.get("Claimed")))
    run = read_task_report(data, task_name, options.when_no_user, time.monotonic() - started)
    return _as_run(ctx, run, parameters)


def task_status(
    session: HostSession, task_name: str, *, remove_ended: bool = False
) -> dict[str, Any]:
    """``run-task -Action Status``. ``remove_ended``: a run that is over is also unregistered in
    the same pipeline, after the report was read (``Removed`` says so): a settling visit needs
    no second ``run-task`` call for the task's removal."""
    parameters: dict[str, Any] = {"Action": "Status", "TaskName": task_name}
    parameters["StateDirectory"] = STATE_DIR
    if remove_ended:
        parameters["RemoveEnded"] = True
    result = session.run("run-task", parameters, during="task status")
    if not isinstance(result.first, dict):
        raise _protocol_error("task status: expected one hashtable")
    return result.first


def resume_cpuu(
    ctx: HostContext, session: HostSession, options: RunOptions, task_name: str
) -> RunResult:
    """A run step that an earlier visit started and never finished: the host answers.

    The same ``Run`` call as a first start: the host's marker makes it read a finished task's
    exit code, wait for a running one (under the deadline counted from CPUU's start), or keep an
    at-logon task pending; only a task that was never claimed is started, and that is the first
    and only CPUU of the run.
    """
    run = run_cpuu(ctx, session, options, task_name)
    return run if run.resumed else replace(run, resumed="started")


def remove_task(session: HostSession, task_name: str) -> None:
    """Unregister a finished one-shot task (after its result is safely in the journal)."""
    session.run("run-task", {"Action": "Remove", "TaskName": task_name}, during="remove task")


def write_cleanup_marker(ctx: HostContext, session: HostSession, exit_code: int | None) -> None:
    """Tell the host itself that Cleanup succeeded: a later Undo is refused even without our journal."""
    data = json.dumps(
        {"run_id": ctx.run_id, "at": utcnow(), "exit_code": exit_code, "tool": "cpuu-fleet"},
        sort_keys=True,
    ).encode("utf-8")
    item = OutgoingFile(CLEANUP_MARKER, len(data), hashlib.sha256(data).hexdigest(), data=data)
    upload(session, STATE_DIR, (item,), during="cleanup marker")
