"""``run: {users: each, per_host: N}``: up to N users' CPUU at once on a Remote Desktop Session
Host, proven by the lab's own record of CPUU starts and ends (never the controller's word), and
never twice per user, through a dropped link, a controller killed with SIGKILL, and a second
Ctrl-C."""

from __future__ import annotations

import csv
import json
import signal
from collections import Counter

import pytest

from cpuu_fleet import journal as states
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.workstation import OutlookProfile
from tests.support.commands import stop_with_run_steps_open
from tests.support.links import DropsOnce
from tests.support.waves import make_playbook

RDP_USERS = tuple(f"CORP\\rds{n}" for n in range(1, 6))


def _rds_host(wave_factory, cpuu_seconds: float):
    """A Remote Desktop Session Host with six users (the console's and five over RDP), each with
    an Outlook profile of their own; CPUU runs ``cpuu_seconds`` for each."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    for user in RDP_USERS:
        ws.add_profile(user, OutlookProfile("Outlook", f"{user.split(chr(92))[1]}@corp.example"))
        ws.rdp_logon(user)
    ws.cpuu.base_seconds = cpuu_seconds
    ws.cpuu.per_profile_seconds = 0.0
    return wave, host, ws, (ws.interactive_user, *RDP_USERS)


def _starts_per_user(ws) -> Counter[str]:
    return Counter(start.user for start in ws.cpuu_starts)


def _host_and_run_steps(wave, run_id: str, host: str) -> tuple[dict, list[dict]]:
    """The host's journal row in a run, and its run step attempts (one per user's run)."""
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(run_id, host)
        runs = [a for a in journal.attempts(run_id, host) if a["step"] == "run"]
    assert row is not None
    return row, runs


def _report_users(wave, run_id: str) -> set[str]:
    with (wave.reports / run_id / "profiles.csv").open(encoding="utf-8-sig") as stream:
        return {row["user"] for row in csv.DictReader(stream)}


def test_an_rds_host_runs_three_users_cpuu_at_a_time_and_reports_all_six(wave_factory):
    wave, host, ws, users = _rds_host(wave_factory, cpuu_seconds=3.0)
    playbook = make_playbook(wave.payload, users="each", per_host=3, timeout=60, retries=0)
    result = wave.run(playbook, write_report=True)

    assert _starts_per_user(ws) == Counter({user: 1 for user in users})
    assert ws.cpuu_peak == 3  # the lab's record: three at once, never four
    row, runs = _host_and_run_steps(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert f"{len(users)} user(s)" in row["error_message"]
    # One journal row per user's run, each from its start to its end, overlapping.
    assert len(runs) == len(users) and {a["status"] for a in runs} == {"changed"}
    assert runs[1]["started_at"] < runs[0]["ended_at"]
    assert set(users) <= _report_users(wave, result.run_id)
    ws.refresh()
    for user in users:
        assert {p.state.value for p in ws.profiles_of(user) if not p.backup_of} == {"updated"}


def test_per_host_one_runs_one_users_cpuu_at_a_time(wave_factory):
    wave, host, ws, users = _rds_host(wave_factory, cpuu_seconds=0.5)
    playbook = make_playbook(wave.payload, users="each", per_host=1, timeout=60, retries=0)
    result = wave.run(playbook, write_report=False)

    assert _starts_per_user(ws) == Counter({user: 1 for user in users})
    assert ws.cpuu_peak == 1
    row, runs = _host_and_run_steps(wave, result.run_id, host)
    assert row["state"] == states.SUCCEEDED, row
    assert len(runs) == len(users) and runs[0]["ended_at"] <= runs[1]["started_at"]


def test_a_link_lost_while_three_users_run_is_retried_without_a_second_start(wave_factory):
    wave, host, ws, users = _rds_host(wave_factory, cpuu_seconds=2.0)
    drops = DropsOnce("Status", 2)  # the second question: users' CPUU are at work on the host
    playbook = make_playbook(wave.payload, users="each", per_host=3, timeout=60, retries=1)
    result = wave.run(playbook, session_factory=drops, write_report=False)

    assert drops.calls >= 2  # the link did drop while CPUU ran
    assert _starts_per_user(ws) == Counter({user: 1 for user in users})
    assert ws.cpuu_peak <= 3
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(result.run_id, host)
        profiles = journal.profiles(result.run_id, host)
        attempts = journal.attempts(result.run_id, host)
    assert row is not None and (row["state"], row["attempts"]) == (states.SUCCEEDED, 2), row
    assert {p["user"] for p in profiles} == set(users)
    lost = [a for a in attempts if a["step"] == "run" and a["status"] == "failed"]
    assert lost and {a["error_class"] for a in lost} == {"unreachable"}
    assert not [a for a in attempts if a["status"] == "running"]


@pytest.mark.parametrize(
    "signals", [(signal.SIGKILL,), (signal.SIGINT, signal.SIGINT)], ids=["SIGKILL", "double SIGINT"]
)
def test_a_controller_stopped_while_three_users_run_then_resumed_starts_each_users_cpuu_once(
    wave_factory, signals
):
    """``kill -9``, or the documented second Ctrl-C (which leaves a started CPUU to finish on the
    host), while three users' CPUU run: ``--resume`` asks about those three, starts the other
    three, and collects all six users' results; the lab counts one start per user."""
    wave, host, ws, users = _rds_host(wave_factory, cpuu_seconds=4.0)
    playbook = make_playbook(wave.payload, users="each", per_host=3, timeout=60, retries=0)
    run_id, running = stop_with_run_steps_open(wave, playbook.path, 3, *signals)
    assert run_id is not None and running == 3, "the controller never had three users running"
    assert len(ws.cpuu_starts) == 3
    with Journal.in_reports(wave.reports) as journal:  # left open for --resume to ask about
        assert len([a for a in journal.unfinished_steps(run_id) if a["step"] == "run"]) == 3

    resumed = wave.follow_up(resume=run_id, inventory=None)
    assert _starts_per_user(ws) == Counter({user: 1 for user in users})  # once each, lab count
    assert ws.cpuu_peak <= 3
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(resumed.run_id, host)
        profiles = journal.profiles(resumed.run_id, host) + journal.profiles(run_id, host)
        runs = [a for a in journal.attempts(resumed.run_id, host) if a["step"] == "run"]
    assert row is not None and row["state"] == states.SUCCEEDED, row
    assert {p["user"] for p in profiles} == set(users)
    # The three that were at work were asked (found running or ended), the other three started.
    found = Counter(json.loads(a["details_json"]).get("resumed") for a in runs)
    assert found[None] == 3 and found["waited"] + found["finished"] == 3, found


def test_users_whose_cpuu_hangs_are_killed_on_their_deadline_one_start_each(wave_factory):
    """Past the deadline the pool's ``Run`` call kills each user's CPUU on the host: every user
    killed and failed, never success, each started once, never more than two at a time."""
    wave, host, ws, users = _rds_host(wave_factory, cpuu_seconds=1.0)
    ws.cpuu.hang = True
    playbook = make_playbook(wave.payload, users="each", per_host=2, timeout=2, retries=0)
    result = wave.run(playbook, write_report=False)

    assert _starts_per_user(ws) == Counter({user: 1 for user in users})
    assert ws.cpuu_peak == 2
    row, runs = _host_and_run_steps(wave, result.run_id, host)
    assert (row["state"], row["killed"]) == (states.FAILED, 1), row
    assert len(runs) == len(users) and {a["status"] for a in runs} == {"killed"}
