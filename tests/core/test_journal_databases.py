"""The journal on both databases: one schema, upgrades in place, the fencing token, the lease
race, a visit's round trips, and a report that reads the same from SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import SCHEMA_VERSION, SUCCEEDED, HostEntry, Journal, LeaseLost
from tests.support.report import assert_same_report, build_fleet, report_figures, timeless

V1_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "journal_v1.sql"


def _alive(*_: object) -> bool:
    return False


def _dead(*_: object) -> bool:
    return True


def _version(journal: Journal) -> int:
    (row,) = journal._rows("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(row["value"])


def test_a_step_of_a_run_that_lost_its_lease_is_refused_and_not_written(journal_location):
    first = Journal(journal_location)
    second = Journal(journal_location)
    first.start_run(run_id="run-a")
    assert first.take_lease("run-a", ["pc-1", "pc-2"], {"pid": 1}, _alive) is None
    kept = first.start_step("run-a", "pc-1", "preflight")  # holds the lease: written
    # run-a's controller froze past the expiry: another controller takes the hosts over.
    second.start_run(run_id="run-b")
    assert second.take_lease("run-b", ["pc-1"], {"pid": 2}, _dead) is None
    with pytest.raises(LeaseLost, match="pc-1: the lease of run run-a"):
        first.start_step("run-a", "pc-1", "run")
    assert [a["id"] for a in second.attempts("run-a")] == [kept]  # no run step row
    assert second.start_step("run-b", "pc-1", "run") > kept
    assert second.run("run-a")["status"] == "interrupted"


def test_a_new_delivery_of_a_visit_supersedes_the_earlier_one(journal_location):
    controller = Journal(journal_location)
    controller.start_run(run_id="run-a")
    assert controller.take_lease("run-a", ["pc-1"], {"pid": 1}, _alive) is None
    relay_1, relay_2 = Journal(journal_location), Journal(journal_location)
    old = relay_1.renew_host_lease("run-a", "pc-1")
    relay_1.start_step("run-a", "pc-1", "preflight")
    new = relay_2.renew_host_lease("run-a", "pc-1")  # redelivered: relay 1 is presumed lost
    assert old is not None and new is not None and new > old
    relay_2.start_step("run-a", "pc-1", "preflight")
    with pytest.raises(LeaseLost):  # relay 1 woke up: it must not act (nor collect)
        relay_1.start_step("run-a", "pc-1", "collect")
    assert relay_1.renew_host_lease("run-x", "pc-1") is None  # a run that holds nothing


def test_two_controllers_racing_for_overlapping_hosts_exactly_one_wins(journal_location):
    for round_ in range(4):
        journals = [Journal(journal_location), Journal(journal_location)]
        runs = [f"a{round_}", f"b{round_}"]
        hosts = [[f"pc-{i}" for i in range(0, 30)], [f"pc-{i}" for i in range(20, 50)]]
        start = threading.Barrier(2)
        results: dict[int, object] = {}

        def take(i: int, journals=journals, runs=runs, hosts=hosts, start=start, results=results):
            journals[i].start_run(run_id=runs[i])
            start.wait()
            results[i] = journals[i].take_lease(runs[i], hosts[i], {"pid": i}, _alive)

        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [i for i in (0, 1) if results[i] is None]
        assert len(winners) == 1, results
        loser = 1 - winners[0]
        assert results[loser]["run_id"] == runs[winners[0]]
        held = {row["run_id"] for row in journals[0]._rows("SELECT run_id FROM lease_hosts")}
        assert held == {runs[winners[0]]}  # the loser holds nothing, not even its free hosts
        journals[winners[0]].release_lease(runs[winners[0]])
        for journal in journals:
            journal.close()


def test_a_visits_deferred_writes_cost_one_round_trip_per_guard(journal_location):
    journal = Journal(journal_location)
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1")])
    other = Journal(journal_location)
    before = journal.round_trips
    with journal.deferred():
        for step in ("connect", "preflight", "push", "run", "collect"):
            attempt = journal.start_step(run, "pc-1", step)
            if step == "run":
                journal.set_host(run, "pc-1", task_name="CPUU-r1")  # a guard: resume asks by it
            if step == "collect":
                journal.add_profiles(run, "pc-1", "CORP\\u", [ProfileResult("Outlook", 10, 0, 1)])
                for n in range(3):
                    journal.add_file(run, "pc-1", kind="result", remote_path=f"C:\\{n}",
                                     local_path=f"{n}.csv", sha256=f"{n:064}", size=1)  # fmt: skip
            journal.end_step(attempt, "ok")
        if journal.dialect == "postgresql":  # held back: not yet in the shared database
            assert other.host(run, "pc-1")["state"] == "queued"
        journal.set_host(run, "pc-1", state=SUCCEEDED, attempts=1, killed=False)
    trips = journal.round_trips - before
    if journal.dialect == "postgresql":
        # 5 write-ahead rows, the task name, the ends of run and collect, the visit's end.
        assert trips == 9
    else:
        assert trips == 16  # SQLite: every write a statement of its own, as before
    assert (other.host(run, "pc-1")["state"], other.host(run, "pc-1")["killed"]) == (SUCCEEDED, 0)
    assert [a["status"] for a in other.attempts(run, "pc-1")] == ["ok"] * 5
    assert len(other.files(run, "pc-1")) == 3 and len(other.profiles(run)) == 1


def test_an_old_sqlite_journal_is_upgraded_in_place_and_its_report_is_unchanged(tmp_path):
    reports = tmp_path / "reports"
    fleet = build_fleet(reports)
    fleet.journal.close()
    old = reports / "old" / Journal.FILENAME
    _downgrade_to_v1(reports / Journal.FILENAME, old)
    with Journal(old, read_only=True) as journal:  # read-only: read as it is, never upgraded
        before = report_figures(journal, fleet.first_run, tmp_path / "before")
    with sqlite3.connect(old) as raw:
        assert raw.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    with Journal(old) as journal:
        assert _version(journal) == SCHEMA_VERSION
        after = report_figures(journal, fleet.first_run, tmp_path / "after")
        # The upgraded journal works as a new one: a lease with tokens, a fenced step.
        journal.start_run(run_id="r-new")
        assert journal.take_lease("r-new", ["pc-01"], {"pid": 1}, _alive) is None
        assert journal.start_step("r-new", "pc-01", "run") > 0
    assert timeless(before) == timeless(after)


def _downgrade_to_v1(source: Path, target: Path) -> None:
    """A copy of ``source``'s rows in a journal of schema version 1 (today's before the change)."""
    target.parent.mkdir(parents=True)
    with sqlite3.connect(target) as old, sqlite3.connect(source) as new:
        old.executescript(V1_SCHEMA.read_text())
        old.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        for table in ("runs", "hosts", "attempts", "profiles", "files", "audit_rows"):
            columns = [r[1] for r in old.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(f'"{c}"' for c in columns)
            rows = new.execute(f"SELECT {names} FROM {table} ORDER BY rowid").fetchall()
            marks = ", ".join("?" for _ in columns)
            old.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def test_the_report_reads_the_same_from_sqlite_and_postgresql(tmp_path, pg_url):
    on_sqlite = build_fleet(tmp_path / "a")
    on_postgresql = build_fleet(tmp_path / "b", pg_url)
    assert on_postgresql.journal.dialect == "postgresql"
    assert not (tmp_path / "b" / Journal.FILENAME).exists()
    for run in (on_sqlite.first_run, on_sqlite.retry_run):
        assert_same_report(on_sqlite.journal, on_postgresql.journal, run, tmp_path)
    assert on_postgresql.journal.hosts(on_postgresql.first_run) == on_sqlite.journal.hosts(
        on_sqlite.first_run
    )


def test_two_controllers_creating_a_shared_journal_at_once_both_open_it(pg_url):
    start = threading.Barrier(4)
    opened: list[Journal] = []
    errors: list[BaseException] = []

    def open_it() -> None:
        start.wait()
        try:
            opened.append(Journal(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(opened) == 4
    assert _version(opened[0]) == SCHEMA_VERSION
    assert opened[0]._rows("SELECT COUNT(*) AS n FROM meta")[0]["n"] == 2  # version, token


def test_a_password_in_the_url_is_refused_and_never_shown(pg_url):
    with_password = pg_url.replace("cpuu@", "cpuu:Hunter2-secret@")
    with pytest.raises(InputError) as refused:
        Journal(with_password)
    text = refused.value.render()
    assert "Hunter2-secret" not in text and "PGPASSWORD" in text


def test_the_password_comes_from_the_keyring_when_libpq_has_none(
    pg_url, postgres_cluster, monkeypatch, memory_keyring
):
    monkeypatch.setenv("PGPASSFILE", str(postgres_cluster.root / "absent"))
    with pytest.raises(InputError) as refused:
        Journal(pg_url)
    assert "cannot open the journal" in refused.value.render()
    memory_keyring.set_password("cpuu-fleet-journal", "cpuu@127.0.0.1", postgres_cluster.password)
    with Journal(pg_url) as journal:
        assert journal.runs() == []


def _until(predicate: Callable[[], bool], limit_s: float = 30.0) -> bool:
    """Wait for ``predicate`` (a generous limit on a loaded machine: not a timed assertion)."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_follow_sees_every_step_row_and_catches_up_after_a_dropped_listener(journal_location):
    writer, reader = Journal(journal_location), Journal(journal_location)
    run = writer.start_run(run_id="r1")
    writer.start_run(run_id="other")
    seen: list[int] = []
    stop = threading.Event()

    def follow() -> None:
        for row in reader.follow(run_id=run, wait_s=0.2, stop=stop):
            seen.append(row["id"])

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        written = [writer.start_step(run, f"pc-{i}", "run") for i in range(5)]
        writer.start_step("other", "pc-9", "run")  # another run's row: not followed
        assert _until(lambda: len(seen) == 5), seen
        if writer.dialect == "postgresql":  # cut the listener off while rows keep coming
            cut = writer._rows(
                "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
                " WHERE query = 'LISTEN cpuu_fleet_steps' AND pid <> pg_backend_pid()"
            )
            assert [row["done"] for row in cut] == [True]
        written += [writer.start_step(run, f"pc-{i}", "collect") for i in range(5)]
        assert _until(lambda: len(seen) == 10), seen
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen == written


