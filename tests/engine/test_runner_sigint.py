"""Ctrl-C for real: a subprocess runs the runner and receives SIGINT, once or twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cpuu_fleet.journal import FAILED, NOT_RUN, SUCCEEDED, Journal

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from tests.support.small_inventory import SmallInventory, names
    from cpuu_fleet.journal import Journal, SUCCEEDED, FAILED
    from cpuu_fleet.inputs.playbook import load_playbook
    from cpuu_fleet.engine.planning import build_plan
    from cpuu_fleet.engine.runner import HostOutcome, Runner

    work_dir = Path(sys.argv[1])
    (work_dir / "play.yml").write_text(
        "- name: Update\\n  hosts: wave1\\n  forks: 2\\n  steps: [preflight]\\n"
    )
    inventory = SmallInventory({{"wave1": names("pc", 5)}})
    plan = build_plan(load_playbook(work_dir / "play.yml"), inventory)

    def work(job):
        (work_dir / f"started-{{job.name}}").touch()
        while not (work_dir / "release").exists():
            if job.stopping.wait(0.01):
                return HostOutcome(FAILED, "interrupted", "stopped before the run step")
        return HostOutcome(SUCCEEDED)

    class Witness:
        def run_interrupted(self, event):
            (work_dir / f"interrupted-{{event.level}}").touch()

    journal = Journal.in_reports(work_dir / "reports")
    summary = Runner(journal, work_dir / "reports", [Witness()]).run(plan, work)
    print(json.dumps({{"run_id": summary.run_id, "status": summary.status,
                      "reason": summary.stop_reason, "states": summary.states}}))
    """
)


def _start(tmp_path: Path) -> subprocess.Popen:
    script = SCRIPT.format()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _started(tmp_path: Path) -> int:
    return len(list(tmp_path.glob("started-*")))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_first_sigint_drains_running_hosts_and_leaves_the_rest_not_run(tmp_path):
    proc = _start(tmp_path)
    try:
        assert _wait_for(lambda: _started(tmp_path) == 2), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        assert _wait_for((tmp_path / "interrupted-1").exists)
        (tmp_path / "release").touch()  # the running hosts finish; nothing new may start
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "interrupted"
    assert result["reason"] == "interrupted by Ctrl-C: 3 host(s) not started"
    assert _started(tmp_path) == 2
    journal = Journal.in_reports(tmp_path / "reports")
    assert journal.state_counts(result["run_id"]) == {SUCCEEDED: 2, NOT_RUN: 3}
    assert journal.run(result["run_id"])["status"] == "interrupted"
    assert (tmp_path / "reports" / result["run_id"] / "failed.retry").read_text() == ""
    journal.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_second_sigint_stops_the_running_hosts_and_keeps_the_journal_consistent(tmp_path):
    proc = _start(tmp_path)
    try:
        assert _wait_for(lambda: _started(tmp_path) == 2), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        assert _wait_for((tmp_path / "interrupted-1").exists)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "interrupted"
    journal = Journal.in_reports(tmp_path / "reports")
    rows = journal.hosts(result["run_id"])
    assert journal.state_counts(result["run_id"]) == {FAILED: 2, NOT_RUN: 3}
    assert all(r["ended_at"] for r in rows if r["state"] == FAILED)
    assert {r["error_class"] for r in rows if r["state"] == FAILED} == {"interrupted"}
    journal.close()
