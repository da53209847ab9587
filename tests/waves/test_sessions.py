"""Who CPUU runs for: RDP users, technicians at the console and the host's expected user
(issue 10), played by the lab over real pypsrp and judged by the lab's own record of CPUU starts.

``Win32_ComputerSystem.UserName`` names the console's user only: before, a user on Remote Desktop
was "nobody", and whoever sat at the console (a technician) was switched in the user's place.
"""

from __future__ import annotations

import csv
import json

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet import vocabulary as V
from cpuu_fleet.engine.wave import run_single_step
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.workstation import OutlookProfile
from tests.support.links import DropsOnce
from tests.support.users import (
    TECHNICIAN,
    expect_users,
    technician_at_the_console,
    wait_for_cpuu,
)
from tests.support.waves import lab_env, make_playbook

OWNER = "CORP\\mailbox-owner"


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
    wave, host, ws, owner = technician_at_the_console(wave_factory)
    expect_users(wave, host, owner)
    first = wave.run(
        make_playbook(wave.payload, when_no_user="at_logon", retries=0), write_report=False
    )
    row = _row(wave, first.run_id, host)
    assert row["state"] == states.PENDING, row
    assert owner in row["error_message"] and TECHNICIAN in row["error_message"]
    assert ws.cpuu_starts == []  # not run as the technician

    ws.rdp_logon(owner)  # a logon trigger fires for a Remote Desktop logon too
    assert [start.user for start in ws.cpuu_starts] == [owner]
    wait_for_cpuu(ws)
    with lab_env(wave.fleet):
        later = run_single_step(wave.request(), "collect", pattern="all")
    row = _row(wave, later.run_id, host)
    assert (row["state"], row["user"]) == (states.SUCCEEDED, owner), row


def test_the_expected_user_on_remote_desktop_is_run_for_while_a_technician_is_at_the_console(
    wave_factory,
):
    wave, host, ws, owner = technician_at_the_console(wave_factory)
    ws.rdp_logon(owner)
    expect_users(wave, host, ["CORP\\someone-else", owner])
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
    expect_users(wave, host, ["CORP\\jdupont", 42])
    with pytest.raises(InputError, match="cpuu_user must be a user"):
        wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    assert wave.workstation(host).tasks == {} and not wave.workstation(host).cpuu_starts


# ------------------------------------------------------------------------ one run per user (RDS)

RDS_USERS = tuple(f"CORP\\rds{n}" for n in range(1, 5))


def _rds_host(wave_factory):
    """A Remote Desktop Session Host: the console's user and four users over RDP, each with an
    Outlook profile of their own."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    for user in RDS_USERS:
        name = user.split("\\")[1]
        ws.add_profile(user, OutlookProfile("Outlook", f"{name}@corp.example"))
        ws.rdp_logon(user)
    return wave, host, ws, (ws.interactive_user, *RDS_USERS)


def test_an_rds_host_gets_one_cpuu_run_and_one_result_per_logged_on_user(wave_factory):
    wave, host, ws, users = _rds_host(wave_factory)
    result = wave.run(make_playbook(wave.payload, users="each", retries=0), write_report=True)
    assert sorted(start.user for start in ws.cpuu_starts) == sorted(users)
    row = _row(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert f"{len(users)} user(s)" in row["error_message"]
    with Journal.in_reports(wave.reports) as journal:
        profiles = journal.profiles(result.run_id, host)
        runs = [a for a in journal.attempts(result.run_id, host) if a["step"] == "run"]
    assert sorted({p["user"] for p in profiles}) == sorted(users)
    assert len(runs) == len(users) and all(a["status"] == "changed" for a in runs)
    ws.refresh()
    for user in users:  # the lab's own record: each user's profiles were switched
        assert {p.state.value for p in ws.profiles_of(user) if not p.backup_of} == {"updated"}
    with (wave.reports / result.run_id / "profiles.csv").open(encoding="utf-8-sig") as stream:
        report_users = {row["user"] for row in csv.DictReader(stream)}
    assert set(users) <= report_users


def test_a_retried_rds_visit_never_starts_a_users_cpuu_twice(wave_factory):
    """The link drops after two users' CPUU ran: the retry (same run) reuses those two runs from
    the journal, runs the other users, and every user's CPUU starts exactly once."""
    wave, host, ws, users = _rds_host(wave_factory)
    playbook = make_playbook(wave.payload, users="each", retries=1)
    drops = DropsOnce("Run", 3)  # as the third user's run is sent, before the host gets it
    result = wave.run(playbook, session_factory=drops, write_report=False)
    assert sorted(start.user for start in ws.cpuu_starts) == sorted(users)  # once each
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["attempts"]) == (states.SUCCEEDED, 2), row
    with Journal.in_reports(wave.reports) as journal:
        profiles = journal.profiles(result.run_id, host)
    assert sorted({p["user"] for p in profiles}) == sorted(users)


