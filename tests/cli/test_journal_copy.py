"""``cpuu-fleet journal-copy``: a SQLite journal's whole history into an empty PostgreSQL journal,
then used there with ``--journal URL`` (real lab waves, a real PostgreSQL cluster of the tests).

What an operator would notice: the report, ``status`` and ``runs`` read the same from the copy;
``--retry-failed`` and ``--resume`` from the shared journal never start CPUU twice on a host
(the lab's own count); a refused or killed copy leaves the target as it was.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.journal_schema import SCHEMA_VERSION, metadata
from tests.faults.fault_bench import FaultLab
from tests.support.report import assert_same_report, build_fleet
from tests.support.waves import make_playbook

REPO = Path(__file__).resolve().parents[2]


def _pg(url: str, sql: str) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        return db.execute(sql).fetchall()


def _tables(url: str) -> list[str]:
    rows = _pg(
        url,
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() ORDER BY table_name",
    )
    return [name for (name,) in rows]


def _snapshot(url: str) -> dict[str, Any]:
    """Every table of the target with its rows (as text), to prove a refusal touched nothing."""
    return {table: sorted(map(repr, _pg(url, f"SELECT * FROM {table}"))) for table in _tables(url)}


def _sqlite_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        names = [row[1] for row in db.execute(f"PRAGMA table_info({table})") if row[1] != "seq"]
        listed = ", ".join(f'"{n}"' for n in names)
        return db.execute(f"SELECT {listed} FROM {table} ORDER BY rowid").fetchall()


def _pg_rows(url: str, table: str, names: list[str]) -> list[tuple[Any, ...]]:
    listed = ", ".join(f'"{n}"' for n in names)
    order = {"hosts": "seq", "attempts": "id", "profiles": "id", "files": "id", "audit_rows": "id"}
    rows = _pg(url, f"SELECT {listed} FROM {table} ORDER BY {order.get(table, '1')}")
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows]


def _columns(path: Path, table: str) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})") if row[1] != "seq"]


def _alive(*_: object) -> bool:
    return False


ORDERED = ("hosts", "attempts", "profiles", "files", "audit_rows")
"""Tables whose order PostgreSQL keeps (an id or ``seq``); the others are compared as sets."""


def test_every_row_and_value_is_copied_ids_kept_and_later_ids_follow(cli, tmp_path, pg_url):
    reports = tmp_path / "reports"
    fleet = build_fleet(reports)
    blob = bytes(range(256)) * 3  # no text: every byte value, as a payload archive has
    digest = fleet.journal.put_blob("payload", blob)
    top = max(a["id"] for a in fleet.journal.attempts(fleet.first_run))
    owner = {"machine": "gone01", "pid": 7}  # a controller on another machine, long dead:
    assert fleet.journal.take_lease(fleet.retry_run, ["pc-02", "pc-03"], owner, _alive) is None
    fleet.journal.close()
    source = reports / Journal.FILENAME
    with closing(sqlite3.connect(source)) as db, db:  # its heartbeat stopped long ago
        db.execute("UPDATE leases SET heartbeat_at = '2026-11-21T10:05:00.000+00:00'")
        tokens = [token for (token,) in db.execute("SELECT token FROM lease_hosts")]

    code, out, err = cli("journal-copy", "--to", pg_url, "--reports", reports)

    assert code == 0, err
    assert out.strip().splitlines()[-1].startswith("copied 2 runs, 11 hosts,")
    assert f"--journal {pg_url}" in out
    assert "journal-copy: attempts:" in err  # progress per table on stderr
    for table in ("runs", *ORDERED, "leases", "lease_hosts", "site_blobs", "site_visits"):
        names = _columns(source, table)
        copied, kept = _pg_rows(pg_url, table, names), _sqlite_rows(source, table)
        if table not in ORDERED:
            copied, kept = sorted(copied, key=repr), sorted(kept, key=repr)
        assert copied == kept, table
    with Journal(source, read_only=True) as old, Journal(pg_url, read_only=True) as new:
        assert_same_report(old, new, fleet.first_run, tmp_path)
    with Journal(pg_url) as shared:
        assert shared.blob(digest) == blob
        assert shared.start_step(fleet.first_run, "pc-01", "collect") > top  # no collision
        shared.add_hosts(fleet.first_run, [HostEntry("pc-99")])
        assert shared.hosts(fleet.first_run)[-1]["host"] == "pc-99"  # after the copied ones
        assert shared.take_lease("later", ["pc-02"], {"pid": 8}, lambda o, _: o["pid"] == 7) is None
        assert shared.lease_token("later", "pc-02") > max(tokens)  # fencing tokens only grow


def test_a_wave_copied_reads_the_same_and_its_retry_visits_only_the_failed_host(
    cli, wave_factory, pg_url, tmp_path
):
    wave = wave_factory(3)
    disk = wave.workstation("pc-0003").fs
    reserved = disk.reserved_bytes
    disk.reserved_bytes = disk.capacity_bytes - disk.used_bytes + reserved - 64 * 1024  # full
    first = wave.run(make_playbook(wave.payload))
    reports = str(wave.reports)

    code, _, err = cli("journal-copy", "--to", pg_url, "--reports", reports)
    assert code == 0, err

    shared = ("--reports", reports, "--journal", pg_url)
    for command in (("runs",), ("runs", "--json"), ("status", first.run_id), ("status", "--json")):
        on_sqlite = cli(*command, "--reports", reports)
        on_postgresql = cli(*command, *shared)
        assert first.run_id in on_sqlite[1], on_sqlite
        assert on_sqlite[0] == on_postgresql[0] and on_sqlite[1] == on_postgresql[1], command
    with Journal.in_reports(wave.reports) as old, Journal(pg_url, read_only=True) as new:
        assert_same_report(old, new, first.run_id, tmp_path)
        assert {h["host"]: h["state"] for h in new.hosts(first.run_id)}["pc-0003"] == "failed"

    disk.reserved_bytes = reserved  # room again: the retry may now run CPUU there
    retry = wave.follow_up(retry_failed=first.run_id, journal_url=pg_url)
    with Journal(pg_url, read_only=True) as journal:
        assert [h["host"] for h in journal.hosts(retry.run_id)] == ["pc-0003"]
        assert journal.run(retry.run_id)["parent_run"] == first.run_id
    assert wave.fleet.cpuu_start_counts() == {"pc-0001": 1, "pc-0002": 1, "pc-0003": 1}


@pytest.mark.slow  # a controller killed for real, as in the fault matrix
def test_a_run_killed_mid_wave_is_copied_and_resumed_from_the_shared_journal(tmp_path, pg_url):
    with FaultLab(tmp_path) as lab:  # the controller on SQLite, killed in the run step
        run_id = lab.killed_in_run_step()
        copied = lab.run("journal-copy", "--to", pg_url)
        assert copied.returncode == 0, copied.stdout
        lab.journal_url = pg_url  # from now on every command reads the shared journal

        lab.assert_resumed_once(run_id)


def _refused(cli: Any, reports: Path, url: str) -> str:
    code, out, err = cli("journal-copy", "--to", url, "--reports", reports)
    assert code == 2 and out == "", (code, out, err)
    (line,) = err.strip().splitlines()
    return line


def test_a_target_with_runs_is_refused_and_untouched(cli, tmp_path, pg_url):
    build_fleet(tmp_path / "a").journal.close()
    build_fleet(tmp_path / "b", pg_url).journal.close()
    before = _snapshot(pg_url)

    line = _refused(cli, tmp_path / "a", pg_url)

    assert "already holds 2 runs" in line and "never merges" in line
    assert _snapshot(pg_url) == before


def test_a_source_whose_controller_lives_is_refused_and_the_target_untouched(cli, tmp_path, pg_url):
    reports = tmp_path / "reports"
    with Journal.in_reports(reports) as journal:
        run = journal.start_run(run_id="20261206-210000-live")
        owner = {"machine": "jump01", "pid": 4242, "operator": "ops"}  # another machine
        assert journal.take_lease(run, ["pc-01"], owner, lambda *_: False) is None

    line = _refused(cli, reports, pg_url)

    assert f"run {run} (pid 4242 on jump01, operator ops" in line and "still be running" in line
    assert _tables(pg_url) == []  # not even a schema


def test_a_source_newer_than_the_code_is_refused_and_the_target_untouched(cli, tmp_path, pg_url):
    reports = tmp_path / "reports"
    Journal.in_reports(reports).close()
    with closing(sqlite3.connect(reports / Journal.FILENAME)) as db, db:
        db.execute(
            "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )

    line = _refused(cli, reports, pg_url)

    assert f"schema version {SCHEMA_VERSION + 1}, newer than this cpuu-fleet" in line
    assert _tables(pg_url) == []


def test_a_password_in_the_url_is_refused_and_never_shown(cli, tmp_path, pg_url):
    build_fleet(tmp_path / "reports").journal.close()
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    with_password = f"postgresql://{user}:Sekr1t-pw@{rest}"

    line = _refused(cli, tmp_path / "reports", with_password)

    assert "holds a password" in line and "Sekr1t-pw" not in line
    assert _tables(pg_url) == []
    line = _refused(cli, tmp_path / "reports", "mysql://ops:Sekr1t-pw@db/j")
    assert "the copy goes to a PostgreSQL journal" in line and "Sekr1t-pw" not in line


def test_a_copy_killed_mid_way_leaves_the_target_empty_and_a_second_succeeds(tmp_path, pg_url):
    reports = tmp_path / "reports"
    build_fleet(reports).journal.close()
    Journal(pg_url).close()  # an empty schema, which the test can hold a lock in
    import psycopg

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "cpuu_fleet", "journal-copy", "--to", pg_url]
    last = metadata().sorted_tables[-1].name  # the copy's last table, locked against writes:
    with psycopg.connect(pg_url) as holder:  # the copy reads it, then waits to write it
        holder.execute(f"LOCK TABLE {last} IN SHARE MODE")
        proc = subprocess.Popen(
            [*argv, "--reports", str(reports)], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            while proc.poll() is None and not _waiting_on_a_lock(pg_url):
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert "journal-copy: attempts:" in _stderr_so_far(proc)
            proc.kill()  # SIGKILL, in the middle of the copy's transaction
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    while _pg(pg_url, "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'cpuu-fleet'"
              " AND datname = current_database()") != [(0,)]:  # fmt: skip
        time.sleep(0.05)  # the server notices the dead client and rolls its transaction back
    assert _pg(pg_url, "SELECT COUNT(*) FROM runs") == [(0,)]
    assert _pg(pg_url, "SELECT COUNT(*) FROM attempts") == [(0,)]

    again = subprocess.run(
        [*argv, "--reports", str(reports)], env=env, capture_output=True, text=True, timeout=120
    )

    assert again.returncode == 0, again.stderr
    assert _pg(pg_url, "SELECT COUNT(*) FROM runs") == [(2,)]


def _waiting_on_a_lock(url: str) -> bool:
    rows = _pg(
        url,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'cpuu-fleet'"
        " AND wait_event_type = 'Lock' AND datname = current_database()",
    )
    return rows[0][0] > 0


def _stderr_so_far(proc: subprocess.Popen[str]) -> str:
    """What the copy said before it blocked (its progress lines, one per table)."""
    import select

    assert proc.stderr is not None
    text = ""
    while select.select([proc.stderr], [], [], 0.5)[0]:
        chunk = os.read(proc.stderr.fileno(), 65536).decode()
        if not chunk:
            break
        text += chunk
    return text


def test_a_target_with_other_rows_but_no_runs_is_refused_and_untouched(cli, tmp_path, pg_url):
    build_fleet(tmp_path / "reports").journal.close()
    with Journal(pg_url) as shared:  # a relay stored a bundle there before any run
        shared.put_blob("bundle", b"PK\x03\x04 a bundle")
    before = _snapshot(pg_url)

    line = _refused(cli, tmp_path / "reports", pg_url)

    assert "its site_blobs table holds rows" in line
    assert _snapshot(pg_url) == before
