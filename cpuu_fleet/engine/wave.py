"""The facade the CLI calls: inventory + playbook → plan → journal → runner → report.

Why everything is checked before the first host is touched: a wave changes thousands of
workstations, so a bad template variable, a missing secret, a missing payload file or
``read_timeout <= operation_timeout`` must stop the run with one clear line (exit code 2) while
nothing has happened yet. So every host's files are rendered, and its connection settings
resolved, up front; afterwards only per-host results remain (Nornir's tone).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cpuu_fleet import __version__, vocabulary
from cpuu_fleet.audit import AuditPolicy
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.engine.lease import RunLease
from cpuu_fleet.engine.planning import (
    RETRY_FILE,
    Policy,
    RunPlan,
    Selection,
    build_plan,
    select_resume,
    select_retry_failed,
)
from cpuu_fleet.engine.runner import INTERRUPTED, HostJob, HostOutcome, Runner
from cpuu_fleet.engine.runner import RunSummary as RunnerSummary
from cpuu_fleet.errors import (
    CONTROLLER_WRITE_EXIT,
    ControllerWriteError,
    InputError,
    write_fault,
)
from cpuu_fleet.inputs.connection import check_local_files
from cpuu_fleet.inputs.credentials import AskPass
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.kerberos import check_kerberos
from cpuu_fleet.inputs.payload import Payload, load_payload
from cpuu_fleet.inputs.playbook import (
    AUDIT_STEP,
    WHEN_NO_USER,
    Play,
    Playbook,
    RunOptions,
    StepSpec,
    load_playbook,
)
from cpuu_fleet.inputs.render import Renderer
from cpuu_fleet.journal import Journal, new_run_id
from cpuu_fleet.visit.audit import audit_policy
from cpuu_fleet.visit.host_visit import (
    PlaySettings,
    SessionFactory,
    open_session,
    visit_host,
)
from cpuu_fleet.visit.session import HostSession
from cpuu_fleet.visit.shelf import SessionShelf
from cpuu_fleet.visit.steps.context import LOGON_USER_VAR


def expected_users(scope: Any, host: str) -> tuple[str, ...]:
    """``cpuu_user`` of a host: one name or SID, or a list of them (a bad value stops the run
    before any host is touched, like every other inventory mistake)."""
    value = scope.value(LOGON_USER_VAR)
    if value is None or value == "":
        return ()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(
            f"{LOGON_USER_VAR} must be a user (DOMAIN\\user or a SID) or a list of users,"
            f" not {value!r}",
            where=f"host {host}",
        )
    return tuple(v.strip() for v in values)


class ExitCode(enum.IntEnum):
    """The process exit codes of ``play`` and the single-step commands (documented in --help)."""

    OK = 0
    """No host's state needs attention (succeeded, skipped, pending: see docs/states.md)."""
    BAD_INPUT = 2
    """Bad operator input (the CLI's InputError handler); nothing was touched."""
    HOSTS_NEED_ATTENTION = 3
    """At least one host's state needs attention (``vocabulary.ATTENTION_STATES``)."""
    CONTROLLER_COULD_NOT_WRITE = CONTROLLER_WRITE_EXIT
    """The controller could not write (disk full, read-only or unwritable folder): the run
    stopped starting hosts and is ``interrupted`` in the journal if the journal could record
    it; ``--resume RUN`` carries on once there is room (the CLI's ControllerWriteError)."""
    INTERRUPTED = 130
    """Ctrl-C, SIGTERM or SIGHUP: the run stopped early; ``--resume RUN`` carries on."""


MAX_WARNINGS = 10
#: Disk space a run holds back for the journal's last writes if the disk fills (SpaceReserve).
RESERVE_BYTES = 4 * 2**20


