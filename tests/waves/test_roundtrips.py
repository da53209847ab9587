"""What one host visit costs on the wire: round trips are the price of a wave over a WAN."""

from __future__ import annotations

from collections import Counter

import pytest
import requests.adapters
from pypsrp.wsman import WSMan

from cpuu_fleet import journal as states
from cpuu_fleet.engine import lease
from cpuu_fleet.engine.runner import Runner
from cpuu_fleet.journal import Journal
from tests.support.waves import make_playbook


def test_a_full_visit_costs_no_more_round_trips_than_it_needs(wave_factory, monkeypatch):
    """preflight, push (300 kB payload), run, collect on one host: one pipeline per step plus the
    task removal, every Send full, no Signal for finished pipelines, one Delete."""
    wave = wave_factory(1)
    actions: Counter[str] = Counter()
    requests_sent = [0]
    invoke, send = WSMan.invoke, requests.adapters.HTTPAdapter.send

    def counting_invoke(self, action, *args, **kwargs):
        actions[action.rsplit("/", 1)[-1]] += 1
        return invoke(self, action, *args, **kwargs)

    def counting_send(self, request, *args, **kwargs):
        requests_sent[0] += 1
        return send(self, request, *args, **kwargs)

    monkeypatch.setattr(WSMan, "invoke", counting_invoke)
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", counting_send)
    result = wave.run(make_playbook(wave.payload, attached=True))
    assert result.counts.get(states.SUCCEEDED) == 1, result.counts
    # preflight, upload, run-task Run, run-task Remove, download (which lists too)
    assert actions["Command"] == 5
    assert actions["Signal"] == 0
    assert actions["Send"] == 2  # 300 kB as base64 + INI + batch files: two full Sends
    assert (actions["Create"], actions["Delete"]) == (1, 1)
    pipeline_receives = actions["Receive"] - 2  # opening the pool takes two, as on Windows
    assert pipeline_receives == 5  # each quick pipeline answers in one Receive
    auth_legs = requests_sent[0] - sum(actions.values())
    assert auth_legs == 3  # NTLM: anonymous POST, negotiate, authenticate


def test_a_plays_audit_step_costs_one_pipeline(wave_factory, monkeypatch):
    """preflight then audit on one host: the audit is one more Command answered in one Receive
    (every user's hives are read on the host, in that one pipeline)."""
    wave = wave_factory(1, "audit_mix")
    actions: Counter[str] = Counter()
    invoke = WSMan.invoke

    def counting_invoke(self, action, *args, **kwargs):
        actions[action.rsplit("/", 1)[-1]] += 1
        return invoke(self, action, *args, **kwargs)

    monkeypatch.setattr(WSMan, "invoke", counting_invoke)
    playbook = make_playbook(None, steps=("preflight", "audit"), folder=wave.root)
    wave.run(playbook)
    assert actions["Command"] == 2  # preflight, audit
    assert actions["Receive"] - 2 == 2  # opening the pool takes two; one per pipeline
    assert (actions["Create"], actions["Delete"], actions["Signal"]) == (1, 1, 0)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_healthy_visit_costs_few_journal_round_trips(
    wave_factory, monkeypatch, request, database
):
    """preflight, push, run and collect of one host, the runner's attempt around it: on
    PostgreSQL each round trip is a network wait (issue 14's goal: at most 10 a visit). The
    writes go with the guards (the write-ahead rows, the task name, the ends of run and collect,
    the visit's end), and the visit's questions about the host's history are answered from
    what its first write-ahead row brought back."""
    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    monkeypatch.setattr(lease, "HEARTBEAT_S", 3600.0)  # no heartbeat inside the count
    wave = wave_factory(1)
    trips: list[int] = []
    attempt = Runner._attempt

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        before = self.journal.round_trips
        attempt(self, *args, **kwargs)
        trips.append(self.journal.round_trips - before)

    monkeypatch.setattr(Runner, "_attempt", counted)
    result = wave.run(make_playbook(wave.payload, attached=True), journal_url=url)
    assert result.counts.get(states.SUCCEEDED) == 1, result.counts
    with Journal.in_reports(wave.reports, url) as journal:
        steps = [row["step"] for row in journal.attempts(result.run_id)]
    assert steps == ["connect", "preflight", "push", "run", "collect"]
    if database == "postgresql":
        # 5 write-ahead rows (the first brings the host's history back: earlier run steps,
        # pending task, files, profiles), the task name, the ends of run and collect, the
        # visit's end. Before issue 14's batching of reads: 14.
        assert trips == [9]
    else:
        assert trips == [21]  # SQLite, local: each write its own statement (22 before)
