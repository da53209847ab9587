"""What a relay checks before it touches a host, and what it trusts from others: no broker and
no workstation needed (every refusal happens before a connection; a visit that got past them
would fail to reach the unroutable address the inventory never gives)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from cpuu_fleet.engine.wave import WorkContext
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import FAILED, NOT_RUN, SUCCEEDED, HostEntry, Journal
from cpuu_fleet.sites.app import BrokerSettings, check_site, queue_name, shown_url
from cpuu_fleet.sites.bundle import Cache, bundle_entries, pack
from cpuu_fleet.sites.dispatch import Dispatcher
from cpuu_fleet.sites.relay import DELIVERY_CAP, Relay
from tests.support.commands import run_subprocess

RUN = "20260101-000000-abcd"
HOST = "north-pc-0001"


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    journal = Journal(tmp_path / "journal.sqlite3")
    journal.start_run(run_id=RUN)
    journal.add_hosts(RUN, [HostEntry(host=HOST, play="p", wave="all", batch=1)])
    yield journal
    journal.close()


def _relay(journal: Journal, tmp_path: Path, **options) -> Relay:
    return Relay(
        journal,
        "north",
        cache_dir=tmp_path / "cache",
        reports_dir=tmp_path / "relay",
        name="north@test",
        **options,
    )


def _visit(journal: Journal, number: int = 1) -> dict[str, object]:
    visit = f"{RUN}.{HOST}.1.{number}"
    journal.add_site_visit(visit, RUN, HOST, 1, "north")
    return {
        "visit": visit,
        "run": RUN,
        "play": "p",
        "host": HOST,
        "attempt": 1,
        "site": "north",
        "bundle": "0" * 64,
        "payload": None,
    }


def _outcome(journal: Journal, ids: dict[str, object]) -> dict[str, object]:
    return json.loads(journal.site_visit(str(ids["visit"]))["outcome_json"])


def test_a_visit_delivered_past_the_cap_ends_failed_saying_why(journal, tmp_path):
    ids = _visit(journal)
    for _ in range(DELIVERY_CAP):
        journal.deliver_site_visit(str(ids["visit"]), "another relay")
    _relay(journal, tmp_path).handle(ids)
    outcome = _outcome(journal, ids)
    assert outcome["state"] == FAILED and outcome["error_class"] == "policy"
    assert f"delivered {DELIVERY_CAP + 1} times" in outcome["error_message"]


def test_a_host_already_final_in_its_run_returns_at_once(journal, tmp_path):
    journal.set_host(RUN, HOST, state=SUCCEEDED, ended_at="2026-01-01T00:00:00Z")
    ids = _visit(journal)
    _relay(journal, tmp_path).handle(ids)
    assert _outcome(journal, ids)["state"] == SUCCEEDED
    assert journal.attempts(RUN, HOST) == []  # no step was even opened


def test_after_ctrl_c_a_queued_visit_is_not_run(journal, tmp_path):
    journal.signal_sites(RUN, 1)
    ids = _visit(journal)
    _relay(journal, tmp_path).handle(ids)
    outcome = _outcome(journal, ids)
    assert outcome["state"] == NOT_RUN and "interrupted" in outcome["error_message"]


def test_a_host_held_by_another_run_is_not_visited(journal, tmp_path):
    journal.take_lease("20260101-010000-ffff", [HOST], {"pid": 1}, lambda owner, beat: False)
    ids = _visit(journal)
    _relay(journal, tmp_path).handle(ids)
    outcome = _outcome(journal, ids)
    assert outcome["state"] == NOT_RUN and "20260101-010000-ffff" in outcome["error_message"]


def test_the_guard_hook_stops_a_visit_before_the_host(journal, tmp_path):
    ids = _visit(journal)
    _relay(journal, tmp_path, guard=lambda ids, step: "the lease's fencing token moved on").handle(
        ids
    )
    outcome = _outcome(journal, ids)
    assert outcome["state"] == NOT_RUN and "fencing token" in outcome["error_message"]


def test_a_second_outcome_never_replaces_the_first(journal, tmp_path):
    ids = _visit(journal)
    journal.signal_sites(RUN, 1)
    relay = _relay(journal, tmp_path)
    relay.handle(ids)
    journal.end_site_visit(str(ids["visit"]), {"state": SUCCEEDED})
    relay.handle(ids)  # a late re-delivery
    assert _outcome(journal, ids)["state"] == NOT_RUN


def test_a_broken_bundle_is_the_hosts_failure_not_the_relays(journal, tmp_path):
    ids = _visit(journal)  # its bundle hash is in no journal
    _relay(journal, tmp_path).handle(ids)
    outcome = _outcome(journal, ids)
    assert outcome["state"] == FAILED and outcome["error_class"] == "internal"
    assert "not in the journal" in outcome["error_message"]


def test_the_same_files_make_the_same_bundle_hash(tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text("- name: p\n")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "CPUU.ini.j2").write_text("x")
    inventory = tmp_path / "inv" / "hosts.yml"
    (inventory.parent / "group_vars").mkdir(parents=True)
    inventory.write_text("all: {}\n")
    (inventory.parent / "group_vars" / "all.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\n00\n")
    entries = bundle_entries(playbook, inventory, [tmp_path / "templates"])
    first = pack(entries)
    assert pack(entries) == first
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
    assert "inventory/group_vars/all.yml" in names  # vault files as they are on disk
    (tmp_path / "templates" / "CPUU.ini.j2").write_text("y")
    assert pack(entries) != first


def test_an_archive_that_climbs_out_of_the_cache_is_refused(journal, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    digest = journal.put_blob("bundle", buffer.getvalue())
    with pytest.raises(tarfile.TarError):
        Cache(tmp_path / "cache").folder(digest, journal.blob)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "cache" / digest).exists()


def test_the_broker_password_is_never_shown():
    url = "amqps://cpuu:s3cret-pw@rabbit.corp:5671/fleet"
    assert shown_url(url) == "amqps://cpuu:***@rabbit.corp:5671/fleet"
    assert "s3cret-pw" not in repr(BrokerSettings(url))


def test_a_site_name_must_be_fit_for_a_queue_name():
    assert queue_name("north-1") == "cpuu-fleet.site.north-1"
    for bad in ("", "a b", "../x", "x" * 64):
        with pytest.raises(InputError):
            check_site(bad)


def test_collected_files_reach_the_controller_only_inside_their_host_folder(journal, tmp_path):
    """A relay's journal rows name where a file goes; the controller writes it only below
    reports/<run>/hosts/<host>/, and only bytes matching the row's hash."""
    reports = tmp_path / "reports"
    good, evil, forged = b"result,1\r\n", b"@echo pwned", b"not what the hash says"
    for name, data in (("ok.csv", good), ("../../../escaped.bat", evil)):
        digest = journal.put_blob("file", data)
        journal.add_file(
            RUN, HOST, kind="result", remote_path=name,
            local_path=f"{RUN}/hosts/{HOST}/{name}", sha256=digest, size=len(data),
        )  # fmt: skip
    journal.add_file(
        RUN, HOST, kind="log", remote_path="x.log", local_path=f"{RUN}/hosts/{HOST}/x.log",
        sha256=hashlib.sha256(forged).hexdigest(), size=1,
    )  # fmt: skip
    context = WorkContext(RUN, journal, reports, None, "", {}, lambda job: None)
    Dispatcher(None, context)._materialise(RUN, HOST)
    host_dir = reports / RUN / "hosts" / HOST
    assert (host_dir / "ok.csv").read_bytes() == good
    assert sorted(p.name for p in reports.rglob("*") if p.is_file()) == ["ok.csv"]


