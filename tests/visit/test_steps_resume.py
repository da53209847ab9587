"""``resume_cpuu`` asks the host before anything: each state of an earlier visit's task leads to
exactly one CPUU run in total (over real pypsrp against one lab workstation)."""

from __future__ import annotations

import time

import pytest

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.lab import handlers
from cpuu_fleet.lab.winfs import Acl
from cpuu_fleet.visit.session import HostSession, SessionError
from cpuu_fleet.visit.steps.context import HostContext
from cpuu_fleet.visit.steps.preflight import preflight
from cpuu_fleet.visit.steps.push import plan_push
from cpuu_fleet.visit.steps.run import resume_cpuu
from cpuu_fleet.vocabulary import ErrorClass
from tests.support.waves import make_playbook

TASK = "cpuu-fleet update earlier-run"


@pytest.fixture
def host(wave_factory, tmp_path):
    wave = wave_factory(1)
    lab_host = wave.fleet.hosts[0]
    first = wave.run(make_playbook(wave.payload, steps=("preflight", "push")))
    staging = first.details[lab_host.name]["push"]["directory"]
    launches = []
    workstation = lab_host.workstation
    original = workstation._launcher

    def counting(ws, task, user):
        launches.append(task.name)
        return original(ws, task, user)

    workstation._launcher = counting
    kwargs = wave.fleet.client_kwargs(lab_host)
    server = kwargs.pop("server")
    journal = Journal(tmp_path / "j.sqlite3")
    run_id = journal.start_run(kind="resume")
    journal.add_hosts(run_id, [HostEntry(lab_host.name)])
    ctx = HostContext(
        run_id=run_id,
        host=lab_host.name,
        journal=journal,
        reports_dir=tmp_path / "reports",
        version=staging.rsplit("\\", 1)[1],
    )
    with HostSession(lab_host.name, server, kwargs) as session:
        preflight(ctx, session)
        assert not plan_push(ctx).send  # everything is staged already
        yield workstation, staging, ctx, session, launches
    journal.close()


def _register(workstation, staging):
    # As run-task's Start does before it starts a task: the user may read the INI, write results.
    sid = workstation.sid_of(workstation.interactive_user)
    workstation.fs.set_acl(f"{staging}\\CPUU.ini", Acl(read=frozenset({sid})))
    workstation.fs.set_acl(staging, Acl(read=frozenset({sid}), write=frozenset({sid})))
    return workstation.register_task(
        TASK,
        f"{staging}\\CPUU_Update.bat",
        staging,
        user=workstation.interactive_user,
    )


def test_finished_task_is_read_not_rerun(host):
    workstation, staging, ctx, session, launches = host
    _register(workstation, staging)
    workstation.start_task(TASK)
    deadline = time.monotonic() + 5
    while workstation.task(TASK).running and time.monotonic() < deadline:
        time.sleep(0.05)
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
    assert (run.resumed, run.ran, run.exit_code) == ("finished", True, 1)
    assert launches == [TASK]


def test_running_task_is_waited_for(host):
    workstation, staging, ctx, session, launches = host
    workstation.cpuu.base_seconds = 1.0
    _register(workstation, staging)
    workstation.start_task(TASK)
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
    assert (run.resumed, run.ran, run.exit_code, run.killed) == ("waited", True, 1, False)
    assert launches == [TASK]


def test_registered_but_never_started_runs_once(host):
    workstation, staging, ctx, session, launches = host
    _register(workstation, staging)
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
    assert (run.resumed, run.ran, run.exit_code) == ("started", True, 1)
    assert launches == [TASK]  # the registration that never ran is started, once


def test_never_registered_starts_it(host):
    _, _, ctx, session, launches = host
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
    assert (run.resumed, run.ran) == ("started", True)
    assert len(launches) == 1


# ---------------------------------------------------------------- Windows as documented (issue 15)


def test_a_task_that_comes_up_late_is_waited_for(host):
    """Start-ScheduledTask is asynchronous: a first look that sees Ready/267011 is no result."""
    workstation, _, ctx, session, launches = host
    workstation.task_start_delay_s = 0.5
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
    assert (run.ran, run.exit_code, run.killed) == (True, 1, False)
    assert launches == [TASK]


def test_a_task_that_never_comes_up_fails_the_host_and_is_never_started(host, monkeypatch):
    workstation, _, ctx, session, launches = host
    monkeypatch.setattr(handlers, "START_GRACE_SECONDS", 0.5, raising=False)
    workstation.task_start_delay_s = 3600
    for _ in range(2):  # a retry finds the marker: the same answer, never a start
        with pytest.raises(SessionError) as caught:
            resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=10), TASK)
        assert caught.value.error_class is ErrorClass.CPUU and not caught.value.transient
        assert "never came up" in caught.value.message
    assert launches == [] and workstation.task(TASK).state == "Disabled"


def test_a_deadline_kill_leaves_no_cpuu_running(host):
    workstation, _, ctx, session, launches = host
    workstation.cpuu.hang = True
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=1), TASK)
    assert (run.ran, run.killed, run.exit_code) == (True, True, 267014)
    assert workstation.cpuu_running == [] and launches == [TASK]


def test_a_kill_that_has_not_settled_is_a_failure_not_a_result(host, monkeypatch):
    workstation, _, ctx, session, launches = host
    monkeypatch.setattr(handlers, "STOP_SETTLE_SECONDS", 0.3, raising=False)
    workstation.cpuu.hang = True
    workstation.task_stop_settle_s = 3600
    with pytest.raises(SessionError) as caught:
        resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout=1), TASK)
    assert caught.value.error_class is ErrorClass.CPUU and not caught.value.transient
    assert "may still be running" in caught.value.message
    assert launches == [TASK]
