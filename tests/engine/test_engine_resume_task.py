"""``resume_cpuu`` asks the host before anything: each state of an earlier visit's task leads to
exactly one CPUU run in total (over real pypsrp against one lab workstation)."""

from __future__ import annotations

import time

import pytest
from conftest import make_playbook

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.session import HostSession
from cpuu_fleet.steps import HostContext, RunOptions, plan_push, preflight, resume_cpuu

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
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout_s=10), TASK)
    assert (run.resumed, run.ran, run.exit_code) == ("finished", True, 1)
    assert launches == [TASK]


def test_running_task_is_waited_for(host):
    workstation, staging, ctx, session, launches = host
    workstation.cpuu.base_seconds = 1.0
    _register(workstation, staging)
    workstation.start_task(TASK)
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout_s=10), TASK)
    assert (run.resumed, run.ran, run.exit_code, run.killed) == ("waited", True, 1, False)
    assert launches == [TASK]


def test_registered_but_never_started_runs_once(host):
    workstation, staging, ctx, session, launches = host
    _register(workstation, staging)
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout_s=10), TASK)
    assert (run.resumed, run.ran, run.exit_code) == ("started", True, 1)
    assert launches == [TASK]  # the registration that never ran is started, once


def test_never_registered_starts_it(host):
    _, _, ctx, session, launches = host
    run = resume_cpuu(ctx, session, RunOptions(Mode.UPDATE, timeout_s=10), TASK)
    assert (run.resumed, run.ran) == ("started", True)
    assert len(launches) == 1
