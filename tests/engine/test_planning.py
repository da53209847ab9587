"""Plans, --retry-failed, --resume and retry files, against a real journal written by real runs."""

from __future__ import annotations

import pytest

from cpuu_fleet.engine.planning import (
    Policy,
    build_plan,
    select_resume,
    select_retry_failed,
)
from cpuu_fleet.engine.runner import HostOutcome, Runner
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import (
    FAILED,
    NOT_RUN,
    PENDING,
    SKIPPED,
    SUCCEEDED,
    UNREACHABLE,
    HostEntry,
)
from tests.support.small_inventory import SmallInventory, names

PLAY = "- name: Update\n  hosts: 'wave*'\n  serial: 2\n  steps: [preflight]\n"


def test_plan_intersects_the_limit_and_tags_waves(write_playbook):
    inventory = SmallInventory(
        {"wave1": names("a", 3), "wave2": names("b", 3), "paris": ["a-001", "b-001"]}
    )
    playbook = write_playbook(PLAY)
    plan = build_plan(playbook, inventory, limit="paris")
    (play,) = plan.plays
    assert [[h.name for h in b] for b in play.batches] == [["a-001", "b-001"]]
    assert [h.wave for h in play.hosts] == ["wave1", "wave2"]
    assert play.hosts[0].address == "127.0.9.1"

    full = build_plan(playbook, inventory, forks=7)
    assert [len(b) for b in full.plays[0].batches] == [2, 2, 2]
    assert full.plays[0].play.forks == 7
    assert full.host_names == names("a", 3) + names("b", 3)
    only = build_plan(playbook, inventory, only=["b-003", "a-002"])
    assert only.host_names == ["a-002", "b-003"]


def _run(journal, tmp_path, playbook, inventory, results, **fields):
    def work(job):
        state = results.get(job.name, SUCCEEDED)
        return HostOutcome(state, None if state == SUCCEEDED else "remote", None)

    plan = build_plan(playbook, inventory, only=fields.pop("only", None))
    return Runner(journal, tmp_path / "reports").run(plan, work, **fields)


def test_retry_failed_takes_the_latest_state_across_the_runs_retries(
    journal, tmp_path, write_playbook
):
    hosts = names("pc", 6)
    inventory = SmallInventory({"wave1": hosts})
    playbook = write_playbook(PLAY)
    first = _run(
        journal,
        tmp_path,
        playbook,
        inventory,
        {hosts[0]: FAILED, hosts[2]: UNREACHABLE, hosts[4]: FAILED, hosts[3]: SKIPPED},
    )
    selection = select_retry_failed(journal, first.run_id)
    assert selection.hosts == (hosts[0], hosts[2], hosts[4])
    assert selection.kept == {SUCCEEDED: 2, SKIPPED: 1}
    assert selection.run["run_id"] == first.run_id

    # The retry fixes two of them; host 2 fails again, differently.
    retry = _run(
        journal,
        tmp_path,
        playbook,
        inventory,
        {hosts[4]: UNREACHABLE},
        only=selection.hosts,
        kind="retry",
        parent_run=first.run_id,
    )
    assert select_retry_failed(journal, first.run_id).hosts == (hosts[4],)
    assert select_retry_failed(journal, retry.run_id).hosts == (hosts[4],)

    # The retry file of each run lists its own failed and unreachable hosts, for --limit @file.
    assert (first.run_dir / "failed.retry").read_text().splitlines() == [
        hosts[0],
        hosts[2],
        hosts[4],
    ]
    assert retry.retry_file.read_text() == f"{hosts[4]}\n"


def test_a_run_with_no_failures_still_writes_an_empty_retry_file(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 2)})
    summary = _run(journal, tmp_path, write_playbook(PLAY), inventory, {})
    assert summary.retry_file.exists() and summary.retry_file.read_text() == ""


