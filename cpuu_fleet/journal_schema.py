"""The journal's one schema, for SQLite and PostgreSQL alike, and the migrations between versions.

Why SQLAlchemy Core for the schema only: its ``MetaData`` is one definition that renders the right
DDL for each database (``AUTOINCREMENT`` on SQLite, identities on PostgreSQL, the quoting of
``user``, which PostgreSQL reserves). The journal's statements themselves stay plain SQL on the
driver's connection (``sqlite3``, psycopg 3): a visit makes some 27 journal writes, and SQL that
both databases read the same way costs nothing on top of the driver, where compiling Core
statements would cost some 50-100 µs each; the hot path then imports no SQLAlchemy at all (only
creating or upgrading a journal does: 0.23 s and some 18 MiB once). Measured with
``bench/wave.py`` (docs/journal.md): controller CPU per host unchanged (0.112-0.115 s before and
after on SQLite, 100 lab hosts), journal statements per host 29.9 before, 25.0 after.

Why not Alembic: a journal is opened by the tool itself, embedded (SQLite) or shared (PostgreSQL),
never by an operator running ``alembic upgrade``; its migrations are a short list of functions
keyed by ``SCHEMA_VERSION`` in the ``meta`` table, each a statement or two. Alembic's script
folder, ``env.py`` and revision graph would add machinery and a dependency for that list. The
dialect differences a migration meets (``ALTER TABLE`` on SQLite) are small and said in place.

Upgrading is safe when two controllers of a new version start at once on one PostgreSQL
database: :func:`upgrade` runs in one transaction behind an advisory lock
(``pg_advisory_xact_lock``), and reads the version again once it holds it; on SQLite the
transaction is ``BEGIN IMMEDIATE`` (the database's write lock).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 3
"""1: the first journal (no fencing token). 2: ``lease_hosts.token`` (the fencing token checked
by every step's write-ahead row), ``hosts.seq`` (the insertion order PostgreSQL has no rowid for),
``meta.lease_token`` (the counter tokens are drawn from). 3: the relays' tables (``site_blobs``,
``site_visits``, ``site_signals``: docs/sites.md)."""

SITE_TABLES = ("site_blobs", "site_visits", "site_signals")
"""The tables version 3 added, for host visits on relays (cpuu_fleet/sites/)."""

UPGRADE_LOCK = 0x43505555  # "CPUU": the advisory lock key of an upgrade on PostgreSQL


def metadata() -> Any:
    """The schema as SQLAlchemy ``MetaData`` (imported here, off the hot path)."""
    from sqlalchemy import (
        BigInteger,
        Column,
        Float,
        Identity,
        Index,
        Integer,
        LargeBinary,
        MetaData,
        Table,
        Text,
    )

    meta = MetaData()

    def serial() -> Column:
        """An id in insertion order: SQLite's AUTOINCREMENT rowid, PostgreSQL's identity."""
        return Column("id", Integer().with_variant(BigInteger(), "postgresql"), Identity(),
                      primary_key=True)  # fmt: skip

    Table(
        "meta", meta, Column("key", Text, primary_key=True), Column("value", Text, nullable=False)
    )
    Table(
        "runs",
        meta,
        Column("run_id", Text, primary_key=True),
        Column("kind", Text, nullable=False),  # play | retry | resume | step (ad-hoc single step)
        Column("parent_run", Text),  # the run a retry/resume continues
        Column("status", Text, nullable=False),  # running | completed | stopped | interrupted
        Column("stop_reason", Text),  # why later batches were not started
        Column("started_at", Text, nullable=False),
        Column("ended_at", Text),
        Column("operator", Text),
        Column("playbook", Text),
        Column("inventory", Text),
        Column("limit_pattern", Text),
        Column("mode", Text),
        Column("payload_sha256", Text),
        Column("tool_version", Text),
        Column("check_mode", Integer, nullable=False, server_default="0"),
        Column("options_json", Text),
    )
    Table(
        "hosts",
        meta,
        Column("run_id", Text, primary_key=True),  # REFERENCES runs (SQLite never enforced it)
        Column("host", Text, primary_key=True),
        Column("play", Text),
        Column("wave", Text),  # the inventory wave group (or the play's pattern)
        Column("batch", Integer),  # serial batch number within the play, from 1
        Column("address", Text),
        Column("groups_json", Text),
        Column("state", Text, nullable=False),
        Column("user", Text),  # the interactive user CPUU ran for
        Column("exit_code", BigInteger),  # CPUU's bit mask, kept whole (values above 255 are real)
        Column("exit_flags", Text),  # decoded, e.g. SUCCESS|SWITCH_ERR
        Column("killed", Integer, nullable=False, server_default="0"),  # stopped on deadline
        Column("error_class", Text),
        Column("error_message", Text),
        Column("started_at", Text),
        Column("ended_at", Text),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("result_dir", Text),  # where this host's collected files are, relative to reports/
        Column("task_name", Text),  # the scheduled task the run step registered (for resume)
        Column(
            "seq", BigInteger, Identity(), nullable=True
        ),  # PostgreSQL's insertion order (SQLite: rowid)
    )
    Table(
        "attempts",
        meta,
        serial(),
        Column("run_id", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("step", Text, nullable=False),  # connect | preflight | push | run | collect ...
        Column("attempt", Integer, nullable=False),
        Column("status", Text, nullable=False),  # running | ok | changed | skipped | failed
        Column("error_class", Text),
        Column("error_message", Text),
        Column("started_at", Text, nullable=False),
        Column("ended_at", Text),
        Column("duration_s", Float),
        Column("details_json", Text),
        Index("attempts_by_host", "run_id", "host"),
        sqlite_autoincrement=True,
    )
    Table(
        "profiles",
        meta,
        serial(),
        Column("run_id", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("user", Text),
        Column("profile", Text, nullable=False),
        Column("current_code", BigInteger, nullable=False),
        Column("previous_code", BigInteger),
        Column("result_file", Text),  # local path of the collected CSV, relative to reports/
        Column("line", Integer),
        Index("profiles_by_host", "run_id", "host"),
        sqlite_autoincrement=True,
    )
    Table(
        "files",
        meta,
        serial(),
        Column("run_id", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("kind", Text, nullable=False),  # result | log | ini | other
        Column("remote_path", Text, nullable=False),
        Column("local_path", Text, nullable=False),  # relative to reports/
        Column("sha256", Text, nullable=False),  # of the bytes as the host has them
        Column("size", BigInteger, nullable=False),  # bytes received from the host
        Column("collected_at", Text, nullable=False),
        Index("files_by_host", "host", "sha256"),
        sqlite_autoincrement=True,
    )
    Table(
        "audit_rows",  # an audit step's rows (cpuu_fleet.audit.AuditRow)
        meta,
        serial(),
        Column("run_id", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("attempt_id", BigInteger, nullable=False),  # the audit step's attempt
        Column("row_json", Text, nullable=False),
        Index("audit_rows_by_host", "run_id", "host"),
        sqlite_autoincrement=True,
    )
    Table(
        "leases",  # one live controller per run (see engine/lease.py)
        meta,
        Column("run_id", Text, primary_key=True),
        Column("owner_json", Text, nullable=False),  # machine, pid, process start, operator
        Column("acquired_at", Text, nullable=False),
        Column("heartbeat_at", Text, nullable=False),
    )
    Table(
        "lease_hosts",  # ... and per host: the key makes a host held once
        meta,
        Column("host", Text, primary_key=True),
        Column("run_id", Text, nullable=False),
        Column("token", BigInteger, nullable=False, server_default="0"),  # the fencing token
    )
    # Relays (cpuu_fleet/sites/): content-addressed blobs (the inventory-and-templates bundle,
    # the payload, collected files) and the visits dispatched to relays, so relays on other
    # machines reach them through the shared journal.
    Table(
        "site_blobs",  # stored once per content: digest = sha256 of data
        meta,
        Column("digest", Text, primary_key=True),
        Column("kind", Text, nullable=False),  # bundle | payload | file
        Column("size", BigInteger, nullable=False),
        Column("data", LargeBinary, nullable=False),  # SQLite BLOB, PostgreSQL BYTEA
        Column("stored_at", Text, nullable=False),
    )
    Table(
        "site_visits",  # one dispatched host visit (one broker message)
        meta,
        Column("visit_id", Text, primary_key=True),
        Column("run_id", Text, nullable=False),
        Column("host", Text, nullable=False),
        Column("attempt", Integer, nullable=False),
        Column("site", Text, nullable=False),
        Column("deliveries", Integer, nullable=False, server_default="0"),
        Column("relay", Text),  # the relay of the latest delivery
        Column("outcome_json", Text),  # the visit's HostOutcome, once it ended
        Column("dispatched_at", Text, nullable=False),
        Column("ended_at", Text),
        Index("site_visits_by_run", "run_id"),
    )
    Table(
        "site_signals",  # Ctrl-C on the controller, for the relays
        meta,
        Column("run_id", Text, primary_key=True),
        Column("level", Integer, nullable=False),  # 1: drain (queued visits end not_run), 2: abort
    )
    return meta


def create_statements(dialect: str) -> list[str]:
    """``CREATE TABLE/INDEX IF NOT EXISTS`` for every table of :func:`metadata`, as ``dialect``
    (``sqlite`` or ``postgresql``) writes them."""
    meta = metadata()
    compiler = _compiler(dialect)
    # hosts.seq: an identity is NOT NULL on PostgreSQL; SQLite has no identity, fills nothing in
    # (rowid is its order) and so must let it be NULL. The one column that differs, said here.
    meta.tables["hosts"].c.seq.nullable = dialect != "postgresql"
    statements = _table_statements(meta.sorted_tables, compiler)
    if dialect == "postgresql":
        statements.extend(STEP_NOTIFY)
    return statements


def _compiler(dialect: str) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    return {"sqlite": sqlite.dialect(), "postgresql": postgresql.dialect()}[dialect]


def _table_statements(tables: Any, compiler: Any) -> list[str]:
    """``CREATE TABLE`` and then ``CREATE INDEX`` (both ``IF NOT EXISTS``) of each table."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    statements = []
    for table in tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=compiler)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=compiler))
            for index in sorted(table.indexes, key=lambda i: i.name or "")
        )
    return statements


