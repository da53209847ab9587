"""The PostgreSQL journal's connection when the server ends its session (a restart, a fail-over,
an administrator): what it opens again and sends again, and what it never sends twice.

A real private cluster (``pg_url``); the session is ended with ``pg_terminate_backend`` from a
second connection, as a restart ends every session.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from cpuu_fleet.journal_pg import PgConnection


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True)


def _end_when_running(url: str, pid: int, marker: str) -> threading.Thread:
    """End backend ``pid`` once it is running the statement that holds ``marker``."""

    def end() -> None:
        with _admin(url) as admin:
            while not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
                " AND query LIKE %s",
                (pid, f"%{marker}%"),
            ).fetchone():
                pass
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def db(pg_url: str) -> Any:
    conn = PgConnection(pg_url)
    conn.execute("CREATE TABLE t (n INTEGER)")
    yield conn
    conn.close()


def test_a_session_ended_while_idle_is_opened_again_before_a_write(db, pg_url):
    with _admin(pg_url) as admin:  # waits until the session has ended (as a restart does)
        admin.execute("SELECT pg_terminate_backend(%s, 30000)", (db.raw.info.backend_pid,))
    db.execute("INSERT INTO t (n) VALUES (?)", (1,))
    assert db.execute("SELECT n FROM t").fetchall() == [{"n": 1}]


def test_a_read_cut_off_in_flight_is_read_again(db, pg_url):
    pid = db.raw.info.backend_pid
    ender = _end_when_running(pg_url, pid, "read-marker")
    row = db.execute(  # it sleeps in the first session only: read again, it returns at once
        "SELECT 7 AS n, pg_sleep(CASE WHEN pg_backend_pid() = ? THEN 30 ELSE 0 END) IS NULL AS s,"
        " 'read-marker' AS m",
        (pid,),
    ).fetchone()
    ender.join()
    assert row["n"] == 7


def test_a_write_cut_off_in_flight_is_never_sent_again(db, pg_url):
    import psycopg

    ender = _end_when_running(pg_url, db.raw.info.backend_pid, "write-marker")
    with pytest.raises(psycopg.OperationalError):
        db.execute("INSERT INTO t (n) SELECT 1 FROM pg_sleep(30) WHERE 'write-marker' <> ''")
    ender.join()
    # The write went once (and was rolled back by the server): never sent again.
    assert db.execute("SELECT COUNT(*) AS c FROM t").fetchone()["c"] == 0


def test_a_visits_first_write_and_read_go_on_a_new_session_after_an_idle_drop(db, pg_url):
    """A visit's first write-ahead row travels with its read of the host's history in one
    pipeline (``pipeline_reads``): a session the server ended while idle is opened again before
    that pipeline is sent, as before any other statement."""
    with _admin(pg_url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 30000)", (db.raw.info.backend_pid,))
    (rows,) = db.pipeline_reads([("INSERT INTO t (n) VALUES (?)", (7,))], [("SELECT n FROM t", ())])
    assert rows == [{"n": 7}]
