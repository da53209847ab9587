"""The vendor's facts about CPUU, as code.

Everything here comes from ``../shared/cpuu-reference.md`` (the vendor's administration guides).
Where the guides are silent, the choice made is said next to it. Nothing in this module talks to a
network or a workstation: it is the vocabulary the rest of cpuu-fleet (and the lab's emulator) use.
"""

from __future__ import annotations

import enum
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cpuu_fleet import wintext
from cpuu_fleet.errors import InputError
from cpuu_fleet.vocabulary import OWNER_DESKTOP, OWNER_EXCHANGE, OWNER_USER, Remedy


class Mode(str, enum.Enum):
    """The three things CPUU can do to a user's Outlook profiles."""

    UPDATE = "update"
    UNDO = "undo"
    CLEANUP = "cleanup"

    @property
    def batch_file(self) -> str:
        """The vendor wizard's batch file for this mode (the Cleanup name is our best guess)."""
        return _BATCH_FILES[self]

    @classmethod
    def parse(cls, text: str) -> Mode:
        """Accept the mode names operators use, including the vendor's "Rollback" for Undo."""
        key = text.strip().lower()
        if key == "rollback":
            return cls.UNDO
        try:
            return cls(key)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise InputError(f"unknown mode {text!r} (expected one of: {choices})") from None


_BATCH_FILES = {
    Mode.UPDATE: "CPUU_Update.bat",
    Mode.UNDO: "CPUU_Rollback.bat",
    Mode.CLEANUP: "CPUU_Cleanup.bat",
}


