"""Detached run steps (``run: {attached: false}``) against the lab: CPUU is started, the host
released, and the runner settles it later (on the session kept since the start when that comes
soon, else on a fresh connection); never twice, nothing lost."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from pypsrp.wsman import WSMan

from cpuu_fleet import journal as states
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.transport import WSManRequestHandler
from cpuu_fleet.visit import shelf
from cpuu_fleet.visit.steps.run import task_name_for
from tests.support.waves import make_playbook


def _open_shells(wave) -> dict[str, int]:
    counts = {h.name: len(h.endpoint.dispatcher.shells) for h in wave.fleet.hosts}
    return {name: count for name, count in counts.items() if count}


def _run_attempts(wave, run_id: str) -> list[dict]:
    with Journal.in_reports(wave.reports) as journal:
        return [a for a in journal.attempts(run_id) if a["step"] == "run"]


def test_a_detached_wave_succeeds_with_one_cpuu_start_and_one_run_row_per_host(wave_factory):
    wave = wave_factory(4)
    for host in wave.fleet.hosts:
        host.workstation.cpuu.base_seconds = 1.5  # long enough that every host is parked
    playbook = make_playbook(wave.payload, attached=False, forks=2, timeout=30)
    result = wave.run(playbook)

    assert result.counts == {states.SUCCEEDED: 4}
    assert set(wave.fleet.cpuu_start_counts().values()) == {1}
    assert _open_shells(wave) == {}  # every session closed, kept ones included
    runs = _run_attempts(wave, result.run_id)
    # One row per CPUU run, from its start to its end: ended with CPUU's outcome.
    assert sorted(a["host"] for a in runs) == sorted(h.name for h in wave.fleet.hosts)
    assert {a["status"] for a in runs} == {"changed"}
    for attempt in runs:
        details = json.loads(attempt["details_json"])
        assert not details.get("killed") and details["seconds"] >= 1.0
    with Journal.in_reports(wave.reports) as journal:
        assert journal.unfinished_steps(result.run_id) == []
        assert {len(journal.profiles(result.run_id, h.name)) > 0 for h in wave.fleet.hosts} == {
            True
        }


def test_a_detached_cpuu_that_hangs_is_killed_on_its_deadline_and_failed_never_success(
    wave_factory,
):
    wave = wave_factory(2, "cpuu_hang")
    playbook = make_playbook(wave.payload, attached=False, timeout=3)
    result = wave.run(playbook)

    assert result.counts == {states.FAILED: 2}
    assert set(wave.fleet.cpuu_start_counts().values()) == {1}
    with Journal.in_reports(wave.reports) as journal:
        rows = journal.hosts(result.run_id)
    assert {row["killed"] for row in rows} == {1}
    assert {a["status"] for a in _run_attempts(wave, result.run_id)} == {"killed"}


def test_users_each_stays_attached_even_when_the_play_asks_for_detached(wave_factory):
    wave = wave_factory(1)
    playbook = make_playbook(wave.payload, attached=False, users="each")
    result = wave.run(playbook)

    assert result.counts == {states.SUCCEEDED: 1}
    runs = _run_attempts(wave, result.run_id)
    assert runs and {a["status"] for a in runs} == {"changed"}


def _count_wsman_actions(monkeypatch) -> Counter[str]:
    actions: Counter[str] = Counter()
    invoke = WSMan.invoke

    def counting_invoke(self, action, *args, **kwargs):
        actions[action.rsplit("/", 1)[-1]] += 1
        return invoke(self, action, *args, **kwargs)

    monkeypatch.setattr(WSMan, "invoke", counting_invoke)
    return actions


@pytest.mark.parametrize(
    ("keep_s", "sessions"),
    [(None, 1), (0.5, 2)],
    ids=["asked soon: session kept", "asked later than it may idle: fresh session"],
)
def test_a_detached_visit_costs_as_many_pipelines_as_attached_and_one_session_if_asked_soon(
    wave_factory, monkeypatch, keep_s, sessions
):
    """Start, then (asked once, when CPUU is expected to have ended) Status, which also removes
    the ended task, and collect: as many pipelines as attached (preflight, upload, Run, Remove,
    download). Asked soon, on the session kept since the start: one pool and one logon, as
    attached. Asked later than a kept connection would live (HTTP.sys closes one after 120 s
    idle; here the limit is 0.5 s), on a fresh session: two."""
    if keep_s is not None:
        monkeypatch.setattr(shelf, "KEEP_S", keep_s)
    wave = wave_factory(1)
    host = wave.fleet.hosts[0]
    host.workstation.cpuu.base_seconds = 1.0
    actions = _count_wsman_actions(monkeypatch)
    playbook = make_playbook(wave.payload, attached=False, expected_seconds=3, timeout=60)
    result = wave.run(playbook)

    assert result.counts == {states.SUCCEEDED: 1}
    # preflight, upload, run-task Start | run-task Status -RemoveEnded, download
    assert actions["Command"] == 5
    assert (actions["Create"], actions["Delete"]) == (sessions, sessions)
    assert len(host.endpoint.logons) == sessions  # the lab's own count of NTLM logons
    task = task_name_for(result.run_id, Mode.UPDATE)
    assert wave.workstation(host.name).task(task) is None  # removed all the same


def _settled_wave(wave_factory, monkeypatch, *, hosts: int, cpuu_s: float, **playbook):
    """A detached wave whose every host succeeds with one CPUU start (the lab's count), and the
    WSMan actions it sent."""
    wave = wave_factory(hosts)
    for host in wave.fleet.hosts:
        host.workstation.cpuu.base_seconds = cpuu_s
    actions = _count_wsman_actions(monkeypatch)
    result = wave.run(make_playbook(wave.payload, attached=False, timeout=60, **playbook))
    assert result.counts == {states.SUCCEEDED: hosts}
    assert set(wave.fleet.cpuu_start_counts().values()) == {1}
    return wave, result, actions


def test_a_kept_session_whose_connection_the_host_closed_settles_on_a_fresh_one(
    wave_factory, monkeypatch
):
    """The host (here the lab's HTTP.sys idle timeout, shortened) closes the kept session's
    connection while CPUU runs: the settling question fails unread on it, is asked again on a
    fresh session, and the host ends as it would have: one CPUU start, its results collected."""
    monkeypatch.setattr(WSManRequestHandler, "timeout", 0.5)
    wave, result, actions = _settled_wave(
        wave_factory, monkeypatch, hosts=2, cpuu_s=2.0, expected_seconds=3
    )
    assert actions["Create"] == 4  # each host: the kept session's pool, then a fresh one
    with Journal.in_reports(wave.reports) as journal:
        assert journal.unfinished_steps(result.run_id) == []
        for host in wave.fleet.hosts:
            assert journal.profiles(result.run_id, host.name)


def test_kept_sessions_of_hosts_whose_question_is_put_off_are_closed_before_they_go_stale(
    wave_factory, monkeypatch
):
    """No run time known yet: the canary is asked often on its kept session; the others wait
    for its answers, and a session kept for one of them is closed once its question is put off
    past the keeping limit (here 2 s), then that host is settled on a fresh session."""
    monkeypatch.setattr(shelf, "KEEP_S", 2.0)
    wave, _, actions = _settled_wave(wave_factory, monkeypatch, hosts=4, cpuu_s=4.0, forks=4)
    assert _open_shells(wave) == {}
    # The canary kept its session (4 fresh ones would be 8); the others were put off.
    assert 5 <= actions["Create"] <= 7 and actions["Delete"] == actions["Create"]
