"""Which hosts a run visits, in which batches, and how: plans, resume, retry-failed, retry files.

Two questions are answered here, apart from the runner that executes the answer:

* **A fresh run** (:func:`build_plan`): each play's host pattern, narrowed by ``--limit``, split into
  ``serial`` batches, each host tagged with its wave; the command line's batches and stop rules
  (:class:`Policy`) replace the playbook's.
* **A follow-up run** of an earlier run RUN, from the journal alone:
  ``--retry-failed RUN`` (:func:`select_retry_failed`) visits the hosts whose latest state is failed
  or unreachable; ``--resume RUN`` (:func:`select_resume`) visits the hosts the run never finished,
  and flags those whose ``run`` step was left unfinished (the controller died, or the operator
  aborted, while CPUU may still be running): the engine must *ask the host* what happened to its
  scheduled task instead of starting CPUU a second time.

"Latest state" looks across RUN and every retry/resume run descending from it: a host that failed
in RUN and succeeded in a retry is done. Rows that only say a run never got to a host (queued,
not_run), and every row of a ``--check`` run (it changed nothing), do not count as news about it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.playbook import Play, Playbook, serial_batches
from cpuu_fleet.journal import Journal
from cpuu_fleet.vocabulary import RESUMED_STATES, RETRIED_STATES, UNTRIED_STATES

RETRY_FILE = "failed.retry"
_NOT_NEWS = UNTRIED_STATES


class InventoryHost(Protocol):
    """What the planner needs from an inventory host (the foundation's ``Host``)."""

    name: str
    groups: Any  # a sequence or set of group names
    vars: Mapping[str, Any]


class Inventory(Protocol):
    def select(self, pattern: str) -> Sequence[InventoryHost]: ...


@dataclass(frozen=True)
class ResumeHint:
    """This host's ``run`` step started in an earlier run and never ended in the journal.

    The engine must ask the workstation about the scheduled task ``task_name`` (still running?
    finished with which exit code?) and collect, rather than start CPUU again.
    """

    from_run: str
    step: str
    attempt_id: int
    attempt: int
    started_at: str
    task_name: str | None = None


@dataclass(frozen=True)
class PlannedHost:
    name: str
    host: Any
    """The inventory host (its ``vars`` feed the templates and the connection)."""
    wave: str
    batch: int
    address: str | None = None
    groups: tuple[str, ...] = ()
    resume: ResumeHint | None = None


@dataclass(frozen=True)
class PlayPlan:
    play: Play
    batches: tuple[tuple[PlannedHost, ...], ...]

    @property
    def hosts(self) -> list[PlannedHost]:
        return [h for batch in self.batches for h in batch]


@dataclass(frozen=True)
class RunPlan:
    plays: tuple[PlayPlan, ...]
    playbook: Playbook | None = None
    stops: bool = True
    """False: no stop rule ends the run early (a ``--check``, see :class:`Policy`)."""

    @property
    def host_names(self) -> list[str]:
        """Every targeted host once, in first-seen order."""
        seen: dict[str, None] = {}
        for play in self.plays:
            for host in play.hosts:
                seen.setdefault(host.name, None)
        return list(seen)


@dataclass(frozen=True)
class Policy:
    """How a run batches its hosts and when it stops early, where it differs from the playbook.

    ``serial`` and the two percentages come from the command line (``--serial``,
    ``--max-fail-percentage``, ``--max-unreachable-percentage``) and replace every play's own.
    ``check``: a ``--check`` changes nothing on a host, so a failure in it is no reason to leave
    the other hosts unchecked; no stop rule applies. ``retry``: a ``--retry-failed`` visits hosts
    the earlier run already tried, whose canary and stop rules already judged the change: its
    hosts go in one batch (``forks`` at a time), unless ``--serial`` is given.
    """

    serial: tuple[int | str, ...] | None = None
    max_fail_percentage: float | None = None
    max_unreachable_percentage: float | None = None
    check: bool = False
    retry: bool = False

    def apply(self, play: Play) -> Play:
        """The play as this run runs it."""
        changes: dict[str, Any] = {}
        if self.serial is not None:
            changes["serial"] = self.serial
        elif self.retry:
            changes["serial"] = ()  # one batch: no canary for hosts that already ran once
        if self.max_fail_percentage is not None:
            changes["max_fail_percentage"] = self.max_fail_percentage
        if self.max_unreachable_percentage is not None:
            changes["max_unreachable_percentage"] = self.max_unreachable_percentage
        return replace(play, **changes) if changes else play


def build_plan(
    playbook: Playbook,
    inventory: Inventory,
    *,
    limit: str | None = None,
    only: Iterable[str] | None = None,
    resume: Mapping[str, ResumeHint] | None = None,
    forks: int | None = None,
    policy: Policy | None = None,
) -> RunPlan:
    """Resolve each play's hosts and split them into batches.

    ``limit`` is an inventory pattern (``--limit``; Ansible intersects it with each play's
    pattern). ``only`` narrows further to a set of names (a retry/resume selection). ``forks``
    overrides every play's forks (``--forks``); ``policy`` its batches and stop rules.
    """
    allowed = {h.name for h in inventory.select(limit)} if limit else None
    wanted = set(only) if only is not None else None
    hints = resume or {}
    policy = policy or Policy()
    plays = []
    for play in playbook.plays:
        if forks is not None:
            if forks < 1:
                raise InputError(f"--forks must be at least 1, not {forks}")
            play = replace(play, forks=forks)
        play = policy.apply(play)
        chosen: dict[str, Any] = {}
        for host in inventory.select(play.hosts):
            if allowed is not None and host.name not in allowed:
                continue
            if wanted is not None and host.name not in wanted:
                continue
            chosen.setdefault(host.name, host)
        batches = []
        for number, batch in enumerate(serial_batches(list(chosen.values()), play.serial), 1):
            batches.append(
                tuple(
                    PlannedHost(
                        name=host.name,
                        host=host,
                        wave=play.wave_of(_groups(host)),
                        batch=number,
                        address=_address(host),
                        groups=tuple(_groups(host)),
                        resume=hints.get(host.name),
                    )
                    for host in batch
                )
            )
        plays.append(PlayPlan(play=play, batches=tuple(batches)))
    if wanted is None and not any(p.batches for p in plays):
        # Like the inventory's patterns: a fresh run that would quietly touch nothing is a
        # mistake. (A retry/resume with nothing left to do is not: it simply completes.)
        patterns = ", ".join(repr(p.hosts) for p in playbook.plays)
        narrowed = f" narrowed by --limit {limit!r}" if limit else ""
        raise InputError(
            f"no host to run: the plays' hosts ({patterns}){narrowed} match no host",
            where=playbook.path,
        )
    return RunPlan(plays=tuple(plays), playbook=playbook, stops=not policy.check)


def _groups(host: Any) -> list[str]:
    groups = getattr(host, "groups", ()) or ()
    if isinstance(groups, (set, frozenset)):
        return sorted(groups)
    return [g if isinstance(g, str) else getattr(g, "name", str(g)) for g in groups]


def _address(host: Any) -> str | None:
    """Where the host is reached, for the journal. Templated settings come from the inventory's
    own connection view; a host whose settings are broken still plans (its work reports it)."""
    try:
        address = getattr(host.connection, "address", None)
    except Exception:
        address = None
    if address:
        return str(address)
    variables = getattr(host, "vars", None) or {}
    value = variables.get("ansible_host") or variables.get("ansible_psrp_host")
    return str(value) if value else None


# ------------------------------------------------------------------------------ follow-up runs


@dataclass(frozen=True)
class Selection:
    """The hosts a ``--retry-failed`` or ``--resume`` run visits, and what it leaves alone."""

    kind: str
    """``retry`` or ``resume`` (the journal's run kind for the new run)."""
    parent_run: str
    hosts: tuple[str, ...]
    ask_first: dict[str, ResumeHint] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)
    """Hosts not revisited, counted by their latest state (they keep their results)."""
    run: dict[str, Any] = field(default_factory=dict)
    """RUN's journal row: its playbook, inventory and limit, for the engine to load again."""


