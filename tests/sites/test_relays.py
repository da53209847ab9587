"""Host visits on relays, end to end: a real RabbitMQ, real ``cpuu-fleet relay`` processes, two
sites of lab workstations, and the lab's CPUU start count as the judge.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cpuu_fleet.cli.demo_lab import lab_environment
from cpuu_fleet.cli.progress import JsonLinesPrinter
from cpuu_fleet.engine.wave import WorkContext
from cpuu_fleet.inputs.payload import load_payload
from cpuu_fleet.journal import SUCCEEDED, HostEntry
from cpuu_fleet.sites.app import VISIT_FIELDS, BrokerSettings, make_app, queue_name
from cpuu_fleet.sites.dispatch import Dispatcher, dispatching
from cpuu_fleet.sites.relay import Relay
from tests.support.sites import (
    SITES,
    TwoSites,
    in_background,
    join_while_relays_live,
    relays,
    two_sites,
    wait_for,
)
from tests.support.waves import make_playbook

pytestmark = pytest.mark.timeout(600)

HOSTS_PER_SITE = 3
STAMP = re.compile(r"_\d{8}_\d{6}")


def _outcomes(sites: TwoSites, run_id: str) -> dict[str, tuple[Any, ...]]:
    """Each host's result as the report shows it: state, class, exit code, steps, files."""
    with sites.journal() as journal:
        steps: dict[str, list[tuple[str, str]]] = {}
        for row in journal.attempts(run_id):
            steps.setdefault(row["host"], []).append((row["step"], row["status"]))
        files: dict[str, list[tuple[str, str]]] = {}
        for row in journal.files(run_id):
            name = STAMP.sub("_<time>", Path(row["local_path"]).name)  # CPUU names by its clock
            files.setdefault(row["host"], []).append((row["kind"], name))
        return {
            row["host"]: (
                row["state"],
                row["error_class"],
                row["exit_code"],
                sorted(steps.get(row["host"], [])),
                sorted(files.get(row["host"], [])),
            )
            for row in journal.hosts(run_id)
        }


def _step_events(stream: io.StringIO) -> dict[str, list[tuple[str, ...]]]:
    """Each host's events from the ``--json`` stream, in the order they were printed: its steps
    (start, end with status) and its end."""
    shown: dict[str, list[tuple[str, ...]]] = {}
    for line in stream.getvalue().splitlines():
        event = json.loads(line)
        if event["event"] == "step_started":
            shown.setdefault(event["host"], []).append(("started", event["step"]))
        elif event["event"] == "step_finished":
            shown.setdefault(event["host"], []).append(("finished", event["step"], event["status"]))
        elif event["event"] == "host_finished":
            shown.setdefault(event["host"], []).append(("host_finished", event["state"]))
    return shown


def _shown_while_visiting(stream: io.StringIO, visits: list[dict[str, Any]]) -> list[str]:
    """The hosts whose first step was on the controller's stream before their relay's first
    visit had ended (its outcome's time in the journal): shown live, not only at the end."""
    first_step: dict[str, str] = {}
    for line in stream.getvalue().splitlines():
        event = json.loads(line)
        if event["event"] == "step_started":
            first_step.setdefault(event["host"], event["at"])
    first_end: dict[str, str] = {}
    for row in visits:
        if row["ended_at"]:
            first_end[row["host"]] = min(
                first_end.get(row["host"], row["ended_at"]), row["ended_at"]
            )
    return sorted(h for h, at in first_step.items() if h in first_end and at < first_end[h])


def _report_csv(sites: TwoSites, run_id: str, name: str) -> str:
    """One of the run's report CSVs, its run id and CPUU's time stamps made neutral."""
    text = (sites.reports / run_id / name).read_text(encoding="utf-8-sig")
    return STAMP.sub("_<time>", text.replace(run_id, "<run>"))


