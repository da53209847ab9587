"""The fault matrix: cpuu-fleet's three promises checked against the lab's own record.

The promises (issue 8): CPUU never runs twice on a host for one run; nothing collected or decided
is lost; every list tells the same truth. Each case plays a wave with a real ``cpuu-fleet play``
process against a lab fleet, stops the controller by SIGKILL, SIGTERM or the documented double
Ctrl-C while it is in one step (preflight, push, run start = the run step began and CPUU has not
started yet, run wait = CPUU is running, collect), then ``play --resume RUN``, and judges with the
lab's record, not the controller's word:

* every host's CPUU started at most once for the run (the lab's launch log);
* every host's final state (its latest across the run and its resume) equals the state an
  uninterrupted wave gives the same fleet (the ``reference`` fixture);
* every result CSV a workstation's CPUU wrote is in the reports folder and in the journal.

Also: two controllers on one wave, ``--resume`` of a live run, a hung CPUU killed on its deadline
while the controller is gone, and three re-runs of a host that fails the same way each time.

Each case's row (case, signal, step, CPUU starts per host, final state) goes to the table printed
at the end of the session (see ``conftest.py``).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuu_fleet.journal import FAILED, PARTIAL, SKIPPED, SUCCEEDED
from tests.faults.fault_bench import (
    STEPS,
    FaultLab,
    MatrixRow,
    starts_cell,
    states_cell,
    stop,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

SIGNALS = ("SIGKILL", "SIGTERM", "double SIGINT")


# ------------------------------------------------------------------------------ the promises


def broken_promises(
    lab: FaultLab, run_id: str, reference: dict[str, str], row: MatrixRow
) -> list[str]:
    """What the lab's record says the controller broke, after RUN and its resume (and fill the
    row's starts and final state)."""
    problems = []
    counts = lab.start_counts()
    row.starts = starts_cell(counts)
    twice = {host: n for host, n in counts.items() if n > 1}
    if twice:
        problems.append(f"CPUU started more than once: {twice}")
    final = {host: r["state"] for host, r in lab.final_rows(run_id).items()}
    row.final = states_cell(final)
    if final != reference:
        wrong = {h: f"{final.get(h)} (not {s})" for h, s in reference.items() if final.get(h) != s}
        problems.append(f"final state differs from an uninterrupted wave: {wrong}")
    lost = lab.lost_results()
    if lost:
        problems.append(f"result files CPUU wrote but the reports/journal lack: {lost}")
    return problems


def record(row: MatrixRow, problems: list[str], output: str = "") -> None:
    """The case's verdict in its row, then the assertion (with the controller's last words)."""
    row.verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)
    assert not problems, "\n".join([*problems, "--- controller output (tail) ---", output[-3000:]])


# ------------------------------------------------------------------------------ the reference


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One uninterrupted wave on a fresh fleet: each host's final state, starts, what was lost."""
    with FaultLab(tmp_path_factory.mktemp("reference")) as lab:
        result = lab.play()
        (run_id,) = lab.run_ids()
        states = {host: r["state"] for host, r in lab.final_rows(run_id).items()}
        return {
            "states": states,
            "exit": result.returncode,
            "output": result.stdout[-3000:],
            "starts": lab.start_counts(),
            "lost": lab.lost_results(),
        }


def test_uninterrupted_wave(reference, matrix_row: MatrixRow) -> None:
    """The yardstick itself: every host succeeds, CPUU started once each, every result kept."""
    matrix_row.case = "uninterrupted (reference)"
    matrix_row.starts = starts_cell(reference["starts"])
    matrix_row.final = states_cell(reference["states"])
    problems = []
    if reference["exit"] != 0:
        problems.append(f"exit {reference['exit']}")
    if set(reference["states"].values()) != {SUCCEEDED}:
        problems.append(f"states {reference['states']}")
    if set(reference["starts"].values()) != {1}:
        problems.append(f"starts {reference['starts']}")
    if reference["lost"]:
        problems.append(f"lost {reference['lost']}")
    record(matrix_row, problems, reference["output"])


# ------------------------------------------------------------------------------ kill + resume


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("how", SIGNALS)
def test_stopped_controller_then_resume(
    how: str, step: str, fault_lab: FaultLab, reference, matrix_row: MatrixRow
) -> None:
    matrix_row.case, matrix_row.signal, matrix_row.step = "stop, then --resume", how, step
    _stop_then_resume(fault_lab, how, step, reference, matrix_row)


#: The steps whose order detached mode changes: CPUU runs with no fork (the host is parked, its
#: session kept only if it is asked again soon), and collect runs in a later visit.
DETACHED_STEPS = ("run wait", "collect")


