"""One simulated Windows workstation: disk, logged-on user, Outlook profiles, processes, tasks.

Why a model and not a VM: the lab must play thousands of workstations on two CPU cores, each in a
known state chosen by a scenario, so that every outcome cpuu-fleet reports can be produced on
purpose and checked. The model holds only what the remote scripts and CPUU can observe or change.

Time: work takes simulated time, read from an injectable clock. A started task gets a completion
time when it starts; its effects are applied lazily, the first time anybody looks at the
workstation after that time (:meth:`Workstation.refresh`). Nothing runs in the background, so the
model costs nothing between requests and is deterministic under a fake clock.

Thread safety: handlers run in pipeline threads; every public method takes the workstation's one
re-entrant lock, so a handler sees a consistent state.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from cpuu_fleet.cpuu import STATUS_CONTROL_C_EXIT
from cpuu_fleet.lab.winfs import Acl, WindowsFS, wildcard_match

TASK_HAS_NOT_RUN = 267011  # 0x41303 SCHED_S_TASK_HAS_NOT_RUN
TASK_RUNNING = 267009  # 0x41301 SCHED_S_TASK_RUNNING
TASK_FILE_NOT_FOUND = 2147942402  # 0x80070002: the action's program does not exist
TASK_BAD_DIRECTORY = 2147942667  # 0x8007010B: the working directory does not exist
TASK_TERMINATED_AT_LOGOFF = 1
"""A CPUU killed by anybody (logoff, a process kill) exits with 1 (vendor doc)."""
TASK_TERMINATED = 267014
"""0x41306 SCHED_S_TASK_TERMINATED: what Task Scheduler reports for a run it ended itself
(Stop-ScheduledTask, or the task's ExecutionTimeLimit, the safety net run-task sets)."""
DEFAULT_TASK_PRIORITY = 7
"""New-ScheduledTaskSettingsSet's default priority: BELOW_NORMAL (TaskSettings.Priority docs)."""
CMD_NAME = "cmd"
"""The process Task Scheduler starts for a batch-file action (``Get-Process`` name)."""
CPUU_PROCESS_NAME = "ClientProfileUpdatingUtility"


class AccountMappingError(ValueError):
    """Register-ScheduledTask's 0x80070534 "No mapping between account names and security IDs
    was done": Task Scheduler cannot map the principal's name (e.g. ``AzureAD\\Name``)."""

    HRESULT = "HRESULT 0x80070534"


USERS_GROUP = "BUILTIN\\Users"
USERS_GROUP_SID = "S-1-5-32-545"


class ProfileState(str, enum.Enum):
    """Where an Outlook profile stands in the migration."""

    SOURCE = "source"
    """Points at the source Exchange organisation: never updated, or rolled back."""
    UPDATED = "updated"
    """Switched to the target, with CPUU's backup copy still kept (Undo possible)."""
    BACKUP = "backup"
    """CPUU's backup copy of an original profile (shows as a profile of its own)."""
    CLEANED = "cleaned"
    """Switched, and Cleanup discarded the backup: Undo is no longer possible."""


@dataclass
class OutlookProfile:
    """One MAPI profile of one user, with the facts that decide CPUU's per-profile code."""

    name: str
    mailbox: str
    state: ProfileState = ProfileState.SOURCE
    online: bool = True
    """False: the profile is set to work offline (CPUU code 6 unless -ProcessOfflineProfiles On)."""
    ost_size: int = 0
    """Bytes of the cached-mode OST file; 0 for an online-mode profile without an OST."""
    mailbox_switched: bool = True
    """The migration switched this mailbox (wrote the switch message CPUU looks for)."""
    switch_message_valid: bool = True
    """False: a switch message exists but is invalid (exit flag INVALID_SWITCH_MSG)."""
    resolvable: bool = True
    """False: the mailbox cannot be resolved (code 4)."""
    has_exchange_service: bool = True
    """False: no Microsoft Exchange Server service at all (code 7, e.g. a POP/IMAP profile)."""
    exchange_service_complete: bool = True
    """False: the Exchange service lacks server name and/or mailbox DN (code 5)."""
    unexpected_services: tuple[str, ...] = ()
    """Services beyond the default ones (code 8 unless AllowAdditionalServices allows them)."""
    auth_type: str = "Negotiate"
    """Logon network security; ``Anonymous`` plays an unsupported type (code 19)."""
    properties_dialog_open: bool = False
    """The user has the profile's properties dialog open (code 20)."""
    default_store_opens: bool = True
    """False: the default message store cannot be opened (code 17)."""
    failing_features: frozenset[str] = frozenset()
    """Additional features (``Rules``, ``Delegates``...) that cannot be migrated for this profile."""
    backup_fails: bool = False
    """Creating the backup copy fails (code 9)."""
    update_fails: bool = False
    """The update itself fails (code 11)."""
    unexpected_error: bool = False
    """An unexpected error (code 21)."""
    restore_fails: bool = False
    """Undo fails (code 13)."""
    cleanup_fails: bool = False
    """Cleanup fails (code 15)."""
    user_cancels_cleanup: bool = False
    """The user cancels the clean-up of this profile (code 16)."""
    backup_of: str | None = None
    """For a BACKUP profile: the name of the original."""
    last_code: int | None = None
    """The code CPUU reported for this profile last time (the result file's "previous" column)."""
    extra_mailboxes: tuple[str, ...] = ()
    """Further Exchange accounts of the profile (a shared team mailbox): they move with it."""

    @property
    def has_backup(self) -> bool:
        return self.state is ProfileState.UPDATED


def backup_name(profile_name: str) -> str:
    """The name of CPUU's backup copy of a profile.

    Assumption (the vendor guide does not say how the backup is named): the original name with a
    ``_CPUU_Backup`` suffix; what matters is that it shows as a profile of its own (code 1).
    """
    return f"{profile_name}_CPUU_Backup"


@dataclass
class CpuuBehaviour:
    """Run-level facts about CPUU on one workstation (per-profile facts live on the profiles)."""

    base_seconds: float = 0.2
    """Simulated run time: this much, plus ``per_profile_seconds`` for each profile."""
    per_profile_seconds: float = 0.05
    hang: bool = False
    """CPUU never ends on its own (waits on a hidden dialog): only a kill stops it."""
    crash_after_profiles: int | None = None
    """CPUU crashes after handling this many profiles (CRASH); no result file is written."""
    global_error: bool = False
    """The Exchange servers cannot be reached at all (GLOBAL_ERR)."""
    tmp_dir_fails: bool = False
    """CPUU cannot create its temporary folder (FAILED_TO_CREATE_TMP_DIR)."""
    log_write_fails: bool = False
    """The log cannot be written (FAILED_TO_WRITE_LOG), besides a full disk."""
    log_share_fails: bool = False
    """Copying the local log to the remote share fails (FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE)."""
    user_aborts_after_profiles: int | None = None
    """The user cancels CPUU's progress window after this many profiles (USER_ABORT)."""
    user_answers_prompt: bool = False
    """With ``AskCredentials`` in CPUU.ini, does somebody answer the prompt? (unattended: no)."""
    csv_encoding: str = "utf-16-bom"
    """How the result file is encoded: ``utf-16-bom``, ``utf-8``, ``utf-8-bom`` or ``cp1252``."""
    log_encoding: str = "utf-8-bom"
    """How the log is encoded: ``utf-8-bom``, ``utf-16le-bom``, ``utf-16be-bom`` or ``cp1252``."""
    log_quotes_ini: bool = False
    """The log quotes CPUU.ini's settings, passwords included (a debug log level)."""
    log_padding_bytes: int = 0
    """The log grows to at least this many bytes (a verbose log gone wild: a huge file)."""
    extra_result_rows: int = 0
    """The result file gets this many more profile lines (a huge or tampered result file)."""


@dataclass
class ScriptFaults:
    """How this workstation's remote scripts misbehave: a compromised or broken host, for the
    lab's handlers to play everything a hostile workstation may send back."""

    download_overrun: bool = False
    """``download`` sends more bytes than the Length it announced, without end."""
    download_endless_warnings: float | None = None
    """``download`` writes warning records without end, one every this many seconds (0: flat out)."""
    download_error: str | None = None
    """``download`` fails with this error message (a host answering with crafted text)."""


LANGUAGE_MODES = ("FullLanguage", "ConstrainedLanguage", "RestrictedLanguage", "NoLanguage")
"""``$ExecutionContext.SessionState.LanguageMode`` values (PSLanguageMode)."""


@dataclass
class FileHold:
    """A file another process holds open, as Windows' sharing rules see it.

    Our scripts open files for reading with ReadWrite and Delete sharing, which succeeds only
    when the holder shares read access; ``File.Replace``/``File.Move`` onto the file succeeds only
    when the holder shares delete access (a running program's image, a batch file cmd.exe is
    executing and an AV scan do not)."""

    path: str
    """The file's Windows path; ``*`` and ``?`` match any characters (a scenario holds a file
    whose name is not known yet, e.g. CPUU's next log)."""
    by: str
    """The process holding it (for messages only)."""
    share_read: bool = False
    """False: opened exclusively (a log a program keeps to itself, an AV scan): reads fail."""
    share_delete: bool = False
    """False: the file cannot be replaced or moved over while held."""
    until: float | None = None
    """When the holder closes it (the workstation's clock); None: for as long as the test says."""


def _path_key(path: str) -> str:
    return path.replace("/", "\\").rstrip("\\").casefold()


@dataclass(frozen=True)
class Session:
    """One interactive session as the scripts find it: the owner of its explorer.exe
    (``Win32_Process.SessionId``, ``GetOwnerSid``) and the logon type of the logon session that
    shell belongs to (``Win32_LogonSession.LogonType``: 2 console, 10 RDP)."""

    user: str
    session_id: int
    kind: str
    """``console`` or ``rdp``."""
    logon_time: float
    disconnected: bool = False
    """The user left the session without logging off (an RDP client closed): it goes on, with
    its shell and processes, and nobody sees its desktop (``quser`` shows no session name)."""


@dataclass
class Process:
    """A running process as ``Get-Process`` would list it."""

    name: str
    pid: int
    user: str | None = None
    locks_ost: bool = False
    """Holds the user's OST files open (Windows Search, a chat client): CPUU cannot open them."""
    stoppable: bool = True
    """CPUU stops MAPI clients it finds; False plays one that refuses to close."""
    parent_pid: int | None = None
    """``Win32_Process.ParentProcessId``: kept after the parent ends (Windows never reparents)."""
    work: TaskProcess | None = None
    """For a CPUU process: the emulated run, which goes on for as long as this process lives."""


class TaskProcess(Protocol):
    """A started task action (the CPUU emulator implements it)."""

    finish_at: float | None
    """Clock time at which the process ends on its own; None: it never does (a hang)."""

    def complete(self) -> int:
        """Apply the process's effects and return its exit code (called once, at finish_at)."""

    def kill(self) -> int:
        """The process is terminated from outside; return its exit code."""


Launcher = Callable[["Workstation", "ScheduledTask", str], TaskProcess]
"""Starts a task's action as a given user and returns the running process."""


@dataclass(frozen=True)
class CpuuStart:
    """One start of CPUU on a workstation, as the workstation itself saw it.

    Why: "CPUU never runs twice on a host for one run" can only be proven by a witness that is
    not the controller; the lab keeps one record per start, whoever asked for it (a task started
    now, or an at-logon task started by a logon).
    """

    host: str
    task: str
    user: str
    trigger: str
    """The task's trigger: ``Now`` (started by Start-ScheduledTask) or ``AtLogon``."""
    time: str
    """When CPUU started, ISO 8601 in UTC, from the workstation's clock."""

    def as_dict(self) -> dict[str, str]:
        return {
            "host": self.host,
            "task": self.task,
            "user": self.user,
            "trigger": self.trigger,
            "time": self.time,
        }


@dataclass
class CpuuSpan:
    """When one CPUU process ran here, by the workstation's clock (its own record, not the
    controller's): what proves how many runs overlapped (:attr:`Workstation.cpuu_peak`)."""

    user: str
    start: float
    end: float | None = None
    """When it ended (on its own at its finish time, or killed); None: still running."""


def peak_overlap(spans: Iterable[CpuuSpan]) -> int:
    """The most spans open at one instant; one that ends when another starts does not overlap."""
    events = sorted(
        [(span.start, 1) for span in spans]
        + [(span.end, -1) for span in spans if span.end is not None]
    )
    peak = running = 0
    for _, step in events:  # at one instant an end (-1) sorts before a start (+1)
        running += step
        peak = max(peak, running)
    return peak


@dataclass
class ScheduledTask:
    """One registered scheduled task, with the state ``Get-ScheduledTaskInfo`` reports."""

    name: str
    command: str
    working_directory: str
    trigger: str
    """``Now`` (registered, then started at once) or ``AtLogon``."""
    user: str
    """The principal: ``DOMAIN\\user`` (logon type Interactive) or ``BUILTIN\\Users`` (group)."""
    enabled: bool = True
    last_run_time: datetime | None = None
    last_result: int = TASK_HAS_NOT_RUN
    killed: bool = False
    run_as: str | None = None
    """Who the current or last run ran as (for a group principal: the user who logged on)."""
    process: TaskProcess | None = None
    time_limit_s: float | None = None
    """ExecutionTimeLimit: Task Scheduler ends a run that lasts longer (None: no limit)."""
    started_at: float | None = None
    """Clock time the current or last run started."""
    pid: int | None = None
    """The process Task Scheduler started for the current run (``IRunningTask.EnginePID``):
    ``cmd`` for a batch file, whose child is CPUU."""
    launch_at: float | None = None
    """Start-ScheduledTask was called and the instance is not there yet (it starts late)."""
    settles_at: float | None = None
    """After a stop, the task still reads Running until this clock time."""
    priority: int = DEFAULT_TASK_PRIORITY
    end_boundary: float | None = None
    """The logon trigger's EndBoundary: no logon starts the task after this clock time."""
    once_per_user: bool = False
    """The action's wrapper runs the batch file once per user (see ``remote/run-task.ps1``);
    a later logon of the same user replays the first run's exit code instead."""
    ran_for: dict[str, int] = field(default_factory=dict)
    """Once-per-user tasks: user (casefolded) -> what the wrapper replays at a later logon."""

    @property
    def running(self) -> bool:
        return self.process is not None

    @property
    def limit_at(self) -> float | None:
        """When Task Scheduler ends the current run (its ExecutionTimeLimit), if it has one."""
        if self.time_limit_s is None or self.started_at is None:
            return None
        return self.started_at + self.time_limit_s

    @property
    def state(self) -> str:
        if not self.enabled:
            return "Disabled"
        return "Running" if self.running or self.settles_at is not None else "Ready"


def _same_user(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.casefold() == b.casefold()


def _utc(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, tz=timezone.utc)


class Workstation:
    """One Windows workstation as the remote scripts and CPUU see it."""

    def __init__(
        self,
        name: str,
        root: Path,
        *,
        os_caption: str = "Microsoft Windows 10 Enterprise",
        os_version: str = "10.0.19045",
        capacity_bytes: int = 256 * 1024**3,
        reserved_bytes: int = 120 * 1024**3,
        outlook_version: str | None = "16.0",
        clock: Callable[[], float] = time.time,
        launcher: Launcher | None = None,
    ):
        self.name = name
        self.os_caption = os_caption
        self.os_version = os_version
        self.outlook_version = outlook_version
        self.clock = clock
        self.lock = threading.RLock()
        self.fs = WindowsFS(
            root, capacity_bytes, reserved_bytes=reserved_bytes, clock=clock, drives=("C",)
        )
        for folder in ("C:\\Windows\\Temp", "C:\\ProgramData", "C:\\Users"):
            self.fs.mkdir(folder)
        self.interactive_user: str | None = None
        self.console_logon_time = 0.0
        self.remote_sessions: list[Session] = []
        """Users logged on over RDP (``rdp_logon``), beside the console's ``interactive_user``."""
        self._next_session_id = 2
        self.shell_running = True
        """The logged-on user's explorer.exe runs: run-task reads their SID from its owner. False
        plays a session still starting (or a custom shell): only a name Windows can translate
        then gives the SID."""
        self.usual_user: str | None = None
        """Who normally works here: set by the first logon, kept when they log off."""
        self._pending_logons: list[tuple[float, str]] = []
        self.profiles: dict[str, list[OutlookProfile]] = {}
        self.processes: list[Process] = [Process("System", 4), Process("explorer", 4120)]
        self.tasks: dict[str, ScheduledTask] = {}
        self._next_pid = 5000
        if launcher is None:
            # Imported here: the emulator builds on this module's types.
            from cpuu_fleet.lab.cpuu_emulator import launch_task

            launcher = launch_task
        self._launcher = launcher
        self.cpuu = CpuuBehaviour()
        """How CPUU behaves on this workstation beyond what the profiles decide."""
        self.scripts = ScriptFaults()
        """How the remote scripts misbehave (none: a well-behaved host)."""
        self.language_mode = "FullLanguage"
        """The language mode of a WinRM session here: ``ConstrainedLanguage`` under AppLocker or
        WDAC script enforcement (about_Language_Modes), which the lab's handlers honour."""
        self.file_holds: list[FileHold] = []
        """Files other processes hold open (:meth:`hold_file`)."""
        self.cpuu_starts: list[CpuuStart] = []
        """Every start of CPUU here, in order (a start that ends at once, because the program
        or folder is missing, is no start: CPUU never ran)."""
        self.cpuu_spans: list[CpuuSpan] = []
        """Every CPUU process here, from its start to its end, in order of start."""
        self._open_spans: dict[object, CpuuSpan] = {}
        """The running ones, by their process (a process ends once: a second kill is no end)."""
        self.on_cpuu_start: Callable[[CpuuStart], None] | None = None
        """Called (under the workstation's lock) for each start: the fleet's record."""
        self.last_user: str | None = None
        """Who logged on last (``Win32_UserProfile``'s newest LastUseTime): kept at logoff."""
        self.task_start_delay_s = 0.0
        """Start-ScheduledTask is asynchronous: the instance appears this much later."""
        self.task_stop_settle_s = 0.0
        """After Stop-ScheduledTask the task still reads Running this long."""
        self.closes_console_after_s: float | None = None
        """The user closes a batch task's console window this long after it appears (a window
        they did not expect): cmd.exe and CPUU, attached to that console, end with
        STATUS_CONTROL_C_EXIT (assumption: CPUU is a console program; were it a GUI one, it
        would live on as an orphan, which the kill of the tree also covers)."""
        self._sids: dict[str, str] = {}
        from cpuu_fleet.lab.mailprofiles import MailSetup  # builds on this module's types

        self.mail = MailSetup()
        """Where profiles point, and each user's hive (what ``audit`` reads)."""
        self._orphans: list[Process] = []
        """CPUU processes whose task ended without them (a plain stop, an unregister): they go
        on changing profiles until they finish or are killed."""

    def __repr__(self) -> str:
        return f"Workstation({self.name!r}, user={self.interactive_user!r})"

    # ---------------------------------------------------------------- time

    def now(self) -> float:
        return self.clock()

    def refresh(self) -> None:
        """Apply what simulated time has brought: logons that were due (:meth:`logon_at`), then
        the end of every task whose work is over. Call before looking at the state."""
        with self.lock:
            now = self.clock()
            due = [entry for entry in self._pending_logons if entry[0] <= now]
            if due:
                self._pending_logons = [e for e in self._pending_logons if e[0] > now]
                for _, user in sorted(due):
                    self.logon(user)
            for task in self.tasks.values():
                self._refresh_task(task, now)
            for orphan in list(self._orphans):
                work = orphan.work
                if work is not None and work.finish_at is not None and now >= work.finish_at:
                    self._orphans.remove(orphan)
                    self._drop_process(orphan.pid)
                    work.complete()  # nobody reads its exit code: the profiles changed all the same

    def _refresh_task(self, task: ScheduledTask, now: float) -> None:
        if task.settles_at is not None and now >= task.settles_at:
            task.settles_at = None
        if task.launch_at is not None and now >= task.launch_at:
            task.launch_at = None
            user = self.session_user(task.user)
            if user is not None:
                self._launch(task, user)
        process = task.process
        if process is None:
            return
        ends, limit_at = process.finish_at, task.limit_at
        closed_at = self._console_closed_at(task)
        if closed_at is not None and now >= closed_at and (ends is None or ends > closed_at):
            self._close_console(task)
        elif limit_at is not None and now >= limit_at and (ends is None or ends > limit_at):
            self._end_task(task)  # as Stop-ScheduledTask: the engine process only
        elif ends is not None and now >= ends:
            self._drop_task_processes(task)
            task.process = None
            task.last_result = process.complete()
            self._remember_run(task)

    # ---------------------------------------------------------------- users and profiles

    def logon(self, user: str) -> None:
        """``user`` logs on at the console; at-logon tasks for them start now."""
        with self.lock:
            self.refresh()
            if self.interactive_user is not None and not _same_user(self.interactive_user, user):
                self.logoff()
            self.interactive_user = user
            self.console_logon_time = self.clock()
            self.usual_user = self.usual_user or user
            self._logged_on(user)

    def rdp_logon(self, user: str) -> Session:
        """``user`` logs on over Remote Desktop (a new session beside the console's); at-logon
        tasks for them start now, as a logon trigger fires for remote logons too."""
        with self.lock:
            self.refresh()
            found = self._remote_session(user)
            if found is not None:
                return found
            session = Session(user, self._next_session_id, "rdp", self.clock())
            self._next_session_id += 1
            self.remote_sessions.append(session)
            self._logged_on(user)
            return session

    def rdp_disconnect(self, user: str, disconnected: bool = True) -> None:
        """The RDP user's client goes away without a logoff (or, ``False``, reconnects): the
        session and its processes stay; no logon trigger fires either way."""
        with self.lock:
            session = self._remote_session(user)
            if session is not None:
                at = self.remote_sessions.index(session)
                self.remote_sessions[at] = replace(session, disconnected=disconnected)

    def rdp_logoff(self, user: str) -> None:
        """The RDP user logs off: their session's processes and tasks end."""
        with self.lock:
            self.refresh()
            session = self._remote_session(user)
            if session is None:
                return
            self._end_session_of(user)
            self.remote_sessions.remove(session)

    def _remote_session(self, user: str) -> Session | None:
        return next((s for s in self.remote_sessions if _same_user(s.user, user)), None)

    def sessions(self) -> list[Session]:
        """Every interactive session with a shell: the console's first (when its explorer.exe
        runs), then the RDP sessions in the order they began."""
        with self.lock:
            found = []
            if self.interactive_user is not None and self.shell_running:
                found.append(Session(self.interactive_user, 1, "console", self.console_logon_time))
            return found + list(self.remote_sessions)

    def session_user(self, principal: str) -> str | None:
        """The logged-on user (any session) a task principal names: the console's first."""
        users = [self.interactive_user] if self.interactive_user is not None else []
        users += [s.user for s in self.remote_sessions]
        return next((u for u in users if self._principal_matches(principal, u)), None)

    def _logged_on(self, user: str) -> None:
        """What any logon does: the last user, the profile, the at-logon tasks for them."""
        self.last_user = user
        self.profiles_of(user)
        now = self.clock()
        for task in self.tasks.values():
            expired = task.end_boundary is not None and now > task.end_boundary
            if (
                task.trigger != "AtLogon"
                or not task.enabled
                or task.running
                or expired
                or not self._principal_matches(task.user, user)
            ):
                continue
            replay = task.ran_for.get(user.casefold()) if task.once_per_user else None
            if replay is not None:  # the wrapper finds its per-user file: no CPUU
                task.last_run_time = _utc(now)
                task.last_result = replay
                continue
            self._launch(task, user)

    def logon_at(self, when: float, user: str | None = None) -> None:
        """Schedule a console logon at clock time ``when`` (default: the usual user), applied
        lazily like everything else: plays "the user comes in later" for at-logon tasks."""
        who = user or self.usual_user
        if who is None:
            raise ValueError(f"{self.name}: nobody to log on")
        with self.lock:
            self._pending_logons.append((when, who))

    def logoff(self) -> None:
        """The user logs off: their processes end, tasks running in their session are killed."""
        with self.lock:
            self.refresh()
            user = self.interactive_user
            if user is None:
                return
            self._end_session_of(user)
            self.interactive_user = None

    def _end_session_of(self, user: str) -> None:
        """A session ends: tasks running in it are killed, its processes go."""
        for task in self.tasks.values():
            if task.running and _same_user(task.run_as, user):
                self._kill(task)
        for orphan in [p for p in self._orphans if _same_user(p.user, user)]:
            self._orphans.remove(orphan)
            if orphan.work is not None:
                orphan.work.kill()
        self.processes = [p for p in self.processes if not _same_user(p.user, user)]

    def add_profile(self, user: str, profile: OutlookProfile) -> OutlookProfile:
        with self.lock:
            self.profiles.setdefault(user, []).append(profile)
            return profile

    def profiles_of(self, user: str) -> list[OutlookProfile]:
        """The user's profiles (the live list: the emulator edits it under the lock)."""
        with self.lock:
            for known, profiles in self.profiles.items():
                if _same_user(known, user):
                    return profiles
            return self.profiles.setdefault(user, [])

    def profile(self, user: str, name: str) -> OutlookProfile | None:
        with self.lock:
            return next((p for p in self.profiles_of(user) if p.name == name), None)

    # ---------------------------------------------------------------- processes

    def start_process(
        self, name: str, user: str | None = None, *, locks_ost: bool = False, stoppable=True
    ) -> Process:
        with self.lock:
            self._next_pid += 4
            process = Process(name, self._next_pid, user, locks_ost, stoppable)
            self.processes.append(process)
            return process

    def running(self, name: str) -> list[Process]:
        """Processes by image name without ``.exe``, ignoring case (``Get-Process -Name``)."""
        wanted = name.casefold().removesuffix(".exe")
        with self.lock:
            return [p for p in self.processes if p.name.casefold() == wanted]

    def stop_processes(self, names: Iterable[str]) -> list[Process]:
        """Stop the stoppable processes with these names; return the ones that would not stop."""
        wanted = {n.casefold().removesuffix(".exe") for n in names}
        with self.lock:
            refused = [p for p in self.processes if p.name.casefold() in wanted and not p.stoppable]
            self.processes = [
                p for p in self.processes if p.name.casefold() not in wanted or not p.stoppable
            ]
            return refused

    @property
    def ost_locked(self) -> bool:
        with self.lock:
            return any(p.locks_ost for p in self.processes)

    # ---------------------------------------------------------------- open files

    def hold_file(
        self,
        path: str,
        by: str = "MsMpEng",
        *,
        share_read: bool = False,
        share_delete: bool = False,
        until: float | None = None,
    ) -> FileHold:
        """Another process opens ``path`` (by default exclusively, for good: see :class:`FileHold`)."""
        with self.lock:
            hold = FileHold(path, by, share_read, share_delete, until)
            self.file_holds.append(hold)
            return hold

    def release_file(self, path: str) -> None:
        """Every process holding ``path`` closes it."""
        with self.lock:
            key = _path_key(path)
            self.file_holds = [h for h in self.file_holds if _path_key(h.path) != key]

    def _holds(self, path: str) -> list[FileHold]:
        now = self.clock()
        key = _path_key(path)
        with self.lock:
            self.file_holds = [h for h in self.file_holds if h.until is None or h.until > now]
            return [h for h in self.file_holds if wildcard_match(_path_key(h.path), key)]

    def read_locked(self, path: str) -> bool:
        """Opening ``path`` for reading fails with a sharing violation (ERROR_SHARING_VIOLATION)."""
        return any(not h.share_read for h in self._holds(path))

    def in_use(self, path: str) -> bool:
        """Replacing or moving over ``path`` fails: a holder does not share delete access."""
        return any(not h.share_delete for h in self._holds(path))

    # ---------------------------------------------------------------- a local user's access

    def user_sids(self, user: str) -> frozenset[str]:
        """The SIDs in a standard user's token: its own and BUILTIN\\Users."""
        return frozenset({self.sid_of(user), USERS_GROUP_SID})

    def can_read(self, user: str, path: str) -> bool:
        """May this local (non-admin) user read ``path``, as the file system's ACLs say?"""
        return self.fs.allowed(path, self.user_sids(user), write=False)

    def can_write(self, user: str, path: str) -> bool:
        """May this local user write ``path`` (create it, when it does not exist yet)?"""
        return self.fs.allowed(path, self.user_sids(user), write=True)

    def user_writes(self, user: str, path: str, data: bytes | None = None) -> None:
        """A local user creates a folder (``data`` None) or writes a file, as Explorer would:
        refused (``PermissionError``) where the ACLs do not let them; what they create, they own."""
        with self.lock:
            if not self.can_write(user, path):
                raise PermissionError(errno.EACCES, "Access to the path is denied.", path)
            new = not self.fs.exists(path)
            if data is None:
                self.fs.mkdir(path)
            else:
                self.fs.write_bytes(path, data)
            if new:
                self.fs.set_acl(path, Acl(owner=self.sid_of(user)))

    # ---------------------------------------------------------------- accounts

    def sid_of(self, user: str) -> str:
        """The account's SID, as ``GetOwnerSid`` or ``Win32_UserProfile`` report it (stable per
        name). Entra ID users (``AzureAD\\Name``) get an ``S-1-12-1-`` SID, as on Windows."""
        with self.lock:
            key = user.casefold()
            sid = self._sids.get(key)
            if sid is None:
                digest = hashlib.sha256(key.encode("utf-8")).digest()
                parts = [int.from_bytes(digest[i : i + 4], "big") for i in range(0, 16, 4)]
                if key.startswith("azuread\\"):
                    sid = "S-1-12-1-" + "-".join(str(p) for p in parts)
                else:
                    sid = (
                        "S-1-5-21-"
                        + "-".join(str(p) for p in parts[:3])
                        + f"-{1000 + parts[3] % 9000}"
                    )
                self._sids[key] = sid
            return sid

    def account_of(self, sid: str) -> str | None:
        """The account name a SID belongs to (None: unknown here)."""
        with self.lock:
            return next((u for u, s in self._sids.items() if s.casefold() == sid.casefold()), None)

    def can_map(self, principal: str) -> bool:
        """Can Task Scheduler map this principal to a SID? Not ``AzureAD\\Name`` (0x80070534)."""
        return not principal.casefold().startswith("azuread\\")

    def _principal_matches(self, principal: str, user: str) -> bool:
        if principal in (USERS_GROUP, USERS_GROUP_SID):
            return True
        if principal.upper().startswith("S-1-"):
            return principal.casefold() == self.sid_of(user).casefold()
        return _same_user(principal, user)

    # ---------------------------------------------------------------- process tree

    def process(self, pid: int) -> Process | None:
        with self.lock:
            return next((p for p in self.processes if p.pid == pid), None)

    def descendants(self, pid: int) -> list[Process]:
        """Every live process whose ``ParentProcessId`` chain leads to ``pid``, children first."""
        with self.lock:
            self.refresh()
            found: list[Process] = []
            parents = {pid}
            while True:
                children = [p for p in self.processes if p.parent_pid in parents and p not in found]
                if not children:
                    return found
                found.extend(children)
                parents = {p.pid for p in children}

    def terminate_process(self, pid: int, exit_code: int = 1) -> bool:
        """``Win32_Process.Terminate`` / ``Stop-Process -Force``: this one process, never its
        children. False when no such process lives."""
        with self.lock:
            self.refresh()
            victim = self.process(pid)
            if victim is None:
                return False
            self._drop_process(pid)
            if victim in self._orphans:
                self._orphans.remove(victim)
            for task in self.tasks.values():
                if task.process is not None and task.process is victim.work:
                    # CPUU killed under a running cmd.exe: the batch file goes on and ends.
                    task.process = None
                    task.last_result = victim.work.kill()
                    task.killed = True
                    self._drop_task_processes(task)
                    self._remember_run(task)
                elif task.process is not None and task.pid == pid:
                    # cmd.exe killed: the task ends with its code, CPUU lives on.
                    self._orphan_children(task)
                    task.process = None
                    task.pid = None
                    task.last_result = exit_code
                    task.killed = True
            if victim.work is not None and not any(
                t.process is victim.work for t in self.tasks.values()
            ):
                victim.work.kill()
            return True

    def cpuu_ended(self, process: TaskProcess, at: float) -> None:
        """A CPUU process ended at clock time ``at`` (called by the process itself)."""
        with self.lock:
            span = self._open_spans.pop(process, None)
            if span is not None:
                span.end = at

    @property
    def cpuu_peak(self) -> int:
        """The most CPUU processes that ran here at one time, by the record of starts and ends
        (what ``run: {users: each, per_host: N}`` must keep at N or below)."""
        with self.lock:
            self.refresh()
            return peak_overlap(self.cpuu_spans)

    @property
    def cpuu_running(self) -> list[Process]:
        """CPUU processes alive now, whoever started them (a task, or one it left behind)."""
        with self.lock:
            self.refresh()
            return [p for p in self.processes if p.work is not None]

    def _drop_process(self, pid: int) -> None:
        self.processes = [p for p in self.processes if p.pid != pid]

    def _orphan_children(self, task: ScheduledTask) -> None:
        """The engine process ends alone: its CPUU child (if any) keeps running."""
        if task.pid is None:
            return
        for child in [p for p in self.processes if p.parent_pid == task.pid]:
            if child.work is not None:
                self._orphans.append(child)
        self._drop_process(task.pid)

    # ---------------------------------------------------------------- scheduled tasks

    def register_task(
        self,
        name: str,
        command: str,
        working_directory: str,
        *,
        user: str,
        trigger: str = "Now",
        time_limit_s: float | None = None,
        priority: int = DEFAULT_TASK_PRIORITY,
        end_boundary: float | None = None,
        once_per_user: bool = False,
    ) -> ScheduledTask:
        """Register (or replace, as ``Register-ScheduledTask -Force``) a task. ``user`` is the
        principal (a name or a SID); a name Task Scheduler cannot map raises
        :class:`AccountMappingError`."""
        if trigger not in ("Now", "AtLogon"):
            raise ValueError(f"unsupported trigger {trigger!r}")
        if not self.can_map(user):
            raise AccountMappingError("No mapping between account names and security IDs was done.")
        with self.lock:
            self.refresh()
            old = self.tasks.get(name.casefold())
            if old is not None and old.running:
                self._kill(old)
            task = ScheduledTask(
                name,
                command,
                working_directory,
                trigger,
                user,
                time_limit_s=time_limit_s,
                priority=priority,
                end_boundary=end_boundary,
                once_per_user=once_per_user,
            )
            self.tasks[name.casefold()] = task
            return task

    def task(self, name: str) -> ScheduledTask | None:
        with self.lock:
            self.refresh()
            return self.tasks.get(name.casefold())

    def start_task(self, name: str) -> ScheduledTask:
        """``Start-ScheduledTask``: run now, in the session of the principal's logged-on user.

        Asynchronous, as documented: with ``task_start_delay_s`` the instance appears that much
        later (until then the task reads Ready, 267011), and only if the user is still logged on.
        An Interactive principal whose user is not logged on cannot run (TASK_LOGON_INTERACTIVE_TOKEN
        needs an existing session): the task stays Ready and has not run.
        """
        with self.lock:
            task = self._require(name)
            if task.running or not task.enabled or task.launch_at is not None:
                return task
            if self.task_start_delay_s > 0:
                task.launch_at = self.clock() + self.task_start_delay_s
                return task
            user = self.session_user(task.user)
            if user is None:
                return task
            self._launch(task, user)
            return task

    def stop_task(self, name: str) -> ScheduledTask:
        """``Stop-ScheduledTask``: ends the process Task Scheduler started, nothing else.

        Assumption (Microsoft documents no more): for a batch file that is cmd.exe, and CPUU, its
        child, keeps running (field reports for ``schtasks /End``). LastTaskResult becomes
        267014; with ``task_stop_settle_s`` the task still reads Running that long.
        """
        with self.lock:
            task = self._require(name)
            if task.running:
                self._end_task(task)
            return task

    def disable_task(self, name: str) -> ScheduledTask:
        """``Disable-ScheduledTask``: no trigger or Start starts it any more (a start still
        pending is dropped); a running instance is not stopped."""
        with self.lock:
            task = self._require(name)
            task.enabled = False
            task.launch_at = None
            return task

    def task_engine_pid(self, name: str) -> int | None:
        """``IRunningTask.EnginePID`` of the task's running instance (None: not running)."""
        with self.lock:
            task = self.tasks.get(name.casefold())
            self.refresh()
            return task.pid if task is not None and task.running else None

    def unregister_task(self, name: str) -> bool:
        """``Unregister-ScheduledTask``: the definition is deleted; a running instance is NOT
        stopped (Microsoft documents nothing of the kind): its processes live on. False if
        unknown."""
        with self.lock:
            self.refresh()
            task = self.tasks.get(name.casefold())
            if task is None:
                return False
            if task.running:
                for process in self.processes:
                    if process.work is not None and process.work is task.process:
                        self._orphans.append(process)
            del self.tasks[name.casefold()]
            return True

    def _require(self, name: str) -> ScheduledTask:
        self.refresh()
        task = self.tasks.get(name.casefold())
        if task is None:
            raise KeyError(name)
        return task

    def _launch(self, task: ScheduledTask, user: str) -> None:
        task.killed = False
        task.run_as = user
        task.started_at = self.clock()
        task.last_run_time = _utc(task.started_at)
        task.last_result = TASK_RUNNING
        process = self._launcher(self, task, user)
        cpuu = _runs_cpuu(process)
        if cpuu:
            self._note_cpuu_start(task, user, process)
        if task.once_per_user:
            task.ran_for[user.casefold()] = TASK_TERMINATED  # the wrapper's file, before CPUU
        if process.finish_at is not None and process.finish_at <= self.clock():
            task.last_result = process.complete()
            self._remember_run(task)
            return
        task.process = process
        batch = _is_batch(task.command)
        engine = self.start_process(CMD_NAME if batch else CPUU_PROCESS_NAME, user)
        task.pid = engine.pid
        if batch and cpuu:
            child = self.start_process(CPUU_PROCESS_NAME, user)
            child.parent_pid = engine.pid
            child.work = process
        else:
            engine.work = process

    def _remember_run(self, task: ScheduledTask) -> None:
        if task.once_per_user and task.run_as is not None:
            task.ran_for[task.run_as.casefold()] = task.last_result

    def _note_cpuu_start(self, task: ScheduledTask, user: str, process: TaskProcess) -> None:
        start = CpuuStart(self.name, task.name, user, task.trigger, _utc(self.clock()).isoformat())
        self.cpuu_starts.append(start)
        span = CpuuSpan(user, self.clock())
        self.cpuu_spans.append(span)
        self._open_spans[process] = span
        if self.on_cpuu_start is not None:
            self.on_cpuu_start(start)

    def _end_task(self, task: ScheduledTask) -> None:
        """Task Scheduler ends the run (a stop, the time limit): the engine process only."""
        process = task.process
        task.process = None
        if process is None:
            return
        engine = self.process(task.pid) if task.pid is not None else None
        if engine is not None and engine.work is process:
            engine.work.kill()  # CPUU was the task's own process: it ends
        self._orphan_children(task)
        task.pid = None
        task.last_result = TASK_TERMINATED
        task.killed = True
        if self.task_stop_settle_s > 0:
            task.settles_at = self.clock() + self.task_stop_settle_s

    def _drop_task_processes(self, task: ScheduledTask) -> None:
        """The run ended on its own (or its whole session did): its processes are gone."""
        if task.pid is None:
            return
        gone = {task.pid} | {p.pid for p in self.processes if p.parent_pid == task.pid}
        self.processes = [p for p in self.processes if p.pid not in gone]
        task.pid = None

    def _console_closed_at(self, task: ScheduledTask) -> float | None:
        """When the user closes this run's console window (only a batch file has one)."""
        if self.closes_console_after_s is None or task.started_at is None:
            return None
        if not _is_batch(task.command):
            return None
        return task.started_at + self.closes_console_after_s

    def _close_console(self, task: ScheduledTask) -> None:
        """The user closed the console window: cmd.exe and CPUU end where they are."""
        process = task.process
        task.process = None
        self._drop_task_processes(task)
        if process is not None:
            process.kill()
            task.last_result = STATUS_CONTROL_C_EXIT
            self._remember_run(task)

    def _kill(self, task: ScheduledTask) -> None:
        """The whole session's processes end (a logoff): CPUU too, exit 1."""
        process = task.process
        task.process = None
        self._drop_task_processes(task)
        if process is not None:
            task.last_result = process.kill()
            task.killed = True
            self._remember_run(task)


def _is_batch(command: str) -> bool:
    """Does Task Scheduler start cmd.exe for this action (a ``.bat``/``.cmd`` program)?"""
    from cpuu_fleet.lab.cpuu_emulator import split_program

    program, _ = split_program(command)
    return program.lower().endswith((".bat", ".cmd"))


def _runs_cpuu(process: TaskProcess) -> bool:
    """Did this task action start CPUU itself (not a batch file that never reached it)?"""
    # Imported here, as the default launcher: the emulator builds on this module's types.
    from cpuu_fleet.lab.cpuu_emulator import CpuuProcess

    return isinstance(process, CpuuProcess)