def _collected_files_are_there(sites: TwoSites, run_id: str) -> list[str]:
    """The files the journal lists for the run, each checked on the controller's disk."""
    problems = []
    with sites.journal() as journal:
        rows = journal.files(run_id)
    for row in rows:
        path = sites.reports / row["local_path"]
        if not path.is_file():
            problems.append(f"missing {row['local_path']}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != row["sha256"]:
            problems.append(f"different bytes in {row['local_path']}")
    return problems if rows else ["no file collected"]


def _all_queued(rabbitmq: Any, sites: TwoSites) -> dict[str, list[tuple[bytes, dict]]] | None:
    """Each site's messages of this wave's run, once all are queued (the session's broker may
    still hold messages an earlier test's run left, which its relays drop)."""
    if sites.journal_url is None and not (sites.reports / "journal.sqlite3").exists():
        return None
    with sites.journal() as journal:
        run = journal.latest_run()
    if run is None:
        return None
    found = {
        site: [
            m for m in rabbitmq.queue_messages(queue_name(site)) if run["run_id"].encode() in m[0]
        ]
        for site in SITES
    }
    return found if all(len(m) == HOSTS_PER_SITE for m in found.values()) else None


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_two_site_wave_through_relays_is_the_wave_of_one_controller(
    rabbitmq, tmp_path, request, database
):
    """On PostgreSQL the relays reach the journal, the bundle, the payload and give back the
    collected files over the database only, as relays on other machines do. The controller's
    ``--json`` events show each relay's host step by step, as the lone controller shows its
    own hosts (``Journal.follow``: PostgreSQL's notifications, SQLite's polling)."""
    url = request.getfixturevalue("pg_url") if database == "postgresql" else None
    with two_sites(tmp_path / "alone", HOSTS_PER_SITE) as alone:
        alone_events = io.StringIO()
        baseline = alone.run(
            make_playbook(alone.payload), processors=[JsonLinesPrinter(alone_events)]
        )
        expected = _outcomes(alone, baseline.run_id)
        expected_profiles = _report_csv(alone, baseline.run_id, "profiles.csv")

    with two_sites(tmp_path / "relayed", HOSTS_PER_SITE, journal_url=url) as sites:
        app = make_app(BrokerSettings(rabbitmq.url), SITES)
        playbook = make_playbook(sites.payload)
        events = io.StringIO()
        thread, box = in_background(
            lambda: sites.run(
                playbook, wrap_work=dispatching(app), processors=[JsonLinesPrinter(events)]
            )
        )
        # No relay yet: every visit waits in its site's queue, as the broker stores it.
        queued = wait_for(
            lambda: _all_queued(rabbitmq, sites), 120, "every visit in its site's queue"
        )
        with relays(sites, rabbitmq.url) as started:
            join_while_relays_live(thread, started, 400)
            listening = {relay.site: relay.listening() for relay in started}
        assert "error" not in box, box.get("error")
        result = box["result"]
        got = _outcomes(sites, result.run_id)
        with sites.journal() as journal:
            live = _shown_while_visiting(events, journal.site_visits(result.run_id))
        starts = sites.cpuu_starts()
        files = _collected_files_are_there(sites, result.run_id)
        profiles = _report_csv(sites, result.run_id, "profiles.csv")
        secrets = [rabbitmq.password, *sites.environment.values()]
        payload_head = (sites.payload / "ClientProfileUpdatingUtility.exe").read_bytes()[:48]

    assert set(result.summary.states.values()) == {SUCCEEDED}
    assert listening == {site: [] for site in SITES}  # relays connect outward only
    assert got == expected
    shown, shown_alone = _step_events(events), _step_events(alone_events)
    assert set(shown) == set(sites.host_names())
    for host, seen in shown.items():
        assert ("started", "run") in seen and seen[-1] == ("host_finished", SUCCEEDED)
        assert seen == shown_alone[host]  # each step, started then ended, before the host's end
    assert live  # followed as the relays wrote them (not only read back at each visit's end)
    assert profiles == expected_profiles  # read from the files the relays collected
    assert starts == dict.fromkeys(sites.host_names(), 1)
    assert files == []
    for site, messages in queued.items():
        hosts = set()
        for body, properties in messages:
            text = body + json.dumps(properties, default=str).encode()
            assert not [s for s in secrets if s.encode() in text]
            assert payload_head not in body
            args, kwargs, _embed = json.loads(body)
            assert args == [] and set(kwargs) == {"ids"}
            ids = kwargs["ids"]
            assert set(ids) == set(VISIT_FIELDS)
            assert ids["site"] == site and ids["run"] == result.run_id
            assert all(len(ids[key]) == 64 for key in ("bundle", "payload"))
            hosts.add(ids["host"])
        assert hosts == {h for h in sites.host_names() if h.startswith(f"{site}-")}


def _one_visit(sites: TwoSites, tmp_path: Path) -> tuple[str, dict[str, Any], Any]:
    """A run with one visit of ``north-pc-0001`` dispatched into the journal, as the controller
    does it (bundle and payload stored by content), and a maker of a relay with a guard."""
    playbook = make_playbook(sites.payload, attached=True)
    play = playbook.plays[0]
    sites.reports.mkdir(parents=True)
    with sites.journal() as journal:
        run = journal.start_run()
        journal.add_hosts(
            run, [HostEntry(host="north-pc-0001", play=play.name, wave="all", batch=1)]
        )
        context = WorkContext(
            run, journal, sites.reports, playbook, sites.inventory_path,
            {play.name: load_payload(sites.payload)}, lambda job: None,
        )  # fmt: skip
        dispatcher = Dispatcher(None, context)
        ids = {
            "visit": f"{run}.north-pc-0001.1.1", "run": run, "play": play.name,
            "host": "north-pc-0001", "attempt": 1, "site": "north",
            "bundle": dispatcher.bundle_digest(), "payload": dispatcher.payload_digest(play.name),
        }  # fmt: skip
        journal.add_site_visit(ids["visit"], run, "north-pc-0001", 1, "north")
        # The run holds the host, as a controller's play does (a relay renews that lease).
        assert journal.take_lease(run, ["north-pc-0001"], {"pid": 1}, lambda *_: False) is None

    def relay_for(journal: Any, guard: Any) -> Relay:
        return Relay(
            journal, "north", cache_dir=tmp_path / "cache", reports_dir=tmp_path / "relay",
            name="north@test", guard=guard,
        )  # fmt: skip

    return run, ids, relay_for


def test_a_step_the_guard_refuses_is_never_started_and_the_relay_writes_no_outcome(tmp_path):
    """The hook for the lease's fencing token: asked before every step, here refusing ``run``
    (as a relay frozen past its lease, then woken, must be): no CPUU, no run step row, and no
    outcome, which belongs to the relay that holds the lease by then."""
    with two_sites(tmp_path, 1) as sites, lab_environment(sites.fleet):
        run, ids, relay_for = _one_visit(sites, tmp_path)
        asked: list[str | None] = []

        def guard(ids: dict[str, Any], step: str | None) -> str | None:
            asked.append(step)
            return "fencing token 7 is stale" if step == "run" else None

        with sites.journal() as journal:
            relay_for(journal, guard).handle(ids)
            steps = [row["step"] for row in journal.attempts(run)]
            row = journal.site_visit(ids["visit"])
        starts = sites.cpuu_starts()

    assert asked == [None, "connect", "preflight", "push", "run"]
    assert "run" not in steps and {"preflight", "push"} <= set(steps)
    assert row["outcome_json"] is None
    assert starts["north-pc-0001"] == 0


def test_a_relay_whose_visit_was_delivered_again_meanwhile_stops_before_its_next_step(tmp_path):
    """A relay frozen (or cut off) while the broker gave its visit to a sibling: the delivery
    count moved on, so the woken relay starts no further step and writes no outcome."""
    with two_sites(tmp_path, 1) as sites, lab_environment(sites.fleet):
        run, ids, relay_for = _one_visit(sites, tmp_path)

        def sibling_takes_over(ids: dict[str, Any], step: str | None) -> None:
            if step == "push":  # while this relay pushes, the broker re-delivers the visit
                with sites.journal() as other:
                    other.deliver_site_visit(str(ids["visit"]), "north@sibling")

        with sites.journal() as journal:
            relay_for(journal, sibling_takes_over).handle(ids)
            steps = [row["step"] for row in journal.attempts(run)]
            row = journal.site_visit(ids["visit"])
        starts = sites.cpuu_starts()

    assert steps == ["connect", "preflight", "push"]
    assert row["outcome_json"] is None and row["relay"] == "north@sibling"
    assert starts["north-pc-0001"] == 0


def test_a_delivery_superseded_between_its_check_and_its_step_is_refused_by_the_fencing_token(
    tmp_path,
):
    """The window the delivery check leaves open: the sibling takes the visit (a delivery and
    a new fencing token) just after this relay's check before ``run`` and before its row. The
    run step's write-ahead row carries the old token, so the journal refuses it in the same
    statement: no CPUU, no run row, and this relay writes no outcome (the sibling's word)."""
    with two_sites(tmp_path, 1) as sites, lab_environment(sites.fleet):
        run, ids, relay_for = _one_visit(sites, tmp_path)

        def sibling_takes_over_after_the_check(ids: dict[str, Any], step: str | None) -> None:
            if step == "run":  # asked after this relay's own delivery check passed
                with sites.journal() as other:
                    other.deliver_site_visit(str(ids["visit"]), "north@sibling")
                    assert other.renew_host_lease(run, "north-pc-0001") is not None

        with sites.journal() as journal:
            relay_for(journal, sibling_takes_over_after_the_check).handle(ids)
            steps = [row["step"] for row in journal.attempts(run)]
            row = journal.site_visit(ids["visit"])
        starts = sites.cpuu_starts()

    assert "run" not in steps and {"preflight", "push"} <= set(steps)
    assert row["outcome_json"] is None and row["relay"] == "north@sibling"
    assert starts["north-pc-0001"] == 0


def test_a_visit_whose_outcome_could_not_be_written_goes_back_to_the_queue(tmp_path, monkeypatch):
    """The journal fails as the relay writes the visit's outcome (the database away for good):
    the message is rejected back to the queue, not acknowledged as done, so a later delivery
    writes the outcome the controller waits for; CPUU still ran once (the run marker)."""
    from celery.exceptions import Reject

    import cpuu_fleet.sites.relay as relay_module

    monkeypatch.setattr(relay_module, "REQUEUE_PAUSE_S", 0.0)
    with two_sites(tmp_path, 1) as sites, lab_environment(sites.fleet):
        _run, ids, relay_for = _one_visit(sites, tmp_path)
        with sites.journal() as journal:
            relay = relay_for(journal, lambda ids, step: None)
            real = journal.end_site_visit

            def database_gone(*args: Any, **kwargs: Any) -> bool:
                raise OSError("could not reach the journal's database")

            monkeypatch.setattr(journal, "end_site_visit", database_gone)
            with pytest.raises(Reject) as rejected:
                relay.run_task(ids)
            first = journal.site_visit(ids["visit"])
            monkeypatch.setattr(journal, "end_site_visit", real)
            relay.run_task(ids)  # the broker's next delivery of the requeued message
            second = journal.site_visit(ids["visit"])
        starts = sites.cpuu_starts()

    assert rejected.value.requeue is True
    assert first["outcome_json"] is None
    assert json.loads(second["outcome_json"])["state"] == SUCCEEDED
    assert second["deliveries"] == 2
    assert starts["north-pc-0001"] == 1
