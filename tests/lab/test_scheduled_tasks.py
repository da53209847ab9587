"""run-task against the Task Scheduler as Microsoft documents it (issue 15), with a fake clock.

Each test plays one documented behaviour the old script and handler got wrong: a stop that ends
cmd.exe but not CPUU, its child; a state that reads Running for a while after a stop; a start
that comes up late (Start-ScheduledTask is asynchronous); an at-logon task that fired for every
user at every logon; an Unregister that stops nothing; the default below-normal priority; and
Entra ID users (``AzureAD\\Name``), whom Task Scheduler cannot map by name.
"""

from __future__ import annotations

import pytest

from cpuu_fleet.cpuu import ExitFlags
from cpuu_fleet.lab.scenarios import WINDOWS_SCENARIOS, plan_fleet
from cpuu_fleet.lab.workstation import OutlookProfile
from tests.lab import test_handlers
from tests.support.handlers import RecordingHost, invoke
from tests.support.workstation import CpuuBench

TASK = "cpuu-fleet update run-1"
TECHNICIAN = "CORP\\helpdesk-admin"
staged = test_handlers.staged
"""The bench with one Outlook profile (the fixture of the handler tests)."""


def _call(bench, **parameters):
    host = RecordingHost(clock=bench.clock)
    (report,) = invoke(bench.ws, "run-task", host=host, TaskName=TASK, **parameters)
    return report


def _run(bench, action="Run", **parameters):
    """Start, or Start then Wait (``Run``), the mode's batch file as the engine does."""
    return _call(bench, Action=action, **bench.task_files(TASK), **parameters)


def _outlook(bench) -> str:
    bench.ws.refresh()
    return bench.ws.profile(bench.user, "Outlook").state.value


# ------------------------------------------------------------- 1. the deadline kill kills CPUU


def test_a_deadline_kill_ends_cpuu_itself_not_only_cmd(staged):
    """A CPUU that would finish after its deadline is killed with its cmd.exe: it never goes on
    to change the profile, and LastTaskResult is Task Scheduler's 267014."""
    staged.ws.cpuu.base_seconds = 100
    report = _run(staged, TimeoutSeconds=30)
    assert staged.ws.cpuu_running == []
    staged.clock.advance(300)
    assert _outlook(staged) == "source"
    assert report["LastTaskResult"] == 267014 and report["State"] == "Ready"
    assert report["Killed"] is True and report["Settled"] is True


def test_a_kill_waits_until_the_task_no_longer_reads_running(staged):
    staged.ws.cpuu.hang = True
    staged.ws.task_stop_settle_s = 3
    report = _run(staged, TimeoutSeconds=30)
    assert report["State"] == "Ready"  # not read while the stop was still settling
    assert report["Killed"] is True and report["Settled"] is True


def test_a_kill_that_never_settles_says_so(staged):
    staged.ws.cpuu.hang = True
    staged.ws.task_stop_settle_s = 10_000
    report = _run(staged, TimeoutSeconds=30)
    assert report["Killed"] is True and report["Settled"] is False
    assert report["State"] == "Running"


def test_stop_ends_the_tree(staged):
    staged.ws.cpuu.hang = True
    _run(staged, "Start", TimeoutSeconds=30)
    stopped = _call(staged, Action="Stop")
    assert stopped["Killed"] is True and stopped["LastTaskResult"] == 267014
    assert staged.ws.cpuu_running == []


# ------------------------------------------------------------- 2. a start that comes up late


def test_a_run_waits_for_a_task_that_starts_late(staged):
    """Start-ScheduledTask returns before the instance exists: a first look that sees Ready and
    267011 is neither the end of the run nor a timeout."""
    staged.ws.task_start_delay_s = 2.5
    report = _run(staged, TimeoutSeconds=600)
    assert report["LastTaskResult"] == ExitFlags.SUCCESS
    assert _outlook(staged) == "updated"
    assert report["NotStarted"] is False


def test_a_task_that_never_comes_up_is_not_started_and_cannot_start_late(staged):
    staged.ws.task_start_delay_s = 3600  # far beyond the start grace period
    report = _run(staged, TimeoutSeconds=600)
    staged.clock.advance(7200)
    staged.ws.refresh()
    assert staged.ws.cpuu_starts == []  # disabled: the late start never happens
    assert report["State"] == "Disabled" and report["LastTaskResult"] == 267011
    assert report["NotStarted"] is True and report["Marker"] is True
    again = _run(staged, TimeoutSeconds=600)  # the marker stays: never a second start
    assert again["Claimed"] is False and staged.ws.cpuu_starts == []


