"""The run lease: one live controller per run and per host, a dead one taken over at once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from cpuu_fleet.engine.lease import EXPIRY_S, RunLease, is_dead, live_status, this_controller
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal


@pytest.fixture
def journal(journal_location):
    """The same lease rules on SQLite and on a shared PostgreSQL."""
    with Journal(journal_location) as j:
        yield j


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _fake_lease(journal: Journal, run_id: str, hosts: list[str], owner: dict) -> None:
    """A lease as another controller left it (no heartbeat thread in this process)."""
    journal.start_run(run_id=run_id)
    assert journal.take_lease(run_id, hosts, owner, lambda *_: False) is None


def test_a_second_run_over_a_held_host_is_refused_naming_the_live_run(journal):
    first = RunLease.take(journal, "run-a", ["pc1", "pc2"])
    try:
        with pytest.raises(InputError) as refused:
            RunLease.take(journal, "run-b", ["pc2", "pc3"])
        text = refused.value.render()
        assert "run-a" in text and "pc2" in text and "--resume run-a" in text
        # Nothing of the refused run is held: pc3 is free for a third run.
        RunLease.take(journal, "run-c", ["pc3"]).release()
    finally:
        first.release()
    RunLease.take(journal, "run-b", ["pc2", "pc3"]).release()  # free once run-a ended


def test_a_dead_controllers_lease_is_taken_over_and_its_run_reads_interrupted(journal):
    owner = {**this_controller(), "pid": _dead_pid()}
    _fake_lease(journal, "run-dead", ["pc1"], owner)
    assert live_status(journal, journal.run("run-dead")) == "interrupted"
    RunLease.take(journal, "run-resume", ["pc1"]).release()
    assert journal.run("run-dead")["status"] == "interrupted"
    assert journal.leases() == []


def test_a_live_controllers_run_reads_running(journal):
    journal.start_run(run_id="run-live")
    lease = RunLease.take(journal, "run-live", ["pc1"])
    try:
        assert live_status(journal, journal.run("run-live")) == "running"
    finally:
        lease.release()
    # Released without finishing the run (a crash after the waves): not shown as running.
    assert live_status(journal, journal.run("run-live")) == "interrupted"


def test_another_machines_lease_lives_until_its_heartbeat_expires():
    owner = {"machine": socket.gethostname() + "-other", "pid": 1, "process_start": None}
    now = datetime.now(timezone.utc)
    fresh = (now - timedelta(seconds=EXPIRY_S - 5)).isoformat()
    stale = (now - timedelta(seconds=EXPIRY_S + 5)).isoformat()
    assert not is_dead(owner, fresh, now=now)
    assert is_dead(owner, stale, now=now)


def test_a_recycled_pid_does_not_keep_a_lease_alive():
    me = this_controller()
    if me["process_start"] is None:
        pytest.skip("no /proc here to read a process start time from")
    now = datetime.now(timezone.utc).isoformat()
    assert not is_dead(me, now)
    assert is_dead({**me, "process_start": str(int(me["process_start"]) + 1)}, now)


def test_the_lease_owner_is_kept_for_the_operator(journal):
    lease = RunLease.take(journal, "run-a", ["pc1"])
    try:
        (row,) = journal.leases()
        owner = json.loads(row["owner_json"])
        assert owner["pid"] == this_controller()["pid"]
        assert owner["machine"] == socket.gethostname()
    finally:
        lease.release()
