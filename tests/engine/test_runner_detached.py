"""The runner's parked hosts (detached run steps): a timer, not a fork, and batches, Ctrl-C and
retries keep their meaning. Host work is plain Python standing in for WinRM."""

from __future__ import annotations

import threading

from cpuu_fleet.engine.planning import build_plan
from cpuu_fleet.engine.runner import COMPLETED, INTERRUPTED, HostOutcome, Runner
from cpuu_fleet.journal import NOT_RUN, RUNNING, SUCCEEDED
from tests.support.small_inventory import SmallInventory, names


def _playbook(write_playbook, **keys):
    lines = [f"  {k}: {v}" for k, v in keys.items()]
    return write_playbook(
        "- name: Update\n  hosts: wave1\n" + "\n".join(lines) + "\n  steps: [preflight]\n"
    )


class DetachedWork:
    """Each host: a first call that "starts CPUU" and parks, then calls that settle it once
    ``release`` is set (parking again until then)."""

    def __init__(self, settle_in: float = 0.05, hold_after: int | None = None):
        self.settle_in = settle_in
        self.hold_after = hold_after
        """Starts beyond this many wait for ``gate`` (to interrupt before they all started)."""
        self.gate = threading.Event()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, int]] = []
        self.started: set[str] = set()

    def __call__(self, job):
        with self.lock:
            first = job.name not in self.started
            self.started.add(job.name)
            self.log.append(("start" if first else "poll", job.name, job.batch))
            hold = first and self.hold_after is not None and len(self.started) > self.hold_after
        if hold:
            self.gate.wait(10)
        if first or not self.release.is_set():
            return HostOutcome(RUNNING, settle_in=self.settle_in)
        with self.lock:
            self.log.append(("settled", job.name, job.batch))
        return HostOutcome(SUCCEEDED)

    def of(self, kind: str) -> list[str]:
        with self.lock:
            return [name for what, name, _ in self.log if what == kind]


def _run_in_thread(runner, plan, work):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("s", runner.run(plan, work)))
    thread.start()
    return thread, result


def _wait_until(condition, timeout: float = 10.0) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():
            return True
        event.wait(0.01)
    return condition()


def test_parked_hosts_hold_no_fork_and_a_batch_is_judged_once_all_settled(
    journal, tmp_path, write_playbook
):
    hosts = names("pc", 6)
    inventory = SmallInventory({"wave1": hosts})
    playbook = _playbook(write_playbook, forks=1, serial=3)
    work = DetachedWork()
    runner = Runner(journal, tmp_path / "r", handle_sigint=False)
    thread, result = _run_in_thread(runner, build_plan(playbook, inventory), work)

    # One fork, and still all three hosts of batch 1 were started: a parked host holds none.
    assert _wait_until(lambda: len(work.of("start")) == 3)
    assert work.of("settled") == []
    assert _wait_until(lambda: len(work.of("poll")) >= 3)  # each parked host is asked again
    assert len(work.of("start")) == 3  # batch 2 waits for batch 1 to settle
    work.release.set()
    thread.join(20)
    summary = result["s"]

    assert summary.status == COMPLETED and summary.counts == {SUCCEEDED: 6}
    order = [(what, batch) for what, _, batch in work.log if what != "poll"]
    last_settle_1 = max(i for i, (what, b) in enumerate(order) if what == "settled" and b == 1)
    first_start_2 = min(i for i, (what, b) in enumerate(order) if what == "start" and b == 2)
    assert last_settle_1 < first_start_2
    rows = journal.hosts(summary.run_id)
    assert {r["state"] for r in rows} == {SUCCEEDED} and {r["attempts"] for r in rows} == {1}


def test_first_ctrl_c_settles_the_parked_hosts_and_starts_no_more(
    journal, tmp_path, write_playbook
):
    inventory = SmallInventory({"wave1": names("pc", 5)})
    playbook = _playbook(write_playbook, forks=1)
    work = DetachedWork(hold_after=2)
    runner = Runner(journal, tmp_path / "r", handle_sigint=False)
    thread, result = _run_in_thread(runner, build_plan(playbook, inventory), work)
    assert _wait_until(lambda: len(work.of("start")) == 3)  # the third waits at the gate
    runner.interrupt()
    work.gate.set()  # the host already being started finishes its start, as attached
    work.release.set()
    thread.join(20)
    summary = result["s"]
    started = set(work.of("start"))
    assert len(started) == 3

    assert summary.status == INTERRUPTED
    settled = set(work.of("settled"))
    assert settled == started  # every host whose CPUU started was settled
    assert {summary.states[name] for name in settled} == {SUCCEEDED}
    others = set(summary.states) - started
    assert others and {summary.states[name] for name in others} == {NOT_RUN}


def test_second_ctrl_c_leaves_parked_hosts_running_for_resume(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 3)})
    playbook = _playbook(write_playbook, forks=3)
    work = DetachedWork(settle_in=30.0)  # parked for long: nobody is asked again in time
    runner = Runner(journal, tmp_path / "r", handle_sigint=False)
    thread, result = _run_in_thread(runner, build_plan(playbook, inventory), work)
    assert _wait_until(lambda: len(work.of("start")) == 3)
    runner.interrupt()
    runner.interrupt()
    thread.join(10)
    assert not thread.is_alive()  # the parked hosts' timers did not hold the run
    summary = result["s"]

    assert summary.status == INTERRUPTED
    rows = {r["host"]: r for r in journal.hosts(summary.run_id)}
    assert {(r["state"], r["error_class"]) for r in rows.values()} == {(RUNNING, "interrupted")}
    assert all("--resume" in r["error_message"] for r in rows.values())
    assert work.of("settled") == []
