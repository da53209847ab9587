"""Relays' steps, live on the controller: the journal's own progress turned into the events a
local visit emits (``step_started``, ``step_finished``), so the console, ``--json`` and the run
log show a relay's host step by step, as a host the controller visits itself.

Why the journal and not the broker: the journal is where a relay writes each step (its
write-ahead row, then its end) before it acts, and what the report reads; ``Journal.follow``
wakes on PostgreSQL's notification per step row (polls on SQLite) and reads by id, so a dropped
listener loses nothing. One follower thread per run, alive while a relay's visit is waited on.
The waiting side (:meth:`RelaySteps.done`) reads its host's rows once more before the host's
end is announced, so every step event of a relay's host comes before its ``host_finished``.
"""

from __future__ import annotations

import threading
from typing import Any

from cpuu_fleet.engine.events import RUN_LOG
from cpuu_fleet.engine.runner import HostJob
from cpuu_fleet.journal import Journal

#: How long the follower waits for a notification (PostgreSQL) or between polls (SQLite).
WAIT_S = 0.25


class RelaySteps:
    """One run's relays' steps as events of the hosts being waited on (see module docstring)."""

    def __init__(self, journal: Journal, run_id: str):
        self.journal = journal
        self.run_id = run_id
        self._lock = threading.Lock()
        self._jobs: dict[str, HostJob] = {}
        self._relayed: set[str] = set()
        """Every host of the run sent to a relay: a step of theirs still running is read again
        for its end (a detached run step ends on a later visit, after its host was parked)."""
        self._told: dict[int, bool] = {}
        """Step row id → whether its end was announced (False: only its start)."""
        self._after = 0
        self._stop: threading.Event | None = None

    def waiting(self, job: HostJob) -> None:
        """A visit of ``job``'s host goes to a relay: announce its steps from now on."""
        with self._lock:
            self._jobs[job.name] = job
            self._relayed.add(job.name)
            if self._stop is None:
                # From the oldest step seen start and not end (a detached run step whose host
                # was parked while no visit was waited on), so its end is read again.
                unended = [row_id for row_id, ended in self._told.items() if not ended]
                start = min(unended) - 1 if unended else self._after
                self._stop = threading.Event()
                threading.Thread(
                    target=self._follow, args=(self._stop, start), name="relay steps", daemon=True
                ).start()

    def done(self, job: HostJob) -> None:
        """The visit has its outcome: announce what is left of its steps, then no more."""
        try:
            rows = self.journal.attempts(self.run_id, job.name)
        except Exception as exc:  # the outcome stands; only the last step events are missing
            RUN_LOG.warning("%s: the relay's last steps not shown: %s", job.name, exc,
                            extra={"run_id": self.run_id})  # fmt: skip
            rows = []
        with self._lock:
            for row in rows:
                if int(row["attempt"]) == job.attempt:
                    self._announce(job, row)
            self._jobs.pop(job.name, None)
            if not self._jobs and self._stop is not None:
                self._stop.set()  # the follower ends at its next wake; a new wait starts another
                self._stop = None

    def _follow(self, stop: threading.Event, start: int) -> None:
        try:
            rows = self.journal.follow(
                start, run_id=self.run_id, wait_s=WAIT_S, stop=stop, ends=self._wanted
            )
            for row in rows:
                with self._lock:
                    if stop.is_set():  # a newer follower reads on from what this one showed
                        return
                    self._after = max(self._after, int(row["id"]))
                    job = self._jobs.get(str(row["host"]))
                    if job is not None and int(row["attempt"]) == job.attempt:
                        self._announce(job, row)
        except Exception as exc:  # a journal gone or closed: the outcomes still come by the wait
            RUN_LOG.warning(
                "relays' steps no longer followed: %s", exc, extra={"run_id": self.run_id}
            )

    def _wanted(self, row: dict[str, Any]) -> bool:
        with self._lock:
            return str(row["host"]) in self._relayed

    def _announce(self, job: HostJob, row: dict[str, Any]) -> None:
        """The events of ``row`` not announced yet: its start, and its end once it has one."""
        row_id = int(row["id"])
        step = str(row["step"])
        if row_id not in self._told:
            job.step_started(step)
            self._told[row_id] = False
        if row["status"] != "running" and not self._told[row_id]:
            job.step_finished(
                step,
                str(row["status"]),
                error_class=row.get("error_class"),
                error_message=row.get("error_message"),
                duration_s=row.get("duration_s"),
            )
            self._told[row_id] = True
