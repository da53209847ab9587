"""A relay's side: one visit message → the project's own host visit, run here, written back.

A relay holds the secrets (its environment, keyring, prompt, vault passwords: the same inputs
code as the controller) and receives none: a message names the run, play, host, attempt and the
hashes of the bundle and payload, which the relay fetches from the journal once per version and
keeps in its cache (:class:`~cpuu_fleet.sites.bundle.Cache`). The visit itself is
:func:`~cpuu_fleet.visit.host_visit.visit_host`, unchanged: every step is journalled before and
after, by the relay, in the shared journal.

Before it touches the host, a delivery is checked against the journal, in order: a visit that
already has an outcome (a re-delivery after the relay acknowledged too late) ends there; one
delivered more than :data:`DELIVERY_CAP` times ends failed, saying so, instead of looping; a host
already final in its run, a run drained by Ctrl-C, or a host no longer held by the run's lease
return at once without a connection (not_run). A guard callable (:attr:`Relay.guard`) is asked
before the visit and before each of its steps. Each delivery takes a new fencing token for the
host (``Journal.renew_host_lease``), which every step's write-ahead row checks in the same
statement: a delivery that a sibling superseded cannot start another step (docs/sites.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cpuu_fleet.engine.planning import select_resume, select_retry_failed
from cpuu_fleet.engine.wave import PlayPrep, known_version
from cpuu_fleet.inputs.credentials import AskPass
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.journal import FAILED, FINAL_STATES, NOT_RUN, Journal
from cpuu_fleet.redact import REDACTOR
from cpuu_fleet.sites.app import VISIT_FIELDS
from cpuu_fleet.sites.bundle import INVENTORY_DIR, PLAYBOOK_DIR, TEMPLATES_DIR, Cache
from cpuu_fleet.sites.dispatch import ABORT, DRAIN, DRAINED
from cpuu_fleet.sites.outcomes import outcome_from_json, outcome_to_json
from cpuu_fleet.visit.host_visit import PlaySettings, open_session, visit_host
from cpuu_fleet.visit.outcome import HostOutcome
from cpuu_fleet.vocabulary import ErrorClass

LOG = logging.getLogger("cpuu_fleet.sites.relay")
#: Deliveries of one visit message after which it ends failed instead of being tried again.
DELIVERY_CAP = 3
#: How often a running visit looks for the controller's second Ctrl-C.
ABORT_POLL_S = 0.5
#: The pause before a visit whose journal writes failed goes back to the queue (the database
#: is likely away: no hot loop of deliveries meanwhile).
REQUEUE_PAUSE_S = 5.0

Guard = Callable[[dict[str, Any], str | None], str | None]
"""Asked with the visit's ids before the visit (step None) and before each of its steps (the
step's name): None lets it go on, a text is why it must not. The hook for the fencing token of
the shared journal's host lease: a relay frozen past its lease, then woken, is refused here
before its next step, and writes no outcome (the visit is its sibling's by then)."""


def _no_guard(ids: dict[str, Any], step: str | None) -> str | None:
    return None


def _number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Fenced(Exception):
    """The guard refused a step in the middle of a visit: this relay must not write anything."""


class Relay:
    """Runs the visits of one site (see the module docstring)."""

    def __init__(
        self,
        journal: Journal,
        site: str,
        *,
        cache_dir: Path,
        reports_dir: Path,
        name: str,
        ask_pass: AskPass | None = None,
        delivery_cap: int = DELIVERY_CAP,
        guard: Guard = _no_guard,
        session_factory: Any = open_session,
    ):
        self.journal = journal
        self.site = site
        self.cache = Cache(cache_dir)
        self.reports_dir = reports_dir
        self.name = name
        self.ask_pass = ask_pass
        self.delivery_cap = delivery_cap
        self.guard = guard
        self.session_factory = session_factory
        self._inventories: dict[str, Inventory] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------ one message

    def run_task(self, ids: dict[str, Any]) -> None:
        """The Celery task's body: :meth:`handle`, and a visit whose journal writes failed
        (the database away past ``journal_pg.RECONNECT_S``, a write cut off in flight) goes
        back to the queue after a pause instead of being acknowledged as done: acknowledged,
        no relay would write its outcome and the controller would wait for it for ever.
        Requeued, a sibling (or this relay) takes it again; never twice holds on the host (the
        run marker), and the delivery cap ends a visit that keeps failing, saying so."""
        from celery.exceptions import Reject

        try:
            self.handle(ids)
        except Exception as exc:
            why = REDACTOR.scrub(f"{type(exc).__name__}: {exc}")[:500]
            LOG.warning(
                "visit %s could not be recorded in the journal (%s): back to the queue in %s s",
                str(ids.get("visit"))[:200],
                why,
                REQUEUE_PAUSE_S,
            )
            time.sleep(REQUEUE_PAUSE_S)
            raise Reject(why, requeue=True) from None

    def handle(self, ids: dict[str, Any]) -> None:
        """One delivery of a visit message; the outcome goes to the journal, never raised."""
        ids = {key: ids.get(key) for key in VISIT_FIELDS}
        visit = str(ids["visit"])
        row = self.journal.deliver_site_visit(visit, self.name)
        if row is None:
            LOG.warning("visit %s is not in the journal: dropped", REDACTOR.scrub(visit[:200]))
            return
        if row.get("outcome_json"):
            return  # delivered again after it ended: the first outcome stands
        recorded = (row["run_id"], row["host"], int(row["attempt"]), row["site"])
        if (str(ids["run"]), str(ids["host"]), _number(ids["attempt"]), ids["site"]) != recorded:
            # The journal's row, written by the controller, is the truth about a visit.
            LOG.warning("visit %s: the message does not match the journal: dropped", visit[:200])
            return
        if row["site"] != self.site:
            LOG.warning("visit %s is for site %s, not %s: dropped", visit, row["site"], self.site)
            return
        delivery = int(row["deliveries"])
        outcome = self._refusal(ids, delivery)
        if outcome is None:
            try:
                outcome = self._visit(ids, delivery)
            except _Fenced as fenced:
                LOG.warning("visit %s stopped by its guard: %s", visit, fenced)
                return
            except Exception as exc:  # the relay's own fault: this host's result, not a crash
                LOG.exception("visit %s failed on relay %s", visit, self.name)
                text = REDACTOR.scrub(f"internal error on relay {self.name}: {exc}")
                outcome = HostOutcome(FAILED, ErrorClass.INTERNAL.value, text)
        self._store_files(str(ids["run"]), str(ids["host"]))
        self.journal.end_site_visit(visit, outcome_to_json(outcome))

    def _refusal(self, ids: dict[str, Any], deliveries: int) -> HostOutcome | None:
        """Why this delivery must not visit the host (an outcome), or None."""
        run, host = str(ids["run"]), str(ids["host"])
        if deliveries > self.delivery_cap:
            return HostOutcome(
                FAILED,
                ErrorClass.POLICY.value,
                f"the visit was delivered {deliveries} times (cap {self.delivery_cap}): relays"
                " kept losing it; see the relays' logs, then --retry-failed",
            )
        current = self.journal.host(run, host)
        if current is not None and current["state"] in FINAL_STATES and current.get("ended_at"):
            return HostOutcome(
                current["state"], current.get("error_class"), current.get("error_message")
            )
        if self.journal.site_signal(run) >= DRAIN:
            return outcome_from_json(DRAINED)
        holder = self.journal.lease_holder_of(host)
        if holder is not None and holder != run:
            return HostOutcome(NOT_RUN, None, f"not started: the host is held by run {holder}")
        why = self.guard(ids, None)
        if why:
            return HostOutcome(NOT_RUN, None, f"not started: {why}")
        return None

    # ------------------------------------------------------------------------------ the visit

    def _still_mine(self, visit: str, delivery: int) -> str | None:
        """Whether a later delivery (the broker gave the visit to a sibling while this relay was
        frozen or cut off) made this one stale. Asked before each step, cheaply; the host lease's
        fencing token, checked in the same statement as the step's row, closes the window."""
        row = self.journal.site_visit(visit)
        if row is None or int(row["deliveries"]) != delivery:
            now = row["deliveries"] if row is not None else "?"
            return f"this relay's delivery {delivery} of the visit is stale (now {now})"
        return None

    def _visit(self, ids: dict[str, Any], delivery: int) -> HostOutcome:
        run, host_name, attempt = str(ids["run"]), str(ids["host"]), int(ids["attempt"])
        bundle = self.cache.folder(str(ids["bundle"]), self.journal.blob)
        payload = (
            self.cache.folder(str(ids["payload"]), self.journal.blob) / "payload"
            if ids.get("payload")
            else None
        )
        playbook_file = next((bundle / PLAYBOOK_DIR).glob("*"))
        plays = {
            play.name: (index, play)
            for index, play in enumerate(load_playbook(playbook_file).plays)
        }
        if ids["play"] not in plays:
            raise ValueError(f"play {str(ids['play'])[:100]!r} is not in the bundle's playbook")
        index, play = plays[str(ids["play"])]
        templates = bundle / TEMPLATES_DIR / str(index)
        play = replace(
            play,
            templates=templates if templates.is_dir() else play.templates,
            payload=payload if payload is not None else play.payload,
        )
        inventory = self._inventory(str(ids["bundle"]), bundle)
        host = [h for h in inventory.hosts if h.name == host_name]
        if len(host) != 1:
            raise ValueError(f"host {host_name[:100]!r} is not in the bundle's inventory")
        prep = PlayPrep(play, host, {})
        refused: list[str] = []

        def guard(step: str) -> str | None:
            why = self._still_mine(str(ids["visit"]), delivery) or self.guard(ids, step)
            if why:
                refused.append(why)
            return why

        if self.journal.renew_host_lease(run, host_name) is None:
            return HostOutcome(NOT_RUN, None, "not started: the run no longer holds the host")
        # From here this delivery's steps carry a new fencing token: an earlier delivery (a
        # relay frozen or cut off, then woken) is refused at its next step's write-ahead row.
        settings = replace(self._settings(run, prep, host_name), guard=guard)
        stopping = threading.Event()
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch_abort, args=(run, stopping, done), daemon=True
        )
        watcher.start()
        try:
            outcome = visit_host(
                settings, host_name, prep.connections[host_name], attempt=attempt, stopping=stopping
            )
        finally:
            done.set()
        if refused:
            raise _Fenced(refused[0])
        stale = self._still_mine(str(ids["visit"]), delivery)
        if stale:  # a sibling took the visit over (its token refused this one's step): its word
            raise _Fenced(stale)
        return outcome

    def _inventory(self, digest: str, bundle: Path) -> Inventory:
        with self._lock:
            if digest not in self._inventories:
                files = [
                    p
                    for p in (bundle / INVENTORY_DIR).iterdir()
                    if p.name not in ("group_vars", "host_vars")
                ]
                self._inventories[digest] = Inventory.load(files[0], ask_pass=self.ask_pass)
            return self._inventories[digest]

    def _settings(self, run: str, prep: Any, host: str) -> PlaySettings:
        """The play's settings as the controller makes them (engine/wave.py), for one host."""
        resume_tasks: dict[str, str] = {}
        row = self.journal.run(run) or {}
        parent = row.get("parent_run")
        if parent and row.get("kind") in ("resume", "retry"):
            select = select_resume if row["kind"] == "resume" else select_retry_failed
            hint = select(self.journal, parent).ask_first.get(host)
            if hint is not None and hint.task_name:
                resume_tasks[host] = hint.task_name
        version = prep.payload.version if prep.payload else self._staged_version(row, host)
        return prep.settings(
            run,
            self.journal,
            self.reports_dir,
            version=version,
            check=bool(row.get("check_mode")),
            resume_tasks=resume_tasks,
            session_factory=self.session_factory,
        )

    def _staged_version(self, run: dict[str, Any], host: str) -> str | None:
        """No payload in this play: where the host's last push went, else what the controller
        would take (engine/wave.py): this run's payload, else the latest one pushed."""
        staged = self.journal.staged_versions().get(host) or run.get("payload_sha256")
        return str(staged)[:12] if staged else known_version(self.journal)

    def _watch_abort(self, run: str, stopping: threading.Event, done: threading.Event) -> None:
        """The controller's second Ctrl-C reaches a running visit as its ``stopping`` event."""
        while not done.wait(ABORT_POLL_S):
            with contextlib.suppress(Exception):
                if self.journal.site_signal(run) >= ABORT:
                    stopping.set()
                    return

    def _store_files(self, run: str, host: str) -> None:
        """What this visit collected, into the journal by content, for the controller's report
        (relays may be other machines). Only files under this relay's own host folder, whose
        bytes match the journal's hash, are stored."""
        reports = self.reports_dir.resolve()
        host_dir = reports / run / "hosts" / host
        for row in self.journal.files(run, host):
            path = (reports / str(row["local_path"])).resolve()
            if not path.is_relative_to(host_dir) or not path.is_file():
                continue
            if self.journal.has_blob(str(row["sha256"])):
                continue
            data = path.read_bytes()
            if self.journal.put_blob("file", data) != row["sha256"]:
                LOG.warning("%s changed after it was collected: not stored", path.name)
