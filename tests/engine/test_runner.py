"""The runner with real threads and a real journal; host work is plain Python standing in for WinRM."""

from __future__ import annotations

import threading
import time

import pytest

from cpuu_fleet.engine.planning import Policy, build_plan
from cpuu_fleet.engine.runner import COMPLETED, INTERRUPTED, STOPPED, HostOutcome, Runner
from cpuu_fleet.journal import (
    FAILED,
    NOT_RUN,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    UNREACHABLE,
)
from tests.support.small_inventory import SmallInventory, names


def _playbook(write_playbook, **keys):
    lines = [f"  {k}: {v}" for k, v in keys.items()]
    return write_playbook(
        "- name: Update\n  hosts: wave1\n" + "\n".join(lines) + "\n  steps: [preflight]\n"
    )


class Recorder:
    """Collects every event a run emits, in order."""

    def __init__(self):
        self.events = []

    def on_event(self, event):
        self.events.append(event)

    def of(self, kind):
        return [e for e in self.events if e.kind == kind]


def test_batches_run_in_order_with_at_most_forks_hosts_at_once(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 10)})
    playbook = _playbook(write_playbook, serial='[2, "40%"]', forks=3)
    lock = threading.Lock()
    running, peak, log = [0], [0], []

    def work(job):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            log.append(("start", job.batch, job.name))
        deadline = time.monotonic() + 2
        while job.batch > 1 and peak[0] < 3 and time.monotonic() < deadline:  # fill the pool once
            time.sleep(0.002)
        time.sleep(0.005)
        with lock:
            running[0] -= 1
            log.append(("end", job.batch, job.name))
        return HostOutcome(SUCCEEDED)

    recorder = Recorder()
    runner = Runner(journal, tmp_path / "reports", [recorder])
    summary = runner.run(build_plan(playbook, inventory), work, playbook="play.yml")

    assert summary.status == COMPLETED
    assert summary.counts == {SUCCEEDED: 10}
    assert peak[0] == 3  # batches of 4 with forks 3
    # serial [2, "40%"] of 10 hosts: 2, 4, 4; every host of a batch ends before the next starts.
    assert [len(e.hosts) for e in recorder.of("batch_started")] == [2, 4, 4]
    for batch in (1, 2):
        last_end = max(i for i, (what, b, _) in enumerate(log) if what == "end" and b == batch)
        first_next = min(i for i, (what, b, _) in enumerate(log) if b == batch + 1)
        assert last_end < first_next
    rows = journal.hosts(summary.run_id)
    assert {r["state"] for r in rows} == {SUCCEEDED}
    assert all(r["attempts"] == 1 and r["started_at"] <= r["ended_at"] for r in rows)
    assert [r["batch"] for r in rows] == [1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert journal.run(summary.run_id)["status"] == COMPLETED


def _failing(bad: dict[str, str]):
    def work(job):
        state = bad.get(job.name)
        if state == UNREACHABLE:
            return HostOutcome(UNREACHABLE, "unreachable", "connection refused")
        if state == FAILED:
            return HostOutcome(FAILED, "remote", "disk full")
        return HostOutcome(SUCCEEDED)

    return work


def test_max_fail_percentage_exceeded_stops_later_batches(journal, tmp_path, write_playbook):
    hosts = names("pc", 20)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=10, max_fail_percentage=20)
    bad = {hosts[1]: FAILED, hosts[2]: FAILED, hosts[3]: FAILED, hosts[4]: UNREACHABLE}
    recorder = Recorder()

    summary = Runner(journal, tmp_path / "r", [recorder]).run(
        build_plan(playbook, inventory), _failing(bad)
    )

    assert summary.status == STOPPED
    assert summary.stop_reason == (
        "play 'Update' batch 1: 3 of 9 reached hosts failed (33.3%; 1 unreachable, counted"
        " apart) > max_fail_percentage 20"
    )
    run = journal.run(summary.run_id)
    assert (run["status"], run["stop_reason"]) == (STOPPED, summary.stop_reason)
    assert journal.hosts_in_states(summary.run_id, [NOT_RUN]) == hosts[10:]
    assert journal.state_counts(summary.run_id) == {
        SUCCEEDED: 6,
        FAILED: 3,
        UNREACHABLE: 1,
        NOT_RUN: 10,
    }
    row = journal.host(summary.run_id, hosts[15])
    assert row["error_message"].startswith("not started: play 'Update' batch 1")
    finished = recorder.of("batch_finished")[0]
    assert (finished.failed, finished.unreachable) == (3, 1)  # reported apart