# ------------------------------------------------------------- 3. at logon: one user, once, expiring


def _register_at_logon(bench, **parameters):
    bench.ws.logoff()
    report = _run(bench, WhenNoUser="AtLogon", TimeoutSeconds=600, **parameters)
    assert report["Trigger"] == "AtLogon" and report["LastTaskResult"] == 267011
    return report


def test_a_technician_logging_on_first_does_not_consume_the_run(staged):
    _register_at_logon(staged)
    staged.ws.logon(TECHNICIAN)
    staged.clock.advance(60)
    assert staged.ws.cpuu_starts == []
    staged.ws.logoff()
    staged.ws.logon(staged.user)
    staged.clock.advance(60)
    assert [s.user for s in staged.ws.cpuu_starts] == [staged.user]
    assert _call(staged, Action="Status")["LastTaskResult"] == ExitFlags.SUCCESS


def test_the_engine_names_the_user_an_at_logon_task_is_for(staged):
    """The host's last user was a technician: -ExpectedUser says whose profiles CPUU is for."""
    staged.ws.logoff()
    staged.ws.logon(TECHNICIAN)
    report = _register_at_logon(staged, ExpectedUser=[staged.user])
    assert report["User"] == staged.user
    staged.ws.logon(TECHNICIAN)
    staged.ws.logoff()
    staged.ws.logon(staged.user)
    assert [s.user for s in staged.ws.cpuu_starts] == [staged.user]


def test_an_at_logon_task_runs_cpuu_once_however_often_its_user_logs_on(staged):
    _register_at_logon(staged)
    for _ in range(3):
        staged.ws.logon(staged.user)
        staged.clock.advance(60)
        staged.ws.logoff()
    assert len(staged.ws.cpuu_starts) == 1
    status = _call(staged, Action="Status")
    assert status["LastTaskResult"] == ExitFlags.SUCCESS  # the first run's code, replayed


def test_an_at_logon_task_expires(staged):
    _register_at_logon(staged)
    staged.clock.advance(15 * 86400)
    staged.ws.logon(staged.user)
    staged.clock.advance(60)
    assert staged.ws.cpuu_starts == []


# ------------------------------------------------------------- 4. remove stops first


def test_remove_of_a_running_task_ends_cpuu_before_unregistering(staged):
    staged.ws.cpuu.base_seconds = 100
    _run(staged, "Start", TimeoutSeconds=600)
    removed = _call(staged, Action="Remove")
    assert staged.ws.cpuu_running == []
    staged.clock.advance(300)
    assert _outlook(staged) == "source"
    assert removed["Exists"] is False and removed["Killed"] is True


# ------------------------------------------------------------- 5. priority


def test_the_task_runs_at_normal_priority(staged):
    staged.ws.cpuu.hang = True
    _run(staged, "Start", TimeoutSeconds=600)
    assert staged.ws.task(TASK).priority == 5  # not the default 7 (below normal)


# ------------------------------------------------------------- 6. Entra ID users


def test_an_entra_id_user_is_registered_by_sid(staged):
    ws = staged.ws
    user = "AzureAD\\JeanDupont"
    ws.logoff()
    ws.add_profile(user, OutlookProfile("Outlook", "jean.dupont@corp.example"))
    ws.logon(user)
    report = _run(staged, TimeoutSeconds=600)
    assert report["LastTaskResult"] == ExitFlags.SUCCESS and report["User"] == user
    assert ws.task(TASK).user == ws.sid_of(user) and ws.sid_of(user).startswith("S-1-12-1-")
    assert [s.user for s in ws.cpuu_starts] == [user]


# ------------------------------------------------------------- the lab's scenarios for these


@pytest.mark.parametrize("scenario", sorted(WINDOWS_SCENARIOS))
def test_the_windows_scenarios_run_cpuu_once_and_succeed(scenario, tmp_path, clock):
    (plan,) = plan_fleet(1, scenario, 7, tmp_path, clock=clock)
    bench = CpuuBench(plan.workstation, clock)
    bench.stage()
    report = _run(bench, TimeoutSeconds=600)
    assert report["LastTaskResult"] == ExitFlags.SUCCESS
    assert [s.user for s in plan.workstation.cpuu_starts] == [plan.user]
    assert report["User"] == plan.user
    if scenario == "entra_user":
        assert plan.user.startswith("AzureAD\\")
    else:
        assert plan.workstation.task_start_delay_s >= 1
