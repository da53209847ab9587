"""The four things a wave does to a workstation: preflight, push, run, collect.

Each step takes the host's :class:`HostContext` and its open :class:`~cpuu_fleet.visit.session.HostSession`
and returns a typed result; a failure is a :class:`~cpuu_fleet.visit.session.SessionError` (the per-host
pipeline in ``host_visit.py`` turns it into the host's state). The remote side of each step is one
script of ``cpuu_fleet/visit/remote/`` whose contract is ``docs/remote-scripts.md``.

Round trips are the cost that matters on a WAN with thousands of hosts, so:
* push sends every changed file through ONE ``upload`` pipeline, every WSMan Send filled (a
  chunk is cut to the room left, so headers and small files share Sends with content), and skips
  files whose SHA-256 the host already reports;
* collect lists AND downloads the new result files through ONE ``download -Directory``
  pipeline, drained as it arrives so memory stays flat (``Client.fetch`` would rebuild each
  file with quadratic work);
* run waits for CPUU inside one ``run-task -Action Run`` pipeline (the scheduled task starts in
  the interactive user's session, which WinRM's own session cannot reach), long-polling for the
  whole OperationTimeout.
A full update visit is 25 round trips (3 NTLM legs, Create + 2 Receives to open the pool, 5
pipelines of a Command and a Receive each, 8 Sends for a 2 MB payload, the Delete): finished
pipelines are not closed one by one (see ``HostSession``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from cpuu_fleet.cpuu import (
    NOT_AN_EXIT_CODE,
    TASK_TERMINATED,
    Mode,
    ProfileResult,
    ResultFile,
    parse_result_stream,
)
from cpuu_fleet.errors import InputError
from cpuu_fleet.filenames import create_exclusive, task_folder_name
from cpuu_fleet.inputs.payload import Payload
from cpuu_fleet.inputs.playbook import RunOptions
from cpuu_fleet.journal import Journal, utcnow
from cpuu_fleet.limits import DEFAULT_LIMITS, Limits, describe_size
from cpuu_fleet.redact import REDACTOR, printable
from cpuu_fleet.visit.outcome import RunResult
from cpuu_fleet.visit.session import HostSession, SessionError, limit_error
from cpuu_fleet.vocabulary import ErrorClass

STAGING_ROOT = "C:\\ProgramData\\cpuu-fleet"
STATE_DIR = STAGING_ROOT + "\\state"
WORK_ROOT = STAGING_ROOT + "\\work"
"""Below it, one folder per CPUU run (``run_dir``): CPUU's working directory, its user's alone."""
LOGON_USER_VAR = "cpuu_user"
"""Inventory variable: whom CPUU is for on a host, one user or a list (SIDs or ``DOMAIN\\user``):
it runs in the first of them found logged on, never as anybody else, and an at-logon task is
for the first of them. Unset: the console's user, else the one RDP user."""
MAX_OTHER_USERS = 20
"""Names of other logged-on users kept from a run-task report (an RDS host may have hundreds)."""
CLEANUP_MARKER = "cleanup-done.json"
RESULT_FILTER = "CPUU_*"
DISK_MARGIN = 1024 * 1024
"""Room left on the system drive after staging (CPUU's own log and result files need some)."""


# What one input object costs inside a WSMan Send, in bytes, as pypsrp 0.9.1 packs it: every PSRP
# message gets a 21-byte fragment header and a 40-byte message header; a string's CLIXML is
# ``<S>...</S>`` (7 bytes, base64 needs no escaping); a file header hashtable is about 320 bytes
# of CLIXML plus its path (counted 8 bytes a character: XML and _xHHHH_ escapes, UTF-8) and
# the digits of its Length. Measured with pypsrp's own Fragmenter (see the engine unit tests).
_PER_MESSAGE = 21 + 40
_STRING_CLIXML = 7
_HEADER_CLIXML = 360
_PRIVATE_CLIXML = 80
"""The ``Private = $true`` entry of a private file's header hashtable."""
_RESERVED = 128
"""Kept free in every Send: the EndOfPipelineInput message rides in whichever Send is last."""
_MIN_CHUNK = 4096
"""A Send with less room than this left is sent as it is rather than topped up with a sliver."""


def version_dir(version: str) -> str:
    return f"{STAGING_ROOT}\\{version}"


def run_dir(task_name: str) -> str:
    """The folder CPUU runs in for the run of ``task_name`` (``run-task`` makes it a copy of the
    staging folder that only SYSTEM, Administrators and the task's user may read or change), and
    so where its result files are collected from after that run."""
    return f"{WORK_ROOT}\\{task_folder_name(task_name)}"


@dataclass
class HostContext:
    """Everything the steps need about one host visit (built by ``host_visit.py``)."""

    run_id: str
    host: str
    journal: Journal
    reports_dir: Path
    payload: Payload | None = None
    rendered_files: dict[str, bytes] = field(default_factory=dict)
    """File name → bytes as they go on the wire (the rendered INI and batch files; secrets in)."""
    rendered_masked: dict[str, bytes] = field(default_factory=dict)
    """The same files with secrets masked: what may be kept on the controller."""
    version: str | None = None
    """The payload version (staging folder name); from the payload, or a previous run's."""
    stopping: threading.Event = field(default_factory=threading.Event)
    preflight: PreflightResult | None = None
    user: str | None = None
    cpuu_run_id: str | None = None
    """The run whose CPUU this visit carries on (a ``--resume``'s parent chain); None: its own."""
    cpuu_runs: tuple[str, ...] = ()
    """Every run of that CPUU run (see ``Journal.cpuu_runs``): their collected files count."""
    expected_users: tuple[str, ...] = ()
    """Whom CPUU is for (``cpuu_user``); empty: whoever is logged on (see ``LOGON_USER_VAR``)."""

    @property
    def staging(self) -> str:
        if not self.version:
            # The engine refuses run/collect without a known version before the wave, but a
            # push of rendered files alone (a play without a payload, nothing pushed before)
            # still gets here: a result of this host, not a crash of the wave.
            raise SessionError(
                ErrorClass.POLICY,
                "no payload version known for this host: push a payload first",
                transient=False,
            )
        return version_dir(self.version)

    @property
    def host_dir(self) -> Path:
        """Where this host's collected files go: ``reports/<run-id>/hosts/<host>/``."""
        return self.reports_dir / self.run_id / "hosts" / self.host


