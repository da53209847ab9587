"""What the operator and scripts see: the JSON-lines stream, run.log, the live display, the ETA."""

from __future__ import annotations

import io
import json

from rich.console import Console

from cpuu_fleet.cli.progress import (
    JsonLinesPrinter,
    LiveProgress,
    PlainLines,
    RunStats,
    render_stats,
)
from cpuu_fleet.engine.events import (
    BatchPlan,
    BatchStarted,
    Fanout,
    HostFinished,
    HostStarted,
    RunStarted,
    StepFinished,
    StepStarted,
)
from cpuu_fleet.engine.planning import build_plan
from cpuu_fleet.engine.runner import HostOutcome, Runner
from cpuu_fleet.journal import FAILED, PARTIAL, PENDING, SUCCEEDED, UNREACHABLE
from cpuu_fleet.redact import Redactor
from tests.support.small_inventory import SmallInventory, names

SECRET = "Winter2026!Pa55"
PLAY = "- name: Update\n  hosts: wave1\n  serial: 2\n  forks: 2\n  steps: [preflight, push]\n"


def _work(job):
    job.step_started("preflight")
    job.step_finished("preflight", "ok", duration_s=0.01)
    if job.name == "pc-002":
        job.step_started("push")
        job.step_finished("push", "failed", error_class="remote", error_message=f"pw={SECRET}")
        return HostOutcome(FAILED, "remote", f"logon with {SECRET} refused")
    if job.name == "pc-003":
        return HostOutcome(UNREACHABLE, "unreachable", "connection refused")
    return HostOutcome(SUCCEEDED)