def test_follow_with_ends_yields_an_accepted_step_again_when_it_ends(journal_location):
    """What a controller shows of relays' hosts: each step's start and, read again by id, its
    end; a step of a host the reader does not want is yielded once, as it was written."""
    writer, reader = Journal(journal_location), Journal(journal_location)
    run = writer.start_run(run_id="r1")
    seen: list[tuple[str, str, str]] = []
    stop = threading.Event()

    def follow() -> None:
        wanted = lambda row: row["host"] == "pc-relayed"  # noqa: E731
        for row in reader.follow(run_id=run, wait_s=0.2, stop=stop, ends=wanted):
            seen.append((row["host"], row["step"], row["status"]))

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        push = writer.start_step(run, "pc-relayed", "push")
        local = writer.start_step(run, "pc-local", "push")
        assert _until(lambda: len(seen) == 2), seen
        writer.end_step(push, "changed")
        writer.end_step(local, "ok")
        collect = writer.start_step(run, "pc-relayed", "collect")
        assert _until(lambda: len(seen) == 4), seen
        writer.end_step(collect, "ok")
        assert _until(lambda: len(seen) == 5), seen
    finally:
        stop.set()
        thread.join(timeout=30)
    assert seen == [
        ("pc-relayed", "push", "running"),
        ("pc-local", "push", "running"),
        ("pc-relayed", "push", "changed"),
        ("pc-relayed", "collect", "running"),
        ("pc-relayed", "collect", "ok"),
    ]


