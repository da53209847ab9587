"""Relays under faults (slow): a relay ``kill -9``'d inside each step (preflight, push, run,
collect), the controller killed and resumed, Ctrl-C with visits still queued. Real processes throughout: the controller and the
relays are ``cpuu-fleet`` commands, the broker a private RabbitMQ node; the lab's count of CPUU
starts is the judge (at most once per host and run, exactly once where the wave finishes).
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from cpuu_fleet.engine.wave import ExitCode
from cpuu_fleet.journal import NOT_RUN, SUCCEEDED
from tests.support.sites import (
    TwoSites,
    relays,
    start_controller,
    two_sites,
    wait_for,
)
from tests.support.waves import make_playbook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: CPUU's run time on the lab's workstations: long enough to act inside the run step.
CPUU_SECONDS = 4
PROCESS_TIMEOUT_S = 300


def _playbook(sites: TwoSites) -> str:
    """Attached run steps: the visit holds its relay while CPUU runs (the step a kill hits)."""
    return str(make_playbook(sites.payload, timeout=120, attached=True).path)


def _play_north(sites: TwoSites, broker_url: str) -> Any:
    """``cpuu-fleet play`` over the north site's hosts, dispatched to its relays."""
    return start_controller(
        sites, broker_url, "play", _playbook(sites), "-i", str(sites.inventory_path),
        "--limit", "north",
    )  # fmt: skip


def _play_north_until_cpuu_runs(sites: TwoSites, broker_url: str) -> Any:
    """:func:`_play_north`, returned once a north host's CPUU has started (the lab's count)."""
    controller = _play_north(sites, broker_url)
    wait_for(lambda: any(_north_starts(sites).values()), 120, "CPUU started")
    return controller


def _site_visits(sites: TwoSites) -> list[dict[str, Any]]:
    with sites.journal() as journal:
        return journal.site_visits(str(journal.latest_run()["run_id"]))


def _states(sites: TwoSites, run_id: str) -> dict[str, str]:
    with sites.journal() as journal:
        return {row["host"]: row["state"] for row in journal.hosts(run_id)}


def _latest_run(sites: TwoSites) -> str:
    with sites.journal() as journal:
        return str(journal.latest_run()["run_id"])


def _north_starts(sites: TwoSites) -> dict[str, int]:
    return {h: n for h, n in sites.cpuu_starts().items() if h.startswith("north-")}


def _kill_the_visits_relay(sites: TwoSites, started: list[Any]) -> str:
    """``kill -9`` the relay that holds the run's one visit now; its name, as the journal has it."""
    holder = str(_site_visits(sites)[0]["relay"])
    victim = next(r for r in started if holder.endswith(f".{r.process.pid}"))
    victim.kill()
    return holder


def test_a_relay_killed_inside_the_run_step_leaves_the_visit_to_its_sibling(rabbitmq, tmp_path):
    with (
        two_sites(tmp_path, 1, cpuu_seconds=CPUU_SECONDS) as sites,
        relays(sites, rabbitmq.url, per_site=2, concurrency=1, only=("north",)) as started,
    ):
        controller = _play_north(sites, rabbitmq.url)
        wait_for(lambda: _north_starts(sites)["north-pc-0001"] >= 1, 120, "CPUU started")
        holder = _kill_the_visits_relay(sites, started)
        out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
        run_id = _latest_run(sites)
        visits = _site_visits(sites)
        states = _states(sites, run_id)
        starts = _north_starts(sites)

    assert controller.returncode == ExitCode.OK, out
    assert states == {"north-pc-0001": SUCCEEDED}
    assert starts == {"north-pc-0001": 1}
    # The visit that started CPUU was delivered again, to the sibling, which finished it.
    assert len(visits) == 1 and visits[0]["deliveries"] == 2
    assert visits[0]["relay"] != holder and visits[0]["outcome_json"]