@dataclass
class PlayRequest:
    """What the operator asked for on the command line."""

    playbook: Path | None
    inventory: Path | None
    reports_dir: Path = Path("reports")
    journal_url: str | None = None
    """``--journal``: a shared PostgreSQL journal instead of ``reports_dir``'s SQLite file."""
    limit: str | None = None
    forks: int | None = None
    check: bool = False
    resume: str | None = None
    retry_failed: str | None = None
    serial: tuple[int | str, ...] | None = None
    """``--serial``: every play's batches (``inputs.playbook.parse_serial_option``)."""
    max_fail_percentage: float | None = None
    max_unreachable_percentage: float | None = None
    """``--max-fail-percentage``, ``--max-unreachable-percentage``: every play's stop rules."""
    ask_pass: AskPass | None = None
    extra_vars: dict[str, Any] = field(default_factory=dict)
    processors: list[Any] = field(default_factory=list)
    write_report: bool = True
    kind: str = "play"
    handle_sigint: bool = True
    session_factory: SessionFactory = open_session
    retry_backoff: float | None = None
    run_id: str | None = None
    """A run id chosen in advance (the demo writes its inventory into the run's folder first)."""
    payload: Path | None = None
    """The vendor payload folder for every play that pushes, instead of the playbook's own
    ``payload:`` (the same playbook, another CPUU build or a lab stand-in)."""
    warn: Callable[[str], None] | None = None
    """Where the inventory's and the templates' warnings go (the CLI: stderr), before any host
    is touched: a group_vars file for no group, or an INI that makes CPUU prompt the user."""
    mailboxes: Any = None
    """A batch file and device map (``inputs.mailboxes.MailboxInput``), read before the run:
    the report at the end shows the batch's mailboxes."""
    report_style: dict[str, Any] = field(default_factory=dict)
    """``csv_dialect`` and ``timezone`` for the report at the end (``report.write_report``)."""
    wrap_work: Callable[[WorkContext], Callable[[HostJob], HostOutcome]] | None = None
    """Replaces each run's host work, given the local one (sites: dispatch to relays)."""


@dataclass(frozen=True)
class WorkContext:
    """What a replacement of the host work is given (``PlayRequest.wrap_work``): the run, its
    inputs as loaded, each play's payload, and the local host work it may fall back on."""

    run_id: str
    journal: Journal
    reports_dir: Path
    playbook: Playbook
    inventory_path: Path | str
    payloads: dict[str, Payload | None]
    local: Callable[[HostJob], HostOutcome]


@dataclass
class PlayResult:
    run_id: str
    summary: RunnerSummary
    journal_path: Path
    run_dir: Path
    report: Any = None
    report_error: str | None = None
    kind: str = "play"
    """The journal's run kind: a ``step`` run cannot be continued with ``--retry-failed``."""

    @property
    def counts(self) -> dict[str, int]:
        return self.summary.counts

    @property
    def details(self) -> dict[str, dict[str, Any]]:
        """Each visited host's step details (what was pushed, found, collected; check mode's
        "would" lines), from its final outcome."""
        return {name: outcome.details for name, outcome in self.summary.outcomes.items()}

    @property
    def exit_code(self) -> ExitCode:
        if self.summary.status == INTERRUPTED:
            return ExitCode.INTERRUPTED
        if any(vocabulary.needs_attention(state) for state in self.summary.states.values()):
            return ExitCode.HOSTS_NEED_ATTENTION
        return ExitCode.OK


def _templates_dir(play: Play) -> Path:
    if play.templates is not None:
        return play.templates
    if play.source is not None:
        return play.source.parent / "templates"
    return Path("playbooks") / "templates"