class Outcome(str, enum.Enum):
    """How a migration lead should read a per-profile code."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"
    NEEDS_ACTION = "needs-action"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class CodeInfo:
    """One per-profile return code: its vendor name, meaning, outcome class and a remediation hint."""

    code: int
    name: str
    meaning: str
    outcome: Outcome
    hint: str = ""
    owner: str = OWNER_DESKTOP
    """Who acts on a profile in this code (ours: the vendor names nobody); the hint is the step."""

    @property
    def remedy(self) -> Remedy:
        return Remedy(self.owner, self.hint)


# The outcome classes are ours, not the vendor's: "ok" means the profile is where the mode wanted
# it; "skipped" means CPUU left it alone by design and nobody has to act; "needs-action" means a
# person must change something on the workstation or the configuration before a rerun helps;
# "failed" means the operation itself failed and a rerun (after looking at the log) is the remedy.
_CODES: tuple[CodeInfo, ...] = (
    CodeInfo(0, "PROFILE_WAS_NOT_PROCESSED", "not processed", Outcome.SKIPPED),
    CodeInfo(
        1, "PROFILE_IS_BACKUP", "the profile is CPUU's backup copy of an original", Outcome.SKIPPED
    ),
    CodeInfo(2, "PROFILE_ALREADY_UPDATED", "already updated earlier", Outcome.OK),
    CodeInfo(
        3,
        "PROFILE_BACKUP_NOT_FOUND",
        "no backup found; cannot restore and update",
        Outcome.NEEDS_ACTION,
        "No backup copy exists (Cleanup already ran, or the profile was never updated): "
        "recreate the profile by hand if a rollback is really needed.",
    ),
    CodeInfo(
        4,
        "PROFILE_NOT_RESOLVED",
        "cannot be resolved; skipped",
        Outcome.NEEDS_ACTION,
        "Check that the mailbox exists and was switched, and that the source and target Exchange "
        "servers are reachable in online mode.",
        OWNER_EXCHANGE,
    ),
    CodeInfo(
        5,
        "PROFILE_NOT_EXCHANGE_SERVICE",
        "Exchange service lacks server name and/or mailbox DN; skipped",
        Outcome.NEEDS_ACTION,
        "The profile's Exchange service is incomplete: repair the profile in Outlook's Mail applet.",
    ),
    CodeInfo(
        6,
        "PROFILE_IS_OFFLINE",
        "offline profile skipped (needs -ProcessOfflineProfiles On)",
        Outcome.NEEDS_ACTION,
        "Allow offline profiles: add -ProcessOfflineProfiles On to the mode's command line and rerun.",
    ),
    CodeInfo(
        7,
        "PROFILE_HAS_NO_SEREVER",
        "no Microsoft Exchange Server service in the profile",
        Outcome.SKIPPED,
    ),
    CodeInfo(
        8,
        "PROFILE_UNEXPECTED_SERVICES",
        "profile holds unexpected services; skipped",
        Outcome.NEEDS_ACTION,
        "Allow the extra services with AllowAdditionalServices in CPUU.ini, or remove them.",
    ),
    CodeInfo(
        9,
        "PROFILE_FAILED_TO_CREATE_BACKUP",
        "could not create the backup copy",
        Outcome.FAILED,
        "Check free disk space and the user's rights on the profile, then rerun.",
    ),
    CodeInfo(10, "PROFILE_MODIFYING_OK", "profile updated", Outcome.OK),
    CodeInfo(
        11,
        "PROFILE_MODIFYING_FAILED",
        "update failed",
        Outcome.FAILED,
        "Read the CPUU log for the reason; close Outlook and MAPI clients, then rerun Update.",
    ),
    CodeInfo(12, "PROFILE_RESTORE_OK", "rolled back", Outcome.OK),
    CodeInfo(
        13,
        "PROFILE_RESTORE_FAILED",
        "roll back failed",
        Outcome.FAILED,
        "Read the CPUU log; close Outlook and rerun Undo on this workstation only.",
    ),
    CodeInfo(14, "PROFILE_CLEANUP_OK", "cleaned up", Outcome.OK),
    CodeInfo(
        15,
        "PROFILE_CLEANUP_FAILED",
        "clean-up failed",
        Outcome.FAILED,
        "Read the CPUU log and rerun Cleanup.",
    ),
    CodeInfo(
        16,
        "PROFILE_CLEANUP_CANCELED",
        "clean-up cancelled by the user",
        Outcome.NEEDS_ACTION,
        "The user cancelled: agree a time with them and rerun Cleanup.",
        OWNER_USER,
    ),
    CodeInfo(
        17,
        "PROFILE_IS_UNABLE_OPEN_DEFSTORE",
        "cannot open the default message store",
        Outcome.FAILED,
        "The default store could not be opened: check the PST/OST path and that Outlook is closed.",
    ),
    CodeInfo(
        18,
        "PROFILE_IS_UNABLE_OPEN_MAILBOX_STORE",
        "cannot open the mailbox message store",
        Outcome.FAILED,
        "The OST may be locked (Windows Search, a chat client): stop the locking process and rerun.",
    ),
    CodeInfo(
        19,
        "PROFILE_HAS_UNSUPPORTED_AUTHENTICATION",
        "authentication type not supported",
        Outcome.NEEDS_ACTION,
        "Switch the profile's logon network security to a supported authentication type.",
    ),
    CodeInfo(
        20,
        "PROFILE_HAS_CFG_UI_LOCK",
        "locked: a properties dialog is open",
        Outcome.NEEDS_ACTION,
        "A properties dialog is open on the workstation: ask the user to close it, then rerun.",
        OWNER_USER,
    ),
    CodeInfo(
        21,
        "PROFILE_IS_OFFLINE_AND_RC",
        "unexpected error",
        Outcome.FAILED,
        "Unexpected error: read the CPUU log and escalate to the vendor if it repeats.",
    ),
    CodeInfo(
        22,
        "PROFILE_NOT_FREESPACE_FOR_BACKUPOST",
        "not enough disk space to back up the OST",
        Outcome.NEEDS_ACTION,
        "Free disk space for the OST backup (at least the OST's size) and rerun.",
    ),
)

PROFILE_CODES: dict[int, CodeInfo] = {info.code: info for info in _CODES}


def code_info(code: int) -> CodeInfo:
    """Describe any code; one outside 0..22 is reported as "unknown code N", never an error."""
    known = PROFILE_CODES.get(code)
    if known is not None:
        return known
    return CodeInfo(
        code,
        f"UNKNOWN_{code}",
        f"unknown code {code}",
        Outcome.UNKNOWN,
        "Not in the vendor's table: read the CPUU log on this workstation.",
    )


# What Windows Task Scheduler reports as a task's LastTaskResult instead of a process exit code
# (the Win32 Task Scheduler constants): CPUU runs as a scheduled task, so these stand where its
# exit bit mask would.
TASK_HAS_NOT_RUN = 267011
"""SCHED_S_TASK_HAS_NOT_RUN (0x41303)."""
TASK_RUNNING = 267009
"""SCHED_S_TASK_RUNNING (0x41301)."""
TASK_TERMINATED = 267014
"""SCHED_S_TASK_TERMINATED (0x41306): Task Scheduler ended the run (Stop, the time limit): killed."""
TASK_QUEUED = 267045
"""SCHED_S_TASK_QUEUED (0x41325)."""
NOT_AN_EXIT_CODE = (TASK_HAS_NOT_RUN, TASK_RUNNING, TASK_QUEUED)
"""Values that mean "no exit code yet"."""
STATUS_CONTROL_C_EXIT = 0xC000013A
"""The NTSTATUS a console process ends with when its window is closed (or Ctrl+C pressed)."""

WINDOWS_EXIT_CODES: dict[int, tuple[str, str]] = {
    TASK_TERMINATED: (
        "TASK_TERMINATED",
        "Task Scheduler ended the run (a stop, or its time limit)",
    ),
    9009: (
        "CMD_NOT_FOUND",
        "cmd.exe could not find the program: is ClientProfileUpdatingUtility.exe in the payload?",
    ),
    0x80070002: ("FILE_NOT_FOUND", "the batch file was not found: push the payload for this mode"),
    0x80070005: ("ACCESS_DENIED", "access denied starting the task"),
    0x8007010B: ("DIRECTORY_INVALID", "the task's working folder does not exist: push first"),
    STATUS_CONTROL_C_EXIT: (
        "CONSOLE_CLOSED",
        "the run's console window was closed (or Ctrl+C pressed) in the user's session: CPUU may"
        " have stopped part-way; agree a time with the user and rerun",
    ),
    0xC0000005: ("ACCESS_VIOLATION", "CPUU crashed (access violation): collect its log, rerun"),
    0xC0000135: ("DLL_NOT_FOUND", "a DLL CPUU needs was not found: is the payload complete?"),
    0xC0000142: (
        "DLL_INIT_FAILED",
        "a DLL failed to initialise when CPUU started (the user's session was ending?)",
    ),
    0xC00000FD: ("STACK_OVERFLOW", "CPUU crashed (stack overflow): collect its log, rerun"),
    0xC0000409: ("FAIL_FAST", "CPUU crashed (fail-fast): collect its log, rerun"),
}
"""Exit codes that are Windows', not CPUU's: a name and what it means, for every output. They are
what Task Scheduler reports when it could not start the action, cmd.exe's own, or the NTSTATUS a
process that Windows ended carries; CPUU's bit mask never reaches them."""
WINDOWS_EXIT_OWNERS: dict[int, str] = {STATUS_CONTROL_C_EXIT: OWNER_USER}
"""Who acts on a Windows exit code when it is not the desktop team (a window the user closed).
Every Windows code's next step is its meaning in :data:`WINDOWS_EXIT_CODES`."""
KILLED_REMEDY = Remedy(
    OWNER_DESKTOP,
    "CPUU ran past its deadline and was stopped: find out why it hangs (a dialog, a lock) and rerun.",
)
"""A CPUU run stopped on our deadline: its exit code says nothing of CPUU's own verdict."""
_WINDOWS_STATUS = 0x40000000
"""Codes at or above it carry an NTSTATUS or HRESULT severity: never read as CPUU's bits."""


