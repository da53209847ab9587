"""Detached run steps (``run: {attached: false}``) against the lab: CPUU is started, the host
released, and the runner settles it later on a fresh connection; never twice, nothing lost."""

from __future__ import annotations

import json
from collections import Counter

from pypsrp.wsman import WSMan

from cpuu_fleet import journal as states
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.journal import Journal
from cpuu_fleet.visit.steps import task_name_for
from tests.support.waves import make_playbook


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


def test_a_detached_visit_costs_one_more_session_and_no_more_pipelines_on_the_wire(
    wave_factory, monkeypatch
):
    """Start, then (asked once, when CPUU is expected to have ended) Status, which also removes
    the ended task, and collect on a second session: one more pool than attached and as many
    pipelines (attached: preflight, upload, Run, Remove, download)."""
    wave = wave_factory(1)
    wave.fleet.hosts[0].workstation.cpuu.base_seconds = 1.0
    actions: Counter[str] = Counter()
    invoke = WSMan.invoke

    def counting_invoke(self, action, *args, **kwargs):
        actions[action.rsplit("/", 1)[-1]] += 1
        return invoke(self, action, *args, **kwargs)

    monkeypatch.setattr(WSMan, "invoke", counting_invoke)
    playbook = make_playbook(wave.payload, attached=False, expected_seconds=3, timeout=60)
    result = wave.run(playbook)

    assert result.counts == {states.SUCCEEDED: 1}
    # preflight, upload, run-task Start | run-task Status -RemoveEnded, download
    assert actions["Command"] == 5
    assert (actions["Create"], actions["Delete"]) == (2, 2)
    task = task_name_for(result.run_id, Mode.UPDATE)
    assert wave.workstation(wave.fleet.hosts[0].name).task(task) is None  # removed all the same
