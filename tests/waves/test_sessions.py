"""Who CPUU runs for: RDP users, technicians at the console and the host's expected user
(issue 10), played by the lab over real pypsrp and judged by the lab's own record of CPUU starts.

``Win32_ComputerSystem.UserName`` names the console's user only: before, a user on Remote Desktop
was "nobody", and whoever sat at the console (a technician) was switched in the user's place.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from cpuu_fleet import journal as states
from cpuu_fleet.engine.wave import run_single_step
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal
from tests.support.waves import lab_env, make_playbook

OWNER = "CORP\\mailbox-owner"
TECHNICIAN = "CORP\\helpdesk"


def _expect(wave, host: str, users) -> None:
    """Set the host's ``cpuu_user`` in the lab inventory (one user or a list)."""
    document = yaml.safe_load(wave.inventory_path.read_text(encoding="utf-8"))
    document["all"]["children"]["lab"]["hosts"][host]["cpuu_user"] = users
    wave.inventory_path.write_text(yaml.safe_dump(document), encoding="utf-8")


def _wait_for_cpuu(ws) -> None:
    """Until the workstation's tasks are no longer running (the lab's CPUU takes a moment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ws.refresh()
        if not any(task.running for task in ws.tasks.values()):
            return
        time.sleep(0.05)
    raise AssertionError("CPUU still running after 10 s")


def _technician_at_the_console(wave_factory):
    """One lab host whose user (with Outlook profiles) left the console to a technician."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    owner = ws.interactive_user
    ws.logoff()
    ws.logon(TECHNICIAN)
    return wave, host, ws, owner


def _row(wave, run_id: str, host: str) -> dict:
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(run_id, host)
    assert row is not None
    return row


def test_a_user_on_remote_desktop_is_switched_in_their_own_session(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    owner = ws.last_user  # has Outlook profiles here; now on Remote Desktop, console empty
    ws.rdp_logon(owner)
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row = _row(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert row["user"] == owner
    assert [start.user for start in ws.cpuu_starts] == [owner]


def test_a_technician_at_the_console_never_takes_the_expected_users_run(wave_factory):
    wave, host, ws, owner = _technician_at_the_console(wave_factory)
    _expect(wave, host, owner)
    first = wave.run(
        make_playbook(wave.payload, when_no_user="at_logon", retries=0), write_report=False
    )
    row = _row(wave, first.run_id, host)
    assert row["state"] == states.PENDING, row
    assert owner in row["error_message"] and TECHNICIAN in row["error_message"]
    assert ws.cpuu_starts == []  # not run as the technician

    ws.rdp_logon(owner)  # a logon trigger fires for a Remote Desktop logon too
    assert [start.user for start in ws.cpuu_starts] == [owner]
    _wait_for_cpuu(ws)
    with lab_env(wave.fleet):
        later = run_single_step(wave.request(), "collect", pattern="all")
    row = _row(wave, later.run_id, host)
    assert (row["state"], row["user"]) == (states.SUCCEEDED, owner), row


def test_the_expected_user_on_remote_desktop_is_run_for_while_a_technician_is_at_the_console(
    wave_factory,
):
    wave, host, ws, owner = _technician_at_the_console(wave_factory)
    ws.rdp_logon(owner)
    _expect(wave, host, ["CORP\\someone-else", owner])
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["user"]) == (states.SUCCEEDED, owner), row
    assert [start.user for start in ws.cpuu_starts] == [owner]


def test_several_users_and_nobody_expected_runs_for_nobody_and_says_who(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    ws.rdp_logon("CORP\\alice")
    ws.rdp_logon("CORP\\bob")
    result = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (states.SKIPPED, "policy"), row
    assert "CORP\\alice" in row["error_message"] and "CORP\\bob" in row["error_message"]
    assert "cpuu_user" in row["error_message"]
    assert ws.cpuu_starts == []


def test_preflight_lists_every_session_console_and_remote(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    console = ws.interactive_user
    ws.rdp_logon(OWNER)
    result = wave.run(make_playbook(wave.payload, steps=("preflight",)), write_report=False)
    with Journal.in_reports(wave.reports) as journal:
        (attempt,) = [a for a in journal.attempts(result.run_id, host) if a["step"] == "preflight"]
    sessions = json.loads(attempt["details_json"])["sessions"]
    assert [(s["user"], s["kind"]) for s in sessions] == [(console, "console"), (OWNER, "rdp")]
    assert all(isinstance(s["session_id"], int) and s["logon_time"] for s in sessions)


def test_a_cpuu_user_that_is_not_a_user_stops_the_run_before_any_host(wave_factory):
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    _expect(wave, host, ["CORP\\jdupont", 42])
    with pytest.raises(InputError, match="cpuu_user must be a user"):
        wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    assert wave.workstation(host).tasks == {} and not wave.workstation(host).cpuu_starts