class ExitFlags(enum.IntFlag):
    """CPUU's process exit code: a bit mask. Zero (CANNOT_START) means "nothing to do"."""

    SUCCESS = 1
    NO_SWITCH_MSG = 2
    SWITCH_ERR = 4
    USER_ABORT = 8
    GLOBAL_ERR = 16
    CRASH = 32
    FAILED_TO_WRITE_LOG = 64
    FAILED_TO_CREATE_TMP_DIR = 128
    FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE = 256
    INVALID_SWITCH_MSG = 512


FLAG_MEANINGS: dict[ExitFlags, str] = {
    ExitFlags.SUCCESS: "one or more profiles processed",
    ExitFlags.NO_SWITCH_MSG: "no switch message found for one or more profiles",
    ExitFlags.SWITCH_ERR: "failed for one or more profiles",
    ExitFlags.USER_ABORT: "the user aborted",
    ExitFlags.GLOBAL_ERR: "the whole run failed",
    ExitFlags.CRASH: "CPUU crashed",
    ExitFlags.FAILED_TO_WRITE_LOG: "the log could not be written",
    ExitFlags.FAILED_TO_CREATE_TMP_DIR: "the temporary folder could not be created",
    ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE: "the local log could not be copied to the share",
    ExitFlags.INVALID_SWITCH_MSG: "an invalid switch message was found",
}