def test_a_visits_view_answers_as_the_journal_does_with_its_own_writes(journal_location):
    """``Journal.visit_view``: the host's history read once (with the first write-ahead row on
    PostgreSQL), then kept current by the visit's own writes; every answer equals what a
    second journal reads from the database afterwards, and other hosts are read as ever."""
    journal = Journal(journal_location)
    earlier = journal.start_run(run_id="r0")
    journal.add_hosts(earlier, [HostEntry("pc-1")])
    old = journal.start_step(earlier, "pc-1", "run")
    journal.set_host(earlier, "pc-1", task_name="cpuu-fleet update r0", state="pending")
    journal.end_step(old, "ok")
    journal.add_file(earlier, "pc-1", kind="result", remote_path="C:\\old.csv",
                     local_path="old.csv", sha256="0" * 64, size=1)  # fmt: skip
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1"), HostEntry("pc-2")])
    answers = []
    with journal.deferred(), journal.visit_view("pc-1", (run,)):
        for step in ("preflight", "run", "collect"):
            attempt = journal.start_step(run, "pc-1", step)
            answers.append(journal.pending_task("pc-1", excluding=(run,)))
            if step == "collect":
                journal.add_profiles(run, "pc-1", "CORP\\u", [ProfileResult("Outlook", 10, 0, 1)])
                journal.add_file(run, "pc-1", kind="result", remote_path="C:\\new.csv",
                                 local_path="new.csv", sha256="1" * 64, size=2)  # fmt: skip
            journal.end_step(attempt, "changed" if step == "run" else "ok", details={"n": 1})
            answers.append(journal.attempts(run, "pc-1"))
        answers += [journal.files(host="pc-1"), journal.files(run, "pc-1")]
        answers.append(journal.profiles(run, "pc-1"))
        journal.start_step(run, "pc-2", "preflight")  # another host: no view, read as ever
        answers.append(journal.attempts(run, "pc-2"))
    other = Journal(journal_location)
    truth = []
    for answer in answers[:-4]:
        if isinstance(answer, str) or answer is None:
            truth.append(other.pending_task("pc-1", excluding=(run,)))
    assert [a for a in answers[:-4] if not isinstance(a, list)] == truth
    assert truth == ["cpuu-fleet update r0"] * 3

    def same(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "id"} for row in rows]

    steps = [a for a in answers[:-4] if isinstance(a, list)]
    assert [[(r["step"], r["status"]) for r in rows] for rows in steps] == [
        [("preflight", "ok")],
        [("preflight", "ok"), ("run", "changed")],
        [("preflight", "ok"), ("run", "changed"), ("collect", "ok")],
    ]
    assert steps[-1] == other.attempts(run, "pc-1")
    assert same(answers[-4]) == same(other.files(host="pc-1"))
    assert [r["remote_path"] for r in answers[-4]] == ["C:\\old.csv", "C:\\new.csv"]
    assert same(answers[-3]) == same(other.files(run, "pc-1"))
    assert same(answers[-2]) == same(other.profiles(run, "pc-1"))
    assert answers[-1] == other.attempts(run, "pc-2")
    journal.close()
    other.close()