@pytest.mark.parametrize("step", DETACHED_STEPS)
@pytest.mark.parametrize("how", SIGNALS)
def test_stopped_detached_controller_then_resume(
    how: str, step: str, tmp_path: Path, reference, matrix_row: MatrixRow
) -> None:
    """Detached (``run: {attached: false}``): the controller is stopped while hosts are started
    and not settled (or in their collect); ``--resume`` settles every host, CPUU once each. A
    controller that could clean up (not SIGKILL) closed the sessions it kept for parked hosts:
    no shell (wsmprovhost) is left open on any host."""
    matrix_row.case, matrix_row.signal, matrix_row.step = "detached: stop, --resume", how, step
    with FaultLab(tmp_path, attached=False) as lab:
        _stop_then_resume(lab, how, step, reference, matrix_row)
        if how != "SIGKILL":
            assert lab.open_shells() == {}


def _stop_then_resume(lab: FaultLab, how: str, step: str, reference, matrix_row: MatrixRow) -> None:
    proc = lab.start_play()
    seen = lab.wait_in_step(proc, step)
    if seen is None:
        out, _ = proc.communicate(timeout=30)
        record(matrix_row, [f"the controller never reached {step!r}"], out)
    matrix_row.hit = seen.summary()
    code = stop(proc, how)
    problems = []
    if code is None:
        problems.append(f"the controller did not exit after {how}")
    (run_id, *_) = lab.run_ids()
    resumed = lab.resume(run_id)
    if resumed.returncode not in (0, 3):
        problems.append(f"--resume exit {resumed.returncode}")
    problems += broken_promises(lab, run_id, reference["states"], matrix_row)
    record(matrix_row, problems, resumed.stdout)


# ------------------------------------------------------------------------------ two controllers


def test_two_controllers_on_one_wave(fault_lab: FaultLab, reference, matrix_row: MatrixRow):
    """Two ``play``s of the same wave, the second 0.5 s after the first: whichever holds the
    hosts first runs the wave (exit 0), the other is refused (exit 2, naming the live run) and
    writes no run; CPUU starts once per host. (Which one wins is a race on a loaded machine: a
    Python start and its imports take longer than 0.5 s there.)"""
    matrix_row.case, matrix_row.step = "two controllers", "second play 0.5 s later"
    first, second = fault_lab.two_plays()
    first_out, second_out = first.stdout, second.stdout
    runs = fault_lab.run_ids()
    run_id = runs[0]
    problems = []
    if len(runs) != 1:
        problems.append(f"{len(runs)} runs in the journal, not one")
    codes = sorted((first.returncode, second.returncode))
    refused = second_out if second.returncode == 2 else first_out
    if codes != [0, 2] or run_id not in refused:
        problems.append(
            f"plays exited {first.returncode} and {second.returncode}, not 0 and 2 naming {run_id}"
        )
    problems += broken_promises(fault_lab, run_id, reference["states"], matrix_row)
    record(matrix_row, problems, f"{first_out[-1500:]}\n--- second ---\n{second_out}")


LIVE_CPUU_SECONDS = 6.0
"""CPUU's time in the live-run case: long enough that the second controller (a Python start,
imports, the journal) certainly asks while the first one's CPUU still runs, on a loaded machine."""


@pytest.fixture
def slow_cpuu_lab(tmp_path: Path) -> Iterator[FaultLab]:
    with FaultLab(tmp_path, cpuu_seconds=LIVE_CPUU_SECONDS) as lab:
        yield lab


def test_resume_of_a_live_run_is_refused(slow_cpuu_lab: FaultLab, reference, matrix_row: MatrixRow):
    """``--resume`` of a run whose controller is alive (CPUU running) is refused with exit 2,
    naming the run; the live run finishes as if nothing had happened."""
    fault_lab = slow_cpuu_lab
    matrix_row.case, matrix_row.step = "--resume of a live run", "run wait"
    proc = fault_lab.start_play()
    seen = fault_lab.wait_in_step(proc, "run wait")
    assert seen is not None, proc.communicate(timeout=30)[0][-2000:]
    matrix_row.hit = seen.summary()
    (run_id,) = fault_lab.run_ids()
    resumed = fault_lab.resume(run_id)
    out, _ = proc.communicate(timeout=120)
    problems = []
    if resumed.returncode != 2 or run_id not in resumed.stdout:
        problems.append(f"--resume of a live run: exit {resumed.returncode}, not 2 naming the run")
    if proc.returncode != 0:
        problems.append(f"the live run: exit {proc.returncode}")
    problems += broken_promises(fault_lab, run_id, reference["states"], matrix_row)
    record(matrix_row, problems, f"{out[-1500:]}\n--- resume ---\n{resumed.stdout}")


