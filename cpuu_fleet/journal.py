"""The journal: every run, host, step attempt, profile result and collected file, in SQLite
(embedded, the default: ``reports/journal.sqlite3``) or PostgreSQL (shared by several
controllers and relays: a ``postgresql://`` URL, :mod:`cpuu_fleet.journal_pg`).

Why SQLite (WAL): the controller may be killed at any moment (``kill -9``, a laptop lid), and the
operator must still be able to resume without running CPUU twice on a workstation. So every step is
written *before* it starts (status ``running``) and updated when it ends: an attempt left ``running``
is exactly the set of places where we must ask the host what happened. Each write is its own
transaction, so nothing acknowledged is lost.

The report reads only this file and the collected files it indexes. Nothing secret is ever stored:
free text goes through the process :data:`~cpuu_fleet.redact.REDACTOR` on its way in.

One schema for both databases (:mod:`cpuu_fleet.journal_schema`, which also upgrades an older
journal in place when it is opened), and one text per statement: SQL that SQLite and PostgreSQL
read alike (``ON CONFLICT``, ``"user"`` quoted), run on the driver's own connection, no ORM on
the hot path. Where they differ, the code says so (``rowid``, the id of a new row).

On a network database a round trip costs what a visit's WinRM round trip does, so a visit's
writes are split (:meth:`Journal.deferred`): *guard* writes (a step's write-ahead row, the run
step's task name, the end of a run or collect step, the lease's rows) are sent at once and
committed before the controller acts; the others (other steps' ends, host fields, profile, file
and audit rows) wait and go with the next guard write or the visit's end, in one round trip and
one transaction. Nothing a ``--resume`` needs is deferred: it reads the write-ahead rows and the
task name. SQLite, local, writes everything at once as ever. A visit's questions about its
host's history are answered from one read (:meth:`Journal.visit_view`), which on PostgreSQL
goes with the visit's first write-ahead row.

The fencing token: every host a run's lease holds gets a number from one counter, and each
step's write-ahead row is inserted only if the lease row still holds that number, in the same
statement; a controller or relay that lost its lease (expired, taken over) cannot write a step,
so it does not act (:class:`LeaseLost`).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import secrets
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cpuu_fleet import journal_pg
from cpuu_fleet.cpuu import ProfileResult
from cpuu_fleet.errors import ControllerWriteError, InputError, write_fault
from cpuu_fleet.journal_schema import SCHEMA_VERSION, upgrade, version_probe
from cpuu_fleet.redact import REDACTOR, Redactor

# Host states: defined in cpuu_fleet.vocabulary (with their names, colours, flags and follow-ups)
# and re-exported here, where the journal stores them and much code imports them from.
from cpuu_fleet.vocabulary import (  # noqa: F401
    FAILED,
    FINAL_STATES,
    NOT_RUN,
    NOT_SWITCHED,
    PARTIAL,
    PENDING,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    UNREACHABLE,
)

_HOST_FIELDS = {
    "play",
    "wave",
    "batch",
    "address",
    "groups_json",
    "state",
    "user",
    "exit_code",
    "exit_flags",
    "killed",
    "error_class",
    "error_message",
    "started_at",
    "ended_at",
    "attempts",
    "result_dir",
    "task_name",
}
_TEXT_TO_SCRUB = {"error_message", "user"}
_GUARD_STEPS = {"run", "collect"}
"""Steps whose end is written at once even on a network database: the run step's verdict and
the collected results are what a resume must not have to ask for again."""
_LEASE_LOCK = 0x43505556
"""PostgreSQL advisory lock of :meth:`Journal.take_lease` (SQLite: ``BEGIN IMMEDIATE``)."""


class LeaseLost(Exception):
    """A step's write-ahead row was refused: this run's lease on the host is gone (expired and
    taken by another controller or relay). The visit must not act on the host."""

    def __init__(self, run_id: str, host: str):
        super().__init__(
            f"{host}: the lease of run {run_id} on this host was lost (another controller or"
            " relay holds it now); nothing was started"
        )
        self.run_id = run_id
        self.host = host


class _RolledBack(Exception):
    """Leaves a lease transaction rolled back, carrying what the caller returns instead."""

    def __init__(self, value: Any):
        super().__init__()
        self.value = value


def utcnow() -> str:
    """ISO-8601 UTC with milliseconds: sortable as text, readable by pandas."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A run id an operator can type and sort: ``20261121-235959-a1b2``."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass
class _HostView:
    """One host's history as a visit asks it (:meth:`Journal.visit_view`): its step attempts,
    profile rows (the runs of this CPUU run), collected files (every run) and the latest run
    step of an earlier CPUU run. Read once, in one round trip, at the visit's first question;
    the visit's own writes for the host are added to it as they are made."""

    host: str
    run_ids: tuple[str, ...]
    loaded: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    profiles: list[dict[str, Any]] = field(default_factory=list)
    earlier_run_step: dict[str, Any] | None = None


@dataclass(frozen=True)
class HostEntry:
    """A host as a run targets it, before anything happened to it."""

    host: str
    play: str | None = None
    wave: str | None = None
    batch: int | None = None
    address: str | None = None
    groups: tuple[str, ...] = ()