def _family(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    """RUN and every run that continues it (directly or through another retry/resume), in order."""
    runs = journal.runs()
    children: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["parent_run"]:
            children.setdefault(run["parent_run"], []).append(run)
    root = next((r for r in runs if r["run_id"] == run_id), None)
    if root is None:
        known = ", ".join(r["run_id"] for r in runs[-3:]) or "none yet"
        raise InputError(f"no run {run_id!r} in the journal (latest: {known})", where=journal.path)
    family: list[tuple[str, int, str, dict[str, Any]]] = []
    todo = [(root, 0)]
    while todo:
        run, depth = todo.pop()
        family.append((run["started_at"], depth, run["run_id"], run))
        todo.extend((child, depth + 1) for child in children.get(run["run_id"], []))
    # Start time orders them; depth breaks a tie within one millisecond (a child always
    # comes after the run it continues).
    family.sort(key=lambda item: item[:3])
    return [item[3] for item in family]


def _tree(journal: Journal, run_id: str) -> list[dict[str, Any]]:
    """Every run of RUN's tree (its first ancestor and all that continue it), oldest first."""
    runs = {r["run_id"]: r for r in journal.runs()}
    root = run_id
    while runs.get(root, {}).get("parent_run") in runs:
        root = runs[root]["parent_run"]
    return _family(journal, root)


def open_run_steps(journal: Journal, run_id: str) -> dict[str, ResumeHint]:
    """Hosts whose latest ``run`` step, anywhere in RUN's tree, started and never ended.

    Why the whole tree: the hint must survive follow-up runs that never got as far as the run
    step. A resume that found the host unreachable leaves CPUU's fate as unknown as before; only
    a later ``run`` attempt that *ended* (the engine asked the host, or ran it) settles it.
    """
    hints: dict[str, ResumeHint] = {}
    for run in _tree(journal, run_id):
        source = run["run_id"]
        for attempt in journal.attempts(source):
            if attempt["step"] != "run":
                continue
            host = attempt["host"]
            if attempt["status"] != "running":
                hints.pop(host, None)
                continue
            row = journal.host(source, host) or {}
            hints[host] = ResumeHint(
                from_run=source,
                step="run",
                attempt_id=int(attempt["id"]),
                attempt=int(attempt["attempt"]),
                started_at=attempt["started_at"],
                task_name=row.get("task_name"),
            )
    return hints


def latest_rows(journal: Journal, run_id: str) -> dict[str, dict[str, Any]]:
    """For each host of RUN, its most recent journal row that is news about it (see module doc)."""
    family = _family(journal, run_id)  # ordered by start: a later run's news is more recent
    rows = {row["host"]: row for row in journal.hosts(run_id)}
    latest = dict(rows)
    for run in family:
        if run["run_id"] == run_id or run["check_mode"]:
            continue  # a --check run changed nothing: what it saw is no news about a host
        for row in journal.hosts(run["run_id"]):
            if row["host"] in rows and row["state"] not in _NOT_NEWS:
                latest[row["host"]] = row
    return latest


def _count(states: Iterable[str]) -> dict[str, int]:
    return dict(Counter(states))


def select_retry_failed(journal: Journal, run_id: str) -> Selection:
    """``--retry-failed RUN``: the hosts of RUN whose latest state is failed or unreachable.

    Those among them whose ``run`` step never ended carry a :class:`ResumeHint` too: a retry must
    not start CPUU a second time where the first one may still be running.
    """
    run = journal.run(run_id)
    latest = latest_rows(journal, run_id)
    chosen = [h for h, row in latest.items() if row["state"] in RETRIED_STATES]
    kept = _count(row["state"] for h, row in latest.items() if h not in set(chosen))
    open_steps = open_run_steps(journal, run_id)
    return Selection(
        kind="retry",
        parent_run=run_id,
        hosts=tuple(chosen),
        ask_first={h: open_steps[h] for h in chosen if h in open_steps},
        kept=kept,
        run=dict(run or {}),
    )


def select_resume(journal: Journal, run_id: str) -> Selection:
    """``--resume RUN``: the hosts RUN did not finish, flagging unfinished ``run`` steps.

    Visited: hosts whose latest state is queued or running (the controller stopped while they
    waited or ran) or not_run (a Ctrl-C or max_fail_percentage stop kept them from starting;
    resuming means carrying on with them, once the operator has dealt with the cause), plus every
    host whose latest ``run`` step has no end in the journal (see :func:`open_run_steps`),
    whatever its state. Those get a :class:`ResumeHint`: CPUU may be running or done on the
    workstation, so the engine asks first.
    """
    run = journal.run(run_id)
    latest = latest_rows(journal, run_id)
    open_steps = open_run_steps(journal, run_id)
    chosen = [
        host for host, row in latest.items() if host in open_steps or row["state"] in RESUMED_STATES
    ]
    hints = {h: open_steps[h] for h in chosen if h in open_steps}
    picked = set(chosen)
    kept = _count(row["state"] for h, row in latest.items() if h not in picked)
    return Selection(
        kind="resume",
        parent_run=run_id,
        hosts=tuple(chosen),
        ask_first=hints,
        kept=kept,
        run=dict(run or {}),
    )


# ------------------------------------------------------------------------------ retry files


def retry_hosts(journal: Journal, run_id: str) -> list[str]:
    """The run's hosts that ``--retry-failed`` would visit (the vocabulary's retried states:
    failed and unreachable), in the run's order (Ansible's retry file)."""
    return journal.hosts_in_states(run_id, RETRIED_STATES)


def write_retry_file(journal: Journal, run_id: str, run_dir: str | Path) -> Path:
    """Write ``<run_dir>/failed.retry``: the hosts ``--retry-failed`` would visit, one per line,
    for ``--limit @<file>`` (Ansible's ``.retry`` convention). The report's ``retry.txt`` beside it
    is the wider action list (every state that needs attention: partial, not switched, not run).

    Written for every run, empty when nothing failed, so scripts can rely on it existing.
    """
    path = Path(run_dir) / RETRY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    hosts = retry_hosts(journal, run_id)
    temp = path.with_suffix(".tmp")
    temp.write_text("".join(f"{h}\n" for h in hosts), encoding="utf-8")
    temp.replace(path)
    return path