def test_play_refuses_extra_vars_with_relays_without_showing_the_password(tmp_path):
    """Relays render from the bundle: ``-e`` would make their files differ from the checked
    ones, so it is one line (exit 2) before anything, and the broker URL's password stays out."""
    pytest.importorskip("celery", reason="the sites extra (celery) is not installed")
    playbook = tmp_path / "play.yml"
    playbook.write_text("- name: p\n  hosts: all\n  steps: [preflight]\n")
    result = run_subprocess(
        "play", playbook, "-i", tmp_path / "none.yml", "-e", "x=1", "--reports", tmp_path / "r",
        cwd=tmp_path, env={"CPUU_FLEET_BROKER": "amqp://cpuu:pw-9f8e7d@127.0.0.1:1//"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "-e/--extra-vars is not passed to relays" in result.stderr
    assert "pw-9f8e7d" not in result.stdout + result.stderr


def test_ctrl_c_drains_a_visit_no_relay_took_and_a_late_relay_leaves_the_host_alone(
    journal, tmp_path
):
    ids = _visit(journal)
    job = SimpleNamespace(run_id=RUN, stopping=threading.Event(), draining=threading.Event())
    job.draining.set()  # the first Ctrl-C, with the site's relays all down
    context = WorkContext(RUN, journal, tmp_path / "reports", None, "", {}, lambda job: None)
    outcome = Dispatcher(None, context)._wait(str(ids["visit"]), job)
    assert outcome.state == NOT_RUN
    journal.signal_sites(RUN, 0)  # even were the relay not told: the outcome is there
    _relay(journal, tmp_path).handle(ids)
    assert journal.attempts(RUN, HOST) == []
    assert journal.site_visit(str(ids["visit"]))["deliveries"] == 1


@pytest.mark.parametrize(
    "forged", [{"host": "south-pc-0001"}, {"run": "20260101-020000-0000"}, {"site": "south"}]
)
def test_a_message_that_does_not_match_its_journal_row_is_dropped(journal, tmp_path, forged):
    """Whoever can publish to the queue cannot point a known visit at another host or run."""
    ids = {**_visit(journal), **forged}
    _relay(journal, tmp_path).handle(ids)
    assert journal.site_visit(str(ids["visit"]))["outcome_json"] is None
    assert journal.attempts(RUN) == []


def test_a_message_for_another_site_is_dropped(journal, tmp_path):
    ids = _visit(journal)
    Relay(
        journal, "south", cache_dir=tmp_path / "c", reports_dir=tmp_path / "r", name="s@t"
    ).handle(ids)
    assert journal.site_visit(str(ids["visit"]))["outcome_json"] is None