# ----------------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class PreflightResult:
    computer_name: str | None
    os_caption: str | None
    os_version: str | None
    free_bytes: int | None
    logged_on_user: str | None
    outlook_running: bool
    outlook_version: str | None
    staged_files: dict[str, str]
    """Relative path (lower-cased for comparison) → lowercase SHA-256, in the staging folder, of
    the files this visit would push (preflight hashes only those)."""
    cleanup_done: str | None
    locked: tuple[str, ...] = ()
    """Files to push that another process held open exclusively: not hashed, so pushed again."""
    sessions: tuple[dict[str, Any], ...] = ()
    """Every user with an interactive shell (``user``, ``sid``, ``kind``: console, rdp or unknown,
    ``state``: active, disconnected or None when the host could not tell, ``session_id``,
    ``logon_time``), the console's user included: RDP users are seen here only."""

    def details(self) -> dict[str, Any]:
        return {
            "computer_name": self.computer_name,
            "os": " ".join(x for x in (self.os_caption, self.os_version) if x),
            "free_bytes": self.free_bytes,
            "user": self.logged_on_user,
            "outlook_running": self.outlook_running,
            "outlook_version": self.outlook_version,
            "staged_files": len(self.staged_files),
            "cleanup_done": bool(self.cleanup_done),
            **({"locked": list(self.locked)} if self.locked else {}),
            **({"sessions": list(self.sessions)} if self.sessions else {}),
        }


MAX_SESSIONS = 500
"""Sessions kept from a preflight report (a Remote Desktop Session Host may have hundreds)."""
_SESSION_KINDS = ("console", "rdp")
_SESSION_STATES = ("active", "disconnected")
_SID = re.compile(r"S-1-[0-9]+(-[0-9]+){1,15}")