def test_resume_visits_unfinished_hosts_and_asks_first_where_cpuu_may_be_running(journal):
    """A journal as a controller killed mid-run leaves it (written the way the runner and the
    host work write it)."""
    run = journal.start_run(playbook="update.yml", inventory="fleet.yml", limit_pattern="wave1")
    hosts = ["done", "failed", "cpuu-running", "pushing", "queued", "not-run", "pending"]
    journal.add_hosts(run, [HostEntry(h, play="Update", wave="wave1", batch=1) for h in hosts])
    journal.set_host(run, "done", state=SUCCEEDED, attempts=1)
    journal.set_host(run, "failed", state=FAILED, attempts=1)
    journal.set_host(run, "pending", state=PENDING, attempts=1)
    journal.set_host(run, "not-run", state=NOT_RUN)
    for host, step in (("cpuu-running", "run"), ("pushing", "push")):
        journal.set_host(run, host, state="running", attempts=1, task_name=f"cpuu-fleet-{host}")
        for earlier in ("preflight", "push", "run")[: ("preflight", "push", "run").index(step)]:
            journal.end_step(journal.start_step(run, host, earlier), "ok")
        journal.start_step(run, host, step)  # never ended: the controller died here
    # The operator also aborted one whose CPUU was still running: final state, open run step.
    journal.set_host(run, "failed", task_name="cpuu-fleet-failed")
    open_run = journal.start_step(run, "failed", "run")

    selection = select_resume(journal, run)

    assert selection.kind == "resume" and selection.parent_run == run
    assert selection.hosts == ("failed", "cpuu-running", "pushing", "queued", "not-run")
    assert set(selection.ask_first) == {"failed", "cpuu-running"}
    hint = selection.ask_first["cpuu-running"]
    assert (hint.from_run, hint.step, hint.task_name) == (run, "run", "cpuu-fleet-cpuu-running")
    assert selection.ask_first["failed"].attempt_id == open_run
    assert selection.kept == {SUCCEEDED: 1, PENDING: 1}
    assert selection.run["limit_pattern"] == "wave1"


def test_resume_of_a_resumed_run_only_visits_what_is_still_left(journal, tmp_path, write_playbook):
    hosts = names("pc", 4)
    inventory = SmallInventory({"wave1": hosts})
    playbook = write_playbook(PLAY)
    first = _run(journal, tmp_path, playbook, inventory, {hosts[1]: FAILED})
    assert first.status == "completed"
    # Pretend batch 2 never ran (an interrupted run), then resume it once.
    for host in hosts[2:]:
        journal.set_host(first.run_id, host, state=NOT_RUN)
    selection = select_resume(journal, first.run_id)
    assert selection.hosts == tuple(hosts[2:])
    plan = build_plan(playbook, inventory, only=selection.hosts, resume=selection.ask_first)
    second = Runner(journal, tmp_path / "reports").run(
        plan,
        lambda job: HostOutcome(SUCCEEDED),
        kind="resume",
        parent_run=first.run_id,
    )
    assert second.counts == {SUCCEEDED: 2}
    assert select_resume(journal, first.run_id).hosts == ()
    assert select_retry_failed(journal, first.run_id).hosts == (hosts[1],)


def test_the_resume_hint_reaches_the_host_work(journal, tmp_path, write_playbook):
    inventory = SmallInventory({"wave1": ["pc-1", "pc-2"]})
    run = journal.start_run()
    journal.add_hosts(run, [HostEntry("pc-1"), HostEntry("pc-2")])
    journal.set_host(run, "pc-1", state="running", task_name="cpuu-fleet-x")
    journal.start_step(run, "pc-1", "run")
    journal.set_host(run, "pc-2", state=SUCCEEDED)
    selection = select_resume(journal, run)
    plan = build_plan(
        write_playbook(PLAY), inventory, only=selection.hosts, resume=selection.ask_first
    )
    seen = {}

    def work(job):
        seen[job.name] = job.resume
        return HostOutcome(SUCCEEDED)

    Runner(journal, tmp_path / "r").run(plan, work, kind="resume", parent_run=run)
    assert list(seen) == ["pc-1"]
    assert seen["pc-1"].task_name == "cpuu-fleet-x"


def test_an_unknown_run_is_an_input_error(journal):
    with pytest.raises(InputError, match="no run 'nope' in the journal"):
        select_retry_failed(journal, "nope")


def test_shipped_update_playbook_over_the_example_inventory_and_its_retry_file(journal, tmp_path):
    """The real inventory (foundation) + the shipped playbook: waves, batches, and a retry file
    that works as ``--limit @reports/<run>/failed.retry``."""
    from pathlib import Path

    from cpuu_fleet.inputs.inventory import Inventory
    from cpuu_fleet.inputs.playbook import load_playbook

    repo = Path(__file__).resolve().parents[2]
    inventory = Inventory.load(repo / "inventories" / "example.yml")
    playbook = load_playbook(repo / "playbooks" / "update.yml")

    plan = build_plan(playbook, inventory, limit="wave2")
    (play,) = plan.plays
    # 7 Paris hosts, serial [1, "10%", "50%"]: 10% of 7 truncates to 0 → 1; 50% → 3.
    assert [len(b) for b in play.batches] == [1, 1, 3, 2]
    assert {h.wave for h in play.hosts} == {"wave2"}
    assert play.hosts[0].address == "par-pc-0101.corp.example"

    bad = {"par-pc-0104.corp.example": UNREACHABLE, "par-lt-0150.corp.example": FAILED}
    summary = _run(journal, tmp_path, playbook, inventory, bad)
    retry = summary.retry_file
    assert sorted(retry.read_text().splitlines()) == sorted(bad)
    again = build_plan(playbook, inventory, limit=f"@{retry}")
    assert sorted(again.host_names) == sorted(bad)
    rows = {r["host"]: r for r in journal.hosts(summary.run_id)}
    assert rows["lyo-pc-0301.corp.example"]["wave"] == "wave3"


