"""One CPUU run per logged-on user: a Remote Desktop Session Host (or Citrix server) has many.

Why apart from :mod:`.host_visit`: a workstation's run step is one CPUU run for one user; here
the play's ``run: {users: each}`` runs CPUU once in each user's own session, each as its own
scheduled task with its own run folder, result file and journal rows (a ``run`` attempt each),
one user after the other by default, or up to ``per_host`` at once (:mod:`.user_pool`; why one
is the default: :data:`~cpuu_fleet.inputs.playbook.DEFAULT_PER_HOST`). A user
whose session is disconnected is passed over by the host under ``disconnected: skip`` (the
default): that user's run reads ``waiting``, and so does the host.

Never twice holds per user: each user's task is named after the CPUU run and the user
(:func:`user_task_name`), so the host's run marker refuses a second start for the same user in the
same run, and a run attempt that already ended in this CPUU run (a retry, a ``--resume``) is
reused from the journal without asking the host. Users come from the visit's preflight (every
session with a shell, filtered by ``cpuu_user`` when it is set) and from the runs this CPUU run
already journalled for the host: a user who logged off since is still read and collected.

The host's state is its worst user's (:data:`~cpuu_fleet.vocabulary.WORST_FIRST`); its message
names each user's outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.filenames import task_folder_name
from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.journal import Journal
from cpuu_fleet.visit.outcome import HostOutcome, RunResult, judge
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.context import HostContext
from cpuu_fleet.visit.steps.run import cpuu_task_name, run_cpuu
from cpuu_fleet.visit.user_pool import Recorder, UserPool, UserRun
from cpuu_fleet.vocabulary import WORST_FIRST, ErrorClass

MAX_NAMED_USERS = 8
"""Users named one by one in a host's message; the rest are counted."""


@dataclass(frozen=True)
class Target:
    """A user to run CPUU for: the name Windows gave, and the SID when preflight read it."""

    user: str
    sid: str | None = None
    present: bool = True
    """Logged on when preflight looked; False: an expected user (``cpuu_user``) who was not."""

    @property
    def who(self) -> str:
        """What run-task is told (``-ExpectedUser``): the SID when known (an Entra ID user's name
        cannot be translated on the host), else the name."""
        return self.sid or self.user


def user_task_name(ctx: HostContext, options: RunOptions, user: str) -> str:
    """This CPUU run's task for one user: the run's task name and the user's, file-name safe."""
    return f"{cpuu_task_name(ctx, options.mode)} {task_folder_name(user)}"


def targets(ctx: HostContext, earlier: dict[str, RunResult]) -> list[Target]:
    """Whom to run CPUU for on this host: each session's user (``cpuu_user`` narrows them), then
    the users this CPUU run already ran for here who are no longer logged on, then the expected
    users who are not logged on (their run finds nobody and leaves the host waiting: not done
    until each of them is; no at-logon task per user, so that two runs never leave two tasks
    waiting for the same user's logon)."""
    if ctx.preflight is None:
        raise SessionError(
            ErrorClass.POLICY,
            "run with 'users: each' needs the preflight step before it in the same visit",
            transient=False,
        )
    wanted = {name.casefold() for name in ctx.expected_users}
    found: list[Target] = []
    for session in ctx.preflight.sessions:
        user, sid = session["user"], session.get("sid")
        if wanted and user.casefold() not in wanted and (sid or "").casefold() not in wanted:
            continue
        if all(t.user.casefold() != user.casefold() for t in found):
            found.append(Target(user, sid))
    for run in earlier.values():
        if run.user and all(t.user.casefold() != run.user.casefold() for t in found):
            found.append(Target(run.user))
    for name in ctx.expected_users:  # expected but not logged on: the host is not done for them
        known = {t.user.casefold() for t in found} | {(t.sid or "").casefold() for t in found}
        if name.casefold() not in known:
            found.append(Target(name, name if name.upper().startswith("S-1-") else None, False))
    return found


def finished_runs(journal: Journal, run_ids: tuple[str, ...], host: str) -> dict[str, RunResult]:
    """Each user's run step that already ended in this CPUU run, by task name (the latest)."""
    done: dict[str, RunResult] = {}
    for run_id in run_ids:
        for attempt in journal.attempts(run_id, host):
            if attempt["step"] != "run" or attempt["status"] in ("running", "failed"):
                continue
            data = json.loads(attempt["details_json"] or "{}")
            task = data.get("task")
            if task:
                done[task] = RunResult.from_details(data)
    return done


def run_each_user(
    ctx: HostContext,
    session: HostSession,
    options: RunOptions,
    earlier: dict[str, RunResult],
    steps: Recorder,
    status: Callable[[RunResult], str],
    into: list[RunResult],
) -> None:
    """One CPUU run per target user, each recorded as its own ``run`` attempt in ``steps`` and
    appended to ``into`` as it ends (a failure part-way keeps the runs before it): one after the
    other, or up to ``options.per_host`` at once (:class:`~.user_pool.UserPool`). A run that
    already ended in this CPUU run is reused, never asked again. No user at all: one run for
    nobody in particular, so ``when_no_user`` decides as on a workstation (skip, or an at-logon
    task for the first expected user)."""
    users = targets(ctx, earlier)
    if not any(target.present for target in users) and not earlier:
        into.append(steps.run("run", lambda: run_cpuu(ctx, session, options), status))
        return
    one = replace(options, when_no_user="skip")  # logged off meanwhile: no at-logon task
    todo: list[UserRun] = []
    for target in users:
        task = user_task_name(ctx, options, target.user)
        if task in earlier:
            into.append(earlier[task])
        else:
            todo.append(UserRun(task, target.user, target.who))
    if options.per_host > 1:
        UserPool(ctx, session, one, steps, status, into).run(todo)
        return
    for user in todo:

        def action(user: UserRun = user) -> RunResult:
            run = run_cpuu(ctx, session, one, user.task, users=(user.who,))
            return run if run.user else replace(run, user=user.user)

        into.append(steps.run("run", action, status))


def profile_results(rows: list[dict[str, Any]], user: str | None = None) -> list[ProfileResult]:
    """The journal's profile rows as results; with ``user``, only that user's."""
    key = (user or "").casefold()
    return [
        ProfileResult(row["profile"], row["current_code"], row["previous_code"], row["line"] or 0)
        for row in rows
        if user is None or (row["user"] or "").casefold() == key
    ]


def host_verdict(
    runs: list[RunResult],
    profile_rows: list[dict[str, Any]],
    error: SessionError | None,
    *,
    unfinished: bool = False,
) -> tuple[HostOutcome, RunResult]:
    """The host's state from each user's (the worst decides), and the run that decided it.

    ``unfinished``: the run step broke off before every user's run (``error`` says why): the
    users not reached yet count as that error (a transient one is retried; the users done are
    then reused, never run again)."""
    judged = [
        (judge(run, profile_results(profile_rows, run.user or ""), error), run) for run in runs
    ]
    if unfinished and error is not None:
        judged.append((judge(None, (), error), RunResult("", user="(users not reached)")))
    judged.sort(key=lambda pair: WORST_FIRST.index(pair[0].state))
    worst, deciding = judged[0]
    parts = [f"{run.user or '?'}: {verdict.state}" for verdict, run in judged[:MAX_NAMED_USERS]]
    if len(judged) > MAX_NAMED_USERS:
        parts.append(f"+{len(judged) - MAX_NAMED_USERS} more")
    summary = f"{len(runs)} user(s): " + ", ".join(parts)
    if worst.error_message:
        summary += f"; {deciding.user or '?'}: {worst.error_message}"
    return replace(worst, error_message=summary), deciding
