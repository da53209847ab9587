"""The lab's stand-ins for cpuu-fleet's remote PowerShell scripts, one handler per script.

Why: the lab cannot run PowerShell, so each ``cpuu_fleet/visit/remote/<name>.ps1`` is played by the
Python function registered under the same marker name, over the workstation model. Each handler
follows ``docs/remote-scripts.md`` exactly as its script does (same output keys and types, same
FullyQualifiedErrorIds and categories), so the engine cannot tell the lab from a workstation.

Parameter binding mimics PowerShell's where the engine could get it wrong: names match ignoring
case, an unknown name is ``NamedParameterNotFound``, a missing mandatory one
``MissingMandatoryParameter``, a ValidateSet/ValidateRange violation
``ParameterArgumentValidationError``.

Importing this module registers the handlers (the protocol layer imports it).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from cpuu_fleet.lab.contract import PipelineHost, PipelineStopped, ScriptCall, ScriptFailed
from cpuu_fleet.lab.registry import register
from cpuu_fleet.lab.winfs import (
    ADMINISTRATORS_SID,
    DISK_FULL_MESSAGE,
    SYSTEM_SID,
    USERS_SID,
    Acl,
    DiskFullError,
    WindowsFS,
    join_windows,
    split_windows_path,
    wildcard_match,
)
from cpuu_fleet.lab.workstation import (
    TASK_HAS_NOT_RUN,
    TASK_RUNNING,
    TASK_TERMINATED,
    USERS_GROUP,
    USERS_GROUP_SID,
    AccountMappingError,
    ScheduledTask,
    Workstation,
)

HASH_BLOCK = 1024 * 1024
"""Bytes read at a time while hashing: files are streamed, never read whole."""
WAIT_POLL_SECONDS = 0.1
"""How often run-task's Wait looks at the task (the script polls every 2 s on Windows; the lab's
CPUU runs take fractions of a second, so it looks more often)."""
DEFAULT_CHUNK = 262144
TASK_ACTIONS = ("Start", "Wait", "Run", "Status", "Stop", "Remove")

PARAMETERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "preflight": (("Directory", "StateDirectory", "Paths"), ("Directory", "StateDirectory")),
    "upload": (("Directory", "Root", "InputObject"), ("Directory",)),
    "run-task": (
        (
            "Action",
            "TaskName",
            "Command",
            "WorkingDirectory",
            "WhenNoUser",
            "TimeoutSeconds",
            "StateDirectory",
            "ExpectedUser",
            "SourceDirectory",
            "Disconnected",
            "RemoveEnded",
        ),
        ("Action", "TaskName"),
    ),
    "list-files": (("Directory", "Filter"), ("Directory",)),
    "download": (
        ("Paths", "Directory", "Filter", "ExcludeName", "KnownSha256", "ChunkSize", "NewerThan"),
        (),
    ),
    "audit": (("MaxRows",), ()),
}
"""Each script's ``param()`` block: (every parameter, the mandatory ones). A test checks these
against the .ps1 files, so the two sides of the contract cannot drift apart."""


# --------------------------------------------------------------------------------------------------
# Parameter binding, as PowerShell does it
# --------------------------------------------------------------------------------------------------


def _bind(call: ScriptCall, script: str) -> None:
    allowed, mandatory = PARAMETERS[script]
    known = {name.lower() for name in allowed}
    for key in call.parameters:
        if key.lower() not in known:
            raise ScriptFailed(
                f"A parameter cannot be found that matches parameter name '{key}'.",
                error_id="NamedParameterNotFound",
                category="InvalidArgument",
            )
    missing = [name for name in mandatory if call.param(name) in (None, "")]
    if missing:
        raise ScriptFailed(
            "Cannot process command because of one or more missing mandatory parameters: "
            + " ".join(missing)
            + ".",
            error_id="MissingMandatoryParameter",
            category="InvalidArgument",
        )


def _invalid_argument(name: str, reason: str) -> ScriptFailed:
    return ScriptFailed(
        f"Cannot validate argument on parameter '{name}'. {reason}",
        error_id="ParameterArgumentValidationError",
        category="InvalidData",
    )


def _str(call: ScriptCall, name: str, default: str | None = None) -> str | None:
    value = call.param(name, default)
    return None if value is None else str(value)


def _choice(call: ScriptCall, name: str, choices: tuple[str, ...], default: str | None = None):
    """ValidateSet: case-insensitive, returned in the set's own spelling."""
    value = _str(call, name, default)
    if value is None:
        return None
    for choice in choices:
        if choice.lower() == value.lower():
            return choice
    raise _invalid_argument(
        name,
        f'The argument "{value}" does not belong to the set "{",".join(choices)}" specified by '
        "the ValidateSet attribute.",
    )