class _PlayPrep:
    """One play made ready: payload read, every host rendered and its connection resolved."""

    def __init__(self, play: Play, hosts: Iterable[Any], extra_vars: dict[str, Any]):
        self.play = play
        self.run = play.run_options
        steps = play.step_names
        self.payload: Payload | None = None
        if "push" in steps or "run" in steps:
            if play.payload is None and "push" in steps:
                raise play.error("the 'push' step needs 'payload' (the vendor's CPUU folder)")
            if play.payload is not None:
                self.payload = load_payload(play.payload)
        self.rendered: dict[str, tuple[dict[str, bytes], dict[str, bytes]]] = {}
        self.connections: dict[str, Any] = {}
        self.expected_users: dict[str, tuple[str, ...]] = {}
        self.audit_policies: dict[str, AuditPolicy] = {}
        renderer = Renderer(_templates_dir(play)) if "push" in steps else None
        mode = self.run.mode if self.run else Mode.UPDATE
        self.warnings: list[str] = []
        files_seen: dict[str, str | None] = {}
        kerberos_seen: dict[str, Any] = {}
        for host in hosts:
            connection = host.connection
            connection.pypsrp_kwargs()  # resolves the password now: a missing one stops the run
            check_local_files(connection, files_seen)
            self.warnings.extend(check_kerberos(connection, kerberos_seen))
            self.connections[host.name] = connection
            if renderer is not None:
                rendered = renderer.render_host(host, mode, extra_vars)
                self.rendered[host.name] = (rendered.files, rendered.masked)
                self.warnings.extend(rendered.warnings)
            if self.run is not None or "collect" in steps:  # collect judges an at-logon run
                users = expected_users(
                    host.scope(reveal=False, extra=extra_vars, reveal_vault=True), host.name
                )
                if users:
                    self.expected_users[host.name] = users
            if AUDIT_STEP in steps:
                scope = host.scope(reveal=False, extra=extra_vars, reveal_vault=True)
                self.audit_policies[host.name] = audit_policy(scope)
        self._check_batch_file()

    def settings(
        self,
        run_id: str,
        journal: Journal,
        reports_dir: Path,
        *,
        version: str | None,
        check: bool,
        resume_tasks: dict[str, str],
        session_factory: SessionFactory,
        shelf: SessionShelf[HostSession] | None = None,
    ) -> PlaySettings:
        """The play's settings for its hosts' visits: made alike by the controller and by a
        relay (cpuu_fleet/sites/relay.py), which has only the journal to go by."""
        cpuu_root, cpuu_runs = journal.cpuu_runs(run_id)
        return PlaySettings(
            run_id=run_id,
            journal=journal,
            reports_dir=reports_dir,
            steps=self.play.step_names,
            run=self.run,
            payload=self.payload,
            version=version,
            rendered=self.rendered,
            check=check,
            resume_tasks=resume_tasks,
            session_factory=session_factory,
            cpuu_run_id=cpuu_root if cpuu_root != run_id else None,
            cpuu_runs=cpuu_runs,
            limits=self.play.limits,
            expected_users=self.expected_users,
            audit_policies=self.audit_policies,
            shelf=shelf,
        )

    def _check_batch_file(self) -> None:
        """A play that pushes must push the batch file its run step starts.

        Otherwise every host would fail alike, late, with the Task Scheduler's 0x80070002.
        """
        if self.run is None or self.run.batch_file is None or "push" not in self.play.step_names:
            return
        pushed = {f.relative.lower() for f in self.payload.files} if self.payload else set()
        for files, _masked in self.rendered.values():
            pushed.update(name.lower() for name in files)
        if self.run.batch_file.lower() not in pushed:  # Windows file names ignore case
            raise self.play.error(
                f"step 'run': batch_file {self.run.batch_file!r} is neither a rendered template"
                " nor a file at the top of the payload, so no host would have it",
                key="steps",
            )


#: One play made ready, for a relay that visits one host of it (cpuu_fleet/sites/relay.py).
PlayPrep = _PlayPrep


def _select_follow_up(journal: Journal, request: PlayRequest) -> Selection | None:
    if request.resume and request.retry_failed:
        raise InputError("--resume and --retry-failed cannot be combined")
    if request.resume:
        return select_resume(journal, request.resume)
    if request.retry_failed:
        return select_retry_failed(journal, request.retry_failed)
    return None


def _effective_limit(request: PlayRequest, selection: Selection | None) -> str | None:
    """``--limit``, or the limit of the run a retry/resume continues."""
    if request.limit is not None or selection is None:
        return request.limit
    return selection.run.get("limit_pattern")