def test_json_event_stream_parses_line_by_line_and_holds_no_secret(
    journal, tmp_path, write_playbook
):
    redactor = Redactor()
    redactor.add(SECRET)
    stream = io.StringIO()
    inventory = SmallInventory({"wave1": names("pc", 4)})
    plan = build_plan(write_playbook(PLAY), inventory)
    summary = Runner(journal, tmp_path / "r", [JsonLinesPrinter(stream, redactor)]).run(plan, _work)

    text = stream.getvalue()
    assert SECRET not in text
    events = [json.loads(line) for line in text.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("batch_started") == 2 and kinds.count("host_finished") == 4
    assert kinds.count("step_finished") == 5
    assert all(e["run_id"] == summary.run_id and e["at"] for e in events)
    started = events[0]
    assert started["total_hosts"] == 4
    assert started["batches"] == [
        {"play": "Update", "batch": 1, "size": 2, "forks": 2},
        {"play": "Update", "batch": 2, "size": 2, "forks": 2},
    ]
    failed = next(e for e in events if e["event"] == "host_finished" and e["host"] == "pc-002")
    assert set(failed) >= {"host", "play", "batch", "wave", "state", "attempt", "error_class"}
    assert (failed["state"], failed["error_message"]) == (FAILED, "logon with ******** refused")
    finished = events[-1]
    assert finished["status"] == "completed"
    assert finished["counts"] == {SUCCEEDED: 2, FAILED: 1, UNREACHABLE: 1}
    assert finished["retry_file"].endswith("failed.retry")


def test_run_log_is_plain_text_and_scrubbed(journal, tmp_path, write_playbook):
    from cpuu_fleet.redact import REDACTOR

    REDACTOR.add(SECRET)  # the engine registers every secret it reveals with the process redactor
    reports = tmp_path / "reports"
    inventory = SmallInventory({"wave1": names("pc", 3)})
    plan = build_plan(write_playbook(PLAY), inventory)
    summary = Runner(journal, reports).run(plan, _work)  # writes run.log itself

    log = (reports / summary.run_id / "run.log").read_text(encoding="utf-8")
    assert SECRET not in log
    assert "pc-002: push failed [remote] pw=********" in log
    assert "pc-003: unreachable [unreachable] connection refused" in log
    assert f"run {summary.run_id} completed" in log
    assert log.splitlines()[0].startswith("20")  # ISO timestamps, UTC


class _FlushLog(io.StringIO):
    """A stream that notes which text had been written at each flush."""

    def __init__(self):
        super().__init__()
        self.flushed: list[str] = []

    def flush(self):
        self.flushed.append(self.getvalue())


def test_plain_lines_print_each_event_as_it_happens_and_hold_no_secret(
    journal, tmp_path, write_playbook
):
    redactor = Redactor()
    redactor.add(SECRET)
    stream = _FlushLog()
    inventory = SmallInventory({"wave1": names("pc", 4)})
    plan = build_plan(write_playbook(PLAY), inventory)
    summary = Runner(journal, tmp_path / "r", [PlainLines(stream, redactor)]).run(plan, _work)

    lines = stream.getvalue().splitlines()
    assert SECRET not in stream.getvalue()
    # Every line flushed on its own: a pipe shows it while the wave goes on.
    assert len(stream.flushed) == len(lines)
    assert [f.count("\n") for f in stream.flushed] == list(range(1, len(lines) + 1))
    text = [line.split(" ", 1)[1] for line in lines]  # after the HH:MM:SSZ
    assert text[0].startswith(f"run {summary.run_id} started")
    assert "pc-002: push failed [remote] pw=********" in text
    assert "pc-002: failed [remote] logon with ******** refused" in text
    assert "pc-003: unreachable [unreachable] connection refused" in text
    assert text.index("pc-001: succeeded") < text.index("play 'Update' batch 2/2: pc-003, pc-004")
    assert text[-1] == f"run {summary.run_id} completed: succeeded 2, failed 1, unreachable 1"


def test_live_display_shows_counts_batch_and_eta(journal, tmp_path, write_playbook):
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    display = LiveProgress(console)
    inventory = SmallInventory({"wave1": names("pc", 4)})
    plan = build_plan(write_playbook(PLAY), inventory)
    Runner(journal, tmp_path / "r", [display]).run(plan, _work)

    text = out.getvalue()
    assert "4/4 hosts" in text
    assert "succeeded 2" in text and "failed 1" in text and "unreachable 1" in text
    assert "Update: batch 2/2" in text
    assert "completed" in text and "failed.retry" in text
    assert display.stats.counts[SUCCEEDED] == 2 and display.stats.running == {}


def test_eta_uses_the_mean_duration_and_the_forks():
    stats = RunStats()
    run = "r"
    stats.update(
        RunStarted(
            run,
            total_hosts=25,
            batches=(BatchPlan("P", 1, 5, 5), BatchPlan("P", 2, 20, 5)),
        ),
        now=0.0,
    )
    assert stats.eta_seconds(0.0) is None  # no finished host yet: no mean
    stats.update(BatchStarted(run, play="P", batch=1, batches=2, hosts=("a", "b", "c", "d", "e")))
    for host in "abcde":
        stats.update(HostStarted(run, host=host), now=0.0)
    for host in "ab":
        stats.update(HostFinished(run, host=host, state=SUCCEEDED, duration_s=10.0), now=10.0)
    # Batch 1: c, d, e still running, 10 s mean, 2 s in → ~8 s left; batch 2: 20 hosts on 5
    # forks = 4 rounds of 10 s.
    assert stats.eta_seconds(2.0) == 8.0 + 40.0
    for host in "cde":
        stats.update(HostFinished(run, host=host, state=SUCCEEDED, duration_s=10.0), now=10.0)
    assert stats.eta_seconds(10.0) == 40.0 + 0.0


def test_a_broken_processor_never_breaks_the_run(journal, tmp_path, write_playbook):
    class Broken:
        def host_finished(self, event):
            raise RuntimeError("display died")

    inventory = SmallInventory({"wave1": names("pc", 3)})
    plan = build_plan(write_playbook(PLAY), inventory)
    summary = Runner(journal, tmp_path / "r", [Broken()]).run(
        plan, lambda job: HostOutcome(SUCCEEDED)
    )
    assert summary.counts == {SUCCEEDED: 3}
    fanout = Fanout([Broken()])
    fanout.emit(HostFinished("r", host="x", state=SUCCEEDED))  # logged, not raised


def test_run_log_records_are_scrubbed_for_every_handler():
    import logging

    from cpuu_fleet.engine.events import RUN_LOG
    from cpuu_fleet.redact import REDACTOR

    REDACTOR.add(SECRET)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    handler = Keep()
    RUN_LOG.addHandler(handler)
    try:
        RUN_LOG.error("logon with %s failed", SECRET, extra={"run_id": "r"})
    finally:
        RUN_LOG.removeHandler(handler)
    assert seen == ["logon with ******** failed"]


def test_each_state_is_counted_under_its_own_name():
    stats = RunStats()
    stats.update(RunStarted("r1", run_kind="play", playbook=None, total_hosts=3, batches=()))
    for host, state in (("pc-1", SUCCEEDED), ("pc-2", PARTIAL), ("pc-3", PENDING)):
        finished = HostFinished(
            "r1", host=host, play="Update", batch=1, wave="wave1", state=state, attempt=1
        )
        stats.update(finished)
    out = io.StringIO()
    Console(file=out, width=120).print(render_stats(stats))
    shown = out.getvalue()
    assert "succeeded 1" in shown and "partially succeeded 1" in shown and "pending 1" in shown


def _cpuu_wave(stats: RunStats) -> None:
    """Ten hosts on five forks; two done in 10 s each (preflight 1 s, push 1 s, run 7 s,
    collect 1 s); pc-3 has been inside CPUU's run step since t=10."""
    run = "r"
    stats.update(RunStarted(run, total_hosts=10, batches=(BatchPlan("P", 1, 10, 5),)), now=0.0)
    hosts = tuple(f"pc-{n}" for n in range(10))
    stats.update(BatchStarted(run, play="P", batch=1, batches=1, hosts=hosts), now=0.0)
    for host in ("pc-0", "pc-1"):
        stats.update(HostStarted(run, host=host), now=0.0)
        at = 0.0
        for step, seconds in (("preflight", 1.0), ("push", 1.0), ("run", 7.0), ("collect", 1.0)):
            stats.update(StepStarted(run, host=host, step=step), now=at)
            at += seconds
            # A detached run step ends in a later visit: its event's own duration is only the
            # settling call's; the display measures from the step's start.
            reported = 0.2 if step == "run" else seconds
            stats.update(StepFinished(run, host=host, step=step, duration_s=reported), now=at)
        stats.update(HostFinished(run, host=host, state=SUCCEEDED, duration_s=10.0), now=10.0)
    stats.update(HostStarted(run, host="pc-3"), now=8.0)
    stats.update(StepStarted(run, host="pc-3", step="run"), now=10.0)


def test_a_host_inside_cpuu_counts_for_what_is_left_of_cpuu_not_of_the_mean_host():
    stats = RunStats()
    _cpuu_wave(stats)
    # 7 hosts still wait for a fork: 2 rounds of the 10 s mean host on 5 forks.
    assert stats.eta(12.0) == (20.0, False)
    # Only pc-3 left, 2 s into a 7 s run step: 5 s of CPUU and 1 s of collect.
    stats.update(HostFinished("r", host="pc-9", state=SUCCEEDED, duration_s=10.0), now=12.0)
    for n in (2, 4, 5, 6, 7, 8):
        stats.update(HostFinished("r", host=f"pc-{n}", state=SUCCEEDED, duration_s=10.0))
    assert stats.eta(12.0) == (6.0, False)


def test_a_cpuu_run_longer_than_any_so_far_makes_the_eta_a_lower_bound_not_frozen():
    stats = RunStats()
    _cpuu_wave(stats)
    for n in (2, 4, 5, 6, 7, 8, 9):
        stats.update(HostFinished("r", host=f"pc-{n}", state=SUCCEEDED, duration_s=10.0))
    seconds, lower_bound = stats.eta(600.0)  # pc-3 has been in CPUU for 590 s
    assert lower_bound and seconds == 1.0  # at least its collect; never "00:00, done"
    out = io.StringIO()
    Console(file=out, width=120).print(render_stats(stats, now=600.0))
    shown = out.getvalue()
    assert "ETA ≥ 00:01" in shown
    assert "pc-3" in shown and "run" in shown and "09:50" in shown  # its step and time in it


def test_running_hosts_are_listed_longest_first_and_the_rest_counted():
    stats = RunStats()
    stats.update(RunStarted("r", total_hosts=12, batches=(BatchPlan("P", 1, 12, 12),)), now=0.0)
    for n in range(12):
        stats.update(HostStarted("r", host=f"pc-{n:02d}"), now=float(n))
        stats.update(StepStarted("r", host=f"pc-{n:02d}", step="push"), now=float(n))
    out = io.StringIO()
    Console(file=out, width=120).print(render_stats(stats, now=20.0))
    lines = [line for line in out.getvalue().splitlines() if "pc-" in line]
    assert [line.split()[0] for line in lines] == [f"pc-{n:02d}" for n in range(8)]
    assert "and 4 more running" in out.getvalue()


def test_a_failure_is_printed_above_the_display_as_it_happens_with_its_reason():
    out = io.StringIO()
    display = LiveProgress(Console(file=out, width=200), verbosity=0)
    display.on_event(HostFinished("r", host="pc-1", state=SUCCEEDED, duration_s=1.0))
    display.on_event(
        HostFinished(
            "r", host="pc-2", state=FAILED, error_class="cpuu", error_message="exit 0x4\x1b[2J"
        )
    )
    shown = out.getvalue()
    assert "pc-1" not in shown  # a success is counted, not printed, unless -v
    assert "pc-2: failed [cpuu] exit 0x4" in shown
    assert "\x1b[2J" not in shown  # a workstation's text never drives the terminal
    verbose = io.StringIO()
    display = LiveProgress(Console(file=verbose, width=200), verbosity=2)
    display.on_event(StepStarted("r", host="pc-1", step="run"))
    display.on_event(HostFinished("r", host="pc-1", state=SUCCEEDED, duration_s=1.0))
    assert "pc-1: run started" in verbose.getvalue() and "pc-1: succeeded" in verbose.getvalue()