def _sessions(value: Any) -> tuple[dict[str, Any], ...]:
    """preflight's ``Sessions``, each field checked: host text bounded and printable, a kind
    we know or ``unknown``, a session id that is a number."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value[:MAX_SESSIONS]:
        if not isinstance(item, dict) or not isinstance(item.get("User"), str):
            continue
        session_id = item.get("SessionId")
        sid = item.get("Sid")
        kind = item.get("Kind")
        state = item.get("State")
        logon = item.get("LogonTime")
        found.append(
            {
                "user": printable(item["User"][:256]),
                "sid": sid if isinstance(sid, str) and _SID.fullmatch(sid) else None,
                "kind": kind if kind in _SESSION_KINDS else "unknown",
                "state": state if state in _SESSION_STATES else None,
                "session_id": session_id
                if isinstance(session_id, int) and not isinstance(session_id, bool)
                else None,
                "logon_time": printable(logon[:40]) if isinstance(logon, str) else None,
            }
        )
    return tuple(found)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _protocol_error(message: str) -> SessionError:
    return SessionError(ErrorClass.PROTOCOL, message, transient=False)


LANGUAGE_MODE_ERRORS = frozenset(
    {
        "ConstrainedLanguage",  # preflight's own check
        "MethodInvocationNotSupportedInConstrainedLanguage",  # a script that got past it
        "PropertyReferenceNotSupportedInDataSection",  # RestrictedLanguage refuses the check
        "VariableReferenceNotSupportedInDataSection",
        "ScriptsNotAllowed",  # NoLanguage
    }
)
"""Error ids that mean "this host's PowerShell is not in FullLanguage" (about_Language_Modes)."""

LANGUAGE_MODE_HELP = (
    "PowerShell on this host does not run in FullLanguage mode (ConstrainedLanguage: AppLocker"
    " or WDAC script enforcement), where the .NET calls of cpuu-fleet's scripts are refused;"
    " nothing was changed on the host. Microsoft documents FullLanguage under such a policy only"
    " for scripts the policy trusts, and cpuu-fleet sends its scripts as text over WinRM, which no"
    " allow rule or signature can cover. To include this host, have the policy owner exempt it"
    " (or the fleet account's WinRM sessions) for the wave, or set"
    " ansible_psrp_configuration_name to a session configuration whose sessions the policy lets"
    " run in FullLanguage."
)


def _staged_paths(ctx: HostContext) -> list[str]:
    """The relative paths preflight hashes: what this visit would push, nothing else."""
    return sorted({item.relative for item in outgoing_files(ctx)}, key=str.lower)


def preflight(ctx: HostContext, session: HostSession) -> PreflightResult:
    """Read-only look at the host: language mode, user, Outlook, disk, which of the files to push
    are already staged (locked ones listed apart), Cleanup marker."""
    directory = version_dir(ctx.version) if ctx.version else f"{STAGING_ROOT}\\none"
    parameters: dict[str, Any] = {"Directory": directory, "StateDirectory": STATE_DIR}
    paths = _staged_paths(ctx)
    if paths:
        parameters["Paths"] = paths
    result = session.run("preflight", parameters, during="preflight")
    data = result.first
    if not isinstance(data, dict):
        raise _protocol_error(f"preflight: expected one hashtable, got {type(data).__name__}")
    staged_raw = data.get("StagedFiles") or {}
    if not isinstance(staged_raw, dict):
        raise _protocol_error("preflight: StagedFiles is not a hashtable")
    staged = {str(k).replace("/", "\\").lower(): str(v).lower() for k, v in staged_raw.items()}
    locked_raw = data.get("Locked") or []
    if not isinstance(locked_raw, list):
        locked_raw = [locked_raw]
    free = data.get("FreeBytes")
    found = PreflightResult(
        computer_name=_text(data.get("ComputerName")),
        os_caption=_text(data.get("OSCaption")),
        os_version=_text(data.get("OSVersion")),
        free_bytes=int(free) if free is not None else None,
        logged_on_user=_text(data.get("LoggedOnUser")) or None,
        outlook_running=bool(data.get("OutlookRunning")),
        outlook_version=_text(data.get("OutlookVersion")),
        staged_files=staged,
        cleanup_done=_text(data.get("CleanupDone")) or None,
        locked=tuple(str(x) for x in locked_raw[: len(paths)] if x is not None),
        sessions=_sessions(data.get("Sessions")),
    )
    ctx.preflight = found
    ctx.user = found.logged_on_user
    return found


# ----------------------------------------------------------------------------------- push


@dataclass(frozen=True)
class OutgoingFile:
    """One file to place on the host: its relative path there and where its bytes come from."""

    relative: str
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None
    private: bool = False
    """Readable on the host by SYSTEM and Administrators only (the INI, with its secrets);
    the task's user reads ``run-task``'s copy of it in the run's own folder (``run_dir``)."""

    def open(self) -> BinaryIO:
        """A stream of the file's bytes (read piece by piece: big files never sit in memory)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.source is not None
        return self.source.open("rb")


@dataclass(frozen=True)
class PushPlan:
    directory: str
    send: tuple[OutgoingFile, ...]
    skip: tuple[OutgoingFile, ...]

    @property
    def bytes_to_send(self) -> int:
        return sum(f.size for f in self.send)

    def details(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "files_sent": [f.relative for f in self.send],
            "files_skipped": len(self.skip),
            "bytes_sent": self.bytes_to_send,
        }


@dataclass(frozen=True)
class PushResult:
    plan: PushPlan
    written: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.written)

    def details(self) -> dict[str, Any]:
        return self.plan.details()


def outgoing_files(ctx: HostContext) -> list[OutgoingFile]:
    """The payload's files plus this host's rendered INI and batch files."""
    files: list[OutgoingFile] = []
    if ctx.payload is not None:
        files.extend(
            OutgoingFile(f.relative, f.size, f.sha256, source=f.source) for f in ctx.payload.files
        )
    for name, data in ctx.rendered_files.items():
        relative = name.replace("/", "\\")
        sha = hashlib.sha256(data).hexdigest()
        files.append(OutgoingFile(relative, len(data), sha, data=data, private=_is_private(name)))
    return files


def _is_private(name: str) -> bool:
    """A rendered INI carries the play's secrets: only the task's user may read it on the host."""
    return name.lower().endswith(".ini")


def plan_push(ctx: HostContext, staged: dict[str, str] | None = None) -> PushPlan:
    """Which files must travel: those whose SHA-256 the host does not already have in place."""
    staged = staged if staged is not None else (ctx.preflight.staged_files if ctx.preflight else {})
    send: list[OutgoingFile] = []
    skip: list[OutgoingFile] = []
    for item in outgoing_files(ctx):
        (skip if staged.get(item.relative.lower()) == item.sha256 else send).append(item)
    return PushPlan(ctx.staging, tuple(send), tuple(skip))


def _header(item: OutgoingFile) -> dict[str, Any]:
    """Length goes as a string: pypsrp 0.9.1 tags every Python int as a 32-bit ``<I32>``, which
    Windows cannot deserialize for a file of 2 GiB or more; ``upload`` parses it as an int64."""
    header: dict[str, Any] = {
        "Path": item.relative,
        "Length": str(item.size),
        "Sha256": item.sha256,
    }
    if item.private:
        header["Private"] = True
    return header


def _header_cost(item: OutgoingFile) -> int:
    extra = _PRIVATE_CLIXML if item.private else 0
    return _PER_MESSAGE + _HEADER_CLIXML + extra + 8 * len(item.relative) + len(str(item.size))


def _string_cost(chars: int) -> int:
    return _PER_MESSAGE + _STRING_CLIXML + chars


def upload_input(
    files: tuple[OutgoingFile, ...], send_budget: int, *, max_chunk: int | None = None
) -> Iterator[list[Any]]:
    """Pipeline input for ``upload``: per file a header then its content as base64 strings.

    Each yielded list is one WSMan Send (pypsrp fragments each list on its own), filled to
    ``send_budget`` bytes of PSRP data (``HostSession.max_payload_size``): a chunk is cut to the
    room left in the current Send, so a file's header, the start of its content and the small
    files after it share Sends. The fewest Sends the bytes allow: a 2 MB payload with its INI and
    batch files goes in 8 instead of 9 with fixed-size chunks (whose header rode alone).
    ``max_chunk`` caps the raw bytes of one string (tests; the host holds one string at a time).
    """
    budget = send_budget - _RESERVED
    if _string_cost(4) > budget:
        raise ValueError(f"a Send of {send_budget} bytes cannot carry any file content")
    batch: list[Any] = []
    used = 0
    for item in files:
        cost = _header_cost(item)
        if batch and used + cost > budget:
            yield batch
            batch, used = [], 0
        batch.append(_header(item))
        used += cost
        with item.open() as stream:
            while True:
                raw = (budget - used - _string_cost(0)) // 4 * 3
                if max_chunk is not None:
                    raw = min(raw, max_chunk)
                if batch and raw < min(_MIN_CHUNK, max_chunk or _MIN_CHUNK):
                    yield batch
                    batch, used = [], 0
                    continue
                block = stream.read(raw)
                if not block:
                    break
                encoded = base64.b64encode(block).decode("ascii")
                batch.append(encoded)
                used += _string_cost(len(encoded))
    if batch:
        yield batch


UNTRUSTED_STAGING_HELP = (
    "the host's staging folder was created by an account other than SYSTEM or Administrators"
    " (a local user may have placed files in it to run in another user's session): nothing was"
    " pushed to or run from it. Have an administrator inspect and delete it, then run again"
)


UNMAPPED_USER_HELP = (
    "the logged-on user's account cannot be translated to a SID and no explorer.exe of theirs"
    " runs yet to read it from (a session still starting, an Entra ID or deleted account):"
    " nothing was started; retried later in the wave, then by --retry-failed"
)


def explain(error: SessionError) -> SessionError:
    """A remote error an operator can act on, said as what it means and what to do.

    One table for every step and script (the scripts' error ids are their contract): the host's
    language mode (any script may meet it; preflight checks it first), a staging folder we
    refuse to use (upload and run-task check it) and a logged-on user run-task cannot name to
    Task Scheduler yet. Any other error is returned unchanged.
    """
    transient = False
    if error.error_id == "UntrustedStaging":
        error_class, help_text, error_id = ErrorClass.POLICY, UNTRUSTED_STAGING_HELP, error.error_id
    elif error.error_id == "UnmappedUser":
        error_class, help_text, error_id = ErrorClass.REMOTE, UNMAPPED_USER_HELP, error.error_id
        transient = True  # the shell comes up within seconds of a logon
    elif error.error_id in LANGUAGE_MODE_ERRORS:
        error_class, help_text, error_id = (
            ErrorClass.REMOTE,
            LANGUAGE_MODE_HELP,
            "ConstrainedLanguage",
        )
    else:
        return error
    return SessionError(
        error_class, f"{help_text} ({error.message})", transient=transient, error_id=error_id
    )


def upload(
    session: HostSession,
    directory: str,
    files: tuple[OutgoingFile, ...],
    *,
    during: str = "push",
    deadline: float | None = None,
) -> tuple[str, ...]:
    """Send files into ``directory`` on the host through one ``upload`` pipeline."""
    if not files:
        return ()
    result = session.run(
        "upload",
        {"Directory": directory, "Root": STAGING_ROOT},
        input=upload_input(files, session.max_payload_size),
        deadline=deadline,
        during=during,
    )
    written: list[str] = []
    for entry, item in zip(result.output, files, strict=False):
        if not isinstance(entry, dict) or str(entry.get("Sha256", "")).lower() != item.sha256:
            raise SessionError(
                ErrorClass.REMOTE,
                f"{during}: the host did not confirm {item.relative!r} with the right SHA-256",
                transient=False,
            )
        written.append(item.relative)
    if len(written) != len(files):
        raise _protocol_error(f"{during}: {len(files)} files sent, {len(written)} confirmed")
    return tuple(written)


def push(ctx: HostContext, session: HostSession, plan: PushPlan | None = None) -> PushResult:
    """Place the payload and the rendered files in the versioned staging folder, changed files only.

    When preflight reported less free space than the files need, nothing is sent: the upload
    would fail part-way anyway, after costing the bandwidth.
    """
    plan = plan or plan_push(ctx)
    free = ctx.preflight.free_bytes if ctx.preflight is not None else None
    if free is not None and plan.send and plan.bytes_to_send + DISK_MARGIN > free:
        raise SessionError(
            ErrorClass.REMOTE,
            f"push: There is not enough space on the disk: {plan.bytes_to_send:,} bytes to stage"
            f" (+{DISK_MARGIN:,} margin), {free:,} free",
            transient=False,
            error_id="DiskFull",
        )
    written = upload(session, plan.directory, plan.send)
    return PushResult(plan, written)


# ----------------------------------------------------------------------------------- run


def task_name_for(run_id: str, mode: Mode) -> str:
    """The scheduled task's name: unique per run and mode, recorded before it is registered."""
    return f"cpuu-fleet {mode.value} {run_id}"


def is_task_of(task_name: str, mode: Mode) -> bool:
    """Was this task (named by :func:`task_name_for`) registered for ``mode``?"""
    return task_name.startswith(f"cpuu-fleet {mode.value} ")


def undo_refusal(ctx: HostContext) -> str | None:
    """Why Undo must not run here: Cleanup succeeded (journal, or the host's own marker)."""
    earlier = ctx.journal.cleanup_succeeded(ctx.host)
    if earlier:
        return f"Undo refused: Cleanup succeeded on this host in run {earlier} (journal)"
    if ctx.preflight is not None and ctx.preflight.cleanup_done:
        return "Undo refused: the host's cleanup-done marker says Cleanup succeeded"
    return None


def _resumed(data: dict[str, Any], resumed: str | None) -> str | None:
    """How a call that did not start CPUU found it (None: this call started it)."""
    if resumed is not None or data.get("Claimed") or not data.get("Marker"):
        return resumed
    return "waited" if data.get("Waited") else "finished"


def _other_users(value: Any) -> tuple[str, ...]:
    """run-task's ``OtherUsers``: names from the host, so bounded and made printable."""
    if not isinstance(value, list):
        return ()
    return tuple(printable(v[:256]) for v in value[:MAX_OTHER_USERS] if isinstance(v, str))


def read_task_report(
    data: Any, task_name: str, when_no_user: str, seconds: float, resumed: str | None = None
) -> RunResult:
    """What ``run-task``'s report says became of CPUU: the one reading of it (a run, a resume, an
    at-logon task looked at by a later collect), so a kill or a missing start reads alike."""
    if not isinstance(data, dict):
        raise _protocol_error(f"run: expected one hashtable, got {type(data).__name__}")
    user = _text(data.get("User"))
    started_at = _text(data.get("StartedAt"))
    resumed = _resumed(data, resumed)
    others = _other_users(data.get("OtherUsers"))
    if data.get("NoUser") and not data.get("Exists") and not data.get("Marker"):
        return RunResult(
            task_name,
            no_user=True,
            seconds=seconds,
            resumed=resumed,
            other_users=others,
            disconnected=_other_users(data.get("Disconnected")),
        )
    if data.get("NotStarted"):
        # Start-ScheduledTask is asynchronous and the instance never came up (its user logged
        # off in between, the Task Scheduler was busy): the host disabled the task and keeps the
        # marker, so no call starts it again. Not a transient timeout: a retry would only wait.
        raise SessionError(
            ErrorClass.CPUU,
            "run: the task was started but CPUU never came up within the start grace period"
            " (did the user log off?); the task was disabled and CPUU is not started again for"
            " this run: check the host",
            transient=False,
        )
    last = data.get("LastTaskResult")
    not_yet = last is None or int(last) in NOT_AN_EXIT_CODE
    at_logon = data.get("Trigger") == "AtLogon" or (
        data.get("NoUser") and when_no_user == "at_logon"
    )
    if at_logon and not_yet and not data.get("Killed"):
        return RunResult(
            task_name,
            pending=True,
            no_user=True,
            user=user,
            seconds=seconds,
            resumed=resumed,
            started_at=started_at,
            other_users=others,
        )
    if data.get("Killed") and data.get("Settled") is False:
        # The kill was sent but the task (or a process it started) still lived when the host
        # stopped waiting for it: CPUU may still be changing profiles.
        raise SessionError(
            ErrorClass.CPUU,
            f"run: CPUU was killed on its deadline but its task still reads"
            f" {data.get('State') or 'Running'}: CPUU may still be running; not started again,"
            " check the host",
            transient=False,
        )
    if data.get("Killed"):
        # Killed on its deadline (by a Wait, maybe a controller ago) or by the time limit: never
        # success, whatever the exit code (CPUU's 1, or Task Scheduler's 267014).
        return RunResult(
            task_name,
            ran=True,
            exit_code=TASK_TERMINATED if not_yet else int(last),  # type: ignore[arg-type]
            killed=True,
            user=user,
            seconds=seconds,
            resumed=resumed,
            started_at=started_at,
        )
    state = str(data.get("State") or "")
    if data.get("Marker") and not data.get("Exists") and not_yet:
        # Started (the marker says so) and the task is gone with no exit code recorded: CPUU
        # may have run. Never started again; the operator must look at the host.
        raise SessionError(
            ErrorClass.CPUU,
            f"run: CPUU was started on this host for this run (at {started_at or 'an unknown time'})"
            " but its task is gone without an exit code: not started again; check the host",
            transient=False,
        )
    if state in ("Running", "Queued") or not_yet:
        raise SessionError(
            ErrorClass.TIMEOUT,
            f"run: the task is still {state or 'unfinished'} (no exit code yet)",
        )
    return RunResult(
        task_name,
        ran=True,
        exit_code=int(last),  # type: ignore[arg-type]
        user=user,
        seconds=seconds,
        resumed=resumed,
        started_at=started_at,
    )


def _client_deadline(session: HostSession, timeout_s: float) -> float:
    """Our own bound on a Wait: the remote timeout plus time to stop the task and answer."""
    return time.monotonic() + timeout_s + session.operation_timeout + 30


def cpuu_task_name(ctx: HostContext, mode: Mode) -> str:
    """The task of this run's CPUU on this host: a ``--resume`` uses the name of the run it
    carries on, so the host's marker recognises the run and never starts CPUU again."""
    return task_name_for(ctx.cpuu_run_id or ctx.run_id, mode)


def run_cpuu(
    ctx: HostContext,
    session: HostSession,
    options: RunOptions,
    task_name: str | None = None,
    *,
    users: tuple[str, ...] | None = None,
) -> RunResult:
    """Run the mode's batch file as the logged-on user through a one-shot scheduled task.

    Safe to call again for the same run, by anyone: the host's ``run-task`` claims the run with
    a marker file created only if absent, so a second call (a retry, ``--resume``, a second
    controller) waits for or reads the first one's CPUU instead of starting another. The task
    name is also written to the journal *before* the call, so what the controller knew survives
    its death. ``users`` overrides whom it is for (``-ExpectedUser``): one user's own run.
    """
    mode, when_no_user, timeout_s = options.mode, options.when_no_user, float(options.timeout)
    task_name = task_name or cpuu_task_name(ctx, mode)
    refusal = _refusal(ctx, mode)
    if refusal:
        return RunResult(task_name, refused=refusal)
    ctx.journal.set_host(ctx.run_id, ctx.host, task_name=task_name)
    started = time.monotonic()
    parameters = _task_parameters(ctx, options, task_name, "Run", users)
    result = session.run(
        "run-task",
        parameters,
        deadline=_client_deadline(session, timeout_s),
        during=f"run {mode.value}",
        abandon=ctx.stopping,
    )
    run = read_task_report(result.first, task_name, when_no_user, time.monotonic() - started)
    return _as_run(ctx, run, parameters)


def _refusal(ctx: HostContext, mode: Mode) -> str | None:
    return undo_refusal(ctx) if mode is Mode.UNDO else None


def _as_run(ctx: HostContext, run: RunResult, parameters: dict[str, Any]) -> RunResult:
    run = replace(run, expected=tuple(parameters.get("ExpectedUser", ())))
    if run.user:
        ctx.user = run.user
    return run


def _task_parameters(
    ctx: HostContext,
    options: RunOptions,
    task_name: str,
    action: str,
    users: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """run-task's parameters for a ``Run`` or a ``Start`` of this run's task (one definition)."""
    folder = run_dir(task_name)
    parameters: dict[str, Any] = {
        "Action": action,
        "TaskName": task_name,
        "Command": f"{folder}\\{options.command}",
        "WorkingDirectory": folder,
        "SourceDirectory": ctx.staging,
        "WhenNoUser": "AtLogon" if options.when_no_user == "at_logon" else "Skip",
        "Disconnected": "Run" if options.disconnected == "run" else "Skip",
        "TimeoutSeconds": int(options.timeout),
        "StateDirectory": STATE_DIR,
    }
    expected = ctx.expected_users if users is None else users
    if expected:
        parameters["ExpectedUser"] = list(expected)
    return parameters


@dataclass(frozen=True)
class StartedRun:
    """A detached run step's first half: CPUU's task was started (or found running) on the host
    and the host released; the runner settles it later (:func:`task_active`, then ``Run``)."""

    task_name: str
    started_at: str | None
    """The marker's ``StartedAt`` (host clock): the host's deadline counts from it."""
    user: str | None = None
    claimed: bool = True
    """This ``Start`` claimed the run (False: it found a run an earlier call had started)."""


def task_active(data: Any) -> bool:
    """Does a ``Start`` or ``Status`` report say CPUU's task is still at work (running, queued,
    or started on demand and not come up yet)? Anything else (ended, killed, pending at logon,
    never came up, gone) is for ``Run`` and :func:`read_task_report` to read."""
    if not isinstance(data, dict) or not data.get("Exists") or not data.get("Marker"):
        return False
    if data.get("Killed") or data.get("NotStarted") or data.get("Trigger") == "AtLogon":
        return False
    if str(data.get("State") or "") in ("Running", "Queued"):
        return True
    last = data.get("LastTaskResult")
    return last is None or int(last) in NOT_AN_EXIT_CODE


def start_cpuu(
    ctx: HostContext,
    session: HostSession,
    options: RunOptions,
    task_name: str | None = None,
    *,
    users: tuple[str, ...] | None = None,
) -> RunResult | StartedRun:
    """The detached run step's first half: claim and start CPUU's task (``run-task -Action
    Start``, never twice: the same marker as :func:`run_cpuu`) and return at once.

    A :class:`StartedRun` when CPUU is at work; a :class:`RunResult` when there is nothing to
    wait for (nobody logged on, pending at logon, refused, or a run that already ended).
    ``task_name`` and ``users`` as for :func:`run_cpuu` (one user's own run).
    """
    mode = options.mode
    task_name = task_name or cpuu_task_name(ctx, mode)
    refusal = _refusal(ctx, mode)
    if refusal:
        return RunResult(task_name, refused=refusal)
    ctx.journal.set_host(ctx.run_id, ctx.host, task_name=task_name)
    started = time.monotonic()
    parameters = _task_parameters(ctx, options, task_name, "Start", users)
    result = session.run("run-task", parameters, during=f"start {mode.value}")
    data = result.first
    if task_active(data):
        user = _text(data.get("User"))
        if user:
            ctx.user = user
        return StartedRun(task_name, _text(data.get("StartedAt")), user, bool(data.get("Claimed")))
    run = read_task_report(data, task_name, options.when_no_user, time.monotonic() - started)
    return _as_run(ctx, run, parameters)


def task_status(
    session: HostSession, task_name: str, *, remove_ended: bool = False
) -> dict[str, Any]:
    """``run-task -Action Status``. ``remove_ended``: a run that is over is also unregistered in
    the same pipeline, after the report was read (``Removed`` says so): a settling visit needs
    no second ``run-task`` call for the task's removal."""
    parameters: dict[str, Any] = {"Action": "Status", "TaskName": task_name}
    parameters["StateDirectory"] = STATE_DIR
    if remove_ended:
        parameters["RemoveEnded"] = True
    result = session.run("run-task", parameters, during="task status")
    if not isinstance(result.first, dict):
        raise _protocol_error("task status: expected one hashtable")
    return result.first


def resume_cpuu(
    ctx: HostContext, session: HostSession, options: RunOptions, task_name: str
) -> RunResult:
    """A run step that an earlier visit started and never finished: the host answers.

    The same ``Run`` call as a first start: the host's marker makes it read a finished task's
    exit code, wait for a running one (under the deadline counted from CPUU's start), or keep an
    at-logon task pending; only a task that was never claimed is started, and that is the first
    and only CPUU of the run.
    """
    run = run_cpuu(ctx, session, options, task_name)
    return run if run.resumed else replace(run, resumed="started")


def remove_task(session: HostSession, task_name: str) -> None:
    """Unregister a finished one-shot task (after its result is safely in the journal)."""
    session.run("run-task", {"Action": "Remove", "TaskName": task_name}, during="remove task")


def write_cleanup_marker(ctx: HostContext, session: HostSession, exit_code: int | None) -> None:
    """Tell the host itself that Cleanup succeeded: a later Undo is refused even without our journal."""
    data = json.dumps(
        {"run_id": ctx.run_id, "at": utcnow(), "exit_code": exit_code, "tool": "cpuu-fleet"},
        sort_keys=True,
    ).encode("utf-8")
    item = OutgoingFile(CLEANUP_MARKER, len(data), hashlib.sha256(data).hexdigest(), data=data)
    upload(session, STATE_DIR, (item,), during="cleanup marker")


# ----------------------------------------------------------------------------------- collect


@dataclass(frozen=True)
class CollectedFile:
    remote_path: str
    local_path: Path
    size: int
    sha256: str
    kind: str


@dataclass
class CollectResult:
    files: list[CollectedFile] = field(default_factory=list)
    skipped_known: int = 0
    profiles: list[ProfileResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def details(self) -> dict[str, Any]:
        return {
            "files": [f.local_path.name for f in self.files],
            "already_collected": self.skipped_known,
            "profiles": len(self.profiles),
            "problems": self.problems[:20],
        }


def _kind(name: str) -> str:
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return "result"
    if lowered.endswith(".log"):
        return "log"
    return "other"


#: ``on_file(header, local path, size, sha256)``: a downloaded file is complete on disk.
FileDone = Callable[[dict[str, Any], Path, int, str], None]


class _DownloadSink:
    """Writes the ``download`` pipeline's output objects to local files as they arrive.

    Only headers of files directly in ``directory`` are accepted, and none the engine asked to
    leave out (``excluded``): the host decides which files exist, never where they land here
    (``create_exclusive`` keeps hostile names inside the host folder). Each file is handed to
    ``on_file`` the moment it is complete, so a download that fails later loses none of the
    files before it. A header with ``Locked`` (another process holds the file exclusively) is
    noted in ``locked`` and brings no content.

    Everything the host sends is bounded (``limits``): a header must announce a ``Length`` within
    ``file_bytes``, and exactly that many bytes must follow. More is hostile (a LIMIT error at the
    first byte too many, which is never written); fewer, before the next header or the end, is a
    broken download. Either way the file is set aside as ``<name>.partial`` (:meth:`abandon`) and
    never journalled. Every registered secret is masked on the way to disk (a
    :class:`~cpuu_fleet.redact.ByteScrubber`, so a secret split between two chunks is caught too);
    the size and SHA-256 handed to ``on_file`` are those of the bytes the host sent, which its
    header's ``Sha256`` and a later collect's ``KnownSha256`` speak of."""

    def __init__(
        self,
        folder: Path,
        directory: str,
        excluded: Callable[[str], bool],
        on_file: FileDone,
        limits: Limits = DEFAULT_LIMITS,
    ):
        self.folder = folder
        self.directory = directory.rstrip("\\").lower()
        self.excluded = excluded
        self.on_file = on_file
        self.limits = limits
        self.skipped = 0
        self.scrubbed: list[str] = []
        """Names of files in which a secret was masked (the host's copy still holds it)."""
        self.locked: list[str] = []
        """Names of files another process held open exclusively: not sent, never journalled,
        so the next collect asks for them again."""
        self._fd: int | None = None
        self._path: Path | None = None
        self._entry: dict[str, Any] | None = None
        self._digest = hashlib.sha256()
        self._scrubber = REDACTOR.byte_scrubber()
        self._size = 0
        self._length = 0
        self._spoiled = False

    def __call__(self, item: Any) -> None:
        if isinstance(item, dict):
            self._finish()
            self._open(item)
            return
        if self._fd is None:
            raise _protocol_error("collect: file content arrived before its header")
        self._write(str(item))

    def _open(self, item: dict[str, Any]) -> None:
        remote = str(item.get("Path", ""))
        name = str(item.get("Name") or remote.rsplit("\\", 1)[-1])
        parent = remote.rsplit("\\", 1)[0].lower() if "\\" in remote else ""
        if parent != self.directory or self.excluded(name):
            raise _protocol_error(f"collect: the host sent a file we did not ask for: {remote!r}")
        if item.get("Locked") is True:
            self.locked.append(name)  # held exclusively on the host: header only, next time
            return
        if item.get("Skipped"):
            self.skipped += 1  # already collected (by SHA-256): header only
            return
        length = item.get("Length")
        if isinstance(length, bool) or not isinstance(length, int) or length < 0:
            raise _protocol_error(f"collect: {name!r}: the header's Length is {length!r}")
        if length > self.limits.file_bytes:
            raise limit_error(
                f"collect: {name!r} is {length:,} bytes, over the"
                f" {describe_size(self.limits.file_bytes)} a collected file may have"
                " (limits: file_size); not downloaded"
            )
        self._entry = item
        self._length = length
        self._path, self._fd = create_exclusive(self.folder, name)
        self._digest = hashlib.sha256()
        self._scrubber = REDACTOR.byte_scrubber()
        self._size = 0
        self._spoiled = False

    def _write(self, text: str) -> None:
        """One base64 chunk: checked against the announced length before it is decoded."""
        room = self._length - self._size
        if len(text) // 4 * 3 - 2 > room:  # base64 of more bytes than may still come
            self._overrun()
        block = base64.b64decode(text)
        if len(block) > room:
            self._overrun()
        self._digest.update(block)
        self._size += len(block)
        self._put(self._scrubber.feed(block))

    def _put(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def _overrun(self) -> None:
        self._spoiled = True
        assert self._entry is not None and self._path is not None
        raise limit_error(
            f"collect: {self._entry.get('Name') or self._path.name!r}: the host sent more than"
            f" the {self._length:,} bytes its header announced; stopped"
        )

    def _finish(self) -> None:
        """The open file is complete (the next header came, or the pipeline ended well)."""
        if self._fd is None:
            return
        assert self._entry is not None and self._path is not None
        if self._size != self._length:
            raise _protocol_error(
                f"collect: {self._entry.get('Name') or self._path.name!r}: the host sent"
                f" {self._size:,} of the {self._length:,} bytes its header announced"
            )
        self._put(self._scrubber.flush())
        os.close(self._fd)
        self._fd = None
        if self._scrubber.found:
            self.scrubbed.append(self._path.name)
        self.on_file(self._entry, self._path, self._size, self._digest.hexdigest())

    def close(self) -> None:
        self._finish()

    def abandon(self) -> str | None:
        """The download failed: keep the open file only if all its bytes arrived.

        A partial file is renamed ``<name>.partial`` and never journalled, so the report does not
        parse half a result file, nothing received is deleted, and the next collect fetches the
        whole file under its own name (not ``name (2)``). A file whose host sent more than it
        announced is set aside the same way, however many bytes it has. Returns a problem line
        for the report.
        """
        if self._fd is None:
            return None
        assert self._entry is not None and self._path is not None
        if self._size == self._length and not self._spoiled:
            self._finish()  # every byte arrived; the failure came after it
            return None
        self._put(self._scrubber.flush())
        os.close(self._fd)
        self._fd = None
        if self._spoiled:
            what = f"the host sent more than the {self._length:,} bytes it announced"
        else:
            what = f"download broke off after {self._size:,} of {self._length:,} bytes"
        return set_aside(self._path, what)


def set_aside(path: Path, what: str) -> str:
    """Rename a collected file that must not be journalled to ``<name>.partial``; the report line.

    Never journalled means never read by the report, and the next collect fetches it again.
    """
    partial, fd = create_exclusive(path.parent, path.name + ".partial")
    os.close(fd)
    os.replace(path, partial)
    return f"{path.name}: {what}; kept as {partial.name}, fetched again next time"


def _save_ini(ctx: HostContext, result: CollectResult) -> None:
    """Keep the INI this host received, with every secret masked (twice: renderer and redactor)."""
    for name, data in ctx.rendered_masked.items():
        if not name.lower().endswith(".ini"):
            continue
        safe = REDACTOR.scrub_bytes(data)
        sha = hashlib.sha256(safe).hexdigest()
        if any(f["sha256"] == sha for f in ctx.journal.files(ctx.run_id, ctx.host)):
            continue
        path, fd = create_exclusive(ctx.host_dir, name)
        with os.fdopen(fd, "wb") as stream:
            stream.write(safe)
        _record(ctx, result, name, path, len(safe), sha, "ini")


def _record(
    ctx: HostContext, result: CollectResult, remote: str, path: Path, size: int, sha: str, kind: str
) -> None:
    relative = path.relative_to(ctx.reports_dir.resolve()).as_posix()
    ctx.journal.add_file(
        ctx.run_id,
        ctx.host,
        kind=kind,
        remote_path=remote,
        local_path=relative,
        sha256=sha,
        size=size,
    )
    result.files.append(CollectedFile(remote, path, size, sha, kind))


#: Names never collected: what we push ourselves (CPUU_*.bat matches the result filter too).
_NOT_RESULTS = ("*.bat", "*.cmd", "*.ini", "*.exe")


def collect(
    ctx: HostContext,
    session: HostSession,
    *,
    exclude: set[str] | None = None,
    on_profiles: Callable[[list[ProfileResult]], None] | None = None,
    into: CollectResult | None = None,
    since: str | None = None,
    directory: str | None = None,
) -> CollectResult:
    """Download the CPUU result and log files that are new, parse the results, journal everything.

    After a run step (``since``: when CPUU started, by the host's clock), new means written since
    then and not already collected by this same CPUU run: each run is judged on the files its
    own CPUU wrote, even when they are byte for byte those of an earlier run (CPUU's result file
    holds no time stamp: a host that fails the same way twice writes the same bytes). Without a
    run (an ad-hoc collect), new means not collected from this host by any run yet. Files we
    pushed ourselves (the batch files match ``CPUU_*`` too) are never collected. One ``download``
    pipeline both finds the files (``-Directory``/``-Filter``) and streams the new ones: the
    host is told which names to leave out and which SHA-256s we have, so a listing never costs
    its own pipeline (two round trips and a CreatePipeline per host).

    ``directory`` is where to look: the run's own folder (``run_dir``) after a run step, else the
    staging folder (results of a CPUU that ran from it: the vendor's logon script, a hand run).

    Each file is journalled as soon as it is complete; ``into`` (the caller's result) therefore
    holds what was collected even when the download fails part-way and this raises.
    """
    result = into if into is not None else CollectResult()
    ctx.host_dir.mkdir(parents=True, exist_ok=True)
    _save_ini(ctx, result)
    pushed = {name.lower() for name in (exclude or set())}
    pushed |= {f.relative.lower() for f in outgoing_files(ctx)}
    if since is None:
        earlier = ctx.journal.files(host=ctx.host)
    else:
        runs = ctx.cpuu_runs or (ctx.run_id,)
        earlier = [f for run_id in runs for f in ctx.journal.files(run_id, ctx.host)]
        if directory:  # each CPUU run its own folder: another user's identical file is not this one
            inside = directory.rstrip("\\").lower() + "\\"
            earlier = [f for f in earlier if str(f["remote_path"]).lower().startswith(inside)]
    known = sorted({str(f["sha256"]).lower() for f in earlier})

    def excluded(name: str) -> bool:
        lowered = name.lower()
        return lowered in pushed or lowered.endswith(tuple(x[1:] for x in _NOT_RESULTS))

    def finished(entry: dict[str, Any], path: Path, size: int, sha: str) -> None:
        expected = str(entry.get("Sha256") or "").lower()
        name = str(entry.get("Name") or path.name)
        if expected and expected != sha:
            result.problems.append(f"{name}: SHA-256 differs from the host's header (kept as is)")
        kind = _kind(name)
        # Read before it is journalled: a file over the row limit is set aside, never indexed.
        parsed = _read_results(ctx, result, path, session.limits) if kind == "result" else None
        _record(ctx, result, str(entry["Path"]), path, size, sha, kind)
        if parsed is not None:
            _add_results(ctx, result, parsed)

    directory = directory or ctx.staging
    sink = _DownloadSink(ctx.host_dir, directory, excluded, finished, session.limits)
    parameters: dict[str, Any] = {
        "Directory": directory,
        "Filter": RESULT_FILTER,
        "ExcludeName": sorted(pushed) + list(_NOT_RESULTS),
        "KnownSha256": known,
        "ChunkSize": session.chunk_size,
    }
    if since:
        parameters["NewerThan"] = since
    try:
        session.run(
            "download",
            parameters,
            on_output=sink,
            during="collect (download)",
        )
        sink.close()  # the last file: its length is checked, so a short one is set aside too
    except BaseException:
        try:
            problem = sink.abandon()
        except OSError as exc:  # the original failure matters more; say what is left behind
            problem = f"collect: a partly downloaded file could not be set aside: {exc}"
        if problem:
            result.problems.append(problem)
        raise
    finally:
        result.skipped_known = sink.skipped
        result.problems.extend(
            f"{name}: held a secret of this run, masked in the stored copy (the workstation's"
            " file still holds it)"
            for name in sink.scrubbed
        )
        result.problems.extend(
            f"{name}: locked on the host (another process holds it open exclusively); not"
            " collected, fetched again next time"
            for name in sink.locked
        )
    if on_profiles is not None:
        on_profiles(result.profiles)
    return result


def _read_results(
    ctx: HostContext, result: CollectResult, path: Path, limits: Limits
) -> ResultFile | None:
    """Parse a downloaded result file within ``limits.result_rows`` (None: not a text file).

    A file with more lines is hostile or broken: it is set aside as ``<name>.partial`` (never
    journalled, never read by the report) and the host fails with class ``limit``.
    """
    relative = path.relative_to(ctx.reports_dir.resolve()).as_posix()
    try:
        with path.open("rb") as stream:
            parsed = parse_result_stream(stream, relative, max_rows=limits.result_rows)
    except InputError as exc:
        result.problems.append(exc.render())
        return None
    if parsed.truncated:
        what = f"more than {limits.result_rows:,} lines (limits: result_rows)"
        result.problems.append(set_aside(path, what))
        raise limit_error(f"collect: {path.name!r} has {what}; not read")
    return parsed


def _add_results(ctx: HostContext, result: CollectResult, parsed: ResultFile) -> None:
    for problem in parsed.problems:
        result.problems.append(f"{parsed.path}:{problem.line}: {problem.reason}")
    if parsed.profiles:
        ctx.journal.add_profiles(ctx.run_id, ctx.host, ctx.user, parsed.profiles, parsed.path)
        result.profiles.extend(parsed.profiles)
