"""The command line, as an operator runs it: ``play``, exit codes, ``status``, and ``--resume``
after the controller was killed (``kill -9``) while CPUU ran on the workstations."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from cpuu_fleet import journal as states
from cpuu_fleet.journal import Journal
from tests.support.commands import cli_env as _env
from tests.support.commands import running_run_steps as _running_run_steps
from tests.support.commands import stop_with_run_steps_open
from tests.support.waves import make_playbook

REPO = Path(__file__).resolve().parents[2]


def _cli(wave, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", *args],
        env=_env(wave),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_play_exit_codes_json_and_status(wave_factory):
    wave = wave_factory(2)
    playbook = make_playbook(wave.payload)
    done = _cli(
        wave, "play", str(playbook.path), "-i", str(wave.inventory_path),
        "--reports", str(wave.reports), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert events[-1]["event"] == "result" and events[-1]["counts"] == {"succeeded": 2}
    assert any(e["event"] == "step_finished" and e["step"] == "push" for e in events)

    status = _cli(wave, "status", "--reports", str(wave.reports), "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["counts"] == {"succeeded": 2}

    bad = _cli(wave, "play", str(playbook.path), "-i", str(wave.inventory_path / "nope"))
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "cpuu-fleet: error:" in bad.stderr


def test_failed_hosts_give_exit_code_3_and_status_lists_them(wave_factory):
    wave = wave_factory(2, "wrong_password")
    playbook = make_playbook(wave.payload)
    done = _cli(wave, "play", str(playbook.path), "-i", str(wave.inventory_path),
                "--reports", str(wave.reports))  # fmt: skip
    assert done.returncode == 3
    assert "--retry-failed" in done.stdout  # the hint continues the playbook run
    status = _cli(wave, "status", "--reports", str(wave.reports))
    assert "Hosts needing action" in status.stdout and "authentication" in status.stdout
    # An ad-hoc step has no playbook to continue: its hint repeats the step on those hosts.
    step = _cli(wave, "preflight", "-i", str(wave.inventory_path), "--reports", str(wave.reports))
    assert step.returncode == 3
    assert "Retry:   the same command with --limit @" in step.stdout
    assert "--retry-failed" not in step.stdout


def test_resume_after_kill_9_never_runs_cpuu_twice(wave_factory):
    wave = wave_factory(4)
    launches: dict[str, int] = {}
    for host in wave.fleet.hosts:
        workstation = host.workstation
        workstation.cpuu.base_seconds = 3  # CPUU is still busy when the controller dies
        original = workstation._launcher

        def counting(ws, task, user, _original=original):
            launches[ws.name] = launches.get(ws.name, 0) + 1
            return _original(ws, task, user)

        workstation._launcher = counting
    playbook = make_playbook(wave.payload, timeout=30)
    # Killed with some hosts mid-run, others maybe not started.
    run_id, running = stop_with_run_steps_open(wave, playbook.path, 2)
    assert run_id is not None and running >= 2, "the controller never reached the run step"

    resumed = wave.follow_up(resume=run_id, inventory=None)
    with Journal.in_reports(wave.reports) as journal:
        rows = {r["host"]: r for r in journal.hosts(resumed.run_id)}
        assert set(rows) == {h.name for h in wave.fleet.hosts}
        for host, row in rows.items():
            assert row["state"] == states.SUCCEEDED, row
            assert journal.profiles(resumed.run_id, host), "results of the first run lost"
        asked = [
            a
            for a in journal.attempts(resumed.run_id)
            if a["step"] == "run" and '"resumed"' in (a["details_json"] or "")
        ]
        assert len(asked) >= 2  # the hosts whose CPUU was running were asked, not restarted
    assert launches == {h.name: 1 for h in wave.fleet.hosts}


def test_single_steps_preflight_run_collect(wave_factory):
    wave = wave_factory(2)
    common = ["-i", str(wave.inventory_path), "--reports", str(wave.reports)]
    assert _cli(wave, "preflight", *common, "--json").returncode == 0
    ran = _cli(
        wave, "run", "--mode", "update", *common, "--payload", str(wave.payload),
        "--templates", str(make_playbook(wave.payload).plays[0].templates), "--timeout", "10",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    collected = _cli(wave, "collect", *common, "--json")
    assert collected.returncode == 0, collected.stderr
    with Journal.in_reports(wave.reports) as journal:
        runs = journal.runs()
        assert [r["kind"] for r in runs] == ["step"] * 3
        last = runs[-1]["run_id"]
        assert journal.profiles(last), "collect found no result file"
        assert {f["kind"] for f in journal.files(last)} >= {"result", "log"}


def test_two_ctrl_c_leave_cpuu_running_and_resume_collects_it(wave_factory):
    wave = wave_factory(2)
    launches: dict[str, int] = {}
    for host in wave.fleet.hosts:
        host.workstation.cpuu.base_seconds = 6
        original = host.workstation._launcher

        def counting(ws, task, user, _original=original):
            launches[ws.name] = launches.get(ws.name, 0) + 1
            return _original(ws, task, user)

        host.workstation._launcher = counting
    playbook = make_playbook(wave.payload, timeout=30)
    controller = subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", "play", str(playbook.path),
         "-i", str(wave.inventory_path), "--reports", str(wave.reports), "--json"],
        env=_env(wave), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    journal_path = wave.reports / Journal.FILENAME
    deadline = time.monotonic() + 60
    run_id, running = None, 0
    while time.monotonic() < deadline and running < 2:
        run_id, running = _running_run_steps(journal_path)
        time.sleep(0.05)
    controller.send_signal(signal.SIGINT)
    time.sleep(0.3)
    controller.send_signal(signal.SIGINT)
    _out, err = controller.communicate(timeout=30)
    assert controller.returncode == 130, err
    with Journal.in_reports(wave.reports) as journal:
        assert journal.run(run_id)["status"] == "interrupted"
        assert len([s for s in journal.unfinished_steps(run_id) if s["step"] == "run"]) == 2
        rows = journal.hosts(run_id)
        assert {r["error_class"] for r in rows} == {"interrupted"}
    resumed = wave.follow_up(resume=run_id, inventory=None)
    assert resumed.counts == {"succeeded": 2}
    assert launches == {h.name: 1 for h in wave.fleet.hosts}
