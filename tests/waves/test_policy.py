"""The shipped playbook's policy on a desktop fleet (issue 12, point 5): an offline laptop, a
``--check`` and a ``--retry-failed`` must not stall on the canary and the 20 % stop rule.

Judged by the lab's own record (which workstations started CPUU, and how often) and the journal
(which hosts a run visited, the run's status and the rule its stop reason names).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, find_playbook
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.fleet import LabFleet
from tests.support.commands import run_subprocess
from tests.support.waves import Wave, make_playbook

HOSTS = [f"pc-{n:04d}" for n in range(1, 11)]
OFFLINE = TransportFaults(listening=False)
REFUSED = TransportFaults(password="not-the-fleet-password")


def _shipped_policy() -> dict[str, object]:
    """The shipped update playbook's batches and stop rule ([1, "10%", "50%"] and 20 %)."""
    play = load_playbook(find_playbook("update.yml")).plays[0]
    return {"serial": list(play.serial), "max_fail_percentage": play.max_fail_percentage}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[object]:
    """``lab(faults)``: ten workstations pc-0001..pc-0010, the given ones misbehaving."""
    fleets: list[LabFleet] = []

    def start(faults: dict[str, TransportFaults] | None = None) -> Wave:
        root = tmp_path / f"w{len(fleets)}"
        fleet = LabFleet(len(HOSTS), "healthy", workdir=root / "lab", faults=faults or {})
        fleet.start()
        fleets.append(fleet)
        return Wave(fleet, root)

    yield start
    for fleet in fleets:
        fleet.stop()


def _run_row(wave: Wave, run_id: str) -> tuple[dict, dict[str, str]]:
    with Journal.in_reports(wave.reports) as journal:
        run = journal.run(run_id)
        states = {row["host"]: row["state"] for row in journal.hosts(run_id)}
    assert run is not None
    return run, states


def _started(wave: Wave) -> dict[str, int]:
    """The lab's own record: how often CPUU started on each workstation that started it."""
    return {host: n for host, n in wave.fleet.cpuu_start_counts().items() if n}


def test_one_offline_laptop_does_not_stop_the_wave(lab):
    # pc-0002 is the whole second batch (10 % of 10): before, 1 of 1 unreachable > 20 % stopped
    # the wave after two hosts.
    wave = lab({"pc-0002": OFFLINE})
    playbook = make_playbook(wave.payload, **_shipped_policy())

    result = wave.run(playbook)

    run, states = _run_row(wave, result.run_id)
    assert run["status"] == vocabulary.RUN_COMPLETED, run["stop_reason"]
    assert states["pc-0002"] == vocabulary.UNREACHABLE
    reachable = [h for h in HOSTS if h != "pc-0002"]
    assert _started(wave) == dict.fromkeys(reachable, 1)


def test_many_offline_hosts_stop_the_wave_by_their_own_rule(lab):
    # Batches 1, 1, 5, 3: after the third, 3 of the play's 10 hosts are unreachable (> 25 %).
    wave = lab(dict.fromkeys(["pc-0002", "pc-0003", "pc-0004"], OFFLINE))
    playbook = make_playbook(wave.payload, **_shipped_policy())

    result = wave.run(playbook)

    run, states = _run_row(wave, result.run_id)
    assert run["status"] == vocabulary.RUN_STOPPED
    assert "max_unreachable_percentage 25" in run["stop_reason"]
    assert "3 of the play's 10 hosts unreachable" in run["stop_reason"]
    assert "max_fail_percentage" not in run["stop_reason"]
    assert [h for h, s in states.items() if s == vocabulary.NOT_RUN] == HOSTS[7:]
    assert set(_started(wave)) == {"pc-0001", "pc-0005", "pc-0006", "pc-0007"}


def test_the_unreachable_threshold_from_the_command_line_overrides_the_default(lab):
    wave = lab({"pc-0002": OFFLINE})
    playbook = make_playbook(wave.payload, **_shipped_policy())

    result = wave.run(playbook, max_unreachable_percentage=0)

    run, _ = _run_row(wave, result.run_id)
    assert run["status"] == vocabulary.RUN_STOPPED
    assert "> max_unreachable_percentage 0" in run["stop_reason"]
    assert set(_started(wave)) == {"pc-0001"}