def test_unreachable_hosts_do_not_count_as_failures_unlike_ansible(
    journal, tmp_path, write_playbook
):
    # Ansible would stop here (3 of 10 > 20 %); here 1 of 8 reached hosts failed, and 2 of the
    # play's 20 hosts were unreachable, well within the default 25 %.
    hosts = names("pc", 20)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=10, max_fail_percentage=20)
    work = _failing({hosts[1]: FAILED, hosts[4]: UNREACHABLE, hosts[7]: UNREACHABLE})

    summary = Runner(journal, tmp_path / "r").run(build_plan(playbook, inventory), work)

    assert summary.status == COMPLETED, summary.stop_reason
    assert summary.counts == {SUCCEEDED: 17, FAILED: 1, UNREACHABLE: 2}


def test_unreachable_hosts_stop_the_play_by_their_own_threshold(journal, tmp_path, write_playbook):
    hosts = names("pc", 10)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=2, max_unreachable_percentage=15)
    work = _failing({hosts[0]: UNREACHABLE, hosts[3]: UNREACHABLE})

    summary = Runner(journal, tmp_path / "r").run(build_plan(playbook, inventory), work)

    assert summary.status == STOPPED
    assert summary.stop_reason == (
        "play 'Update' batch 2: 2 of the play's 10 hosts unreachable so far (20%)"
        " > max_unreachable_percentage 15"
    )
    assert journal.hosts_in_states(summary.run_id, [NOT_RUN]) == hosts[4:]


def test_a_check_plan_is_never_stopped(journal, tmp_path, write_playbook):
    hosts = names("pc", 6)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=1, max_fail_percentage=0)
    work = _failing({hosts[0]: FAILED, hosts[1]: UNREACHABLE, hosts[2]: UNREACHABLE})
    plan = build_plan(playbook, inventory, policy=Policy(check=True))

    summary = Runner(journal, tmp_path / "r").run(plan, work)

    assert summary.status == COMPLETED
    assert summary.counts == {FAILED: 1, UNREACHABLE: 2, SUCCEEDED: 3}


def test_max_fail_percentage_reached_but_not_exceeded_carries_on(journal, tmp_path, write_playbook):
    hosts = names("pc", 20)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=10, max_fail_percentage=20)
    work = _failing({hosts[0]: FAILED, hosts[1]: UNREACHABLE})  # exactly 20% of batch 1

    summary = Runner(journal, tmp_path / "r").run(build_plan(playbook, inventory), work)

    assert summary.status == COMPLETED
    assert summary.counts == {SUCCEEDED: 18, FAILED: 1, UNREACHABLE: 1}
    assert summary.stop_reason is None


def test_without_max_fail_only_a_batch_where_every_reached_host_failed_stops(
    journal, tmp_path, write_playbook
):
    hosts = names("pc", 6)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial="[1, 5]")
    summary = Runner(journal, tmp_path / "r").run(
        build_plan(playbook, inventory), _failing({hosts[0]: FAILED})
    )
    assert summary.status == STOPPED
    assert "batch 1: all 1 reached hosts failed (no max_fail_percentage" in summary.stop_reason
    assert summary.counts == {FAILED: 1, NOT_RUN: 5}

    # An unreachable canary proves nothing about the change: 1 of 6 is within 25 %.
    summary = Runner(journal, tmp_path / "r").run(
        build_plan(playbook, inventory), _failing({hosts[0]: UNREACHABLE})
    )
    assert summary.status == COMPLETED
    assert summary.counts == {UNREACHABLE: 1, SUCCEEDED: 5}


