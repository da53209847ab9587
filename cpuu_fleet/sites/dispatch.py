"""The controller's side: each host visit of a site goes to that site's queue; the runner waits.

The runner keeps everything it does today (batches, forks, ``max_fail_percentage``, retries,
Ctrl-C): only its per-host work changes, from "visit the host" to "dispatch the visit and wait
for its outcome in the journal" (:meth:`Dispatcher.work`). The journal is the truth: the outcome
is the one the relay wrote into the visit's row, and a visit is never judged from the broker.

A message carries ids only (:data:`~cpuu_fleet.sites.app.VISIT_FIELDS`): the bundle and the
payload go into the journal once per version (content-addressed) and travel by hash. Hosts
without a site are visited here, as without relays.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpuu_fleet.engine.runner import HostJob
from cpuu_fleet.engine.wave import WorkContext
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import NOT_RUN
from cpuu_fleet.sites.app import SITE_VARIABLE, VISIT_TASK, check_site, queue_name
from cpuu_fleet.sites.bundle import bundle_entries, pack
from cpuu_fleet.sites.outcomes import outcome_from_json, outcome_to_json
from cpuu_fleet.sites.progress import RelaySteps
from cpuu_fleet.visit.outcome import HostOutcome

#: How often the controller looks at the journal for a visit's outcome.
POLL_S = 0.2
#: Ctrl-C levels written for the relays (``Journal.signal_sites``).
DRAIN, ABORT = 1, 2
#: The outcome of a visit that Ctrl-C kept from starting (the relays write the same).
DRAINED = outcome_to_json(HostOutcome(NOT_RUN, None, "not started: the run was interrupted"))


def site_of(host: Any) -> str | None:
    """A host's site from its inventory variables (host or group), or None."""
    value = host.vars.get(SITE_VARIABLE)
    return check_site(str(value)) if value not in (None, "") else None


class Dispatcher:
    """One run's dispatching host work (see the module docstring)."""

    def __init__(self, app: Any, context: WorkContext):
        self.app = app
        self.context = context
        self.journal = context.journal
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, int]] = Counter()
        self._bundle: str | None = None
        self._payloads: dict[str, str | None] = {}
        self.steps = RelaySteps(self.journal, context.run_id)
        """The relays' steps of this run, shown live as local hosts' are."""

    def bundle_digest(self) -> str:
        """The inventory-and-templates bundle of this run, stored once (by content)."""
        with self._lock:
            if self._bundle is None:
                playbook = self.context.playbook
                inventory = Path(self.context.inventory_path)
                if not inventory.exists():
                    raise InputError("relays need an inventory file or folder on disk")
                templates = [play.templates for play in playbook.plays]
                data = pack(bundle_entries(Path(playbook.path), inventory, templates))
                self._bundle = self.journal.put_blob("bundle", data)
            return self._bundle

    def payload_digest(self, play: str) -> str | None:
        with self._lock:
            if play not in self._payloads:
                payload = self.context.payloads.get(play)
                digest = None
                if payload is not None:
                    digest = self.journal.put_blob("payload", pack([(payload.root, "payload")]))
                self._payloads[play] = digest
            return self._payloads[play]

    def work(self, job: HostJob) -> HostOutcome:
        site = site_of(job.host)
        if site is None:
            return self.context.local(job)
        with self._lock:
            self._calls[(job.name, job.attempt)] += 1
            call = self._calls[(job.name, job.attempt)]
        visit = f"{job.run_id}.{job.name}.{job.attempt}.{call}"
        message = {
            "visit": visit,
            "run": job.run_id,
            "play": job.play.name,
            "host": job.name,
            "attempt": job.attempt,
            "site": site,
            "bundle": self.bundle_digest(),
            "payload": self.payload_digest(job.play.name),
        }
        self.journal.add_site_visit(visit, job.run_id, job.name, job.attempt, site)
        self.steps.waiting(job)
        try:
            self.app.send_task(
                VISIT_TASK,
                kwargs={"ids": message},
                queue=queue_name(site),
                routing_key=queue_name(site),
                exchange=queue_name(site),
                task_id=visit,
            )
            outcome = self._wait(visit, job)
        finally:
            self.steps.done(job)
        self._materialise(job.run_id, job.name)
        return outcome

    def _wait(self, visit: str, job: HostJob) -> HostOutcome:
        """Poll the journal until the visit's row has its outcome; pass Ctrl-C on to relays.

        After the first Ctrl-C a visit no relay has taken yet ends ``not_run`` here (a site
        whose relays are all down still drains); a relay that gets its message later finds the
        outcome and leaves the host alone."""
        told = 0
        while True:
            level = ABORT if job.stopping.is_set() else DRAIN if job.draining.is_set() else 0
            if level > told:
                self.journal.signal_sites(job.run_id, level)
                told = level
            if level >= DRAIN:
                self.journal.end_site_visit(visit, DRAINED, undelivered_only=True)
            row = self.journal.site_visit(visit)
            if row is not None and row.get("outcome_json"):
                return outcome_from_json(json.loads(row["outcome_json"]))
            time.sleep(POLL_S)

    def _materialise(self, run_id: str, host: str) -> None:
        """Collected files a relay stored in the journal, written under this run's host folder.

        The path is the journal's, which a relay wrote: it is used only when it stays inside
        ``reports/<run>/hosts/<host>/``, and the bytes only when they match the row's hash."""
        reports = self.context.reports_dir.resolve()
        host_dir = reports / run_id / "hosts" / host
        for row in self.journal.files(run_id, host):
            target = (reports / str(row["local_path"])).resolve()
            if not target.is_relative_to(host_dir) or target.exists():
                continue
            data = self.journal.blob(str(row["sha256"]))
            if data is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def dispatching(app: Any) -> Callable[[WorkContext], Callable[[HostJob], HostOutcome]]:
    """The engine's ``wrap_work`` hook: every run's host work through a :class:`Dispatcher`."""

    def wrap(context: WorkContext) -> Callable[[HostJob], HostOutcome]:
        return Dispatcher(app, context).work

    return wrap
