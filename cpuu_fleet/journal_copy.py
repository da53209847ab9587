"""Copy a SQLite journal into an empty PostgreSQL journal: the whole history, ids kept.

Why: a migration team runs its first waves from one controller on SQLite, then moves to the
shared journal when more sites and operators join. ``--resume``, ``--retry-failed``, ``status``,
``runs``, ``report`` and the never-twice rules (a host's unfinished run step, the Cleanup marker
history, "same CPUU run") read the journal, so the earlier runs must be in the shared one.

What it promises:

* every table of :func:`~cpuu_fleet.journal_schema.metadata`, every row, every value as SQLite
  stored it (text, blobs, JSON text and timestamps byte for byte; ids kept), with PostgreSQL's
  insertion order (``hosts.seq``) in the source's ``rowid`` order and each identity set past
  the copied maximum (or SQLite's own ``AUTOINCREMENT`` counter, if higher), so later inserts
  never collide;
* all or nothing: the schema, the rows and the identities go in one PostgreSQL transaction (DDL
  is transactional there); a copy killed at any moment leaves the target as it was (no tables,
  or an empty schema) and may simply be run again;
* refused, touching nothing: a target that holds any history (two histories are never merged),
  a source whose run may still have a live controller (its later writes would be lost), a
  journal newer than this code, a password in the URL.

The source is held under SQLite's write lock (``BEGIN IMMEDIATE``) for the whole copy, so no
controller can write a row the copy would miss; one starting meanwhile waits (its busy timeout)
or fails with one line, and nothing is lost. Rows go by psycopg 3's ``COPY ... FROM STDIN``
(a 10,000-host wave's journal in seconds: docs/journal.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuu_fleet import journal_pg
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal
from cpuu_fleet.journal_schema import metadata, upgrade

FETCH_ROWS = 5_000
"""Rows read from SQLite at a time (memory stays flat on a big journal)..."""
FETCH_BLOB_ROWS = 4
"""... and of a table with blobs (``site_blobs``: payload archives, collected files of up to
tens of MiB each)."""
PROGRESS_ROWS = 50_000
"""A progress line every this many rows of one table, and at each table's end."""

Progress = Callable[[str, int, bool], None]
"""Told (table, rows copied so far, done) as the copy goes."""
LiveLease = Callable[[dict[str, Any]], str | None]
"""A lease row of the source → a description of its controller if that may still be alive
(``engine/lease.py`` decides: this module sits below the engine), else None."""


@dataclass
class CopySummary:
    """What one copy moved: rows per table, in the order copied."""

    rows: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        """``2 runs, 6 hosts, 40 step attempts`` and the rest, for the final line."""
        other = sum(n for t, n in self.rows.items() if t not in ("runs", "hosts", "attempts"))
        return (
            f"{self.rows.get('runs', 0)} runs, {self.rows.get('hosts', 0)} hosts,"
            f" {self.rows.get('attempts', 0)} step attempts and {other} other rows"
        )


def copy_journal(
    source: Path, url: str, *, live_lease: LiveLease, progress: Progress | None = None
) -> CopySummary:
    """Copy the SQLite journal at ``source`` into the PostgreSQL journal at ``url``, or refuse
    (:class:`~cpuu_fleet.errors.InputError`) with the target untouched."""
    if not journal_pg.is_url(url):
        raise InputError(  # shown masked: a mistyped URL may still hold a password
            "the copy goes to a PostgreSQL journal: postgresql://USER@HOST/DB, not"
            f" {journal_pg.shown(url)}"
        )
    journal_pg.check_url(url)  # before anything is opened: the password is never sent or shown
    if not source.is_file():
        raise InputError(f"no journal to copy: {source} does not exist")
    with Journal(source) as opened:  # refuses a newer journal; brings an older one to this code
        db = opened.connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # still locked after the busy timeout
            raise InputError(
                f"cannot hold the journal still for the copy ({exc}): a controller is writing"
                " it; let it end first; nothing was copied",
                where=source,
            ) from None
        try:
            _refuse_live_runs(db, live_lease, source)
            return _copy_into(db, url, progress or _quiet)
        finally:
            db.execute("ROLLBACK")  # the source was only read


def _quiet(table: str, rows: int, done: bool) -> None:
    """No progress wanted."""


def _refuse_live_runs(db: sqlite3.Connection, live_lease: LiveLease, source: Path) -> None:
    """A run whose controller may still be writing the source is never copied half-way."""
    for row in db.execute("SELECT * FROM leases ORDER BY acquired_at").fetchall():
        who = live_lease(dict(row))
        if who is not None:
            raise InputError(
                f"{who} may still be running on this journal: let it end (or stop it with"
                " Ctrl-C) before copying, or its later writes would be lost; nothing was copied",
                where=source,
            )