def test_transient_failures_are_retried_with_backoff_and_attempts_recorded(
    journal, tmp_path, write_playbook
):
    hosts = names("pc", 3)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, retries=2, forks=3)
    calls: dict[str, list[int]] = {h: [] for h in hosts}
    flaky, dead, denied = hosts

    def work(job):
        calls[job.name].append(job.attempt)
        step = job.journal.start_step(job.run_id, job.name, "connect", job.attempt)
        if job.name == flaky and job.attempt < 3:
            job.journal.end_step(step, "failed", error_class="timeout")
            return HostOutcome(UNREACHABLE, "timeout", "read timed out", transient=True)
        if job.name == dead:
            job.journal.end_step(step, "failed", error_class="unreachable")
            return HostOutcome(UNREACHABLE, "unreachable", "no route", transient=True)
        if job.name == denied:
            job.journal.end_step(step, "failed", error_class="authentication")
            return HostOutcome(FAILED, "authentication", "access denied", transient=False)
        job.journal.end_step(step, "ok")
        return HostOutcome(SUCCEEDED)

    recorder = Recorder()
    runner = Runner(journal, tmp_path / "r", [recorder], retry_backoff=0.01)
    summary = runner.run(build_plan(playbook, inventory), work)

    assert calls == {flaky: [1, 2, 3], dead: [1, 2, 3], denied: [1]}
    assert summary.states == {flaky: SUCCEEDED, dead: UNREACHABLE, denied: FAILED}
    rows = {r["host"]: r for r in journal.hosts(summary.run_id)}
    assert (rows[flaky]["attempts"], rows[dead]["attempts"], rows[denied]["attempts"]) == (3, 3, 1)
    assert rows[dead]["error_class"] == "unreachable"
    assert [a["attempt"] for a in journal.attempts(summary.run_id, flaky)] == [1, 2, 3]
    waits = [e.retry_in_s for e in recorder.of("host_finished") if e.host == dead]
    assert waits == [0.01, 0.02, None]  # exponential backoff, then the final result


def test_a_host_work_exception_is_that_hosts_result_and_the_others_finish(
    journal, tmp_path, write_playbook, capsys
):
    hosts = names("pc", 5)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, forks=2)

    def work(job):
        if job.name == hosts[2]:
            raise KeyError("profile-table")
        if job.name == hosts[3]:
            raise ConnectionError("https://admin:Hunter2-Secret@pc/wsman refused")
        return HostOutcome(SUCCEEDED)

    from cpuu_fleet.redact import REDACTOR

    REDACTOR.add("Hunter2-Secret")

    reports = tmp_path / "reports"
    runner = Runner(journal, reports)  # run.log is the runner's own
    summary = runner.run(build_plan(playbook, inventory), work)

    assert summary.status == COMPLETED
    assert summary.counts == {SUCCEEDED: 3, FAILED: 2}
    assert "Hunter2-Secret" not in summary.outcomes[hosts[3]].error_message
    row = journal.host(summary.run_id, hosts[2])
    assert (row["state"], row["error_class"]) == (FAILED, "internal")
    assert "KeyError" in row["error_message"]
    log = (reports / summary.run_id / "run.log").read_text(encoding="utf-8")
    assert "Traceback (most recent call last)" in log and "profile-table" in log
    assert "ConnectionError" in log and "Hunter2-Secret" not in log
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err


def test_a_host_work_returning_nonsense_is_an_internal_failure(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 2)})
    playbook = _playbook(write_playbook)
    summary = Runner(journal, tmp_path / "r").run(
        build_plan(playbook, inventory), lambda job: HostOutcome(RUNNING)
    )
    assert summary.counts == {FAILED: 2}
    assert journal.hosts(summary.run_id)[0]["error_class"] == "internal"


