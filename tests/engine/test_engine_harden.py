"""Failure paths of one host visit that must not lose anything: a pending at-logon task, files
already downloaded, CPUU's verdict, an open step attempt (real lab, real journal)."""

from __future__ import annotations

import time

from conftest import lab_env, make_playbook

from cpuu_fleet import journal as states
from cpuu_fleet.engine import run_step
from cpuu_fleet.journal import Journal


def _wait_for_logon_run(workstation, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workstation.refresh()
        task = next(iter(workstation.tasks.values()))
        if not task.running and task.last_run_time:
            return
        time.sleep(0.05)
    raise AssertionError("the at-logon task never ran")


def test_a_pending_task_survives_single_step_and_check_runs(wave_factory):
    """preflight/push-only runs and --check runs never reach the run step: they must not make
    a later collect forget the at-logon task an earlier run left pending."""
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    at_logon = make_playbook(wave.payload, when_no_user="at_logon")
    first = wave.run(at_logon)
    with lab_env(wave.fleet):
        run_step(wave.request(), "preflight", pattern="all")
    wave.run(at_logon, check=True)
    workstation = wave.workstation(host)
    workstation.logon(next(iter(workstation.profiles)))
    _wait_for_logon_run(workstation)
    with lab_env(wave.fleet):
        later = run_step(wave.request(), "collect", pattern="all")
    with Journal.in_reports(wave.reports) as journal:
        assert journal.host(first.run_id, host)["state"] == states.PENDING
        row = journal.host(later.run_id, host)
        assert (row["state"], row["exit_code"]) == (states.SUCCEEDED, 1), row
        assert journal.profiles(later.run_id, host)
    assert workstation.tasks == {}  # picked up, so removed
