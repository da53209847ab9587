"""The journal on PostgreSQL: the URL, the password, and a connection that speaks the journal's SQL.

Why PostgreSQL beside SQLite: several controllers (operators, relays) must share one journal, and
SQLite's WAL cannot be shared over a network. psycopg 3 is the driver (pipeline mode sends a
visit's deferred writes in one round trip; LISTEN/NOTIFY carries progress); it comes with the
``sites`` extra and is imported only when a ``postgresql://`` journal is opened.

The URL never carries the password (it is refused there: a URL is printed, logged and kept in
shell histories). The password comes, as libpq looks for it, from ``PGPASSWORD`` or the
``~/.pgpass`` file (``PGPASSFILE``), else from the keyring (service :data:`KEYRING_SERVICE`, user
``USER@HOST``). TLS and other libpq settings pass through as the URL's query
(``?sslmode=verify-full&sslrootcert=...``). What is shown of a URL goes through
:func:`~cpuu_fleet.redact.mask_url_passwords` anyway.

The journal's statements are written once, in SQL both databases read alike; this connection
turns SQLite's ``?`` parameters into psycopg's ``%s`` and ``BEGIN IMMEDIATE`` into ``BEGIN``,
and counts its round trips (a visit's cost on a network database).
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

from cpuu_fleet.errors import InputError
from cpuu_fleet.redact import REDACTOR, mask_url_passwords

SCHEMES = ("postgresql://", "postgres://")
KEYRING_SERVICE = "cpuu-fleet-journal"
NOTIFY_CHANNEL = "cpuu_fleet_steps"
"""The channel each step row is announced on (payload: the attempt's id)."""
#: How long a statement waits for the database to come back (a restart, a fail-over) before
#: it fails; tried again every RECONNECT_PAUSE_S.
RECONNECT_S = 120.0
RECONNECT_PAUSE_S = 0.5


def is_url(location: object) -> bool:
    """Does the journal's location name a PostgreSQL database rather than a SQLite file?"""
    return isinstance(location, str) and location.startswith(SCHEMES)


def shown(url: str) -> str:
    """The URL as it may be printed: never a password (there is none, but be sure)."""
    return mask_url_passwords(url)


def check_url(url: str) -> None:
    """Refuse a URL with a password in it, naming where the password goes instead."""
    parts = urlsplit(url)
    if parts.password is not None:
        REDACTOR.add(parts.password)
        raise InputError(
            "the journal URL holds a password: give it in PGPASSWORD, ~/.pgpass or the keyring"
            f" (service {KEYRING_SERVICE}, user USER@HOST), never in the URL",
            where=shown(url),
        )
    if not parts.hostname and "host=" not in parts.query:
        raise InputError("the journal URL names no host", where=shown(url))


def _keyring_password(url: str) -> str | None:
    """The keyring's password for ``USER@HOST``, when libpq has none of its own to use."""
    if os.environ.get("PGPASSWORD"):
        return None
    parts = urlsplit(url)
    try:
        import keyring

        secret = keyring.get_password(KEYRING_SERVICE, f"{parts.username}@{parts.hostname}")
    except Exception:  # no keyring backend on a server: libpq's own sources still apply
        return None
    if secret:
        REDACTOR.add(secret)
    return secret or None


def translate(sql: str, params: Sequence[Any]) -> str:
    """The journal's SQL (SQLite's spelling) as psycopg takes it (``%`` is special only where
    there are parameters)."""
    if sql.startswith("BEGIN IMMEDIATE"):
        return "BEGIN"
    return sql.replace("%", "%%").replace("?", "%s") if params else sql


class Listener:
    """A connection of its own that LISTENs on :data:`NOTIFY_CHANNEL` (a listener must not share
    the writers' connection). A dropped connection is opened again at the next wait; whatever
    was notified meanwhile is found by the reader's catch-up by id, not by the notifications."""

    def __init__(self, url: str):
        self.url = url
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
        password = _keyring_password(self.url)
        if password:
            kwargs["password"] = password
        conn = psycopg.connect(self.url, **kwargs)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a step row; True if one was notified. Never
        raises for a lost connection: it says False and the next call connects again."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            return any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error:
            self.close()
            return False

    def backend_pid(self) -> int | None:
        """The server process serving this listener (tests cut it off to prove the catch-up)."""
        return None if self._conn is None else int(self._conn.info.backend_pid)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class PgConnection:
    """A psycopg connection (autocommit, dict rows) with the sqlite3 methods the journal calls.

    ``round_trips`` counts what crosses the network: one a statement, one a pipeline of
    deferred writes, one an ``executemany`` (psycopg pipelines it).
    """

    dialect = "postgresql"

    def __init__(self, url: str, *, connect_timeout: int = 10):
        check_url(url)
        try:
            import psycopg
            from psycopg.rows import dict_row
        except ImportError:
            raise InputError(
                "a PostgreSQL journal needs psycopg: pip install 'cpuu-fleet[sites]'",
                where=shown(url),
            ) from None
        self.url = url
        self.round_trips = 0
        self._psycopg = psycopg
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        password = _keyring_password(url)
        if password:
            kwargs["password"] = password
        if "connect_timeout" not in url:
            kwargs["connect_timeout"] = connect_timeout
        kwargs["application_name"] = "cpuu-fleet"
        self._kwargs = kwargs
        self._conn = psycopg.connect(url, **kwargs)
        self.round_trips += 1
        self._lock = threading.RLock()
        self._in_transaction = False

    # A restarted database ends every session. What is safe to do again, and how this knows:
    # - a connection the server dropped while it was idle (its FATAL message and end of stream
    #   are waiting on the socket, read before sending: no round trip) is opened again before
    #   the statement is sent; nothing of the statement reached the old one;
    # - a read (SELECT) that failed with the connection is read again on a new one;
    # - a write that failed with the connection may have committed (PostgreSQL may end a
    #   session between a commit and its reply): it is never sent again; the error goes up
    #   (a guard write's caller then does not act), as does a loss inside a transaction.

    def _usable(self) -> Any:
        """The connection, opened again first when the server dropped it while idle."""
        if not (self._conn.closed or self._conn.broken or self._dropped_while_idle()):
            return self._conn
        if self._in_transaction:
            raise self._psycopg.OperationalError(
                "the journal's connection was lost in a transaction"
            )
        return self._reconnect()

    def _dropped_while_idle(self) -> bool:
        """Did the server end this idle session (its goodbye waits on the socket)? Anything
        else waiting on a writer's idle connection (a notice) leaves it usable."""
        pgconn = self._conn.pgconn
        if pgconn.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            return False
        for _ in range(3):  # the FATAL message, then the end of the stream
            readable, _, _ = select.select([self._conn.fileno()], [], [], 0)
            if not readable:
                return False
            try:
                pgconn.consume_input()
            except self._psycopg.OperationalError:
                return True
            if pgconn.status == self._psycopg.pq.ConnStatus.BAD:
                return True
        return False

    def _reconnect(self) -> Any:
        """A new session, waiting up to :data:`RECONNECT_S` for the database to come back."""
        with contextlib.suppress(Exception):
            self._conn.close()
        deadline = time.monotonic() + RECONNECT_S
        while True:
            try:
                self._conn = self._psycopg.connect(self.url, **self._kwargs)
                self.round_trips += 1
                return self._conn
            except self._psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(RECONNECT_PAUSE_S)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        query, values = translate(sql, params), tuple(params) or None
        with self._lock:
            self.round_trips += 1
            if query == "ROLLBACK" and (self._conn.closed or self._conn.broken):
                self._in_transaction = False  # the server rolled back when the session ended
                return None
            conn = self._usable()
            try:
                cursor = conn.execute(query, values)
            except self._psycopg.OperationalError:
                if self._in_transaction or not conn.broken or not _is_read(query):
                    raise
                cursor = self._reconnect().execute(query, values)
            if query in ("BEGIN", "COMMIT", "ROLLBACK"):
                self._in_transaction = query == "BEGIN"
            return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if not rows:
            return
        with self._lock:
            self.round_trips += 1
            with self._usable().cursor() as cursor:
                cursor.executemany(translate(sql, rows[0]), rows)

    def pipeline(self, statements: list[tuple[str, tuple[Any, ...]]]) -> Any:
        """Send ``statements`` in one round trip, in one transaction; the last one's cursor."""
        with self._lock:
            self.round_trips += 1
            conn = self._usable()
            with conn.pipeline(), conn.transaction():
                cursor = None
                for sql, params in statements:
                    cursor = conn.execute(translate(sql, params), params or None)
            return cursor

    def pipeline_reads(
        self, writes: list[tuple[str, tuple[Any, ...]]], reads: list[tuple[str, tuple[Any, ...]]]
    ) -> list[list[Any]]:
        """Send ``writes`` then ``reads`` in one round trip and one transaction; each read's
        rows (a visit's one read of its host's history, with the writes it held)."""
        with self._lock:
            self.round_trips += 1
            conn = self._usable()  # a session the server ended while idle: a new one first
            with conn.pipeline(), conn.transaction():
                for sql, params in writes:
                    conn.execute(translate(sql, params), params or None)
                cursors = [
                    conn.execute(translate(sql, params), params or None) for sql, params in reads
                ]
            return [cursor.fetchall() for cursor in cursors]

    def close(self) -> None:
        self._conn.close()

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (self._psycopg.Error,)

    @property
    def raw(self) -> Any:
        """The psycopg connection itself (the report's bulk reads)."""
        with self._lock:
            return self._usable()


def _is_read(query: str) -> bool:
    """A statement that changes nothing, so it may be sent again."""
    return query.lstrip()[:6].upper() == "SELECT"