def test_outcome_host_fields_are_stored_with_the_final_state(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 1)})
    playbook = _playbook(write_playbook)

    def work(job):
        return HostOutcome(
            SUCCEEDED,
            host_fields={"user": "CORP\\jdoe", "exit_code": 4097, "task_name": "cpuu-fleet-1"},
        )

    summary = Runner(journal, tmp_path / "r").run(build_plan(playbook, inventory), work)
    row = journal.hosts(summary.run_id)[0]
    assert (row["user"], row["exit_code"], row["task_name"]) == ("CORP\\jdoe", 4097, "cpuu-fleet-1")


def test_ctrl_c_lets_running_hosts_finish_and_marks_the_others_not_run(
    journal, tmp_path, write_playbook
):
    hosts = names("pc", 8)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, forks=2, serial=4)
    started = threading.Semaphore(0)
    release = threading.Event()

    def work(job):
        started.release()
        release.wait(5)
        return HostOutcome(SUCCEEDED)

    runner = Runner(journal, tmp_path / "r", handle_sigint=False)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("s", runner.run(build_plan(playbook, inventory), work))
    )
    thread.start()
    assert started.acquire(timeout=5) and started.acquire(timeout=5)
    runner.interrupt()  # what the first Ctrl-C does
    release.set()
    thread.join(10)
    summary = result["s"]

    assert summary.status == INTERRUPTED
    assert summary.counts == {SUCCEEDED: 2, NOT_RUN: 6}
    assert summary.stop_reason == "interrupted by Ctrl-C: 6 host(s) not started"
    counts = journal.state_counts(summary.run_id)
    assert QUEUED not in counts and RUNNING not in counts
    assert journal.run(summary.run_id)["status"] == INTERRUPTED


def test_ctrl_c_during_a_retry_backoff_keeps_the_last_result(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": ["pc-1"]})
    playbook = _playbook(write_playbook, retries=3)
    tried = threading.Event()

    def work(job):
        tried.set()
        return HostOutcome(UNREACHABLE, "unreachable", "refused", transient=True)

    runner = Runner(journal, tmp_path / "r", handle_sigint=False, retry_backoff=30)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("s", runner.run(build_plan(playbook, inventory), work))
    )
    thread.start()
    assert tried.wait(5)
    time.sleep(0.1)  # now waiting out the 30 s backoff
    runner.interrupt()
    thread.join(5)
    assert not thread.is_alive()  # the backoff wait was cut short
    summary = result["s"]
    assert summary.states == {"pc-1": UNREACHABLE}
    row = journal.host(summary.run_id, "pc-1")
    assert (row["state"], row["attempts"]) == (UNREACHABLE, 1)


@pytest.mark.parametrize(("grace", "presses"), [(1.0, 2), (600, 3)])
def test_second_ctrl_c_stops_host_work_and_abandons_stuck_hosts_as_running(
    journal, tmp_path, write_playbook, grace, presses
):
    inventory = SmallInventory({"wave1": ["pc-good", "pc-stuck", "pc-later"]})
    playbook = _playbook(write_playbook, forks=2)
    both = threading.Barrier(3)
    never = threading.Event()

    def work(job):
        if job.name == "pc-later":
            return HostOutcome(SUCCEEDED)
        both.wait(5)
        if job.name == "pc-good":
            job.stopping.wait(5)  # cooperative: returns once asked to stop
            return HostOutcome(FAILED, "interrupted", "stopped before run", transient=False)
        never.wait(5)  # ignores the request (a hung WinRM call)
        return HostOutcome(SUCCEEDED)

    runner = Runner(journal, tmp_path / "r", handle_sigint=False, abort_grace_s=grace)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("s", runner.run(build_plan(playbook, inventory), work))
    )
    thread.start()
    both.wait(5)
    runner.interrupt()
    runner.interrupt()
    if presses == 3:  # the third press does not wait out the grace period
        deadline = time.monotonic() + 5
        run_id = journal.runs()[0]["run_id"]
        while journal.host(run_id, "pc-good")["state"] != FAILED and time.monotonic() < deadline:
            time.sleep(0.01)
        runner.interrupt()
    thread.join(5)
    assert not thread.is_alive()
    never.set()
    summary = result["s"]

    assert summary.status == INTERRUPTED
    rows = {r["host"]: r for r in journal.hosts(summary.run_id)}
    assert rows["pc-good"]["state"] == FAILED
    assert (rows["pc-stuck"]["state"], rows["pc-stuck"]["error_class"]) == (RUNNING, "interrupted")
    assert rows["pc-later"]["state"] == NOT_RUN