def test_a_follow_up_with_nothing_left_plans_no_host_without_error(write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 2)})
    plan = build_plan(write_playbook(PLAY), inventory, only=())
    assert plan.host_names == [] and plan.plays[0].batches == ()


def test_an_unsettled_run_step_stays_flagged_until_a_later_run_step_ends(journal):
    """The controller died while CPUU ran on pc-1; the resume found pc-1 unreachable. Neither a
    second resume nor a retry may start CPUU there blindly; once a run step ends, it is settled."""
    first = journal.start_run()
    journal.add_hosts(first, [HostEntry("pc-1"), HostEntry("pc-2")])
    journal.set_host(first, "pc-1", state="running", task_name="cpuu-fleet-a1")
    journal.start_step(first, "pc-1", "run")
    journal.set_host(first, "pc-2", state=SUCCEEDED)

    resume = journal.start_run(kind="resume", parent_run=first)
    journal.add_hosts(resume, [HostEntry("pc-1")])
    connect = journal.start_step(resume, "pc-1", "connect")
    journal.end_step(connect, "failed", error_class="unreachable")
    journal.set_host(resume, "pc-1", state=UNREACHABLE)

    for selection in (
        select_resume(journal, first),
        select_resume(journal, resume),
        select_retry_failed(journal, first),
        select_retry_failed(journal, resume),
    ):
        assert selection.hosts == ("pc-1",)
        assert selection.ask_first["pc-1"].from_run == first
        assert selection.ask_first["pc-1"].task_name == "cpuu-fleet-a1"

    retry = journal.start_run(kind="retry", parent_run=resume)
    journal.add_hosts(retry, [HostEntry("pc-1")])
    asked = journal.start_step(retry, "pc-1", "run")
    journal.end_step(asked, "ok", details={"resumed_task": "cpuu-fleet-a1"})
    journal.set_host(retry, "pc-1", state=FAILED)  # CPUU had failed: an honest retry candidate

    assert select_resume(journal, first).hosts == ()
    settled = select_retry_failed(journal, first)
    assert settled.hosts == ("pc-1",) and settled.ask_first == {}


def test_a_check_run_of_the_failed_hosts_does_not_settle_them(journal, tmp_path, write_playbook):
    hosts = names("pc", 3)
    inventory = SmallInventory({"wave1": hosts})
    playbook = write_playbook(PLAY)
    first = _run(journal, tmp_path, playbook, inventory, {hosts[1]: FAILED})
    # "play --check --retry-failed FIRST": a preview; it changed nothing on the host.
    _run(
        journal,
        tmp_path,
        playbook,
        inventory,
        {},
        only=(hosts[1],),
        kind="retry",
        parent_run=first.run_id,
        check_mode=True,
    )
    assert select_retry_failed(journal, first.run_id).hosts == (hosts[1],)


def test_command_line_policy_replaces_the_playbooks_batches_and_thresholds(write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 10)})
    playbook = write_playbook(
        "- name: Update\n  hosts: wave1\n  serial: [1, '10%', '50%']\n"
        "  max_fail_percentage: 20\n  steps: [preflight]\n"
    )
    shipped = build_plan(playbook, inventory)
    assert [len(b) for b in shipped.plays[0].batches] == [1, 1, 5, 3]
    assert shipped.plays[0].play.max_unreachable_percentage == 25  # the desktop default

    given = Policy(serial=(4,), max_fail_percentage=50, max_unreachable_percentage=10)
    plan = build_plan(playbook, inventory, policy=given)
    play = plan.plays[0]
    assert [len(b) for b in play.batches] == [4, 4, 2]
    assert (play.play.max_fail_percentage, play.play.max_unreachable_percentage) == (50, 10)
    assert plan.stops

    assert not build_plan(playbook, inventory, policy=Policy(check=True)).stops


def test_a_retry_runs_its_hosts_in_one_batch_unless_serial_is_given(write_playbook):
    inventory = SmallInventory({"wave1": names("pc", 10)})
    playbook = write_playbook(
        "- name: Update\n  hosts: wave1\n  serial: [1, '10%', '50%']\n  steps: [preflight]\n"
    )
    retried = names("pc", 10)[2:6]
    plan = build_plan(playbook, inventory, only=retried, policy=Policy(retry=True))
    assert [[h.name for h in b] for b in plan.plays[0].batches] == [retried]
    plan = build_plan(playbook, inventory, only=retried, policy=Policy(retry=True, serial=(3,)))
    assert [len(b) for b in plan.plays[0].batches] == [3, 1]