def _copy_into(db: sqlite3.Connection, url: str, progress: Progress) -> CopySummary:
    """The copy proper, in one transaction on the target (committed only when all is in)."""
    where = journal_pg.shown(url)
    try:
        target = journal_pg.PgConnection(url)
    except InputError:
        raise
    except Exception as exc:  # psycopg.OperationalError: refused, no such database, auth
        raise InputError(
            f"cannot open the target journal ({' '.join(str(exc).split())})", where=where
        ) from None
    try:
        conn = target.raw
        with conn.transaction():
            _prepare_target(conn, where)
            summary = CopySummary()
            for table in metadata().sorted_tables:
                if table.name == "meta":
                    continue
                summary.rows[table.name] = _copy_table(db, conn, table, progress)
            _merge_meta(db, conn)
            _move_identities(db, conn)
        return summary
    finally:
        target.close()


def _prepare_target(conn: Any, where: str) -> None:
    """The schema (created or upgraded inside the transaction), then the check that it holds no
    history at all: a copy never merges two."""

    def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
        cursor = conn.execute(journal_pg.translate(sql, params), params or None)
        return cursor.fetchall() if cursor.description else []

    try:
        upgrade(execute, "postgresql")
    except RuntimeError as exc:  # a journal newer than this code
        raise InputError(f"cannot use the target journal ({exc})", where=where) from None
    runs = conn.execute("SELECT COUNT(*) AS n FROM runs").fetchone()["n"]
    if runs:
        raise InputError(
            f"the target journal already holds {runs} runs: a copy never merges two histories;"
            " copy into a new, empty database; nothing was copied",
            where=where,
        )
    for table in metadata().sorted_tables:
        if table.name in ("meta", "runs"):
            continue
        if conn.execute(f"SELECT 1 FROM {table.name} LIMIT 1").fetchone() is not None:
            raise InputError(
                f"the target journal is not empty (its {table.name} table holds rows): copy"
                " into a new, empty database; nothing was copied",
                where=where,
            )


def _columns(table: Any) -> list[str]:
    return [column.name for column in table.columns]


def _source_rows(db: sqlite3.Connection, table: Any) -> Iterator[tuple[Any, ...]]:
    """The table's rows in the order SQLite inserted them; ``hosts.seq`` (NULL on SQLite,
    where ``rowid`` is the order) becomes that order's number, as PostgreSQL keeps it."""
    names = _columns(table)
    listed = ", ".join(f'"{name}"' for name in names)
    cursor = db.execute(f"SELECT {listed} FROM {table.name} ORDER BY rowid")
    seq = names.index("seq") if table.name == "hosts" else None
    blobs = any(column.type.python_type is bytes for column in table.columns)
    number = 0
    while chunk := cursor.fetchmany(FETCH_BLOB_ROWS if blobs else FETCH_ROWS):
        for row in chunk:
            number += 1
            values = tuple(row)
            if seq is not None:
                values = (*values[:seq], number, *values[seq + 1 :])
            yield values


def _copy_table(db: sqlite3.Connection, conn: Any, table: Any, progress: Progress) -> int:
    """One table by ``COPY FROM STDIN``; returns its rows."""
    listed = ", ".join(f'"{name}"' for name in _columns(table))
    count = 0
    with conn.cursor() as cursor, cursor.copy(f"COPY {table.name} ({listed}) FROM STDIN") as copy:
        for values in _source_rows(db, table):
            copy.write_row(values)
            count += 1
            if count % PROGRESS_ROWS == 0:
                progress(table.name, count, False)
    progress(table.name, count, True)
    return count


def _merge_meta(db: sqlite3.Connection, conn: Any) -> None:
    """The source's ``meta`` over the new schema's: the fencing-token counter never goes back
    (the copied ``lease_hosts`` tokens came from the source's counter)."""
    for row in db.execute("SELECT key, value FROM meta ORDER BY rowid").fetchall():
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET"
            " value = CASE WHEN meta.key = 'lease_token'"
            " THEN GREATEST(CAST(meta.value AS BIGINT), CAST(excluded.value AS BIGINT))::text"
            " ELSE excluded.value END",
            (row["key"], row["value"]),
        )


def _move_identities(db: sqlite3.Connection, conn: Any) -> None:
    """Each identity (the serial ids, ``hosts.seq``) past the copied maximum and past SQLite's
    ``AUTOINCREMENT`` counter (ids of deleted rows are never given again there either)."""
    try:
        rows = db.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.OperationalError:  # no AUTOINCREMENT row written yet: no such table
        rows = []
    counters = {row["name"]: int(row["seq"]) for row in rows}
    for table in metadata().sorted_tables:
        for column in table.columns:
            if column.identity is None:
                continue
            top = conn.execute(f"SELECT MAX({column.name}) AS top FROM {table.name}").fetchone()
            following = max(int(top["top"] or 0), counters.get(table.name, 0)) + 1
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s, false)",
                (table.name, column.name, following),
            )