def test_a_host_that_failed_in_one_play_sits_out_the_next(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": ["pc-1", "pc-2"]})
    playbook = write_playbook(
        """
        - name: Check
          hosts: wave1
          steps: [preflight]
        - name: Update
          hosts: wave1
          steps: [push]
        """
    )
    seen = []

    def work(job):
        seen.append((job.play.name, job.name))
        if job.name == "pc-1" and job.play.name == "Check":
            return HostOutcome(FAILED, "policy", "nobody logged on")
        return HostOutcome(SUCCEEDED)

    summary = Runner(journal, tmp_path / "r").run(build_plan(playbook, inventory), work)
    assert sorted(seen[:2]) == [("Check", "pc-1"), ("Check", "pc-2")]
    assert seen[2:] == [("Update", "pc-2")]
    assert summary.states == {"pc-1": FAILED, "pc-2": SUCCEEDED}
    assert journal.host(summary.run_id, "pc-2")["play"] == "Update"


def test_a_threshold_crossed_by_the_last_batch_stops_nothing(journal, tmp_path, write_playbook):
    hosts = names("pc", 3)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, serial=2, max_fail_percentage=10)
    summary = Runner(journal, tmp_path / "r").run(
        build_plan(playbook, inventory), _failing({hosts[2]: FAILED})
    )
    assert (summary.status, summary.stop_reason) == (COMPLETED, None)
    assert summary.counts == {SUCCEEDED: 2, FAILED: 1}


def test_an_empty_plan_completes_with_nothing_to_do(journal, tmp_path, write_playbook):
    from cpuu_fleet.engine.planning import PlayPlan, RunPlan

    playbook = _playbook(write_playbook)
    plan = RunPlan(plays=(PlayPlan(playbook.plays[0], ()),), playbook=playbook)
    summary = Runner(journal, tmp_path / "r").run(plan, lambda job: HostOutcome(SUCCEEDED))
    assert (summary.status, summary.states) == (COMPLETED, {})
    assert summary.retry_file.read_text() == ""


def test_a_limit_that_leaves_no_host_is_an_input_error(write_playbook):
    from cpuu_fleet.errors import InputError

    inventory = SmallInventory({"wave2": ["pc-1"], "wave1": ["pc-2"]})
    with pytest.raises(InputError, match="no host to run: the plays' hosts \\('wave1'\\) narrowed"):
        build_plan(_playbook(write_playbook), inventory, limit="wave2")


def test_a_fault_in_the_runner_itself_never_leaves_the_run_completed(
    journal, tmp_path, write_playbook, monkeypatch
):
    inventory = SmallInventory({"wave1": names("pc", 4)})
    playbook = _playbook(write_playbook, serial=2)
    runner = Runner(journal, tmp_path / "r")
    calls = []
    real = runner._run_batch

    def second_batch_breaks(run_id, batch, work):
        calls.append(batch.number)
        if batch.number == 2:
            raise RuntimeError("disk full on the controller")
        return real(run_id, batch, work)

    monkeypatch.setattr(runner, "_run_batch", second_batch_breaks)
    with pytest.raises(RuntimeError):
        runner.run(build_plan(playbook, inventory), lambda job: HostOutcome(SUCCEEDED))
    (run,) = journal.runs()
    assert run["status"] == INTERRUPTED
    assert "disk full on the controller" in run["stop_reason"]
    assert journal.state_counts(run["run_id"]) == {SUCCEEDED: 2, NOT_RUN: 2}