STEP_NOTIFY = (
    "CREATE OR REPLACE FUNCTION cpuu_fleet_step_notify() RETURNS trigger AS $$"
    " BEGIN PERFORM pg_notify('cpuu_fleet_steps', NEW.id::text); RETURN NEW; END"
    " $$ LANGUAGE plpgsql",
    "CREATE OR REPLACE TRIGGER attempts_notify AFTER INSERT OR UPDATE ON attempts"
    " FOR EACH ROW EXECUTE FUNCTION cpuu_fleet_step_notify()",
)
"""PostgreSQL only: a notification per step row written (its id), sent when the row commits, so
a ``play`` or an operator's ``follow`` sees relays' steps at once without polling and without a
round trip more for the writer. SQLite has no such thing: its readers poll by id."""


Execute = Callable[[str], Any]
"""Runs one statement on the journal's connection, inside the upgrade's transaction."""


def _to_2(execute: Execute, dialect: str) -> None:
    """The fencing token and PostgreSQL's insertion order. SQLite's ``ALTER TABLE ADD COLUMN``
    takes no identity: ``hosts.seq`` stays NULL there, where ``rowid`` is the order anyway."""
    execute("ALTER TABLE lease_hosts ADD COLUMN token BIGINT NOT NULL DEFAULT 0")
    if dialect == "postgresql":
        execute("ALTER TABLE hosts ADD COLUMN seq BIGINT GENERATED BY DEFAULT AS IDENTITY")
        for statement in STEP_NOTIFY:
            execute(statement)
    else:
        execute("ALTER TABLE hosts ADD COLUMN seq BIGINT")