def _path_from(selection: Selection | None, key: str, given: Path | None, what: str) -> Path:
    if given is not None:
        return Path(given)
    if selection is not None and selection.run.get(key):
        return Path(selection.run[key])
    raise InputError(f"no {what} given")


def _parent_options(selection: Selection | None) -> dict[str, Any]:
    """The ``options`` a follow-up's parent run was started with (its journal row's JSON)."""
    if selection is None or not selection.run.get("options_json"):
        return {}
    try:
        options = json.loads(selection.run["options_json"])
    except ValueError:
        return {}
    return options if isinstance(options, dict) else {}


def _absolute(path: Path | str) -> str:
    """A path as the journal keeps it: absolute, so that ``--resume`` works from any folder.

    ``<push>`` and the like (an ad-hoc step's stand-in for a playbook) are kept as they are.
    """
    text = str(path)
    if not text or text.startswith("<"):
        return text
    return str(Path(text).resolve())


def _check_same_payload(selection: Selection, payloads: list[Payload], given: Path | None) -> None:
    """``--resume`` finishes the same run, so with the same payload; a retry may take another.

    Resuming carries on a wave that is half done: hosts still to visit must get what the others
    got, or one run's report would mix two CPUU builds under one payload version, and a host
    whose run step is asked about would be judged against files it never received. A retry
    (``--retry-failed``) is a new run over the failed hosts, and a new CPUU build may be exactly
    the fix, so it may take a different payload (its own ``payload_sha256`` says which).
    """
    before = selection.run.get("payload_sha256")
    if selection.kind != "resume" or not before or not payloads:
        return
    now = payloads[0]
    if now.manifest_sha256 == before:
        return
    used = _parent_options(selection).get("payload") or "the playbook's payload"
    given_text = f"--payload {given}" if given is not None else f"the payload {now.root}"
    raise InputError(
        f"--resume {selection.parent_run}: {given_text} is version {now.version}, but the run"
        f" used {used} (version {before[:12]}); resuming finishes the same run with the same"
        " payload (give that folder back, or start a new run or --retry-failed for another)"
    )


class SpaceReserve:
    """Disk space held back while a run goes on, so that a full disk can still be told.

    When the disk fills mid-wave, the journal needs a little room to record what it knows: the
    run ``interrupted``, hosts left ``running`` for ``--resume``, the others ``not_run``. So a
    run first claims :data:`RESERVE_BYTES` in its own folder (beside the journal) and frees them
    at the first write fault, before those last writes. A disk that has not even this much left
    stops the run before any host is touched (exit 4), which is the cheapest moment to learn it.
    Assumption: the run folder and the journal share one file system (both are under
    ``--reports``); where they do not, the reserve only helps the run folder. It is removed at
    the end of the run; a controller killed outright (SIGKILL) leaves it, and ``--resume`` or
    ``--retry-failed`` of that run removes it.
    """

    FILENAME = ".space-reserve"

    def __init__(self, path: Path | None):
        self.path = path

    @classmethod
    def claim(cls, run_dir: Path, journal: Journal, run_id: str) -> SpaceReserve:
        path = run_dir / cls.FILENAME
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            _allocate(path, RESERVE_BYTES)
        except OSError as exc:
            with contextlib.suppress(OSError):
                path.unlink()
            why = write_fault(exc) or exc.strerror or str(exc)
            stop = f"the controller could not write ({why}); no host was touched"
            with contextlib.suppress(Exception):
                journal.finish_run(run_id, INTERRUPTED, stop)
            raise ControllerWriteError(
                f"the controller could not write ({why}) the {RESERVE_BYTES // 2**20} MiB it"
                f" holds back for the journal in {run_dir};"
                f" run {run_id} not started, no host was touched: free space and play again"
            ) from None
        return cls(path)

    def release(self) -> None:
        """Free the space (idempotent; called at the first fault and at the end of the run)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None


def _allocate(path: Path, size: int) -> None:
    """Really take ``size`` bytes on disk (a sparse file would hold nothing back)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
        block = b"\0" * 65536
        for _ in range(0, size, len(block)):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)