def test_failures_still_stop_the_wave_by_max_fail_percentage(lab):
    # The canary's logon is refused (a failure, not an offline host): the canary does its job.
    wave = lab({"pc-0001": REFUSED})
    playbook = make_playbook(wave.payload, **_shipped_policy())

    result = wave.run(playbook)

    run, states = _run_row(wave, result.run_id)
    assert run["status"] == vocabulary.RUN_STOPPED
    assert "> max_fail_percentage 20" in run["stop_reason"]
    assert states["pc-0001"] == vocabulary.FAILED
    assert sorted(h for h, s in states.items() if s == vocabulary.NOT_RUN) == HOSTS[1:]
    assert _started(wave) == {}


def test_check_is_never_stopped_by_failures(lab):
    # The first two batches fail outright; a --check changes nothing, so all ten are checked.
    wave = lab({"pc-0001": REFUSED, "pc-0002": REFUSED})
    playbook = make_playbook(wave.payload, **_shipped_policy())

    result = wave.run(playbook, check=True)

    run, states = _run_row(wave, result.run_id)
    assert run["status"] == vocabulary.RUN_COMPLETED, run["stop_reason"]
    assert vocabulary.NOT_RUN not in states.values()
    with Journal.in_reports(wave.reports) as journal:
        attempts = journal.attempts(result.run_id)
    assert {a["host"] for a in attempts} == set(HOSTS)
    preflighted = {a["host"] for a in attempts if a["step"] == "preflight"}
    assert preflighted == set(HOSTS[2:])  # the two refused ones failed at the logon
    assert _started(wave) == {}  # and it started nothing anywhere


def test_retry_failed_visits_every_failed_host_without_a_canary(lab):
    # Three workstations crash CPUU: the wave (no stop rule) leaves them failed. The retry, with
    # the shipped policy, used to stop after its first host (a canary of 1 of 1 failed).
    crashing = ["pc-0004", "pc-0007", "pc-0009"]
    wave = lab()
    for name in crashing:
        wave.workstation(name).cpuu.crash_after_profiles = 0
    first = wave.run(make_playbook(wave.payload, serial=[1, 9]))
    _, states = _run_row(wave, first.run_id)
    assert sorted(h for h, s in states.items() if s == vocabulary.FAILED) == crashing
    (wave.root / "shipped").mkdir()
    shipped = make_playbook(wave.payload, **_shipped_policy(), folder=wave.root / "shipped")

    retry = wave.follow_up(playbook=shipped.path, retry_failed=first.run_id)

    run, states = _run_row(wave, retry.run_id)
    assert run["status"] == vocabulary.RUN_COMPLETED, run["stop_reason"]
    assert sorted(states) == crashing
    assert vocabulary.NOT_RUN not in states.values()
    assert _started(wave) == {h: 2 if h in crashing else 1 for h in HOSTS}
    with Journal.in_reports(wave.reports) as journal:
        batches = {row["batch"] for row in journal.hosts(retry.run_id)}
    assert batches == {1}  # one batch: the earlier run's canary already judged the change


def test_serial_and_thresholds_on_the_command_line_override_the_playbook(lab):
    wave = lab({"pc-0001": REFUSED})
    playbook = make_playbook(wave.payload, **_shipped_policy())
    env = {**wave.fleet.env, **DEMO_SECRETS}
    base = ("play", playbook.path, "-i", wave.inventory_path, "--reports", wave.reports)

    one_batch = run_subprocess(*base, "--serial", "0", cwd=wave.root, env=env)
    assert one_batch.returncode == 3, one_batch.stderr  # a host needs attention: pc-0001
    assert set(_started(wave)) == set(HOSTS[1:])

    strict = run_subprocess(
        *base, "--serial", "1,2", "--max-fail-percentage", "0", "--limit", "pc-0001,pc-0002,pc-0003",
        cwd=wave.root, env=env,
    )  # fmt: skip
    with Journal.in_reports(wave.reports) as journal:
        run = journal.runs()[-1]
    assert strict.returncode == 3, strict.stderr
    assert run["status"] == vocabulary.RUN_STOPPED
    assert run["stop_reason"].endswith("> max_fail_percentage 0")
    assert _started(wave) == dict.fromkeys(HOSTS[1:], 1)  # nothing after the refused canary

    bad = run_subprocess(*base, "--max-unreachable-percentage", "120", cwd=wave.root, env=env)
    assert bad.returncode == 2
    assert "--max-unreachable-percentage" in bad.stderr and "0 to 100" in bad.stderr