def _to_3(execute: Execute, dialect: str) -> None:
    """The relays' tables, created as a new journal has them."""
    tables = metadata().tables
    for statement in _table_statements([tables[name] for name in SITE_TABLES], _compiler(dialect)):
        execute(statement)


MIGRATIONS: dict[int, Callable[[Execute, str], None]] = {2: _to_2, 3: _to_3}
"""Version N's migration takes a journal of version N-1 to N, in place."""


def upgrade(execute: Callable[[str, tuple[Any, ...]], list[Any]], dialect: str) -> int:
    """Bring the journal behind ``execute`` to :data:`SCHEMA_VERSION`; returns the version found.

    Run inside one transaction that the caller opened and commits (SQLite: ``BEGIN IMMEDIATE``;
    PostgreSQL: this takes the advisory lock first, so a second controller starting at the same
    moment waits here and then finds the work done). A new journal gets the whole schema at
    once; an older one each missing migration in order; a newer one is refused (an older
    controller must not write rows it does not understand).
    """
    if dialect == "postgresql":
        execute(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK})", ())
    found = _version(execute, dialect)
    if found == SCHEMA_VERSION:
        return found
    if found is not None and found > SCHEMA_VERSION:
        raise RuntimeError(
            f"the journal is of schema version {found}, newer than this cpuu-fleet knows"
            f" ({SCHEMA_VERSION}): use the newer cpuu-fleet"
        )
    if found is None:
        for statement in create_statements(dialect):
            execute(statement, ())
        execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
    else:
        for version in range(found + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[version](lambda sql: execute(sql, ()), dialect)
        execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    execute("INSERT INTO meta (key, value) VALUES ('lease_token', '0') ON CONFLICT DO NOTHING", ())
    return found or 0


def _version(execute: Callable[[str, tuple[Any, ...]], list[Any]], dialect: str) -> int | None:
    """The journal's schema version, or None for an empty database (no ``meta`` table yet)."""
    tables = execute(version_probe(dialect), ())
    if not tables:
        return None
    rows = execute("SELECT value FROM meta WHERE key = 'schema_version'", ())
    return int(rows[0]["value"]) if rows else 1


def version_probe(dialect: str) -> str:
    """The statement that finds the ``meta`` table: does this database hold a journal at all?"""
    if dialect == "postgresql":
        return (
            "SELECT 1 FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name = 'meta'"
        )
    return "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