def test_the_controller_killed_then_resumed_with_relays_runs_cpuu_once(rabbitmq, tmp_path):
    with (
        two_sites(tmp_path, 2, cpuu_seconds=CPUU_SECONDS) as sites,
        relays(sites, rabbitmq.url, per_site=1, concurrency=2, only=("north",)),
    ):
        controller = _play_north_until_cpuu_runs(sites, rabbitmq.url)
        os.killpg(controller.pid, signal.SIGKILL)
        controller.communicate(timeout=30)
        first = _latest_run(sites)
        resumed = start_controller(sites, rabbitmq.url, "play", "--resume", first)
        out, _ = resumed.communicate(timeout=PROCESS_TIMEOUT_S)
        second = _latest_run(sites)
        states = _states(sites, second)
        starts = _north_starts(sites)

    assert resumed.returncode == ExitCode.OK, out
    assert second != first
    assert set(states.values()) == {SUCCEEDED}
    assert starts == {"north-pc-0001": 1, "north-pc-0002": 1}


def test_ctrl_c_drains_the_queued_visits(rabbitmq, tmp_path):
    with (
        two_sites(tmp_path, 3, cpuu_seconds=CPUU_SECONDS) as sites,
        relays(sites, rabbitmq.url, per_site=1, concurrency=1, only=("north",)),
    ):
        controller = _play_north_until_cpuu_runs(sites, rabbitmq.url)
        os.killpg(controller.pid, signal.SIGINT)
        out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
        states = _states(sites, _latest_run(sites))
        starts = _north_starts(sites)

    started = [h for h, n in starts.items() if n]
    assert controller.returncode == ExitCode.INTERRUPTED, out
    assert len(started) == 1 and starts[started[0]] == 1
    assert states[started[0]] == SUCCEEDED
    assert {h: s for h, s in states.items() if h not in started} == dict.fromkeys(
        set(states) - set(started), NOT_RUN
    )


#: The lab's added latency per round trip in the step cases: each step lasts long enough to be hit.
STEP_LATENCY_S = 0.3


def _running_step(sites: TwoSites, host: str) -> dict[str, Any] | None:
    """The step row the journal shows ``host`` inside now (written, not yet ended)."""
    with sites.journal() as journal:
        run = journal.latest_run()
        if run is None:
            return None
        rows = [r for r in journal.attempts(str(run["run_id"]), host) if r["status"] == "running"]
        return rows[-1] if rows else None


def _attempt(sites: TwoSites, attempt_id: int) -> dict[str, Any]:
    with sites.journal() as journal:
        run = str(journal.latest_run()["run_id"])
        return next(r for r in journal.attempts(run) if r["id"] == attempt_id)


@pytest.mark.parametrize("step", ["preflight", "push", "collect"])
def test_a_relay_killed_inside_each_step_leaves_the_visit_to_its_sibling(rabbitmq, tmp_path, step):
    """The run step's case above, in the other steps that touch the host: whichever step the
    relay dies in, the sibling takes the redelivered visit, finishes it, and CPUU ran once."""
    host = "north-pc-0001"
    with (
        two_sites(tmp_path, 1, cpuu_seconds=1, latency_s=STEP_LATENCY_S) as sites,
        relays(sites, rabbitmq.url, per_site=2, concurrency=1, only=("north",)) as started,
    ):
        controller = _play_north(sites, rabbitmq.url)
        inside = wait_for(
            lambda: (row := _running_step(sites, host)) and row["step"] == step and row,
            180,
            f"{host} inside {step}",
        )
        holder = _kill_the_visits_relay(sites, started)
        out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
        hit = _attempt(sites, int(inside["id"]))  # the dead relay's row: never ended by it
        visits = _site_visits(sites)
        states = _states(sites, _latest_run(sites))
        starts = _north_starts(sites)

    assert hit["step"] == step and hit["status"] == "running"  # killed inside it, not after
    assert controller.returncode == ExitCode.OK, out
    assert states == {host: SUCCEEDED}
    assert starts == {host: 1}
    assert len(visits) == 1 and visits[0]["deliveries"] == 2
    assert visits[0]["relay"] != holder and visits[0]["outcome_json"]