# ------------------------------------------------------------------------------ a hung CPUU

HANG_TIMEOUT_S = 3


@pytest.mark.parametrize("attached", [True, False], ids=["attached", "detached"])
@pytest.mark.parametrize("how", ["SIGKILL", "double SIGINT"])
def test_hung_cpuu_killed_on_its_deadline_while_the_controller_is_gone(
    how: str, attached: bool, tmp_path: Path, matrix_row: MatrixRow
) -> None:
    """CPUU hangs; the controller is stopped while it waits (``kill -9``, or the documented
    double Ctrl-C, which leaves a started CPUU to its deadline); the deadline passes while nobody
    watches; ``--resume`` must record the host failed (killed), never succeeded. Detached, the
    hosts are parked (no session) when the controller goes."""
    matrix_row.case = "hung CPUU, deadline passes, --resume" + ("" if attached else " (detached)")
    matrix_row.signal, matrix_row.step = how, "run wait"
    with FaultLab(
        tmp_path, scenario="cpuu_hang", run_timeout=HANG_TIMEOUT_S, attached=attached
    ) as lab:
        proc = lab.start_play()
        seen = lab.wait_for(proc, lambda s: list(s.phases.values()).count("run wait") == 3)
        assert seen is not None, proc.communicate(timeout=30)[0][-2000:]
        matrix_row.hit = seen.summary()
        stop(proc, how)
        time.sleep(HANG_TIMEOUT_S + 2)  # past every host's deadline
        (run_id,) = lab.run_ids()
        resumed = lab.resume(run_id)
        rows = lab.final_rows(run_id)
        counts = lab.start_counts()
    matrix_row.starts = starts_cell(counts)
    killed = sum(1 for r in rows.values() if r["killed"])
    matrix_row.final = states_cell({h: r["state"] for h, r in rows.items()}) + f" (killed×{killed})"
    problems = []
    if any(n > 1 for n in counts.values()):
        problems.append(f"CPUU started more than once: {counts}")
    not_failed = {h: r["state"] for h, r in rows.items() if r["state"] != FAILED}
    if not_failed:
        problems.append(f"a killed hang must be failed, not {not_failed}")
    record(matrix_row, problems, resumed.stdout)


# ------------------------------------------------------------------------------ re-runs


def _action_list(lab: FaultLab, run_id: str) -> set[str]:
    path = lab.reports / run_id / "actions.csv"
    if not path.exists():
        return set()
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {row.get("host", "") for row in csv.DictReader(handle)}


def test_three_reruns_of_a_failing_host_are_each_judged_on_their_own_result(
    tmp_path: Path, matrix_row: MatrixRow
) -> None:
    """Offline profiles fail the same way every time (CPUU's result file is byte for byte the
    same): each of three runs starts CPUU once more and judges the host on its own result,
    never "skipped: nothing to do", and lists it for action each time."""
    matrix_row.case, matrix_row.step = "3 re-runs of a failing host", "-"
    finals, starts, problems, outputs = [], [], [], []
    with FaultLab(tmp_path, scenario="offline_profiles", hosts=2, cpuu_seconds=0.5) as lab:
        for attempt in range(1, 4):
            result = lab.play()
            outputs.append(f"--- run {attempt} ---\n{result.stdout[-1000:]}")
            run_id = lab.run_ids()[-1]
            states = {h: r["state"] for h, r in lab.final_rows(run_id).items()}
            finals.append(states_cell(states))
            counts = lab.start_counts()
            starts.append(starts_cell(counts))
            if any(n != attempt for n in counts.values()):
                problems.append(f"run {attempt}: CPUU starts so far {counts}, not {attempt} each")
            judged = {h: s for h, s in states.items() if s not in (FAILED, PARTIAL)}
            if judged:
                problems.append(f"run {attempt}: not failed/partial: {judged}")
            if result.returncode != 3:
                problems.append(f"run {attempt}: exit {result.returncode}, not 3")
            missing = set(states) - _action_list(lab, run_id)
            if missing:
                problems.append(f"run {attempt}: not in the action list: {sorted(missing)}")
            if SKIPPED in states.values():
                problems.append(f"run {attempt}: skipped (nothing to do?)")
    matrix_row.starts, matrix_row.final = " / ".join(starts), " / ".join(finals)
    record(matrix_row, problems, "\n".join(outputs))