def test_users_each_without_preflight_is_refused_up_front(wave_factory):
    wave = wave_factory(1)
    with pytest.raises(InputError, match="needs the 'preflight' step"):
        make_playbook(wave.payload, steps=("push", "run", "collect"), users="each")


def test_an_rds_host_is_not_done_while_an_expected_user_has_not_been_run_for(wave_factory):
    wave, host, ws, _ = _rds_host(wave_factory)
    away = "CORP\\away-user"
    expect_users(wave, host, [RDS_USERS[0], RDS_USERS[1], away])
    result = wave.run(make_playbook(wave.payload, users="each", retries=0), write_report=False)
    assert sorted(start.user for start in ws.cpuu_starts) == sorted(RDS_USERS[:2])
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (V.WAITING, "policy"), row
    assert f"{away}: waiting" in row["error_message"]
    assert f"{away} not logged on" in row["error_message"]


# ------------------------------------------------------------------------ disconnected sessions


def test_a_disconnected_rds_user_is_skipped_by_default_and_leaves_the_host_waiting(wave_factory):
    wave, host, ws, users = _rds_host(wave_factory)
    away = RDS_USERS[2]
    ws.rdp_disconnect(away)
    result = wave.run(make_playbook(wave.payload, users="each", retries=0), write_report=False)
    assert sorted(start.user for start in ws.cpuu_starts) == sorted(u for u in users if u != away)
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["error_class"]) == (V.WAITING, "policy"), row
    assert f"{away}: waiting" in row["error_message"] and "disconnected" in row["error_message"]
    with Journal.in_reports(wave.reports) as journal:
        attempts = journal.attempts(result.run_id, host)
    (preflight,) = [a for a in attempts if a["step"] == "preflight"]
    states_seen = {s["user"]: s["state"] for s in json.loads(preflight["details_json"])["sessions"]}
    assert states_seen[away] == "disconnected"
    assert {states_seen[u] for u in users if u != away} == {"active"}
    # The lab's profile state: the disconnected user's profiles were not touched.
    assert {p.state.value for p in ws.profiles_of(away) if not p.backup_of} != {"updated"}


def test_with_disconnected_run_cpuu_runs_once_in_the_disconnected_session(wave_factory):
    wave = wave_factory(1, "no_user")
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    owner = ws.last_user  # on Remote Desktop, then their client went away without a logoff
    ws.rdp_logon(owner)
    ws.rdp_disconnect(owner)
    first = wave.run(make_playbook(wave.payload, retries=0), write_report=False)
    row = _row(wave, first.run_id, host)
    assert (row["state"], row["error_class"]) == (V.WAITING, "policy"), row
    assert ws.cpuu_starts == []  # skipped by default: never done, never run
    playbook = make_playbook(wave.payload, retries=1, disconnected="run")
    second = wave.run(playbook, write_report=False)
    row = _row(wave, second.run_id, host)
    assert (row["state"], row["user"]) == (states.SUCCEEDED, owner), row
    assert [start.user for start in ws.cpuu_starts] == [owner]  # once, by the lab's count


def test_a_retried_rds_visit_with_a_disconnected_user_never_starts_anyones_cpuu_twice(
    wave_factory,
):
    """The link drops as the third user's run is sent; the retry (same run) reuses what ended,
    runs the rest, and passes the disconnected user over again: the lab counts one CPUU start
    per connected user and none for the disconnected one, who leaves the host waiting."""
    wave, host, ws, users = _rds_host(wave_factory)
    away = RDS_USERS[0]
    ws.rdp_disconnect(away)
    playbook = make_playbook(wave.payload, users="each", retries=1)
    drops = DropsOnce("Run", 3)  # as the third user's run is sent, before the host gets it
    result = wave.run(playbook, session_factory=drops, write_report=False)
    starts = [start.user for start in ws.cpuu_starts]
    assert sorted(starts) == sorted(u for u in users if u != away)  # once each, never the away
    row = _row(wave, result.run_id, host)
    assert (row["state"], row["attempts"]) == (V.WAITING, 2), row
    assert f"{away}: waiting" in row["error_message"]
