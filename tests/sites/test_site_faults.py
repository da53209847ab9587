"""Relays, the broker and the journal's database under faults (slow; issue 14, point 5).

Real processes throughout: the controller and the relays are ``cpuu-fleet`` commands, the broker
a private RabbitMQ node of the test's own (so it may be frozen out, stopped and started), the
journal a private PostgreSQL database. The judge is always the lab's own count of CPUU starts per
host (at most once per host and run) and the final states the journal and the report show.
"""

from __future__ import annotations

import csv
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cpuu_fleet.engine.wave import ExitCode
from cpuu_fleet.journal import SUCCEEDED
from tests.support.postgres import running_cluster
from tests.support.rabbitmq import running_broker
from tests.support.sites import TwoSites, relays, start_controller, two_sites, wait_for
from tests.support.waves import make_playbook

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PROCESS_TIMEOUT_S = 300
#: The broker's consumer timeout in the frozen-relay test: well below CPUU's run time, so the
#: broker takes the visit back while the frozen relay is still inside its run step.
SHORT_CONSUMER_TIMEOUT_MS = 15_000


@pytest.fixture
def own_broker(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A private RabbitMQ node for one test (the session's node must not be frozen out or
    restarted under other tests); ``request.param`` may give its consumer timeout (ms)."""
    timeout = getattr(request, "param", None) or 3_600_000
    with running_broker(
        tmp_path_factory.mktemp("own-rabbitmq"), consumer_timeout_ms=timeout
    ) as node:
        yield node


@pytest.fixture
def own_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """A private PostgreSQL cluster for one test (it is restarted under the test) and a database
    in it; ``PGPASSFILE`` set for the test's processes, as an operator's ~/.pgpass would be."""
    with running_cluster() as cluster:
        for name, value in cluster.environment().items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("PGPASSWORD", raising=False)
        yield cluster, cluster.new_database()


def _play(sites: TwoSites, broker_url: str, *hosts: str, forks: int = 25) -> Any:
    """``cpuu-fleet play`` (attached run steps: a visit holds its relay while CPUU runs)."""
    playbook = make_playbook(sites.payload, timeout=120, attached=True, forks=forks).path
    journal = ["--journal", sites.journal_url] if sites.journal_url else []
    return start_controller(
        sites, broker_url, "play", str(playbook), "-i", str(sites.inventory_path),
        "--limit", ",".join(hosts), *journal,
    )  # fmt: skip


def _latest_run(sites: TwoSites) -> str:
    with sites.journal() as journal:
        return str(journal.latest_run()["run_id"])


def _site_visits(sites: TwoSites, run_id: str) -> list[dict[str, Any]]:
    with sites.journal() as journal:
        return journal.site_visits(run_id)


def _states(sites: TwoSites, run_id: str) -> dict[str, str]:
    with sites.journal() as journal:
        return {row["host"]: row["state"] for row in journal.hosts(run_id)}


def _report_states(sites: TwoSites, run_id: str) -> dict[str, str]:
    """Each host's state as the run's report (``hosts.csv``) shows it."""
    path = sites.reports / run_id / "hosts.csv"
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return {row["host"]: row["state"] for row in csv.DictReader(handle)}


def _ended(sites: TwoSites, count: int) -> bool:
    """Have ``count`` of the latest run's visits an outcome in the journal?"""
    visits = _site_visits(sites, _latest_run(sites))
    return sum(1 for visit in visits if visit["outcome_json"]) >= count


def _starts(sites: TwoSites, *hosts: str) -> dict[str, int]:
    counts = sites.cpuu_starts()
    return {host: counts[host] for host in hosts}


@pytest.mark.parametrize("own_broker", [SHORT_CONSUMER_TIMEOUT_MS], indirect=True)
def test_a_relay_frozen_in_the_run_step_then_woken_does_not_act(own_broker, tmp_path: Path):
    """SIGSTOP inside the run step: the thread pool sends no AMQP heartbeats and the frozen
    process's socket stays open, so the broker takes the visit back at its consumer timeout and
    gives it to the sibling, which waits for the CPUU already running and finishes the visit.
    SIGCONT: the woken relay is refused before its next step and writes nothing.

    What else happens, as seen here (Celery 5.7, RabbitMQ 3.10): the broker closes the channel
    with PRECONDITION_FAILED, which Celery's worker takes as unrecoverable: the woken relay
    stops (warm: its running visit ends first). The sibling holds its own delivery past the
    test's short timeout too, after writing the outcome: its ack fails, the outcome stands."""
    host = "north-pc-0001"
    with (
        two_sites(tmp_path, 1, cpuu_seconds=45) as sites,
        relays(sites, own_broker.url, per_site=2, concurrency=1, only=("north",)) as started,
    ):
        controller = _play(sites, own_broker.url, host)
        wait_for(lambda: _starts(sites, host)[host] >= 1, 120, "CPUU started")
        run_id = _latest_run(sites)
        holder = _site_visits(sites, run_id)[0]["relay"]
        frozen = next(r for r in started if holder.endswith(f".{r.process.pid}"))
        os.killpg(frozen.process.pid, signal.SIGSTOP)
        try:
            out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
            taken_over = _site_visits(sites, run_id)
        finally:
            os.killpg(frozen.process.pid, signal.SIGCONT)
        wait_for(
            lambda: "stopped by its guard" in frozen.output(), 120, "the woken relay's refusal"
        )
        visits = _site_visits(sites, run_id)
        states = _states(sites, run_id)
        starts = _starts(sites, host)

    assert controller.returncode == ExitCode.OK, out
    assert starts == {host: 1}
    assert states == {host: SUCCEEDED}
    assert _report_states(sites, run_id) == {host: SUCCEEDED}
    # The sibling took the second delivery and wrote the outcome; the woken relay changed nothing.
    assert len(taken_over) == 1 and taken_over[0]["deliveries"] == 2
    assert taken_over[0]["relay"] != holder and taken_over[0]["outcome_json"]
    assert visits == taken_over


@pytest.mark.parametrize("down_until_visits_end", [False, True], ids=["at-once", "down-a-while"])
def test_the_broker_restarted_mid_wave_every_host_is_visited_once(
    own_broker, tmp_path: Path, down_until_visits_end: bool
):
    """The broker stopped and started while visits run (CPUU started) and others are queued:
    durable queues and persistent messages keep the queued visits, a running visit's message,
    unacknowledged, is delivered again after the restart (its new delivery fences the old one
    and waits for the CPUU already running), and the relays reconnect. Two forks: the controller
    sends the last visits after the restart, on a connection it must open again; kept down until
    the first visits ended (their relays write the journal, not the broker), it sends them while
    there is no broker at all (it tries again: ``PUBLISH_RETRY``)."""
    hosts = [f"north-pc-000{n}" for n in range(1, 5)]
    with (
        two_sites(tmp_path, 4, cpuu_seconds=8) as sites,
        relays(sites, own_broker.url, per_site=2, concurrency=1, only=("north",)),
    ):
        controller = _play(sites, own_broker.url, *hosts, forks=2)
        wait_for(lambda: any(_starts(sites, *hosts).values()), 120, "CPUU started")
        if down_until_visits_end:
            own_broker.restart(lambda: wait_for(lambda: _ended(sites, 2), 120, "visits ended"))
        else:
            own_broker.restart()
        out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
        run_id = _latest_run(sites)
        states = _states(sites, run_id)
        starts = _starts(sites, *hosts)
        visits = _site_visits(sites, run_id)

    assert controller.returncode == ExitCode.OK, out
    assert starts == dict.fromkeys(hosts, 1)
    assert states == dict.fromkeys(hosts, SUCCEEDED)
    assert _report_states(sites, run_id) == dict.fromkeys(hosts, SUCCEEDED)
    assert all(visit["outcome_json"] for visit in visits)


def test_the_database_restarted_mid_wave_loses_nothing(rabbitmq, own_database, tmp_path: Path):
    """``pg_ctl restart`` of the shared journal's cluster while CPUU runs and the controller and
    the relays poll and write: each connection the server ended is opened again before its next
    statement, a read is read again; a write whose fate is unknown is never sent again (its
    visit fails and ``--resume`` finishes it). CPUU once per host, the run (or its resume)
    finished."""
    cluster, url = own_database
    hosts = [f"north-pc-000{n}" for n in range(1, 5)]
    with (
        two_sites(tmp_path, 4, journal_url=url, cpuu_seconds=8) as sites,
        relays(sites, rabbitmq.url, per_site=2, concurrency=1, only=("north",)),
    ):
        controller = _play(sites, rabbitmq.url, *hosts, forks=2)
        wait_for(lambda: any(_starts(sites, *hosts).values()), 120, "CPUU started")
        cluster.restart()
        out, _ = controller.communicate(timeout=PROCESS_TIMEOUT_S)
        runs, last = [_latest_run(sites)], controller.returncode
        if last != ExitCode.OK:
            # A write cut off in flight (its fate unknown) failed its host, and a resume
            # finishes it (not seen here so far: the sessions end while idle, between writes).
            resumed = start_controller(
                sites, rabbitmq.url, "play", "--resume", runs[0], "--journal", url
            )
            out, _ = resumed.communicate(timeout=PROCESS_TIMEOUT_S)
            runs, last = [*runs, _latest_run(sites)], resumed.returncode
        # Each host's last word: the resumed run's where it visited the host again.
        states = {h: s for run_id in runs for h, s in _states(sites, run_id).items()}
        shown = {h: s for run_id in runs for h, s in _report_states(sites, run_id).items()}
        starts = _starts(sites, *hosts)

    assert last == ExitCode.OK, out
    assert starts == dict.fromkeys(hosts, 1)
    assert states == dict.fromkeys(hosts, SUCCEEDED)
    assert shown == dict.fromkeys(hosts, SUCCEEDED)


def test_two_operators_on_overlapping_hosts_one_holds_them(rabbitmq, pg_url, tmp_path: Path):
    """Two controllers, one PostgreSQL journal, the same relays, started together on host sets
    that overlap in one host per site: exactly one takes the lease and runs its wave; the other
    is refused before any host (bad input, 2), naming the run that holds them (docs/journal.md)."""
    first = ["north-pc-0001", "north-pc-0002", "south-pc-0001"]
    second = ["north-pc-0002", "north-pc-0003", "south-pc-0001", "south-pc-0002"]
    with (
        two_sites(tmp_path, 3, journal_url=pg_url, cpuu_seconds=4) as sites,
        relays(sites, rabbitmq.url, per_site=1, concurrency=2),
    ):
        controllers = [_play(sites, rabbitmq.url, *hosts) for hosts in (first, second)]
        outs = [c.communicate(timeout=PROCESS_TIMEOUT_S)[0] for c in controllers]
        with sites.journal() as journal:
            runs = [str(row["run_id"]) for row in journal.runs()]
        starts = sites.cpuu_starts()

    codes = [c.returncode for c in controllers]
    assert sorted(codes) == [ExitCode.OK, ExitCode.BAD_INPUT], outs
    winner = codes.index(ExitCode.OK)
    hosts = (first, second)[winner]
    refused = outs[1 - winner]
    assert len(runs) == 1 and runs[0] in refused, refused
    assert _states(sites, runs[0]) == dict.fromkeys(hosts, SUCCEEDED)
    assert _report_states(sites, runs[0]) == dict.fromkeys(hosts, SUCCEEDED)
    # CPUU once on each host of the wave that ran, never on a host only the refused one named.
    assert starts == {h: int(h in hosts) for h in sites.host_names()}