class Journal:
    """One journal (a SQLite file or a PostgreSQL database), safe to share between the runner's
    worker threads.

    One connection guarded by a lock: SQLite serialises writers anyway, and a single connection
    keeps WAL checkpoints and ``kill -9`` semantics simple. Every public write commits at once
    unless it runs inside :meth:`batch` (or, on PostgreSQL, is deferred by :meth:`deferred`).
    ``location`` is a path or a ``postgresql://`` URL (without its password).
    """

    FILENAME = "journal.sqlite3"

    def __init__(
        self,
        location: str | Path,
        *,
        redactor: Redactor = REDACTOR,
        read_only: bool = False,
        reports_dir: str | Path | None = None,
    ):
        self._redactor = redactor
        self._lock = threading.RLock()
        self._depth = 0
        self._local = threading.local()
        self._tokens: dict[tuple[str, str], int] = {}
        """The fencing token this journal holds for (run, host): its step rows check it."""
        self._open: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._views: dict[str, _HostView] = {}
        """Host → the history its visit read once (:meth:`visit_view`), kept current."""
        """Attempt id → (started_at, step) of steps this journal started and has not ended."""
        self.statements = 0
        """Statements sent (SQLite) — the journal writes and reads a visit costs."""
        self.reports_dir = Path(reports_dir) if reports_dir is not None else None
        """The folder of the collected files and run folders (SQLite: the journal's own)."""
        if journal_pg.is_url(location):
            self._open_postgresql(str(location), read_only)
            return
        self.dialect = "sqlite"
        self._order = "rowid"
        self.path: Path | str = Path(location)
        self.reports_dir = self.reports_dir or self.path.parent
        if read_only:  # status, report: a journal on a read-only share or copy must still open
            self._db = open_read_only(self.path)
            self._db.row_factory = sqlite3.Row
            return
        self._open_sqlite(self.path)

    def _open_sqlite(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            _raise_write_fault(exc, path)
            raise InputError(f"cannot open the journal ({_why(exc)})", where=path) from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=10000")
            self._upgrade()
        except (sqlite3.Error, RuntimeError) as exc:
            # --reports pointing at the wrong folder, a file that is not a journal, a read-only
            # disk: bad input, said in one line before anything is touched.
            self._db.close()
            _raise_write_fault(exc, path)
            raise InputError(f"cannot use the journal ({_why(exc)})", where=path) from None

    def _open_postgresql(self, url: str, read_only: bool) -> None:
        self.dialect = "postgresql"
        self._order = "seq"
        self.path = journal_pg.shown(url)
        self.reports_dir = self.reports_dir or Path("reports")
        try:
            self._db = journal_pg.PgConnection(url)
        except InputError:
            raise
        except Exception as exc:  # psycopg.OperationalError: refused, no such database, auth
            raise InputError(
                f"cannot open the journal ({' '.join(str(exc).split())})", where=self.path
            ) from None
        try:
            if read_only:
                self._db.execute("SET default_transaction_read_only = on")
                self._db.execute("SELECT 1 FROM runs LIMIT 1")
            else:
                self._upgrade()
        except (*self._db.errors, RuntimeError) as exc:
            self._db.close()
            raise InputError(
                f"cannot use the journal ({' '.join(str(exc).split())})", where=self.path
            ) from None

    def _upgrade(self) -> None:
        """Create or upgrade the schema in place, in one transaction (journal_schema.upgrade).
        A journal already current costs two small reads and no import of SQLAlchemy."""
        probe = self._db.execute(version_probe(self.dialect)).fetchall()
        if probe:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row["value"]) == SCHEMA_VERSION:
                return

        def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
            cursor = self._db.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

        self._db.execute("BEGIN IMMEDIATE")
        try:
            upgrade(execute, self.dialect)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @classmethod
    def in_reports(cls, reports_dir: str | Path, url: str | None = None) -> Journal:
        """The journal at ``url`` when one is set (``--journal``), else the file in reports/."""
        if url:
            return cls(url, reports_dir=reports_dir)
        return cls(Path(reports_dir) / cls.FILENAME)

    @property
    def round_trips(self) -> int:
        """Journal round trips so far: PostgreSQL's over the network, SQLite's statements."""
        return self._db.round_trips if self.dialect == "postgresql" else self.statements

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------- writing

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes into one transaction (bulk loads, benchmarks)."""
        with self._lock:
            self.flush()
            if self._depth == 0:
                self._db.execute("BEGIN")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold this thread's non-guard writes (one visit's) until the next guard write or the
        end of the block, then send them in one round trip. PostgreSQL only: on SQLite, a local
        file, every write goes at once as before. Reads in the block see the held writes (they
        are sent first)."""
        if self.dialect != "postgresql" or getattr(self._local, "pending", None) is not None:
            yield
            return
        self._local.pending = []
        try:
            yield
        finally:
            self.flush()
            self._local.pending = None

    def flush(self) -> None:
        """Send this thread's held writes now (a well-defined point: a visit's end)."""
        pending = getattr(self._local, "pending", None)
        if pending:
            statements = list(pending)
            pending.clear()
            with self._lock:  # never inside another thread's batch() or lease transaction
                self._db.pipeline(statements)

    def _write(self, sql: str, params: Iterable[Any] = (), *, guard: bool = True) -> Any:
        """One write: at once (with any held writes before it, in one round trip), or held
        when it is no guard and this thread defers."""
        params = tuple(params)
        pending = getattr(self._local, "pending", None)
        if pending is not None:
            if not guard:
                pending.append((sql, params))
                return None
            if pending:
                statements = [*pending, (sql, params)]
                pending.clear()
                with self._lock:
                    return self._db.pipeline(statements)
        with self._lock:
            self.statements += 1
            return self._db.execute(sql, params)

    def _write_many(self, sql: str, rows: list[tuple[Any, ...]], *, guard: bool = False) -> None:
        pending = getattr(self._local, "pending", None)
        if pending is not None and not guard:
            pending.extend((sql, row) for row in rows)
            return
        self.flush()
        with self._lock:
            self.statements += 1
            self._db.executemany(sql, rows)

    def _insert_id(self, sql: str, params: tuple[Any, ...]) -> int | None:
        """Insert one row (a guard write) and return its id, or None when the statement's own
        condition inserted nothing. SQLite: ``lastrowid`` (no RETURNING before SQLite 3.35);
        PostgreSQL: ``RETURNING id``."""
        if self.dialect == "postgresql":
            row = self._write(sql + " RETURNING id", params).fetchone()
            return None if row is None else int(row["id"])
        with self._lock:
            cursor = self._write(sql, params)
            return int(cursor.lastrowid) if cursor.rowcount == 1 else None

    def _scrub(self, text: str | None) -> str | None:
        return self._redactor.scrub(text)

    def start_run(
        self,
        *,
        kind: str = "play",
        parent_run: str | None = None,
        operator: str | None = None,
        playbook: str | None = None,
        inventory: str | None = None,
        limit_pattern: str | None = None,
        mode: str | None = None,
        payload_sha256: str | None = None,
        tool_version: str | None = None,
        check_mode: bool = False,
        options: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        run_id = run_id or new_run_id()
        self._write(
            "INSERT INTO runs (run_id, kind, parent_run, status, started_at, operator, playbook,"
            " inventory, limit_pattern, mode, payload_sha256, tool_version, check_mode, options_json)"
            " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run_id,
                kind,
                parent_run,
                utcnow(),
                operator if operator is not None else _operator(),
                playbook,
                inventory,
                limit_pattern,
                mode,
                payload_sha256,
                tool_version,
                int(check_mode),
                self._scrub(json.dumps(options or {}, sort_keys=True, default=str)),
            ),
        )
        return run_id

    def finish_run(self, run_id: str, status: str, stop_reason: str | None = None) -> None:
        self._write(
            "UPDATE runs SET status = ?, stop_reason = COALESCE(?, stop_reason), ended_at = ?"
            " WHERE run_id = ?",
            (status, self._scrub(stop_reason), utcnow(), run_id),
        )

    def update_run(self, run_id: str, **fields: Any) -> None:
        allowed = {"payload_sha256", "stop_reason", "status", "mode"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        sets = ", ".join(f"{name} = ?" for name in fields)
        self._write(f"UPDATE runs SET {sets} WHERE run_id = ?", (*fields.values(), run_id))

    def add_hosts(self, run_id: str, entries: Iterable[HostEntry], state: str = QUEUED) -> None:
        """Target hosts for a run (idempotent: a resumed run keeps what it had)."""
        rows = [
            (run_id, e.host, e.play, e.wave, e.batch, e.address, json.dumps(list(e.groups)), state)
            for e in entries
        ]
        self._write_many(
            "INSERT INTO hosts (run_id, host, play, wave, batch, address, groups_json, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, host) DO NOTHING",
            rows,
            guard=True,
        )

    def set_host(self, run_id: str, host: str, **fields: Any) -> None:
        """Update a host's row; free text is scrubbed of secrets on the way in. The run step's
        task name is a guard write (a resume asks the host by it); the rest may be deferred."""
        unknown = set(fields) - _HOST_FIELDS
        if unknown:
            raise ValueError(f"unknown host fields: {sorted(unknown)}")
        if not fields:
            return
        values = [
            self._scrub(value) if name in _TEXT_TO_SCRUB and isinstance(value, str) else value
            for name, value in fields.items()
        ]
        # Flags are INTEGER columns (SQLite has no boolean): PostgreSQL takes no bool for them.
        values = [int(value) if isinstance(value, bool) else value for value in values]
        sets = ", ".join(f'"{name}" = ?' for name in fields)
        self._write(
            f"UPDATE hosts SET {sets} WHERE run_id = ? AND host = ?",
            (*values, run_id, host),
            guard="task_name" in fields,
        )

    def start_step(self, run_id: str, host: str, step: str, attempt: int = 1) -> int:
        """Record that a step is about to touch a host (a guard write, committed before the
        step acts). Returns the attempt's id. Where this journal holds a fencing token for the
        host, the row is inserted only if the lease still holds that token, in the same
        statement: else :class:`LeaseLost`, and the step must not act."""
        started = utcnow()
        values = (run_id, host, step, attempt, started)
        token = self._tokens.get((run_id, host))
        insert: tuple[str, tuple[Any, ...]] = (
            "INSERT INTO attempts (run_id, host, step, attempt, status, started_at)"
            " VALUES (?, ?, ?, ?, 'running', ?)",
            values,
        )
        if token is not None:
            insert = (
                "INSERT INTO attempts (run_id, host, step, attempt, status, started_at)"
                " SELECT ?, ?, ?, ?, 'running', ? WHERE EXISTS (SELECT 1 FROM lease_hosts"
                " WHERE host = ? AND run_id = ? AND token = ?)",
                (*values, host, run_id, token),
            )
        view = self._views.get(host)
        if self.dialect == "postgresql" and view is not None and not view.loaded:
            # The visit's first write-ahead row brings the host's history back with it: the
            # same round trip, the row committed with it as any guard write.
            inserted = self._load_view(view, (insert[0] + " RETURNING id", insert[1]))
            new_id = int(inserted[0]["id"]) if inserted else None
        else:
            new_id = self._insert_id(*insert)
        if new_id is None:
            raise LeaseLost(run_id, host)
        self._open[new_id] = (started, step)
        self._seen(host, run_id, "attempts", {
            "id": new_id, "run_id": run_id, "host": host, "step": step, "attempt": attempt,
            "status": "running", "error_class": None, "error_message": None,
            "started_at": started, "ended_at": None, "duration_s": None, "details_json": None,
        })  # fmt: skip
        while len(self._open) > 10_000:  # steps left open for good (a detached run, a crash)
            self._open.popitem(last=False)
        return new_id

    def end_step(
        self,
        attempt_id: int,
        status: str,
        *,
        error_class: str | None = None,
        error_message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """End an attempt. The end of a run or collect step is a guard write; other steps' ends
        may be deferred (a resume that finds them ``running`` only asks again)."""
        ended = utcnow()
        started, step = self._open.pop(attempt_id, (None, None))
        if started is None:  # started by another process or an earlier visit: read it
            rows = self._rows("SELECT started_at, step FROM attempts WHERE id = ?", (attempt_id,))
            started, step = (rows[0]["started_at"], rows[0]["step"]) if rows else (None, None)
        duration = None
        if started is not None:
            duration = (
                datetime.fromisoformat(ended) - datetime.fromisoformat(started)
            ).total_seconds()
        ending = {
            "status": status,
            "error_class": error_class,
            "error_message": self._scrub(error_message),
            "ended_at": ended,
            "duration_s": duration,
            "details_json": self._scrub(json.dumps(details, sort_keys=True, default=str))
            if details is not None
            else None,
        }
        self._write(
            "UPDATE attempts SET status = ?, error_class = ?, error_message = ?, ended_at = ?,"
            " duration_s = ?, details_json = ? WHERE id = ?",
            (*ending.values(), attempt_id),
            guard=step is None or step in _GUARD_STEPS,
        )
        with self._lock:
            for view in self._views.values():
                for row in view.attempts:
                    if row["id"] == attempt_id:
                        row.update(ending)

    def add_profiles(
        self,
        run_id: str,
        host: str,
        user: str | None,
        results: Iterable[ProfileResult],
        result_file: str | None = None,
    ) -> None:
        rows = [
            (run_id, host, user, r.profile, r.current, r.previous, result_file, r.line)
            for r in results
        ]
        self._write_many(
            'INSERT INTO profiles (run_id, host, "user", profile, current_code, previous_code,'
            " result_file, line) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        names = ("run_id", "host", "user", "profile", "current_code", "previous_code")
        for row in rows:
            values = dict(zip((*names, "result_file", "line"), row, strict=True))
            self._seen(host, run_id, "profiles", {"id": None, **values})

    def add_file(
        self,
        run_id: str,
        host: str,
        *,
        kind: str,
        remote_path: str,
        local_path: str,
        sha256: str,
        size: int,
    ) -> None:
        row = {
            "run_id": run_id,
            "host": host,
            "kind": kind,
            "remote_path": remote_path,
            "local_path": local_path,
            "sha256": sha256,
            "size": size,
            "collected_at": utcnow(),
        }
        self._write(
            "INSERT INTO files (run_id, host, kind, remote_path, local_path, sha256, size,"
            " collected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            tuple(row.values()),
            guard=False,
        )
        self._seen(host, None, "files", {"id": None, **row})

    # ------------------------------------------------------------------------ a visit's view

    @contextmanager
    def visit_view(self, host: str, run_ids: Iterable[str]) -> Iterator[None]:
        """While a visit of ``host`` runs: answer its questions about the host's history (step
        attempts and profile rows of ``run_ids``, the runs of this CPUU run; collected files of
        every run; the latest run step of an earlier CPUU run) from one read, made at its first
        question (one round trip, with the writes held before it), kept current with the
        visit's own writes. Why it is safe: the lease lets one visit at a time write a host's
        rows (a superseded delivery cannot write a step), so nothing else changes them
        meanwhile. Only this process's writes through this journal are seen, as before."""
        with self._lock:
            if host in self._views:  # a visit inside a visit of the same host: one view
                yield
                return
            view = self._views[host] = _HostView(host, tuple(run_ids))
        try:
            yield
        finally:
            with self._lock:
                if self._views.get(host) is view:
                    del self._views[host]

    def _view(self, host: str | None, run_id: str | None = None) -> _HostView | None:
        """The loaded view of ``host`` when it can answer for ``run_id`` (None: read as ever)."""
        view = self._views.get(host) if host is not None else None
        if view is None or (run_id is not None and run_id not in view.run_ids):
            return None
        if not view.loaded:
            self._load_view(view)
        return view

    def _load_view(
        self, view: _HostView, first: tuple[str, tuple[Any, ...]] | None = None
    ) -> list[dict[str, Any]]:
        """Read ``view`` (one round trip on PostgreSQL); ``first``: a statement sent before
        the reads, in the same transaction, whose rows are returned."""
        marks = ", ".join("?" for _ in view.run_ids)
        runs = (view.host, *view.run_ids)
        before = [first] if first is not None else []
        *answer, attempts, files, profiles, earlier = self._read_many(
            [
                *before,
                (
                    f"SELECT * FROM attempts WHERE host = ? AND run_id IN ({marks}) ORDER BY id",
                    runs,
                ),
                ("SELECT * FROM files WHERE host = ? ORDER BY id", (view.host,)),
                (
                    f"SELECT * FROM profiles WHERE host = ? AND run_id IN ({marks}) ORDER BY id",
                    runs,
                ),
                self._latest_run_step_query(view.host, view.run_ids),
            ]
        )
        with self._lock:
            view.attempts, view.files, view.profiles = attempts, files, profiles
            view.earlier_run_step = earlier[0] if earlier else None
            view.loaded = True
        return answer[0] if answer else []

    def _seen(self, host: str, run_id: str | None, table: str, row: dict[str, Any]) -> None:
        """A row this journal just wrote for ``host``: into its loaded view (``run_id`` None:
        the view keeps the table's rows of every run)."""
        with self._lock:
            view = self._views.get(host)
            if (
                view is None
                or not view.loaded
                or (run_id is not None and run_id not in view.run_ids)
            ):
                return
            rows = getattr(view, table)
            if row["id"] is None or all(known["id"] != row["id"] for known in rows):
                rows.append(row)  # (a step row the view's own read brought back is there)

    def add_audit_rows(
        self, run_id: str, host: str, attempt_id: int, rows: Iterable[dict[str, Any]]
    ) -> None:
        """One audit step's rows (each an ``AuditRow`` as a dict), masked like any text."""
        values = [
            (run_id, host, attempt_id, self._scrub(json.dumps(row, sort_keys=True))) for row in rows
        ]
        self._write_many(
            "INSERT INTO audit_rows (run_id, host, attempt_id, row_json) VALUES (?, ?, ?, ?)",
            values,
        )

    # ---------------------------------------------------------------------------------- leases

    def take_lease(
        self,
        run_id: str,
        hosts: Iterable[str],
        owner: dict[str, Any],
        is_dead: Callable[[dict[str, Any], str], bool],
    ) -> dict[str, Any] | None:
        """Hold ``hosts`` for ``run_id`` in one transaction, or name the live run that holds one.

        Leases whose controller ``is_dead(owner, heartbeat_at)`` are cleared first (their run, if
        still ``running``, becomes ``interrupted``). Exclusivity comes from the key of
        ``lease_hosts``, not from reading first; the transaction is SQLite's ``BEGIN IMMEDIATE``
        or, on PostgreSQL, serialised by an advisory lock, so two controllers racing for
        overlapping hosts end with exactly one holder. Each host held gets a new fencing token
        (:meth:`start_step` checks it). Returns None when taken, else the holder's lease row
        (with ``host``: one host it holds).
        """
        names = sorted(set(hosts))
        now = utcnow()
        try:
            with self._lease_transaction():
                for row in self._db.execute("SELECT * FROM leases").fetchall():
                    if is_dead(json.loads(row["owner_json"]), row["heartbeat_at"]):
                        self._drop_lease(row["run_id"], interrupted=True)
                self._db.execute(
                    "INSERT INTO leases (run_id, owner_json, acquired_at, heartbeat_at)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET"
                    " owner_json = excluded.owner_json, acquired_at = excluded.acquired_at,"
                    " heartbeat_at = excluded.heartbeat_at",
                    (run_id, json.dumps(owner, sort_keys=True), now, now),
                )
                first = self._draw_tokens(len(names))
                tokens = {name: first + index for index, name in enumerate(names)}
                self._db.executemany(
                    "INSERT INTO lease_hosts (host, run_id, token) VALUES (?, ?, ?)"
                    " ON CONFLICT (host) DO UPDATE SET run_id = excluded.run_id,"
                    " token = excluded.token WHERE lease_hosts.run_id = excluded.run_id",
                    [(name, run_id, tokens[name]) for name in names],
                )
                held = self._db.execute(
                    "SELECT COUNT(*) AS n FROM lease_hosts WHERE run_id = ?", (run_id,)
                ).fetchone()["n"]
                if held < len(names):
                    raise _RolledBack(self._lease_holder(run_id, names))
        except _RolledBack as refused:
            return refused.value
        self._tokens.update({(run_id, name): token for name, token in tokens.items()})
        return None

    @contextmanager
    def _lease_transaction(self) -> Iterator[None]:
        """One transaction over the lease rows, committed on leaving, rolled back on an
        exception: SQLite's write lock (``BEGIN IMMEDIATE``), and on PostgreSQL the advisory
        lock that serialises every lease change, so reading then writing the rows is safe."""
        with self._lock:
            self.flush()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self.dialect == "postgresql":
                    self._db.execute(f"SELECT pg_advisory_xact_lock({_LEASE_LOCK})")
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _draw_tokens(self, count: int) -> int:
        """Reserve ``count`` fencing tokens from the journal's one counter (inside the lease's
        transaction); returns the first. Tokens only grow, so a new holder's never matches an
        old one's."""
        self._db.execute(
            "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + ? AS TEXT)"
            " WHERE key = 'lease_token'",
            (count,),
        )
        row = self._db.execute("SELECT value FROM meta WHERE key = 'lease_token'").fetchone()
        return int(row["value"]) - count + 1

    def renew_host_lease(self, run_id: str, host: str) -> int | None:
        """Give ``host``, which ``run_id`` holds, a new fencing token and write its steps with
        it: a new delivery of a visit (a relay's) supersedes any earlier one, whose next step
        row is then refused. Returns the token, or None when the run no longer holds the host."""
        try:
            with self._lease_transaction():
                token = self._draw_tokens(1)
                changed = self._db.execute(
                    "UPDATE lease_hosts SET token = ? WHERE host = ? AND run_id = ?",
                    (token, host, run_id),
                ).rowcount
                if changed != 1:
                    raise _RolledBack(None)
        except _RolledBack:
            self._tokens.pop((run_id, host), None)
            return None
        self._tokens[(run_id, host)] = token
        return token

    def lease_token(self, run_id: str, host: str) -> int | None:
        """The fencing token this journal writes ``host``'s steps with, if it holds one."""
        return self._tokens.get((run_id, host))

    def _lease_holder(self, run_id: str, names: list[str]) -> dict[str, Any]:
        for start in range(0, len(names), 500):
            part = names[start : start + 500]
            marks = ", ".join("?" for _ in part)
            row = self._db.execute(
                "SELECT h.host, l.* FROM lease_hosts h JOIN leases l ON l.run_id = h.run_id"
                f" WHERE h.host IN ({marks}) AND h.run_id != ? LIMIT 1",
                (*part, run_id),
            ).fetchone()
            if row is not None:
                return dict(row)
        return {"run_id": "?", "host": "?", "owner_json": "{}", "heartbeat_at": ""}

    def _drop_lease(self, run_id: str, *, interrupted: bool) -> None:
        self._db.execute("DELETE FROM lease_hosts WHERE run_id = ?", (run_id,))
        self._db.execute("DELETE FROM leases WHERE run_id = ?", (run_id,))
        if interrupted:
            self._db.execute(
                "UPDATE runs SET status = 'interrupted', ended_at = COALESCE(ended_at, ?),"
                " stop_reason = COALESCE(stop_reason, 'the controller died')"
                " WHERE run_id = ? AND status = 'running'",
                (utcnow(), run_id),
            )

    def heartbeat(self, run_id: str) -> None:
        self._write("UPDATE leases SET heartbeat_at = ? WHERE run_id = ?", (utcnow(), run_id))

    def release_lease(self, run_id: str) -> None:
        with self._lock:
            with self._lease_transaction():
                self._drop_lease(run_id, interrupted=False)
            for key in [key for key in self._tokens if key[0] == run_id]:
                del self._tokens[key]

    def leases(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM leases ORDER BY acquired_at")

    # ---------------------------------------------------------------------------------- reading

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts; this thread's held writes go first, in the same round trip, so it
        reads its own."""
        pending = getattr(self._local, "pending", None)
        if pending:
            statements = [*pending, (sql, tuple(params))]
            pending.clear()
            with self._lock:
                return [dict(row) for row in self._db.pipeline(statements).fetchall()]
        with self._lock:
            self.statements += 1
            return [dict(row) for row in self._db.execute(sql, tuple(params)).fetchall()]

    def _read_many(self, queries: list[tuple[str, tuple[Any, ...]]]) -> list[list[dict[str, Any]]]:
        """Several reads; on PostgreSQL in one round trip, after this thread's held writes."""
        if self.dialect != "postgresql":
            return [self._rows(sql, params) for sql, params in queries]
        pending = getattr(self._local, "pending", None) or []
        writes = list(pending)
        pending.clear()
        with self._lock:
            results = self._db.pipeline_reads(writes, queries)
        return [[dict(row) for row in rows] for rows in results]

    def _host_rows(self, where: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
        """Host rows in the order they were added, as before ``seq`` existed (without it)."""
        rows = self._rows(f"SELECT * FROM hosts WHERE {where} ORDER BY {self._order}", params)
        for row in rows:
            row.pop("seq", None)
        return rows

    def runs(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM runs ORDER BY started_at, run_id")

    def run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def latest_run(self) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1")
        return rows[0] if rows else None

    def hosts(self, run_id: str) -> list[dict[str, Any]]:
        return self._host_rows("run_id = ?", (run_id,))

    def host(self, run_id: str, host: str) -> dict[str, Any] | None:
        rows = self._host_rows("run_id = ? AND host = ?", (run_id, host))
        return rows[0] if rows else None

    def attempts(self, run_id: str, host: str | None = None) -> list[dict[str, Any]]:
        view = self._view(host, run_id)
        if view is not None:
            return [dict(row) for row in view.attempts if row["run_id"] == run_id]
        if host is None:
            return self._rows("SELECT * FROM attempts WHERE run_id = ? ORDER BY id", (run_id,))
        return self._rows(
            "SELECT * FROM attempts WHERE run_id = ? AND host = ? ORDER BY id", (run_id, host)
        )

    def unfinished_steps(self, run_id: str) -> list[dict[str, Any]]:
        """Steps that started and never ended: the controller died while they ran."""
        return self._rows(
            "SELECT * FROM attempts WHERE run_id = ? AND status = 'running' ORDER BY id", (run_id,)
        )

    def profiles(self, run_id: str, host: str | None = None) -> list[dict[str, Any]]:
        view = self._view(host, run_id)
        if view is not None:
            return [dict(row) for row in view.profiles if row["run_id"] == run_id]
        if host is None:
            return self._rows("SELECT * FROM profiles WHERE run_id = ? ORDER BY id", (run_id,))
        return self._rows(
            "SELECT * FROM profiles WHERE run_id = ? AND host = ? ORDER BY id", (run_id, host)
        )

    def files(self, run_id: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        view = self._view(host)
        if view is not None:
            return [dict(row) for row in view.files if run_id in (None, row["run_id"])]
        clauses, params = [], []
        if run_id is not None:
            clauses.append("run_id = ?")
            params.append(run_id)
        if host is not None:
            clauses.append("host = ?")
            params.append(host)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._rows(f"SELECT * FROM files{where} ORDER BY id", params)

    def has_file(self, host: str, sha256: str) -> bool:
        """Was a file with this content already collected from this host (in any run)?"""
        rows = self._rows(
            "SELECT 1 FROM files WHERE host = ? AND sha256 = ? LIMIT 1", (host, sha256)
        )
        return bool(rows)

    def hosts_in_states(self, run_id: str, states: Iterable[str]) -> list[str]:
        wanted = tuple(states)
        marks = ", ".join("?" for _ in wanted)
        rows = self._rows(
            f"SELECT host FROM hosts WHERE run_id = ? AND state IN ({marks})"
            f" ORDER BY {self._order}",
            (run_id, *wanted),
        )
        return [row["host"] for row in rows]

    def staged_versions(self) -> dict[str, str]:
        """Host → the payload hash (``runs.payload_sha256``) of its latest successful push.

        Each host keeps the staging folder of the payload it last received: a later run that
        pushed another build to other hosts does not move this one.
        """
        rows = self._rows(
            "SELECT a.host AS host, r.payload_sha256 AS sha FROM attempts a"
            " JOIN runs r ON r.run_id = a.run_id"
            " WHERE a.step = 'push' AND a.status IN ('ok', 'changed')"
            " AND r.payload_sha256 IS NOT NULL ORDER BY a.id"
        )
        return {row["host"]: row["sha"] for row in rows}  # later pushes overwrite earlier ones

    def cleanup_succeeded(self, host: str) -> str | None:
        """The run id of a successful Cleanup on this host, if any: Undo must then be refused.

        A ``--check`` run of Cleanup "succeeds" without touching anything: it does not count.
        """
        rows = self._rows(
            "SELECT h.run_id FROM hosts h JOIN runs r ON r.run_id = h.run_id"
            " WHERE h.host = ? AND r.mode = 'cleanup' AND r.check_mode = 0 AND h.state IN (?, ?)"
            " ORDER BY h.ended_at DESC LIMIT 1",
            (host, SUCCEEDED, PARTIAL),
        )
        return rows[0]["run_id"] if rows else None

    def pending_task(self, host: str, *, excluding: Iterable[str]) -> str | None:
        """The at-logon task the host's latest run step left pending, if it is still pending."""
        left_out = tuple(excluding)
        view = self._view(host)
        if view is not None and left_out == view.run_ids:
            row = view.earlier_run_step
        else:
            row = self._latest_run_step(host, left_out)
        if row is not None and row["state"] == PENDING and row["task_name"]:
            return str(row["task_name"])
        return None

    def latest_task(self, host: str) -> str | None:
        """The scheduled task of the host's latest run step, whatever became of it: where an
        ad-hoc collect finds that run's results (its run folder on the host)."""
        row = self._latest_run_step(host, ())
        return str(row["task_name"]) if row is not None and row["task_name"] else None

    def _latest_run_step(self, host: str, excluding: Iterable[str]) -> dict[str, Any] | None:
        """The host row of the latest run that reached the run step for this host.

        Only runs that reached the run step count (a ``run`` attempt, also the one a collect
        journals when it looks at a pending task), and never a ``--check`` run: a preflight- or
        push-only run, or a check run, "succeeds" without knowing anything about the task, so it
        must not hide it from a later collect or run.
        """
        rows = self._rows(*self._latest_run_step_query(host, tuple(excluding)))
        return rows[0] if rows else None

    @staticmethod
    def _latest_run_step_query(host: str, left_out: tuple[str, ...]) -> tuple[str, tuple[Any, ...]]:
        marks = ", ".join("?" for _ in left_out) or "''"  # NOT IN (NULL) would match nothing
        return (
            "SELECT h.state, h.task_name FROM hosts h JOIN runs r ON r.run_id = h.run_id"
            f" WHERE h.host = ? AND h.run_id NOT IN ({marks}) AND r.check_mode = 0"
            " AND EXISTS (SELECT 1 FROM attempts a"
            "  WHERE a.run_id = h.run_id AND a.host = h.host AND a.step = 'run')"
            " ORDER BY r.started_at DESC, r.run_id DESC LIMIT 1",
            (host, *left_out),
        )

    def cpuu_runs(self, run_id: str) -> tuple[str, tuple[str, ...]]:
        """The run whose CPUU RUN carries on, and every run that carries on that same CPUU run.

        A ``--resume`` finishes its parent's run: same scheduled task, same results, and CPUU
        never started a second time; a ``--retry-failed`` or a fresh play is a run of its own.
        Returns (the first run of the chain, all its runs in start order, RUN included).
        """
        runs = {row["run_id"]: row for row in self.runs()}
        root = run_id
        while runs.get(root, {}).get("kind") == "resume" and runs[root]["parent_run"] in runs:
            root = runs[root]["parent_run"]
        members = [root]
        for row in sorted(runs.values(), key=lambda r: (r["started_at"], r["run_id"])):
            resumes_a_member = row["kind"] == "resume" and row["parent_run"] in members
            if resumes_a_member and row["run_id"] not in members:
                members.append(row["run_id"])
        if run_id not in members:
            members.append(run_id)
        return root, tuple(members)

    def steps_since(
        self, after_id: int, run_id: str | None = None, *, also: Iterable[int] = ()
    ) -> list[dict[str, Any]]:
        """Step rows with an id above ``after_id`` (in id order): a reader's catch-up; with
        ``also``, those rows too (steps a reader saw start, read again for their end)."""
        again = tuple(also)
        where, params = "id > ?", [after_id]
        if again:
            where = f"({where} OR id IN ({', '.join('?' for _ in again)}))"
            params.extend(again)
        if run_id is not None:
            where += " AND run_id = ?"
            params.append(run_id)
        return self._rows(f"SELECT * FROM attempts WHERE {where} ORDER BY id", params)

    def follow(
        self,
        after_id: int = 0,
        *,
        run_id: str | None = None,
        wait_s: float = 1.0,
        stop: threading.Event | None = None,
        ends: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every new step row, as it is written (by this or any controller or relay), until
        ``stop`` is set. PostgreSQL: woken by a notification per step row (inserted or
        updated); SQLite: polled every ``wait_s``. Either way the rows are read by id from
        ``after_id`` on, so a dropped listener or a missed notification loses nothing (the next
        read catches up). ``ends``: a row it accepts that is still ``running`` is yielded again
        once it has ended (read again by id at each wake: bounded by the rows accepted)."""
        stop = stop or threading.Event()
        listener = journal_pg.Listener(self._db.url) if self.dialect == "postgresql" else None
        running: set[int] = set()
        try:
            while not stop.is_set():
                for row in self.steps_since(after_id, run_id, also=sorted(running)):
                    row_id = int(row["id"])
                    if row_id in running:
                        if row["status"] == "running":
                            continue
                        running.discard(row_id)
                    else:
                        after_id = max(after_id, row_id)
                        if ends is not None and row["status"] == "running" and ends(row):
                            running.add(row_id)
                    yield row
                if listener is not None:
                    listener.wait(wait_s)
                else:
                    stop.wait(wait_s)
        finally:
            if listener is not None:
                listener.close()

    def state_counts(self, run_id: str) -> dict[str, int]:
        rows = self._rows(
            "SELECT state, COUNT(*) AS n FROM hosts WHERE run_id = ? GROUP BY state", (run_id,)
        )
        return {row["state"]: row["n"] for row in rows}

    def connection(self) -> Any:
        """The raw connection, for read-only bulk queries (pandas.read_sql). Hold no lock long.
        SQLite: the ``sqlite3.Connection``; PostgreSQL: the psycopg connection."""
        self.flush()
        return self._db.raw if self.dialect == "postgresql" else self._db

    # ---- sites (relays, cpuu_fleet/sites/): begin ----------------------------------------------

    def put_blob(self, kind: str, data: bytes) -> str:
        """Store ``data`` once under its sha256 (a second put of the same bytes writes nothing)."""
        digest = hashlib.sha256(data).hexdigest()
        self._write(
            "INSERT INTO site_blobs (digest, kind, size, data, stored_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
            (digest, kind, len(data), data, utcnow()),
        )
        return digest

    def has_blob(self, digest: str) -> bool:
        return bool(self._rows("SELECT 1 FROM site_blobs WHERE digest = ?", (digest,)))

    def blob(self, digest: str) -> bytes | None:
        """The bytes stored under ``digest``, checked against it (None: not stored)."""
        rows = self._rows("SELECT data FROM site_blobs WHERE digest = ?", (digest,))
        if not rows:
            return None
        data = bytes(rows[0]["data"])
        if hashlib.sha256(data).hexdigest() != digest:
            raise InputError(f"blob {digest[:12]} in the journal does not match its hash")
        return data

    def add_site_visit(
        self, visit_id: str, run_id: str, host: str, attempt: int, site: str
    ) -> None:
        self._write(
            "INSERT INTO site_visits (visit_id, run_id, host, attempt, site,"
            " dispatched_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (visit_id) DO NOTHING",
            (visit_id, run_id, host, attempt, site, utcnow()),
        )

    def deliver_site_visit(self, visit_id: str, relay: str) -> dict[str, Any] | None:
        """Count one more delivery of a visit to ``relay``; the visit's row after it."""
        with self.batch():
            self._write(
                "UPDATE site_visits SET deliveries = deliveries + 1, relay = ? WHERE visit_id = ?",
                (relay, visit_id),
            )
            return self.site_visit(visit_id)

    def end_site_visit(
        self, visit_id: str, outcome: dict[str, Any], *, undelivered_only: bool = False
    ) -> bool:
        """Record a visit's outcome once; False when it already had one (the first one stays).

        ``undelivered_only``: only if no relay has taken the visit yet, in the same statement
        (the controller's drain; a relay counts its delivery and reads the row in one
        transaction, so exactly one of them owns the visit)."""
        condition = " AND deliveries = 0" if undelivered_only else ""
        cursor = self._write(
            "UPDATE site_visits SET outcome_json = ?, ended_at = ?"
            f" WHERE visit_id = ? AND outcome_json IS NULL{condition}",
            (json.dumps(outcome, default=str), utcnow(), visit_id),
        )
        return cursor.rowcount == 1

    def site_visit(self, visit_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM site_visits WHERE visit_id = ?", (visit_id,))
        return rows[0] if rows else None

    def site_visits(self, run_id: str) -> list[dict[str, Any]]:
        """A run's dispatched visits, in the order they were sent."""
        return self._rows(
            "SELECT * FROM site_visits WHERE run_id = ? ORDER BY dispatched_at, visit_id",
            (run_id,),
        )

    def signal_sites(self, run_id: str, level: int) -> None:
        """Tell the relays of a run's Ctrl-C: 1 drains, 2 aborts (never lowered)."""
        self._write(
            "INSERT INTO site_signals (run_id, level) VALUES (?, ?) ON CONFLICT (run_id)"
            " DO UPDATE SET level = CASE WHEN excluded.level > site_signals.level"
            " THEN excluded.level ELSE site_signals.level END",
            (run_id, level),
        )

    def lease_holder_of(self, host: str) -> str | None:
        """The run whose lease holds ``host`` now (None: no run holds it)."""
        rows = self._rows("SELECT run_id FROM lease_hosts WHERE host = ?", (host,))
        return str(rows[0]["run_id"]) if rows else None

    def site_signal(self, run_id: str) -> int:
        rows = self._rows("SELECT level FROM site_signals WHERE run_id = ?", (run_id,))
        return int(rows[0]["level"]) if rows else 0

    # ---- sites: end ----------------------------------------------------------------------------


def open_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing journal for reading only (``mode=ro``): no schema, no WAL switch.

    A WAL journal in a folder that cannot be written has no ``-shm`` file and SQLite cannot make
    one, so ``mode=ro`` may fail there; then ``immutable=1`` reads the file as it is, which is
    safe because nobody can be writing a journal in that folder either (and only then is it used).
    """
    uri = path.resolve().as_uri()
    problem: Exception | None = None
    tries = ["?mode=ro"]
    if not os.access(path.parent, os.W_OK):  # a live run could not be writing there
        tries.append("?mode=ro&immutable=1")
    for suffix in tries:
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(uri + suffix, uri=True, check_same_thread=False)
            db.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            problem = exc
            continue
        db.isolation_level = None
        return db
    why = _why(problem) if problem is not None else "unknown"
    raise InputError(f"cannot read the journal ({why})", where=path) from None


def _raise_write_fault(exc: Exception, path: Path) -> None:
    """A full disk or a read-only folder is the controller's fault (exit 4), not bad input."""
    why = write_fault(exc)
    if why is None and path.parent.is_dir() and not os.access(path.parent, os.W_OK):
        why = f"the folder {path.parent} cannot be written"
    if why is not None:
        raise ControllerWriteError(
            f"{path}: cannot write the journal ({why}); nothing was touched"
        ) from None


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _operator() -> str:
    """Who ran it: the login name, for the report's metadata (never a secret)."""
    explicit = os.environ.get("CPUU_FLEET_OPERATOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()  # USER/LOGNAME/USERNAME, else the account database
    except (OSError, KeyError, ImportError):
        return "unknown"
