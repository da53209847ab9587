"""The lab's own record of CPUU starts (the witness of "never twice") and CPUU's set run time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuu_fleet.cpuu import ExitFlags
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.lab.workstation import USERS_GROUP

STAGE = r"C:\ProgramData\cpuu-fleet\0123456789ab"  # where the model's bench stages CPUU
UPDATE = f'"{STAGE}\\CPUU_Update.bat"'


@pytest.fixture
def start_on(bench):
    """Stage the bench's payload on a fleet's workstation and start CPUU there as its user.

    (The bench's class comes from the fixture, not an import: conftest modules of other test
    folders share the module name.)"""

    def start(fleet: LabFleet, name: str, task: str) -> None:
        ws = fleet.host(name).workstation
        type(bench)(ws, bench.clock).stage()
        ws.register_task(task, UPDATE, STAGE, user=ws.interactive_user)
        ws.start_task(task)

    return start


def test_each_task_start_that_reaches_cpuu_is_recorded_once_with_host_task_user_and_time(bench):
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    seen = []
    ws.on_cpuu_start = seen.append
    ws.register_task("cpuu-fleet-run-1", UPDATE, bench.stage_dir, user=bench.user)
    ws.start_task("cpuu-fleet-run-1")
    ws.start_task("cpuu-fleet-run-1")  # already running: Windows starts no second instance
    (start,) = ws.cpuu_starts
    assert seen == [start]
    assert (start.host, start.task, start.user, start.trigger) == (
        "pc-0001",
        "cpuu-fleet-run-1",
        bench.user,
        "Now",
    )
    assert start.time.startswith("2025-11-21T00:00:00")
    clock.advance(3600)
    ws.start_task("cpuu-fleet-run-1")  # finished: a new start is a second run, and counted
    assert len(ws.cpuu_starts) == 2


def test_a_start_at_logon_counts_and_a_task_that_never_reaches_cpuu_does_not(bench):
    ws = bench.ws
    ws.register_task("broken", '"C:\\nowhere\\CPUU_Update.bat"', bench.stage_dir, user=bench.user)
    ws.start_task("broken")
    assert ws.task("broken").last_result != 0 and ws.cpuu_starts == []
    ws.logoff()
    ws.register_task("at-logon", UPDATE, bench.stage_dir, user=USERS_GROUP, trigger="AtLogon")
    assert ws.cpuu_starts == []
    ws.logon(bench.user)
    (start,) = ws.cpuu_starts
    assert (start.task, start.trigger, start.user) == ("at-logon", "AtLogon", bench.user)


def test_the_fleet_counts_starts_per_host_and_writes_each_to_the_launch_log_at_once(
    tmp_path: Path, start_on
) -> None:
    log = tmp_path / "launches.jsonl"
    with LabFleet(3, workdir=tmp_path / "lab", launch_log=log) as fleet:
        start_on(fleet, "pc-0001", "t1")
        start_on(fleet, "pc-0003", "t1")
        # Read while the lab runs, as a test in another process would.
        lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        assert [(line["host"], line["task"]) for line in lines] == [
            ("pc-0001", "t1"),
            ("pc-0003", "t1"),
        ]
        ws1 = fleet.host("pc-0001").workstation
        assert lines[0]["user"] == ws1.interactive_user and lines[0]["time"]
        assert fleet.cpuu_start_counts() == {"pc-0001": 1, "pc-0002": 0, "pc-0003": 1}
        assert [s.host for s in fleet.cpuu_starts] == ["pc-0001", "pc-0003"]


@pytest.mark.parametrize("seconds", [0.0, 2.5])
def test_cpuu_seconds_sets_every_workstations_cpuu_run_time(
    tmp_path: Path, seconds, start_on
) -> None:
    with LabFleet(2, workdir=tmp_path / "lab", cpuu_seconds=seconds) as fleet:
        start_on(fleet, "pc-0002", "t")
        ws = fleet.host("pc-0002").workstation
        task = ws.tasks["t"]
        if seconds == 0:
            assert not task.running and task.last_result == ExitFlags.SUCCESS  # done at once
        else:
            assert task.running
            assert task.process.finish_at == pytest.approx(task.last_run_time.timestamp() + seconds)


def test_cpuu_seconds_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpuu_seconds"):
        LabFleet(1, workdir=tmp_path, cpuu_seconds=-1)


def test_the_lab_records_each_cpuu_from_start_to_end_and_the_most_that_ran_at_once(bench):
    """The witness of ``per_host``: CPUU's spans by the workstation's clock. One that ends when
    another starts does not overlap it; a killed one ends when it is killed, once."""
    bench.add("Outlook")
    ws, clock = bench.ws, bench.clock
    ws.cpuu.base_seconds, ws.cpuu.per_profile_seconds = 10.0, 0.0
    t0 = clock()

    def start(task: str) -> None:
        ws.register_task(task, UPDATE, bench.stage_dir, user=bench.user)
        ws.start_task(task)

    start("t1")
    start("t2")
    clock.advance(5)
    start("t3")
    assert ws.cpuu_peak == 3
    clock.advance(5)  # t1 and t2 end by themselves at 10 s, the instant t4 starts
    start("t4")
    assert [(s.start - t0, s.end and s.end - t0) for s in ws.cpuu_spans] == [
        (0, 10), (0, 10), (5, None), (10, None),
    ]  # fmt: skip
    clock.advance(1)
    (cpuu,) = [p for p in ws.cpuu_running if p.parent_pid == ws.task("t3").pid]
    assert ws.terminate_process(cpuu.pid)  # killed at 11 s (the model ends it twice: one end)
    clock.advance(9)
    ws.refresh()  # the model applies what time brought when somebody looks
    assert [s.end - t0 for s in ws.cpuu_spans if s.end] == [10, 10, 11, 20]
    assert ws.cpuu_peak == 3