class Engine:
    """Runs playbooks against an inventory, journalling everything under ``reports_dir``."""

    def __init__(self, request: PlayRequest):
        self.request = request
        self.reports_dir = Path(request.reports_dir)
        self.journal = Journal.in_reports(self.reports_dir, request.journal_url)
        self.payload_override: Path | None = None
        """The payload folder that replaces the playbook's (``--payload`` or the resumed run's)."""

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ planning

    def load(self) -> tuple[Playbook, Inventory, Selection | None]:
        request = self.request
        selection = _select_follow_up(self.journal, request)
        if selection is not None and request.playbook is None and selection.run["kind"] == "step":
            # An ad-hoc step keeps no playbook to load again (its journal row says "<push>").
            raise InputError(
                f"run {selection.parent_run} was an ad-hoc {selection.run['playbook']} step, not a"
                " playbook: give the PLAYBOOK to use, or repeat the step with --limit"
                f" @{self.reports_dir / selection.parent_run / RETRY_FILE}"
            )
        playbook_path = _path_from(selection, "playbook", request.playbook, "playbook")
        inventory_path = _path_from(selection, "inventory", request.inventory, "inventory (-i)")
        playbook = load_playbook(playbook_path)
        # --payload, else the one the continued run was given: a resume from another folder,
        # or without repeating every option, uses the same files.
        inherited = _parent_options(selection).get("payload")
        if request.payload is None and isinstance(inherited, str):
            self.payload_override = Path(inherited)
        elif request.payload is not None:
            self.payload_override = request.payload.resolve()
        if self.payload_override is not None:
            payload = self.payload_override
            playbook = replace(
                playbook,
                plays=tuple(
                    replace(play, payload=payload) if "push" in play.step_names else play
                    for play in playbook.plays
                ),
            )
        inventory = Inventory.load(inventory_path, ask_pass=request.ask_pass)
        return playbook, inventory, selection

    def plan(
        self, playbook: Playbook, inventory: Inventory, selection: Selection | None
    ) -> RunPlan:
        request = self.request
        limit = _effective_limit(request, selection)
        only = selection.hosts if selection is not None else None
        plan = build_plan(
            playbook,
            inventory,
            limit=limit,
            only=only,
            resume=selection.ask_first if selection is not None else None,
            forks=request.forks,
            policy=Policy(
                serial=request.serial,
                max_fail_percentage=request.max_fail_percentage,
                max_unreachable_percentage=request.max_unreachable_percentage,
                check=request.check,
                retry=selection is not None and selection.kind == "retry",
            ),
        )
        if selection is None and not plan.host_names:
            raise InputError(f"no host matches the playbook's plays (limit: {limit or 'none'})")
        if selection is not None:
            planned = set(plan.host_names)
            left = [name for name in selection.hosts if name not in planned]
            if left:
                # Gone from the inventory, or outside --limit: they would vanish from the run
                # without a word, and their last state (failed, running) would look settled.
                shown = ", ".join(left[:10]) + (f" (+{len(left) - 10})" if len(left) > 10 else "")
                self._warn(
                    [
                        f"{len(left)} host(s) of run {selection.parent_run} to {selection.kind}"
                        f" are not in this inventory, limit or playbook, so not visited: {shown}"
                    ]
                )
        return plan

    # ------------------------------------------------------------------------------ running

    def run(
        self, playbook: Playbook, inventory: Inventory, selection: Selection | None
    ) -> PlayResult:
        """Plan, hold the hosts (the run's lease), run the waves, write the report."""
        plan = self.plan(playbook, inventory, selection)
        run_id = self.request.run_id or new_run_id()
        # Before anything is written: a second controller over these hosts stops here (exit 2).
        # A --check run changes nothing on a host and holds nothing.
        if self.request.check:
            return self._run(playbook, inventory, selection, plan, run_id)
        lease = self._first_write(RunLease.take, self.journal, run_id, plan.host_names)
        try:
            return self._run(playbook, inventory, selection, plan, run_id)
        finally:
            lease.release()

    def _run(
        self,
        playbook: Playbook,
        inventory: Inventory,
        selection: Selection | None,
        plan: RunPlan,
        run_id: str,
    ) -> PlayResult:
        request = self.request
        preps = {
            pp.play.name: _PlayPrep(pp.play, [h.host for h in pp.hosts], request.extra_vars)
            for pp in plan.plays
        }
        self._warn(
            [*getattr(inventory, "warnings", []), *(w for p in preps.values() for w in p.warnings)]
        )
        payloads = [p.payload for p in preps.values() if p.payload is not None]
        # A play without a payload uses the one this run pushes, else the latest one pushed.
        known_version = payloads[0].version if payloads else self._known_version()
        for prep in preps.values():
            if prep.payload is None and known_version is None:
                needs = [s for s in ("run", "collect") if s in prep.play.step_names]
                if needs:
                    # Both read the versioned staging folder a push creates; without one, every
                    # host would fail alike, after a connection each ("internal error").
                    raise prep.play.error(
                        f"'{needs[0]}' needs a payload pushed first, and this journal has no run"
                        " that pushed one: push first (or give the payload)"
                    )
        if selection is not None:
            _check_same_payload(selection, payloads, request.payload)
        modes = [p.run.mode.value for p in preps.values() if p.run is not None]
        kind = selection.kind if selection is not None else request.kind
        self._first_write(
            self.journal.start_run,
            kind=kind,
            parent_run=selection.parent_run if selection is not None else None,
            playbook=_absolute(playbook.path),
            inventory=_absolute(inventory_path(inventory)),
            limit_pattern=_effective_limit(request, selection),
            mode=modes[0] if modes else None,
            payload_sha256=payloads[0].manifest_sha256 if payloads else None,
            tool_version=__version__,
            check_mode=request.check,
            options={
                "forks": request.forks,
                "serial": list(request.serial) if request.serial is not None else None,
                "max_fail_percentage": request.max_fail_percentage,
                "max_unreachable_percentage": request.max_unreachable_percentage,
                "extra_vars": sorted(request.extra_vars),
                "payload": str(self.payload_override) if self.payload_override else None,
            },
            run_id=run_id,
        )
        resume_tasks = {}
        if selection is not None:
            for name, hint in selection.ask_first.items():
                if hint.task_name:
                    resume_tasks[name] = hint.task_name
        settings: dict[str, PlaySettings] = {}
        for name, prep in preps.items():
            settings[name] = prep.settings(
                run_id,
                self.journal,
                self.reports_dir,
                version=prep.payload.version if prep.payload else known_version,
                check=request.check,
                resume_tasks=resume_tasks,
                session_factory=request.session_factory,
                shelf=SessionShelf(),
            )

        staged = {host: _version_of(sha) for host, sha in self.journal.staged_versions().items()}

        def work(job: HostJob) -> HostOutcome:
            play = settings[job.play.name]
            prep = preps[job.play.name]
            if prep.payload is None and job.name in staged:
                # No push in this play: the host's results are where its own last push went.
                play = replace(play, version=staged[job.name])
            return visit_host(
                play,
                job.name,
                prep.connections[job.name],
                attempt=job.attempt,
                stopping=job.stopping,
                emit=lambda kind, step, data: _emit(job, kind, step, data),
            )

        if request.wrap_work is not None:
            work = request.wrap_work(
                WorkContext(
                    run_id=run_id,
                    journal=self.journal,
                    reports_dir=self.reports_dir,
                    playbook=playbook,
                    inventory_path=inventory_path(inventory),
                    payloads={name: prep.payload for name, prep in preps.items()},
                    local=work,
                )
            )
        if selection is not None:  # a controller killed outright left its reserve behind
            SpaceReserve(self.reports_dir / selection.parent_run / SpaceReserve.FILENAME).release()
        reserve = SpaceReserve.claim(self.reports_dir / run_id, self.journal, run_id)
        runner = Runner(
            self.journal,
            self.reports_dir,
            request.processors,
            handle_sigint=request.handle_sigint,
            retry_backoff=request.retry_backoff,
            on_fault=reserve.release,
        )
        try:
            summary = runner.run(
                plan,
                work,
                run_id=run_id,
                kind=kind,
                parent_run=selection.parent_run if selection is not None else None,
            )
        finally:
            reserve.release()
            for play_settings in settings.values():  # kept for parked hosts a stop left parked
                if play_settings.shelf is not None:
                    play_settings.shelf.close_all()
        if summary.fault is not None:
            raise ControllerWriteError(_fault_line(summary))
        result = PlayResult(
            run_id, summary, self.journal.path, self.reports_dir / run_id, kind=kind
        )
        if request.write_report and not request.check:
            self._report(result)
        return result

    def _first_write(self, write: Callable[..., Any], *args: Any, **fields: Any) -> Any:
        """The run's first journal writes (its lease, its row): a journal that cannot be written
        stops the run here, with nothing touched."""
        try:
            return write(*args, **fields)
        except InputError:
            raise
        except Exception as exc:
            why = write_fault(exc)
            if why is None:
                raise
            raise ControllerWriteError(
                f"the controller could not write ({why}); no run was started, nothing touched"
            ) from None

    def _warn(self, warnings: list[str]) -> None:
        """Each distinct warning once; a fleet-wide one (every host's INI) is not 1,000 lines."""
        if self.request.warn is None:
            return
        distinct = list(dict.fromkeys(warnings))
        for message in distinct[:MAX_WARNINGS]:
            self.request.warn(message)
        if len(distinct) > MAX_WARNINGS:
            self.request.warn(f"... and {len(distinct) - MAX_WARNINGS} more warning(s) like these")

    def _known_version(self) -> str | None:
        return known_version(self.journal)

    def _report(self, result: PlayResult) -> None:
        try:
            from cpuu_fleet.report import write_report
        except ImportError as exc:  # the report package is optional at this layer
            result.report_error = f"report not written: {exc}"
            return
        try:
            result.report = write_report(
                self.journal,
                [result.run_id],
                result.run_dir,
                mailboxes=self.request.mailboxes,
                **self.request.report_style,
            )
        except InputError as exc:
            result.report_error = f"report not written: {exc.render()}"
        except Exception as exc:
            why = write_fault(exc)
            if why is None:
                raise
            raise ControllerWriteError(
                f"the report could not be written ({why}); run {result.run_id} itself is"
                f" {result.summary.status} in the journal: `cpuu-fleet report {result.run_id}`"
                " writes the report once there is room"
            ) from None