def _int(call: ScriptCall, name: str, default: int, low: int, high: int) -> int:
    value = call.param(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ScriptFailed(
            f"Cannot process argument transformation on parameter '{name}'. Cannot convert value "
            f'"{value}" to type "System.Int32".',
            error_id="ParameterArgumentTransformationError",
            category="InvalidData",
        ) from None
    if not low <= number <= high:
        raise _invalid_argument(name, f"The {number} argument is not in the range {low} to {high}.")
    return number


def _strings(call: ScriptCall, name: str) -> list[str]:
    value = call.param(name)
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return [str(value)]


def _get(header: Mapping, key: str) -> Any:
    """A hashtable key, ignoring case as a PowerShell hashtable does."""
    for name, value in header.items():
        if str(name).lower() == key.lower():
            return value
    return None


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _sha256_file(fs: WindowsFS, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open_read(path) as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def iso_utc(moment: datetime) -> str:
    """.NET's round-trip format ``ToString('o')`` of a UTC DateTime: 7 fraction digits and Z."""
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}0Z"


def parse_iso_utc(text: str) -> datetime:
    """.NET's round-trip time (``2025-11-21T00:00:00.0000000Z``: 7 fraction digits, which
    ``datetime.fromisoformat`` of Python 3.10 refuses) as an aware UTC datetime."""
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?", text.strip())
    if match is None:
        raise ValueError(f"not an ISO-8601 time: {text!r}")
    stamp, fraction, zone = match.groups()
    moment = datetime.fromisoformat(stamp + "." + (fraction or "0")[:6].ljust(6, "0"))
    if zone and zone != "Z":
        moment = moment.replace(tzinfo=datetime.fromisoformat("2000-01-01T00:00:00" + zone).tzinfo)
        return moment.astimezone(timezone.utc)
    return moment.replace(tzinfo=timezone.utc)


def _read_text(data: bytes) -> str:
    """As [IO.File]::ReadAllText: a BOM decides, otherwise UTF-8."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    return data.decode("utf-8-sig", errors="replace")


def _bad_path(path: str) -> ScriptFailed:
    return ScriptFailed(
        f"Illegal characters in path or unsupported path: '{path}'.",
        error_id="InvalidPath",
        category="InvalidArgument",
    )


# --------------------------------------------------------------------------------------------------
# Language mode and open files
# --------------------------------------------------------------------------------------------------

CLM_CORE_TYPES = frozenset(
    {
        "string",
        "system.string",
        "int",
        "int32",
        "system.int32",
        "long",
        "int64",
        "system.int64",
        "bool",
        "datetime",
        "system.datetime",
        "regex",
        "hashtable",
        "system.globalization.cultureinfo",
    }
)
"""Types of about_Language_Modes' ConstrainedLanguage allow-list whose static methods the
scripts might call (``[string]::IsNullOrEmpty``, ``[int64]::TryParse``, ``[DateTime]::Parse``);
everything else (``System.IO.*``, ``SHA256``, ``Convert``, ``BitConverter``) is refused."""
_STATIC_CALL = re.compile(r"\[([A-Za-z][\w.]*)\]::\w+\s*\(")
_NEW_OBJECT = re.compile(r"New-Object\s+-TypeName\s+([A-Za-z][\w.]*)", re.IGNORECASE)
_PSCMDLET_CALL = re.compile(r"\$PSCmdlet\.\w+\s*\(", re.IGNORECASE)
_MODE_CHECK = "$executioncontext.sessionstate.languagemode"
CLM_METHOD_MESSAGE = (
    "Cannot invoke method. Method invocation is supported only on core types in this language mode."
)


_BLOCK_COMMENT = re.compile(r"<#.*?#>", re.DOTALL)
_LINE_COMMENT = re.compile(r"^\s*#.*$", re.MULTILINE)


def _code_only(script: str) -> str:
    """The script without its comments (block comments and whole-line ``#`` comments, kept as
    blanks so that positions still compare): what PowerShell would run."""
    blank = _BLOCK_COMMENT.sub(lambda m: " " * len(m[0]), script)
    return _LINE_COMMENT.sub(lambda m: " " * len(m[0]), blank)


def _first_refused(script: str) -> int | None:
    """Where the script first does something ConstrainedLanguage refuses (None: nothing)."""
    found = [m.start() for m in _STATIC_CALL.finditer(script) if m[1].lower() not in CLM_CORE_TYPES]
    found += [m.start() for m in _NEW_OBJECT.finditer(script) if m[1].lower() not in CLM_CORE_TYPES]
    found += [m.start() for m in _PSCMDLET_CALL.finditer(script)]
    return min(found, default=None)


def _language_check(ws: Workstation, call: ScriptCall) -> None:
    """Play the session's language mode over the script's text, as PowerShell would run it.

    In FullLanguage nothing happens. Otherwise a script whose first statements read
    ``$ExecutionContext.SessionState.LanguageMode`` and stop with the error id
    ``ConstrainedLanguage`` (before any refused .NET call, in the text, which is also the order it
    runs in: functions are defined after the check) fails with that id; any other script fails at
    its first non-core .NET call with PowerShell's own error. Assumption: the lab reads the calls
    from the text; a static check (the static-check test) keeps the scripts' calls in the forms
    matched here.
    """
    mode = ws.language_mode
    if mode == "FullLanguage":
        return
    text = _code_only(call.script)
    refused = _first_refused(text)
    check = text.lower().find(_MODE_CHECK)
    stops = "-ErrorId 'ConstrainedLanguage'".lower() in text.lower()
    if check != -1 and stops and (refused is None or check < refused):
        raise ScriptFailed(
            f"PowerShell on {ws.name.upper()} runs in {mode} mode (AppLocker/WDAC script"
            " enforcement): the cpuu-fleet scripts need FullLanguage.",
            error_id="ConstrainedLanguage",
            category="PermissionDenied",
        )
    if refused is not None:
        raise ScriptFailed(
            CLM_METHOD_MESSAGE,
            error_id="MethodInvocationNotSupportedInConstrainedLanguage",
            category="InvalidOperation",
        )


def _hash_unless_locked(ws: Workstation, path: str) -> str | None:
    """SHA-256 of a file, or None when another process holds it exclusively (the scripts'
    ``Test-Locked``: a sharing violation is a per-file answer, not a failed step)."""
    if ws.read_locked(path):
        return None
    return _sha256_file(ws.fs, path)


# --------------------------------------------------------------------------------------------------
# staging security (upload and run-task)
# --------------------------------------------------------------------------------------------------

TRUSTED_OWNERS = frozenset({SYSTEM_SID, ADMINISTRATORS_SID})
"""Owners a staging folder may have: what SYSTEM or an elevated administrator created."""
ADMINS_ONLY = frozenset({SYSTEM_SID, ADMINISTRATORS_SID})
KEEP_RUN_DAYS = 30
"""run-task's ``$keepRunDays``: a run folder goes this long after its run ended."""
PROTECTED_ROOT = Acl(read=ADMINS_ONLY | {USERS_SID}, write=ADMINS_ONLY, protected=True)
"""upload's staging root: inheritance removed, SYSTEM and Administrators full control, Users
read and execute (CPUU runs as a standard user), nobody else writes."""


def _private_acl(reader: str | None = None) -> Acl:
    """A file only SYSTEM, Administrators (and ``reader``, the task's user) may read."""
    return Acl(
        read=ADMINS_ONLY | ({reader} if reader else set()), write=ADMINS_ONLY, protected=True
    )


def _assert_trusted(ws: Workstation, *paths: str) -> None:
    """The scripts' ``Assert-TrustedFolder``: an existing staging folder that SYSTEM or
    Administrators do not own was created by somebody else (a local user, to plant files)."""
    for path in paths:
        if not ws.fs.is_dir(path):
            continue
        owner = ws.fs.owner(path)
        if owner not in TRUSTED_OWNERS:
            raise ScriptFailed(
                f"The staging folder '{path}' is owned by {owner}, not by SYSTEM or"
                " Administrators: another account created it and may have placed files in it."
                " Nothing is written to or run from it.",
                error_id="UntrustedStaging",
                category="SecurityError",
            )


def _parent(path: str) -> str:
    return path.rstrip("\\").rsplit("\\", 1)[0]


# --------------------------------------------------------------------------------------------------
# preflight
# --------------------------------------------------------------------------------------------------


@register("preflight")
def preflight(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Read-only: language mode first, then OS, disk, console user, Outlook, the SHA-256 of the
    files the engine asks about (``-Paths``; locked ones listed in ``Locked``), Cleanup marker."""
    _bind(call, "preflight")
    _language_check(ws, call)
    directory = _str(call, "Directory")
    state_directory = _str(call, "StateDirectory")
    fs = ws.fs
    with ws.lock:
        ws.refresh()
        facts = {
            "ComputerName": ws.name.upper(),
            "OSCaption": ws.os_caption,
            "OSVersion": ws.os_version,
            "FreeBytes": fs.free_bytes,
            "LoggedOnUser": ws.interactive_user,
            "OutlookRunning": bool(ws.running("OUTLOOK")),
            "OutlookVersion": ws.outlook_version,
            "Sessions": [
                {
                    "User": session.user,
                    "Sid": ws.sid_of(session.user),
                    "SessionId": session.session_id,
                    "Kind": session.kind,
                    "State": "disconnected" if session.disconnected else "active",
                    "LogonTime": iso_utc(
                        datetime.fromtimestamp(session.logon_time, tz=timezone.utc)
                    ),
                }
                for session in ws.sessions()
            ],
        }
    staged: dict[str, str] = {}
    locked: list[str] = []
    try:
        if fs.is_dir(directory):
            for relative in _strings(call, "Paths"):
                path = join_windows(directory, relative) if relative else ""
                if not relative or not fs.is_file(path):
                    continue
                sha = _hash_unless_locked(ws, path)
                if sha is None:
                    locked.append(relative)
                else:
                    staged[relative] = sha
        marker = join_windows(state_directory, "cleanup-done.json")
        cleanup_done = _read_text(fs.read_bytes(marker)) if fs.is_file(marker) else None
    except ValueError:
        raise _bad_path(f"{directory} / {state_directory}") from None
    facts["StagedFiles"] = staged
    facts["Locked"] = locked
    facts["LanguageMode"] = ws.language_mode
    facts["CleanupDone"] = cleanup_done
    host.write_output(facts)


# --------------------------------------------------------------------------------------------------
# upload
# --------------------------------------------------------------------------------------------------

_ROOTED = re.compile(r"^([A-Za-z]:|[\\/])")


REPLACE_ATTEMPTS = 5
"""upload tries to move a checked file over a target held by another process this many times..."""
REPLACE_DELAY_S = 0.5
"""...this long apart (the script's ``Start-Sleep -Milliseconds 500``)."""
_DIGITS = re.compile(r"[0-9]+")
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
INT64_MAX = 2**63 - 1


def _header_length(value: Any) -> int | None:
    """``[int64]::TryParse([string]$Header['Length'], NumberStyles.None, Invariant)``: digits
    only, no sign, no blanks; None when that fails (missing, text, out of range)."""
    if isinstance(value, bool) or value is None:
        return None
    text = str(value)
    if not _DIGITS.fullmatch(text) or int(text) > INT64_MAX:
        return None
    return int(text)


class _IncomingFile:
    """One file being received: streamed to ``<target>.partial``, hashed as it arrives."""

    def __init__(self, ws: Workstation, host: PipelineHost, directory: str, header: Mapping):
        fs = ws.fs
        self.ws = ws
        self.host = host
        self.fs = fs
        self.relative = str(_get(header, "Path") or "")
        self.target = self._target(directory, self.relative)
        length = _header_length(_get(header, "Length"))
        if length is None:
            raise ScriptFailed(
                f"Invalid header for '{self.relative}': Length is missing or not a number.",
                error_id="InvalidHeader",
                category="InvalidData",
            )
        self.length = length
        self.expected = str(_get(header, "Sha256") or "")
        if not _SHA256.fullmatch(self.expected):
            raise ScriptFailed(
                f"Invalid header for '{self.relative}': Sha256 is missing or not 64 hex digits.",
                error_id="InvalidHeader",
                category="InvalidData",
            )
        self.expected = self.expected.lower()
        self.private = _get(header, "Private") is True
        if self.length > fs.free_bytes:
            raise ScriptFailed(DISK_FULL_MESSAGE, error_id="DiskFull", category="WriteError")
        self.partial = self.target + ".partial"
        fs.mkdir(self.target.rsplit("\\", 1)[0])
        self.handle = fs.open_write(self.partial)
        if self.private:  # created with the private ACL (File.Create with a FileSecurity)
            fs.set_acl(self.partial, _private_acl())
        self.digest = hashlib.sha256()
        self.written = 0

    @staticmethod
    def _target(directory: str, relative: str) -> str:
        invalid = ScriptFailed(
            f"Invalid path '{relative}': it must stay inside {directory}.",
            error_id="InvalidPath",
            category="InvalidArgument",
        )
        if not relative.strip() or _ROOTED.match(relative):
            raise invalid
        try:
            root_drive, root_names = split_windows_path(directory)
            drive, names = split_windows_path(join_windows(directory, relative))
        except ValueError:
            raise invalid from None
        inside = [n.casefold() for n in names[: len(root_names)]] == [
            n.casefold() for n in root_names
        ]
        if drive != root_drive or not inside or len(names) <= len(root_names):
            raise invalid
        return f"{drive}:\\" + "\\".join(names)

    def write(self, text: str) -> None:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ScriptFailed(
                "The input is not a valid Base-64 string as it contains a non-base 64 character, "
                "more than two padding characters, or an illegal character among the padding "
                "characters.",
                error_id="FormatException",
                category="NotSpecified",
            ) from None
        try:
            self.handle.write(data)
        except DiskFullError:
            raise ScriptFailed(
                DISK_FULL_MESSAGE, error_id="DiskFull", category="WriteError"
            ) from None
        self.digest.update(data)
        self.written += len(data)

    def finish(self) -> dict[str, Any]:
        """Check the file and move it into place; on any failure the caller discards it."""
        self.handle.close()
        actual = self.digest.hexdigest()
        if self.written != self.length or actual != self.expected:
            raise ScriptFailed(
                f"Hash mismatch for '{self.relative}': received {self.written} bytes with SHA-256 "
                f"{actual}, expected {self.length} bytes with {self.expected}.",
                error_id="HashMismatch",
                category="InvalidData",
            )
        self._move_into_place()
        if self.private:
            self.fs.set_acl(self.target, _private_acl())
        return {"Path": self.relative, "Length": self.written, "Sha256": actual}

    def _move_into_place(self) -> None:
        """``File.Replace``/``File.Move``: a target another process holds without delete sharing
        refuses; the script retries a few times, then says FileInUse."""
        attempt = 1
        while self.ws.in_use(self.target):
            if attempt >= REPLACE_ATTEMPTS:
                raise ScriptFailed(
                    f"'{self.relative}' is in use by another process: it could not be replaced"
                    f" after {attempt} attempts.",
                    error_id="FileInUse",
                    category="ResourceBusy",
                )
            attempt += 1
            self.host.sleep(REPLACE_DELAY_S)
        self.fs.move(self.partial, self.target, replace=True)

    def discard(self) -> None:
        self.handle.close()
        if self.fs.exists(self.partial):
            self.fs.delete(self.partial)


@register("upload")
def upload(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Stream files from the pipeline input into ``-Directory``, checking length and SHA-256."""
    _bind(call, "upload")
    _language_check(ws, call)
    directory = _str(call, "Directory")
    root = _str(call, "Root")
    fs = ws.fs
    try:
        _assert_trusted(ws, *(p for p in (root, directory) if p))
        if root:
            fs.mkdir(root)
            if not fs.acl(root).protected:
                fs.set_acl(root, PROTECTED_ROOT)
        fs.mkdir(directory)
    except ValueError:
        raise _bad_path(directory) from None
    current: _IncomingFile | None = None
    try:
        for item in call.input:
            if item is None:
                continue
            if isinstance(item, Mapping):
                if current is not None:
                    host.write_output(current.finish())
                    current = None
                current = _IncomingFile(ws, host, directory, item)
            elif current is None:
                raise ScriptFailed(
                    "File content arrived before its header.",
                    error_id="UnexpectedInput",
                    category="InvalidData",
                )
            else:
                current.write(str(item))
        if current is not None:
            host.write_output(current.finish())
            current = None
    except BaseException:
        if current is not None:
            current.discard()
        raise


# --------------------------------------------------------------------------------------------------
# run-task
# --------------------------------------------------------------------------------------------------


STATE_DIRECTORY = "C:\\ProgramData\\cpuu-fleet\\state"
SAFETY_NET_SECONDS = 300
"""run-task gives a task an ExecutionTimeLimit of -TimeoutSeconds plus this."""
START_GRACE_SECONDS = 60
"""How long Wait gives Start-ScheduledTask (asynchronous) to bring the instance up before it
reports ``NotStarted`` (counted from the marker's StartedAt, as the script does)."""
STOP_SETTLE_SECONDS = 30
"""How long a kill waits for the task to stop reading Running before it reports."""
TASK_PRIORITY = 5
"""TaskSettings.Priority: 4-6 are the levels for interactive tasks (7, the default, is
BELOW_NORMAL)."""
AT_LOGON_DAYS = 14
"""An at-logon task's trigger expires (EndBoundary) this many days after it is registered."""


def _marker_path(state_directory: str, name: str) -> str:
    """``<state>\\runs\\<task name>.json``, characters a file name cannot hold replaced."""
    return join_windows(state_directory, "runs", re.sub(r"[^A-Za-z0-9 ._-]", "_", name) + ".json")


def _read_marker(ws: Workstation, path: str) -> dict[str, Any] | None:
    try:
        if not ws.fs.is_file(path):
            return None
        text = ws.fs.read_bytes(path).decode("utf-8")
    except ValueError:
        return None
    if not text:
        return {"StartedAt": None, "Trigger": "Now", "User": None, "Killed": False}
    return dict(json.loads(text))


def _write_marker(ws: Workstation, path: str, marker: dict[str, Any]) -> None:
    ws.fs.mkdir(path.rsplit("\\", 1)[0])
    ws.fs.write_bytes(path, json.dumps(marker, separators=(",", ":")).encode("utf-8"))


def _has_run(task: ScheduledTask) -> bool:
    """Did the task's instance ever come up (not "registered, started, still 267011")?"""
    return task.running or task.last_run_time is not None or task.last_result != TASK_HAS_NOT_RUN


def _principal_name(ws: Workstation, task: ScheduledTask) -> str:
    if task.user in (USERS_GROUP, USERS_GROUP_SID):
        return USERS_GROUP
    if task.user.upper().startswith("S-1-"):
        return ws.account_of(task.user) or task.user
    return task.user


def _task_report(
    ws: Workstation,
    name: str,
    marker: dict[str, Any] | None,
    *,
    no_user: bool = False,
    killed: bool = False,
    claimed: bool = False,
    waited: bool = False,
    not_started: bool = False,
    settled: bool = True,
    other_users: list[str] | None = None,
    disconnected: list[str] | None = None,
) -> dict[str, Any]:
    task: ScheduledTask | None = ws.task(name)
    marker_killed = bool(marker and marker.get("Killed"))
    report: dict[str, Any] = {
        "TaskName": name,
        "Exists": False,
        "State": "NotFound",
        "Trigger": None,
        "User": None,
        "NoUser": no_user,
        "LastRunTime": None,
        "LastTaskResult": TASK_HAS_NOT_RUN,
        "Killed": killed or marker_killed,
        "Marker": marker is not None,
        "Claimed": claimed,
        "Waited": waited,
        "StartedAt": marker.get("StartedAt") if marker else None,
        "NotStarted": not_started,
        "Settled": settled,
        "OtherUsers": list(other_users or []),
        "Disconnected": list(disconnected or []),
    }
    if task is None:
        if marker is not None:  # removed after it ended: the marker kept what became of it
            report["Trigger"] = marker.get("Trigger")
            report["User"] = marker.get("User")
            if marker.get("ExitCode") is not None:
                report["LastTaskResult"] = int(marker["ExitCode"])
        return report
    report.update(
        {
            "TaskName": task.name,
            "Exists": True,
            "State": task.state,
            "Trigger": task.trigger,
            # The marker has the name as Windows gave it; the principal itself is a SID.
            "User": (marker or {}).get("User") or _principal_name(ws, task),
            "LastRunTime": iso_utc(task.last_run_time) if task.last_run_time else None,
            "LastTaskResult": int(task.last_result),
        }
    )
    report["Killed"] = report["Killed"] or task.last_result == TASK_TERMINATED
    return report


def _quoted(command: str) -> str:
    """The task action's program (``-Execute``), quoted as Task Scheduler launches it."""
    return command if command.startswith('"') else f'"{command}"'


class _TaskCall:
    """One run-task call: the task, its marker, and the script's functions over the model."""

    def __init__(self, ws: Workstation, call: ScriptCall, host: PipelineHost):
        self.ws = ws
        self.host = host
        self.name = _str(call, "TaskName") or ""
        self.when_no_user = _choice(call, "WhenNoUser", ("Skip", "AtLogon"), "Skip")
        self.timeout = _int(call, "TimeoutSeconds", 3600, 1, 604800)
        self.command = _str(call, "Command")
        self.working_directory = _str(call, "WorkingDirectory")
        self.expected = _strings(call, "ExpectedUser")
        self.skip_disconnected = _choice(call, "Disconnected", ("Skip", "Run"), "Run") == "Skip"
        self.disconnected: list[str] = []
        """Users whose session is disconnected, passed over (``-Disconnected Skip``)."""
        self.other_users: list[str] = []
        """Logged-on users CPUU is not for (no expected user among them, or several users and
        nobody expected): the report names them."""
        self.source_directory = _str(call, "SourceDirectory")
        state = _str(call, "StateDirectory", STATE_DIRECTORY) or STATE_DIRECTORY
        self.marker_path = _marker_path(state, self.name)

    def marker(self) -> dict[str, Any] | None:
        return _read_marker(self.ws, self.marker_path)

    def _now_iso(self) -> str:
        return iso_utc(datetime.fromtimestamp(self.ws.now(), tz=timezone.utc))

    def _expected_users(self) -> list[tuple[str, str]]:
        """(name, SID) of each ``-ExpectedUser``: a SID as given, a name translated (one this host
        cannot translate fails with ``UnknownLogonUser``: pass its SID)."""
        ws = self.ws
        found = []
        for wanted in self.expected:
            if wanted.upper().startswith("S-1-"):
                found.append((ws.account_of(wanted) or wanted, wanted))
                continue
            if not ws.can_map(wanted):  # NTAccount.Translate fails as Task Scheduler would
                raise ScriptFailed(
                    f"-ExpectedUser {wanted!r} cannot be mapped to a SID: pass its SID.",
                    error_id="UnknownLogonUser",
                    category="InvalidArgument",
                )
            found.append((wanted, ws.sid_of(wanted)))
        return found

    def _session_target(self, expected: list[tuple[str, str]]) -> tuple[str, str] | None:
        """``Select-SessionUser``: whose session CPUU runs in now. With expected users, the first
        of them logged on (the console's session first, then RDP); without, the console's user,
        else the one RDP user. None: nobody to run for now (``other_users`` says who is on)."""
        ws = self.ws
        console = ws.interactive_user
        remote = list(ws.remote_sessions)
        if self.skip_disconnected:
            self.disconnected = [s.user for s in remote if s.disconnected]
            remote = [s for s in remote if not s.disconnected]
        on = ([console] if console is not None else []) + [s.user for s in remote]
        if expected:
            wanted = {sid.casefold() for _, sid in expected}
            for user in on:
                sid = self._user_sid(user)
                if sid.casefold() in wanted:
                    return user, sid
            self.other_users = on
            return None
        if console is not None:
            return console, self._user_sid(console)
        if len(on) == 1:
            return on[0], self._user_sid(on[0])
        self.other_users = on
        return None

    def _at_logon_user(self, expected: list[tuple[str, str]]) -> tuple[str, str] | None:
        """(name, SID) the at-logon task is for: the first expected user, else the host's last
        user (Win32_UserProfile's newest LastUseTime); None: nobody known."""
        if expected:
            return expected[0]
        last = self.ws.last_user
        if last is None:
            return None
        self.host.write_warning(
            f"No -ExpectedUser: the at-logon task is for the host's last user, {last}."
        )
        return last, self.ws.sid_of(last)

    def _user_sid(self, user: str) -> str:
        """``Get-InteractiveUser``: the SID of the owner of the user's explorer.exe, else of the
        name when Windows can translate it; neither: ``UnmappedUser`` (nothing is claimed).
        Only the console's shell may not run yet (``shell_running``): an RDP session has one."""
        console = self.ws.interactive_user
        on_console = console is not None and console.casefold() == user.casefold()
        if not on_console or self.ws.shell_running or self.ws.can_map(user):
            return self.ws.sid_of(user)
        raise ScriptFailed(
            f"The logged-on user {user} cannot be mapped to a SID.",
            error_id="UnmappedUser",
            category="ObjectNotFound",
        )

    def start(self) -> str:
        """``NoUser`` (nobody logged on, policy Skip, or nobody to wait for), ``AtLogon``
        (nobody logged on: registered for the next logon of one user), ``Claimed`` (this call
        started it) or ``Known`` (its marker exists: started or registered before, never
        again)."""
        ws = self.ws
        if not self.command or not self.working_directory or not self.source_directory:
            raise ScriptFailed(
                "-Command, -WorkingDirectory and -SourceDirectory are required to start a task.",
                error_id="MissingCommand",
                category="InvalidArgument",
            )
        _assert_trusted(ws, self.source_directory, _parent(self.source_directory))
        with ws.lock:  # the model's lock plays CreateNew's atomicity
            if self.marker() is not None:
                return "Known"
            expected = self._expected_users()
            target = self._session_target(expected)
            if target is None and self.when_no_user == "Skip":
                return "NoUser"
            trigger = "Now" if target is not None else "AtLogon"
            target = target or self._at_logon_user(expected)
            if target is None:
                return "NoUser"
            marker = {
                "TaskName": self.name,
                "StartedAt": self._now_iso(),
                "Trigger": trigger,
                "User": target[0],
                "UserSid": target[1],
                "Command": self.command,
                "TimeoutSeconds": self.timeout,
                "Launched": False,
                "Killed": False,
                "ExitCode": None,
            }
            _write_marker(ws, self.marker_path, marker)
            existing = ws.task(self.name)
            if existing is not None and _has_run(existing):
                # Registered before any marker (an earlier cpuu-fleet): it ran or runs already.
                if existing.last_run_time is not None:
                    marker["StartedAt"] = iso_utc(existing.last_run_time)
                marker["Launched"] = True
                _write_marker(ws, self.marker_path, marker)
                return "Known"
            try:
                self._make_run_folder(target[1])
            except BaseException:
                ws.fs.delete(self.marker_path)  # nothing registered: the claim is given back
                raise
            if existing is None:  # create-if-absent: never replace a live task
                self._register(target[1], trigger)
            if trigger == "Now":
                ws.start_task(self.name)
                marker["Launched"] = True
                _write_marker(ws, self.marker_path, marker)
                return "Claimed"
            return "AtLogon"

    def _remove_old_run_folders(self, root: str) -> None:
        """``Remove-OldRunFolders``: run folders of runs that ended (``FinishedAt``/``KilledAt`` in
        their marker) more than ``KEEP_RUN_DAYS`` ago go; pending runs, set-aside folders (no
        marker) and this run's own stay."""
        fs = self.ws.fs
        cutoff = self.ws.now() - KEEP_RUN_DAYS * 86400
        runs = join_windows(_parent(self.marker_path))
        for name in fs.listdir(root):
            folder = join_windows(root, name)
            marker_path = join_windows(runs, name + ".json")
            if folder.casefold() == (self.working_directory or "").rstrip("\\").casefold():
                continue
            if not fs.is_dir(folder) or not fs.is_file(marker_path):
                continue
            marker = _read_marker(self.ws, marker_path) or {}
            ended = marker.get("FinishedAt") or marker.get("KilledAt")
            if ended and parse_iso_utc(str(ended)).timestamp() < cutoff:
                fs.delete(folder, recursive=True)

    def _make_run_folder(self, sid: str) -> None:
        """``New-RunFolder``: ``-WorkingDirectory`` becomes a protected copy of
        ``-SourceDirectory`` (SYSTEM and Administrators), then the task's user gets Modify on
        it. A folder left by a failed start is renamed aside, never reused (its user may have
        written to it)."""
        fs = self.ws.fs
        assert self.working_directory is not None and self.source_directory is not None
        root = _parent(self.working_directory)
        fs.mkdir(root)
        _assert_trusted(self.ws, root)
        self._remove_old_run_folders(root)
        if fs.exists(self.working_directory):
            stamp = datetime.fromtimestamp(self.ws.now(), tz=timezone.utc)
            fs.move(
                self.working_directory,
                f"{self.working_directory.rstrip(chr(92))}.set-aside-{stamp:%Y%m%d%H%M%S%f}",
            )
        fs.mkdir(self.working_directory)
        fs.set_acl(self.working_directory, Acl(read=ADMINS_ONLY, write=ADMINS_ONLY, protected=True))
        fs.copy_tree(self.source_directory, self.working_directory)
        fs.set_acl(
            self.working_directory,
            Acl(read=ADMINS_ONLY | {sid}, write=ADMINS_ONLY | {sid}, protected=True),
        )

    def _register(self, sid: str, trigger: str) -> None:
        """Register for one user's SID (never a name Task Scheduler may not map); an at-logon
        task only fires for that user, once per user (the wrapper), until its EndBoundary. If
        registering fails nothing was started: the claim is given back."""
        ws = self.ws
        assert self.command is not None and self.working_directory is not None
        at_logon = trigger == "AtLogon"
        try:
            ws.register_task(
                self.name,
                _quoted(self.command),
                self.working_directory,
                user=sid,
                trigger=trigger,
                time_limit_s=self.timeout + SAFETY_NET_SECONDS,
                priority=TASK_PRIORITY,
                end_boundary=ws.now() + AT_LOGON_DAYS * 86400 if at_logon else None,
                once_per_user=at_logon,
            )
        except AccountMappingError as exc:
            ws.fs.delete(self.marker_path)
            raise ScriptFailed(
                str(exc), error_id=AccountMappingError.HRESULT + ",Register-ScheduledTask"
            ) from exc

    def deadline(self) -> float:
        """From when CPUU started (the marker), not from this call: a resumed controller must
        not grant a hung CPUU a second full timeout."""
        marker = self.marker()
        started = marker.get("StartedAt") if marker else None
        if started:
            return parse_iso_utc(started).timestamp() + self.timeout
        return self.ws.now() + self.timeout

    def _grace_end(self) -> float:
        marker = self.marker()
        started = marker.get("StartedAt") if marker else None
        base = parse_iso_utc(started).timestamp() if started else self.ws.now()
        return base + START_GRACE_SECONDS

    def save_outcome(self, killed: bool) -> None:
        """Record in the marker what became of the run, so it outlives the task."""
        ws = self.ws
        with ws.lock:
            marker, task = self.marker(), ws.task(self.name)
            if marker is None or task is None:
                return
            changed = False
            if killed and not marker.get("Killed"):
                marker["Killed"] = True
                marker["KilledAt"] = self._now_iso()
                changed = True
            finished = task.last_result not in (TASK_HAS_NOT_RUN, TASK_RUNNING)
            if finished and task.state != "Running" and marker.get("ExitCode") is None:
                marker["ExitCode"] = int(task.last_result)
                marker["FinishedAt"] = self._now_iso()
                changed = True
            if changed:
                _write_marker(ws, self.marker_path, marker)

    def kill(self) -> bool:
        """Stop the run and everything it started; True once the task no longer reads Running.

        Stop-ScheduledTask alone ends cmd.exe and leaves CPUU running, so the tree under the
        task's process (EnginePID, then ParentProcessId) is taken first, the task stopped (267014),
        then each process of the tree terminated, then the state is polled until it settles."""
        ws = self.ws
        with ws.lock:
            engine = ws.task_engine_pid(self.name)
            tree = ws.descendants(engine) if engine is not None else []
            if ws.task(self.name) is not None:
                ws.stop_task(self.name)
            for process in tree:
                ws.terminate_process(process.pid)
        self.save_outcome(True)
        settle_by = ws.now() + STOP_SETTLE_SECONDS
        while True:
            task = ws.task(self.name)
            if task is None or task.state != "Running":
                self.save_outcome(True)
                return True
            now = ws.now()
            if now >= settle_by:
                return False
            self.host.sleep(min(WAIT_POLL_SECONDS, settle_by - now))

    def disable(self) -> bool:
        """The run never came up: disable the task so that it cannot start late. False when it
        came up after all (it is running now)."""
        with self.ws.lock:
            task = self.ws.task(self.name)
            if task is None:
                return True
            if _has_run(task):
                return False
            self.ws.disable_task(self.name)
            return True

    def wait(self) -> tuple[bool, bool, bool]:
        """Poll until the run is over; kill it at the deadline. Returns (killed, settled,
        not_started): a ``Now`` run that has not come up within the start grace period is
        reported not started (and its task disabled), never taken as finished."""
        deadline, grace_end = self.deadline(), self._grace_end()
        marker = self.marker() or {}
        on_demand = marker.get("Trigger", "Now") == "Now"
        while True:
            task = self.ws.task(self.name)
            if task is None:
                return False, True, False
            now = self.ws.now()
            if on_demand and not _has_run(task) and task.enabled:
                if now >= min(grace_end, deadline) and self.disable():
                    return False, True, True
            elif task.state != "Running":
                self.save_outcome(False)
                return False, True, False
            elif now >= deadline:
                return True, self.kill(), False
            self.host.sleep(max(0.0, min(WAIT_POLL_SECONDS, deadline - now)))

    def never_came_up(self) -> bool:
        """Started on demand, then disabled by a Wait because it never came up (see wait)."""
        task = self.ws.task(self.name)
        marker = self.marker()
        if task is None or marker is None or marker.get("Trigger", "Now") != "Now":
            return False
        return not task.enabled and not _has_run(task)

    def state(self) -> str:
        task = self.ws.task(self.name)
        return "NotFound" if task is None else task.state

    def active(self) -> bool:
        """Running, or started on demand and not come up yet."""
        task = self.ws.task(self.name)
        if task is None:
            return False
        marker = self.marker() or {}
        waiting = marker.get("Trigger", "Now") == "Now" and not _has_run(task) and task.enabled
        return task.state == "Running" or waiting

    def ended(self) -> bool:
        """Started on demand, came up and is over (by itself, or killed): what Remove would
        unregister. Never an at-logon task nor one that never came up (``Test-Ended``)."""
        task = self.ws.task(self.name)
        marker = self.marker()
        if task is None or marker is None or marker.get("Trigger", "Now") != "Now":
            return False
        return not self.active() and task.enabled and _has_run(task)


def _reads_ended(report: dict[str, Any]) -> bool:
    """A report of a run that is over: not Running or Queued, and a real exit code."""
    not_an_exit = (TASK_HAS_NOT_RUN, TASK_RUNNING)
    return (
        report["State"] not in ("Running", "Queued") and report["LastTaskResult"] not in not_an_exit
    )


@register("run-task")
def run_task(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Start/Wait/Run/Status/Stop/Remove the interactive user's one-shot scheduled task, never
    starting it twice (its marker, see ``remote/run-task.ps1``)."""
    _bind(call, "run-task")
    action = _choice(call, "Action", TASK_ACTIONS)
    task = _TaskCall(ws, call, host)
    no_user = killed = claimed = waited = not_started = False
    settled = True
    if action in ("Start", "Run"):
        started = task.start()
        no_user = started in ("NoUser", "AtLogon")
        claimed = started in ("Claimed", "AtLogon")
    if action == "Wait":
        killed, settled, not_started = task.wait()
        waited = True
    elif action == "Run" and not no_user:
        if task.active():
            waited = not claimed
            killed, settled, not_started = task.wait()
        else:
            task.save_outcome(False)
    elif action == "Stop":
        if task.state() == "Running":
            killed, settled = True, task.kill()
    elif action == "Remove":
        if ws.task(task.name) is not None:
            if task.state() == "Running":  # Unregister alone leaves cmd.exe and CPUU running
                killed, settled = True, task.kill()
            task.save_outcome(False)
        ws.unregister_task(task.name)
    not_started = not_started or task.never_came_up()
    report = _task_report(
        ws,
        task.name,
        task.marker(),
        no_user=no_user,
        killed=killed,
        claimed=claimed,
        waited=waited,
        not_started=not_started,
        settled=settled,
        other_users=task.other_users,
        disconnected=task.disconnected,
    )
    report["Removed"] = False
    removing = action == "Status" and bool(call.param("RemoveEnded", False)) and not not_started
    if removing and _reads_ended(report) and task.ended():  # as the report read it, and still
        task.save_outcome(False)  # read first, then gone: the marker keeps the outcome
        ws.unregister_task(task.name)
        report["Removed"] = True
    host.write_output(report)


# --------------------------------------------------------------------------------------------------
# list-files
# --------------------------------------------------------------------------------------------------


@register("list-files")
def list_files(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """The files of one folder matching a wildcard, sorted by name, with size, time, SHA-256."""
    _bind(call, "list-files")
    _language_check(ws, call)
    directory = _str(call, "Directory")
    pattern = _str(call, "Filter", "*")
    fs = ws.fs
    ws.refresh()
    try:
        paths = [p for p in fs.glob(directory, pattern) if fs.is_file(p)]
    except ValueError:
        return  # Test-Path says no such folder for a path Windows cannot have
    for path in sorted(paths, key=lambda p: p.rsplit("\\", 1)[1].casefold()):
        info = fs.stat(path)
        sha = _hash_unless_locked(ws, path)
        host.write_output(
            {
                "Name": path.rsplit("\\", 1)[1],
                "FullName": path,
                "Length": info.size,
                "LastWriteTimeUtc": iso_utc(info.mtime),
                "Sha256": sha,
                "Locked": sha is None,
            }
        )


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------


@register("download")
def download(ws: Workstation, call: ScriptCall, host: PipelineHost) -> None:
    """Per file: a header, then base64 chunks, one output object each, one chunk in memory.

    ``-Paths`` names the files; ``-Directory``/``-Filter`` finds them as list-files does, minus
    ``-ExcludeName`` wildcards, and a file whose SHA-256 is in ``-KnownSha256`` gets its header
    (``Skipped``) and no content.

    A hostile workstation (``ws.scripts``: :class:`~cpuu_fleet.lab.workstation.ScriptFaults`) fails with crafted text,
    spews warnings without end before its files, or sends more than a header announced."""
    _bind(call, "download")
    _language_check(ws, call)
    _misbehave(ws, host)
    chunk_size = _int(call, "ChunkSize", DEFAULT_CHUNK, 1, 16777216)
    directory = _str(call, "Directory")
    fs = ws.fs
    ws.refresh()
    known: set[str] = set()
    if directory:
        known = {h.lower() for h in _strings(call, "KnownSha256")}
        excluded = _strings(call, "ExcludeName")
        try:
            found = [
                p for p in fs.glob(directory, _str(call, "Filter", "*") or "*") if fs.is_file(p)
            ]
        except ValueError:
            found = []  # Test-Path says no such folder for a path Windows cannot have
        since = _str(call, "NewerThan")
        if since:
            after = parse_iso_utc(since)
            found = [p for p in found if fs.stat(p).mtime >= after]
        paths = [
            p
            for p in sorted(found, key=lambda p: p.rsplit("\\", 1)[1].casefold())
            if not any(wildcard_match(x, p.rsplit("\\", 1)[1]) for x in excluded)
        ]
    else:
        paths = _strings(call, "Paths")
        if not paths:
            raise ScriptFailed(
                "Give -Paths or -Directory.", error_id="MissingPath", category="InvalidArgument"
            )
    for path in paths:
        try:
            present = fs.is_file(path)
        except ValueError:
            present = False
        if not present:
            raise ScriptFailed(
                f"Cannot find path '{path}' because it does not exist.",
                error_id="FileNotFound",
                category="ObjectNotFound",
            )
    for path in paths:
        if ws.read_locked(path):
            info = fs.stat(path)
            host.write_output(
                {
                    "Path": path,
                    "Name": path.rsplit("\\", 1)[1],
                    "Length": info.size,
                    "Sha256": None,
                    "LastWriteTimeUtc": iso_utc(info.mtime),
                    "Skipped": False,
                    "Locked": True,
                }
            )
            continue
        with fs.open_read(path) as handle:
            length = os.fstat(handle.fileno()).st_size
            digest = hashlib.sha256()
            remaining = length
            while remaining > 0 and (block := handle.read(min(chunk_size, remaining))):
                digest.update(block)
                remaining -= len(block)
            sha = digest.hexdigest()
            host.write_output(
                {
                    "Path": path,
                    "Name": path.rsplit("\\", 1)[1],
                    "Length": length,
                    "Sha256": sha,
                    "LastWriteTimeUtc": iso_utc(fs.stat(path).mtime),
                    "Skipped": sha in known,
                    "Locked": False,
                }
            )
            if sha in known:
                continue
            handle.seek(0)
            remaining = length
            while remaining > 0 and (block := handle.read(min(chunk_size, remaining))):
                if host.stopping.is_set():
                    raise PipelineStopped()
                host.write_output(base64.b64encode(block).decode("ascii"))
                remaining -= len(block)
            if ws.scripts.download_overrun:
                _overrun(host, chunk_size)


HOSTILE_PACE_S = 0.01
"""Pause between two objects a hostile download sends without end: the lab's output queue has
no flow control, so an unpaced writer would fill the test process's memory, not the client's."""


def _misbehave(ws: Workstation, host: PipelineHost) -> None:
    """A hostile download's answer before any file: crafted error text, or endless warnings."""
    faults = ws.scripts
    if faults.download_error is not None:
        raise ScriptFailed(faults.download_error, error_id="DownloadFailed", category="ReadError")
    if faults.download_endless_warnings is not None:
        text = "WARNING " + "x" * 65528
        while True:
            host.write_warning(text)
            host.sleep(max(faults.download_endless_warnings, HOSTILE_PACE_S))


def _overrun(host: PipelineHost, chunk_size: int) -> None:
    """More bytes after the announced Length, until the client stops the pipeline."""
    filler = base64.b64encode(b"\xa5" * min(chunk_size, 65536)).decode("ascii")
    while True:
        host.write_output(filler)
        host.sleep(HOSTILE_PACE_S)


# The audit's handler lives in its own module (it reads a part of the model no other script
# touches); importing it here registers it with the others. At the end: it imports from here.
from cpuu_fleet.lab import audit_handler  # noqa: E402, F401