FLAG_REMEDIES: dict[ExitFlags, Remedy] = {
    ExitFlags.NO_SWITCH_MSG: Remedy(
        OWNER_EXCHANGE,
        "The mailbox is not switched yet: rerun after the migration batch switches it.",
    ),
    ExitFlags.SWITCH_ERR: Remedy(
        OWNER_DESKTOP, "See the per-profile codes for the failing profiles."
    ),
    ExitFlags.USER_ABORT: Remedy(
        OWNER_USER, "The user cancelled: agree a time with them and rerun."
    ),
    ExitFlags.GLOBAL_ERR: Remedy(
        OWNER_DESKTOP, "Read the CPUU log: the configuration or the Exchange servers are at fault."
    ),
    ExitFlags.CRASH: Remedy(
        OWNER_DESKTOP,
        "CPUU crashed: collect the log and rerun; escalate to the vendor if it repeats.",
    ),
    ExitFlags.FAILED_TO_WRITE_LOG: Remedy(
        OWNER_DESKTOP, "Check free space and rights on the log folder."
    ),
    ExitFlags.FAILED_TO_CREATE_TMP_DIR: Remedy(
        OWNER_DESKTOP, "Check free space and the user's %TEMP% folder."
    ),
    ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE: Remedy(
        OWNER_DESKTOP, "Check the log share's path and rights."
    ),
    ExitFlags.INVALID_SWITCH_MSG: Remedy(
        OWNER_EXCHANGE,
        "The switch message is invalid: check the migration's switch settings.",
    ),
}
"""Who acts on each problem flag and how (owners ours, steps from the vendor's guide)."""
FLAG_HINTS: dict[ExitFlags, str] = {flag: r.next_step for flag, r in FLAG_REMEDIES.items()}

# Flags that mean the run did not do its job on this workstation.
FAILURE_FLAGS = (
    ExitFlags.SWITCH_ERR
    | ExitFlags.USER_ABORT
    | ExitFlags.GLOBAL_ERR
    | ExitFlags.CRASH
    | ExitFlags.INVALID_SWITCH_MSG
)


@dataclass(frozen=True)
class ExitStatus:
    """A decoded CPUU exit code. Kept whole: values above 255 are real on Windows."""

    code: int

    @property
    def flags(self) -> ExitFlags:
        """CPUU's flags in the code; none when the code is Windows' (see ``windows``)."""
        return ExitFlags(0) if self.windows is not None else ExitFlags(self.code & _ALL_FLAGS)

    @property
    def unknown_bits(self) -> int:
        return 0 if self.windows is not None else self.code & ~_ALL_FLAGS

    @property
    def cannot_start(self) -> bool:
        """Exit code 0: CPUU found nothing to do. Not success, not failure."""
        return self.code == 0

    @property
    def succeeded(self) -> bool:
        """SUCCESS set and no failure flag. Only meaningful when CPUU exited on its own."""
        return bool(self.flags & ExitFlags.SUCCESS) and not self.flags & FAILURE_FLAGS

    @property
    def windows(self) -> tuple[str, str] | None:
        """(name, meaning) when the code is Windows' rather than CPUU's mask
        (``WINDOWS_EXIT_CODES``, or any NTSTATUS/HRESULT-sized code); None for CPUU's."""
        known = WINDOWS_EXIT_CODES.get(self.code)
        if known is not None:
            return known
        if self.code >= _WINDOWS_STATUS or self.code < 0:
            return (f"WINDOWS_0x{self.code & 0xFFFFFFFF:08X}", "a Windows status, not CPUU's")
        return None

    def names(self) -> list[str]:
        """Flag names, CANNOT_START for zero, and UNKNOWN_0x... for bits the vendor never listed.

        A code that is Windows' (Task Scheduler's 267014 after a stop, cmd's 9009, an NTSTATUS
        such as a closed console's 0xC000013A) stands where CPUU's mask would: it is named as
        what it is, never decoded as CPUU's bits."""
        if self.code == 0:
            return ["CANNOT_START"]
        if self.windows is not None:
            return [self.windows[0]]
        names = [flag.name for flag in ExitFlags if flag in self.flags and flag.name]
        if self.unknown_bits:
            names.append(f"UNKNOWN_0x{self.unknown_bits:X}")
        return names

    def describe(self) -> str:
        return f"{self.code} ({'|'.join(self.names())})"


_ALL_FLAGS = 0
for _flag in ExitFlags:
    _ALL_FLAGS |= int(_flag)

#: The flag that speaks for an exit code when several are set: what stopped CPUU first, then
#: what the mailbox lacks, then the per-profile failure (whose codes usually say more), then logs.
_FLAG_PRIORITY = (
    ExitFlags.USER_ABORT, ExitFlags.GLOBAL_ERR, ExitFlags.CRASH, ExitFlags.INVALID_SWITCH_MSG,
    ExitFlags.NO_SWITCH_MSG, ExitFlags.SWITCH_ERR, ExitFlags.FAILED_TO_CREATE_TMP_DIR,
    ExitFlags.FAILED_TO_WRITE_LOG, ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE,
)  # fmt: skip