def _fault_line(summary: RunnerSummary) -> str:
    """The one line for a run the controller could not finish writing: what, and what next."""
    head = f"the controller could not write ({summary.fault}); run {summary.run_id}"
    if summary.recorded:
        return (
            f"{head} stopped and is recorded as interrupted: free space (or fix the folder),"
            f" then cpuu-fleet play --resume {summary.run_id}"
        )
    return (
        f"{head} stopped, and the journal could not record it either (it still says running):"
        f" free space, then cpuu-fleet play --resume {summary.run_id}"
    )


def known_version(journal: Journal) -> str | None:
    """The payload version of the latest run that pushed one (for run/collect without push)."""
    for run in reversed(journal.runs()):
        if run.get("payload_sha256") and not run.get("check_mode"):  # --check pushes nothing
            return _version_of(str(run["payload_sha256"]))
    return None


def _version_of(payload_sha256: str) -> str:
    """The staging folder name of a payload from its journalled hash (as ``Payload.version``)."""
    return payload_sha256[:12]


def inventory_path(inventory: Inventory) -> Path | str:
    return getattr(inventory, "path", "")


def _emit(job: HostJob, kind: str, step: str, data: dict[str, Any]) -> None:
    if kind == "step_started":
        job.step_started(step)
    elif kind == "step_finished":
        job.step_finished(
            step,
            data.get("status", ""),
            error_class=data.get("error_class"),
            error_message=data.get("error_message"),
            duration_s=data.get("duration_s"),
        )


