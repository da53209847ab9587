"""One live controller per run and per host: a lease in the journal, kept alive by a heartbeat.

Why: two ``play`` of the same wave started half a second apart, or a ``--resume`` of a run whose
controller is still working, would each start CPUU on the same workstations. The host's run marker
stops a second CPUU *for the same run*; the lease stops a second *run* over hosts that a live one
holds, and tells ``--resume`` whether the run it continues is really over.

A lease names its owner (machine, pid, the process's start time, operator) and carries a heartbeat
written every :data:`HEARTBEAT_S` seconds. It is dead when its heartbeat is older than
:data:`EXPIRY_S` (a controller on another machine, or a frozen one) or, on this machine, as soon as
its process is gone (``kill -9``: a resume need not wait for the expiry). The process start time
guards against a recycled pid. The journal holds the rows (``Journal.take_lease``), so a journal on
a shared database server gets the same rule with the same statements.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import Journal

HEARTBEAT_S = 10.0
EXPIRY_S = 60.0
"""A lease whose heartbeat is older than this is dead, wherever its controller runs."""


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_controller() -> dict[str, Any]:
    """Who holds a lease: enough for an operator to find the process, and for is_dead."""
    try:
        operator = getpass.getuser()
    except Exception:  # no user name in a container: the lease works without it
        operator = None
    pid = os.getpid()
    return {
        "machine": socket.gethostname(),
        "pid": pid,
        "process_start": _process_start(pid),
        "operator": operator,
    }


def _alive_here(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # somebody else's process: alive
    if started is None:
        return True
    return _process_start(pid) == started


def is_dead(owner: dict[str, Any], heartbeat_at: str, *, now: datetime | None = None) -> bool:
    """A lease is dead when its heartbeat is too old, or its process on this machine is gone."""
    now = now or datetime.now(timezone.utc)
    try:
        beat = datetime.fromisoformat(heartbeat_at)
    except (TypeError, ValueError):
        return True
    if (now - beat).total_seconds() > EXPIRY_S:
        return True
    if owner.get("machine") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _alive_here(int(owner["pid"]), owner.get("process_start"))
    return False


def describe(holder: dict[str, Any]) -> str:
    """``run R (pid 123 on jump01, operator ops, heartbeat 2026-...)`` for an error line."""
    owner = json.loads(holder.get("owner_json") or "{}")
    who = f"pid {owner.get('pid', '?')} on {owner.get('machine', '?')}"
    if owner.get("operator"):
        who += f", operator {owner['operator']}"
    return f"run {holder.get('run_id')} ({who}, last heartbeat {holder.get('heartbeat_at')})"


@dataclass
class RunLease:
    """The lease of one run over its hosts, with the heartbeat thread that keeps it alive."""

    journal: Journal
    run_id: str
    _stop: threading.Event | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def take(cls, journal: Journal, run_id: str, hosts: Iterable[str]) -> RunLease:
        """Hold the hosts for this run, or refuse (InputError, exit 2) naming the live run."""
        holder = journal.take_lease(run_id, hosts, this_controller(), is_dead)
        if holder is not None:
            raise InputError(
                f"host {holder.get('host')} is held by {describe(holder)}, which is still"
                " running: wait for it to end, or stop it (Ctrl-C) and carry it on with"
                f" --resume {holder.get('run_id')}",
                where=journal.path,
            )
        lease = cls(journal, run_id)
        lease._start_heartbeat()
        return lease

    def _start_heartbeat(self) -> None:
        self._stop = threading.Event()

        def beat(stop: threading.Event = self._stop) -> None:
            while not stop.wait(HEARTBEAT_S):
                try:
                    self.journal.heartbeat(self.run_id)
                except Exception:  # a busy or full disk: the next beat tries again
                    continue

        self._thread = threading.Thread(target=beat, name=f"lease {self.run_id}", daemon=True)
        self._thread.start()

    def release(self) -> None:
        """The run ended (any way but death): its hosts are free at once."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.journal.release_lease(self.run_id)


def live_status(journal: Journal, run: dict[str, Any]) -> str:
    """A run's status as an operator should read it: ``running`` only while its controller lives
    (a run left ``running`` by a dead controller is ``interrupted``)."""
    if run.get("status") != "running":
        return str(run.get("status"))
    for lease in journal.leases():
        if lease["run_id"] == run["run_id"]:
            owner = json.loads(lease["owner_json"] or "{}")
            return "interrupted" if is_dead(owner, lease["heartbeat_at"]) else "running"
    return "interrupted"