UNKNOWN_BITS_STEP = (
    "CPUU set exit bits its vendor never documented: read the CPUU log and ask the vendor."
)
"""The next step for exit bits no table explains."""


@dataclass(frozen=True)
class ExitCause:
    """What an exit code says went wrong: a name a lead can group by, who acts and how."""

    name: str
    remedy: Remedy
    known: bool
    """False for a Windows status or flag bits the tables do not know (an "unknown failure")."""


def exit_cause(code: int | None, killed: bool = False) -> ExitCause | None:
    """The one cause an exit code names (None when it names none: no code, or plain success).

    Assumption (the vendor is silent on it): when CPUU sets several problem flags, the first of
    :data:`_FLAG_PRIORITY` is the one a person acts on first."""
    if killed:
        return ExitCause("KILLED_ON_DEADLINE", KILLED_REMEDY, True)
    if code is None:
        return None
    status = ExitStatus(int(code))
    if status.windows is not None:
        name, meaning = status.windows
        owner = WINDOWS_EXIT_OWNERS.get(status.code, OWNER_DESKTOP)
        step = meaning[:1].upper() + meaning[1:] + "."
        return ExitCause(name, Remedy(owner, step), status.code in WINDOWS_EXIT_CODES)
    for flag in _FLAG_PRIORITY:
        if flag in status.flags:
            return ExitCause(str(flag.name), FLAG_REMEDIES[flag], True)
    if status.unknown_bits:
        return ExitCause(status.names()[-1], Remedy(OWNER_DESKTOP, UNKNOWN_BITS_STEP), False)
    return None


# --------------------------------------------------------------------------------------------------
# Result files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileResult:
    """One line of a CPUU result file: a profile and its current and previous status codes."""

    profile: str
    current: int
    previous: int | None
    line: int

    @property
    def info(self) -> CodeInfo:
        return code_info(self.current)


@dataclass(frozen=True)
class ResultProblem:
    """A line the parser could not read. Reported with its place, never silently dropped."""

    line: int
    text: str
    reason: str


@dataclass(frozen=True)
class ResultFile:
    """A parsed result file: what could be read, what could not, and how it was encoded."""

    path: str
    encoding: str
    profiles: tuple[ProfileResult, ...]
    problems: tuple[ResultProblem, ...]
    had_header: bool
    truncated: bool = False
    """Reading stopped at ``max_rows`` lines: the file has more (a hostile or broken file)."""


DEFAULT_MAX_ROWS = 10_000
"""Lines read from one result file at the most (``limits.result_rows`` of a play): a user has a
handful of profiles, a file of millions of lines is hostile and must cost bounded memory."""

MAX_LINE_CHARS = 1024
"""A longer line is a problem, not a profile. Assumption: Outlook profiles are registry keys,
whose names Windows limits to 255 characters; two codes and two TABs add a few more."""


def decode_result_bytes(data: bytes, source: str) -> tuple[str, str]:
    """Decode a result file whose encoding the vendor never documented (the one Windows text
    decoder, :mod:`cpuu_fleet.wintext`, says in which order it looks)."""
    return wintext.decode(data, source)


_LINE_BREAKS = "\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029"
"""What ``str.splitlines`` ends a line at."""