def run_play(request: PlayRequest) -> PlayResult:
    """Load, plan, run and report one playbook run (a fresh one, ``--resume`` or ``--retry-failed``)."""
    with Engine(request) as engine:
        playbook, inventory, selection = engine.load()
        return engine.run(playbook, inventory, selection)


def plan_play(request: PlayRequest) -> RunPlan:
    """The hosts a ``play`` would visit, play by play and batch by batch, touching no host
    (``--list-hosts``): the same loading and planning as :func:`run_play`, nothing run."""
    with Engine(request) as engine:
        playbook, inventory, selection = engine.load()
        return engine.plan(playbook, inventory, selection)


# ---------------------------------------------------------------------------------- ad-hoc steps


AD_HOC_STEPS = {
    "preflight": ("preflight",),
    "push": ("preflight", "push"),
    "run": ("preflight", "push", "run"),
    "collect": ("preflight", "collect"),
}


def ad_hoc_playbook(
    step: str,
    *,
    pattern: str = "all",
    payload: Path | None = None,
    templates: Path | None = None,
    mode: Mode = Mode.UPDATE,
    when_no_user: str = "skip",
    timeout: int = 900,
    forks: int = 10,
) -> Playbook:
    """A one-play playbook for the single-step commands (``cpuu-fleet push -i INV`` ...).

    Push and run are preceded by a read-only preflight: push needs the host's staged files to skip
    what is already there, run needs the logged-on user and the host's Cleanup marker. Run also
    pushes (changed files only, so usually nothing): each mode has its own batch file, and the one
    for this mode must be on the host.
    """
    specs = []
    _check_ad_hoc(forks=forks, timeout=timeout, when_no_user=when_no_user)
    for name in AD_HOC_STEPS[step]:
        options = (
            RunOptions(mode=mode, when_no_user=when_no_user, timeout=timeout)
            if name == "run"
            else None
        )
        specs.append(StepSpec(name, run=options))
    play = Play(
        name=f"ad-hoc {step}",
        hosts=pattern,
        steps=tuple(specs),
        forks=forks,
        payload=payload.resolve() if payload is not None else None,
        templates=templates.resolve() if templates is not None else None,
        max_fail_percentage=None,
    )
    play = replace(play, serial=())
    return Playbook(path=Path(f"<{step}>"), plays=(play,))


def _check_ad_hoc(*, forks: int, timeout: int, when_no_user: str) -> None:
    """The checks a playbook's loader makes on the same settings, for the command-line options.

    Without them ``--forks 0`` started no worker and quietly left every host not_run, and
    ``--timeout 0`` reached every workstation and failed there, host by host.
    """
    if forks < 1:
        raise InputError(f"must be at least 1, not {forks}", where="--forks")
    if timeout < 1:
        raise InputError(f"must be a whole number of seconds > 0, not {timeout}", where="--timeout")
    if when_no_user not in WHEN_NO_USER:
        raise InputError(
            f"must be one of {', '.join(WHEN_NO_USER)}, not {when_no_user!r}",
            where="--when-no-user",
        )


def run_single_step(request: PlayRequest, step: str, **options: Any) -> PlayResult:
    """Run one step on the inventory's hosts (``--limit`` narrows), journalled as kind ``step``."""
    playbook = ad_hoc_playbook(step, **options)
    request = replace(request, kind="step")
    with Engine(request) as engine:
        if request.inventory is None:
            raise InputError("no inventory given (-i)")
        inventory = Inventory.load(request.inventory, ask_pass=request.ask_pass)
        return engine.run(playbook, inventory, None)