def _lines(pieces: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """``(number, line, too_long)`` for each line, numbered as ``str.splitlines`` would number
    them; a line longer than :data:`MAX_LINE_CHARS` comes cut short with ``too_long`` set."""
    number = 0
    pending = ""
    skipping = False
    for piece in pieces:
        parts = (pending + piece).splitlines(keepends=True)
        pending = ""
        if parts and (parts[-1] == parts[-1].rstrip(_LINE_BREAKS) or parts[-1].endswith("\r")):
            pending = parts.pop()  # no line end yet, or a CR that a LF may follow
        for part in parts:
            if skipping:
                skipping = False
                continue  # the end of a line already reported as too long
            number += 1
            line = (part.splitlines() or [""])[0]
            yield number, line[:MAX_LINE_CHARS], len(line) > MAX_LINE_CHARS
        if len(pending) > MAX_LINE_CHARS:
            if not skipping:
                number += 1
                yield number, pending[:MAX_LINE_CHARS], True
            skipping = True
            pending = ""
    if pending and not skipping:
        number += 1
        line = (pending.splitlines() or [""])[0]
        yield number, line[:MAX_LINE_CHARS], len(line) > MAX_LINE_CHARS


def _looks_like_header(fields: list[str]) -> bool:
    """A first line whose code columns are not numbers is a header, not a malformed profile line."""
    return (
        len(fields) >= 2 and not fields[1].strip().lstrip("-").isdigit() and fields[1].strip() != ""
    )


def _parse_code(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        return int(text, 10)
    except ValueError:
        return None


def _parse_line(number: int, line: str) -> ProfileResult | ResultProblem:
    """One ``profile<TAB>current<TAB>previous`` line (split on TAB only: names hold spaces)."""
    fields = line.split("\t")
    if len(fields) < 2:
        return ResultProblem(number, line, "expected profile<TAB>current<TAB>previous")
    # A trailing empty field (a line ending in TAB) is tolerated; more columns are not.
    while len(fields) > 3 and fields[-1].strip() == "":
        fields.pop()
    if len(fields) > 3:
        return ResultProblem(number, line, f"{len(fields)} tab-separated fields, expected 3")
    name = fields[0]
    current = _parse_code(fields[1])
    if current is None:
        return ResultProblem(number, line, f"current code {fields[1]!r} is not a number")
    previous: int | None = None
    if len(fields) == 3 and fields[2].strip():
        previous = _parse_code(fields[2])
        if previous is None:
            return ResultProblem(number, line, f"previous code {fields[2]!r} is not a number")
    if not name.strip():
        return ResultProblem(number, line, "empty profile name")
    return ProfileResult(name, current, previous, number)


def _parse_lines(
    lines: Iterable[tuple[int, str, bool]], source: str, encoding: str, max_rows: int | None
) -> ResultFile:
    """Profiles and problems of numbered lines; stops after ``max_rows`` non-empty lines."""
    profiles: list[ProfileResult] = []
    problems: list[ResultProblem] = []
    had_header = truncated = False
    first_content_line = True
    for number, line, too_long in lines:
        if not line.strip() and not too_long:
            continue
        if first_content_line:
            first_content_line = False
            if not too_long and _looks_like_header(line.split("\t")):
                had_header = True
                continue
        if max_rows is not None and len(profiles) + len(problems) >= max_rows:
            truncated = True
            break
        if too_long:
            problems.append(
                ResultProblem(number, line[:200] + "…", f"longer than {MAX_LINE_CHARS} characters")
            )
            continue
        parsed = _parse_line(number, line)
        if isinstance(parsed, ProfileResult):
            profiles.append(parsed)
        else:
            problems.append(parsed)
    return ResultFile(source, encoding, tuple(profiles), tuple(problems), had_header, truncated)


def parse_result_text(
    text: str, source: str, encoding: str = "utf-8", *, max_rows: int | None = None
) -> ResultFile:
    """Parse ``profile<TAB>current<TAB>previous`` lines; split on TAB only (names hold spaces)."""
    return _parse_lines(_lines([text]), source, encoding, max_rows)


def parse_result_stream(
    stream: BinaryIO, source: str, *, max_rows: int | None = DEFAULT_MAX_ROWS
) -> ResultFile:
    """Detect, decode and parse a result file as it is read: memory stays flat whatever its size,
    and reading stops after ``max_rows`` lines (``ResultFile.truncated``)."""
    encoding = wintext.detect(stream, source)
    pieces = wintext.decoded(stream, encoding, source)
    return _parse_lines(_lines(pieces), source, encoding, max_rows)


def parse_result_bytes(
    data: bytes, source: str, *, max_rows: int | None = DEFAULT_MAX_ROWS
) -> ResultFile:
    return parse_result_stream(io.BytesIO(data), source, max_rows=max_rows)


def parse_result_file(path: str | Path, *, max_rows: int | None = DEFAULT_MAX_ROWS) -> ResultFile:
    """Read and parse one result file; an unreadable or non-text file is an :class:`InputError`."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return parse_result_stream(stream, str(path), max_rows=max_rows)
    except OSError as exc:
        raise InputError(f"cannot read result file ({exc.strerror})", where=path) from None


def summarise_codes(results: Iterable[ProfileResult]) -> dict[Outcome, int]:
    """Count profiles per outcome class, the shape a wave summary needs."""
    counts = {outcome: 0 for outcome in Outcome}
    for result in results:
        counts[result.info.outcome] += 1
    return counts
