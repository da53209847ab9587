"""The lab's stand-in for ClientProfileUpdatingUtility.exe, started by a scheduled task.

Why: cpuu-fleet's whole value is to read CPUU's outcomes right (per-profile codes, the exit bit
mask, the tab-separated result file, a killed CPUU exiting 1). The emulator produces every one of
them from facts in the workstation model, exactly as ``cpuu-reference.md`` describes, and says
which assumption it makes wherever the vendor's guides are silent.

Assumptions (the vendor does not document these):

* **Mode**: an explicit ``-Mode Update|Undo|Rollback|Cleanup`` argument, or a ``-Undo``,
  ``-Rollback`` or ``-Cleanup`` switch, wins; otherwise the batch file's name decides
  (``*Rollback*``/``*Undo*`` → Undo, ``*Cleanup*`` → Cleanup, anything else → Update).
* **CPUU.ini**: read from ``-IniFile <path>`` (or ``-Config <path>``) when given, else
  ``CPUU.ini`` beside the executable, as the wizard lays the files out.
* **Output**: ``CPUU_<host>_<yyyyMMdd>_<HHmmss>.log`` and ``.csv`` go into the process's current
  directory (the task's working directory, or where the batch file ``cd``/``pushd``-ed to).
  The log is UTF-8 with BOM by default (a knob: :attr:`CpuuBehaviour.log_encoding`); the result
  file is UTF-16LE with BOM and CRLF by default (a knob: :attr:`CpuuBehaviour.csv_encoding`), no header, ``profile<TAB>current<TAB>previous``.
* **Previous code**: the code the profile got on the previous run, 0 if it never had one.
* **Exit flags per profile code**: SUCCESS when a profile was updated/restored/cleaned;
  SWITCH_ERR (Update, Undo) for codes 3, 9, 11, 13, 17..22; skips (0, 1, 2, 4..8) set no flag, so a
  run that only skips exits 0 (CANNOT_START, "nothing to do"). Cleanup may not set SWITCH_ERR (the
  reference's table), so a failed clean-up (15) sets GLOBAL_ERR and a cancelled one (16)
  USER_ABORT.
* **A profile whose mailbox is not switched** gets code 0 and NO_SWITCH_MSG; an invalid switch
  message code 0 and INVALID_SWITCH_MSG.
* **-Critical**: a profile whose listed feature cannot be migrated is left unchanged with code 11
  (and SWITCH_ERR); without -Critical it is updated (10) and the feature failure is logged.
* **Global failures** (no readable INI, no ``Admin`` and no ``AskCredentials``, servers
  unreachable) set GLOBAL_ERR and write no result file; ``AskCredentials`` with nobody answering
  the prompt is a USER_ABORT (Update, Cleanup).
"""

from __future__ import annotations

import codecs
import ntpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cpuu_fleet.cpuu import ExitFlags, Mode, code_info, decode_result_bytes
from cpuu_fleet.errors import InputError
from cpuu_fleet.lab.winfs import join_windows
from cpuu_fleet.lab.workstation import (
    TASK_BAD_DIRECTORY,
    TASK_FILE_NOT_FOUND,
    OutlookProfile,
    ProfileState,
    ScheduledTask,
    Workstation,
    backup_name,
)

EXE_NAME = "ClientProfileUpdatingUtility.exe"
CMD_NOT_RECOGNIZED = 9009
"""cmd.exe's errorlevel when a batch file names a program that does not exist."""
KILLED_EXIT_CODE = 1
"""The vendor: a CPUU process killed from outside exits with 1, like SUCCESS."""

FEATURES = (
    "Activities",
    "AddBoxes",
    "CONTAB",
    "Delegates",
    "Rules",
    "SRS",
    "SearchFolders",
    "Shortcuts",
)
DEFAULT_SERVICES = ("MSEMS", "MSPST AB", "MSPST MS", "MSUPST MS")
SUPPORTED_AUTH = {"negotiate", "kerberos", "ntlm", "password", "passwordauthentication"}
MAPI_CLIENTS = ("OUTLOOK", "lync", "Teams", "communicator")
"""Processes CPUU stops before it works, as the vendor says it stops Outlook and MAPI clients."""

_UPDATE_FAILURES = {9, 11, 17, 18, 19, 20, 21, 22}
_UNDO_FAILURES = {3, 13, 20}


# --------------------------------------------------------------------------------------------------
# Command lines and batch files
# --------------------------------------------------------------------------------------------------


def split_cmd_words(line: str) -> list[str]:
    """Split a batch line as cmd's built-ins (``cd``, ``pushd``) see it: quotes group words,
    backslashes are plain characters (``cd /d "%~dp0"`` ends in ``\\"``)."""
    return [m.group(1) if m.group(1) is not None else m.group(2) for m in _CMD_WORD.finditer(line)]


_CMD_WORD = re.compile(r'"([^"]*)"?|(\S+)')
_CMD_ARG = re.compile(r'(?:"[^"]*"?|[^\s"])+')


def split_command_line(line: str) -> list[str]:
    """Split a Windows command line the way the C runtime builds argv (quotes group, ``\\"``)."""
    args: list[str] = []
    current: list[str] = []
    in_quotes = False
    have_arg = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            slashes = 0
            while i < len(line) and line[i] == "\\":
                slashes += 1
                i += 1
            if i < len(line) and line[i] == '"':
                current.append("\\" * (slashes // 2))
                if slashes % 2:
                    current.append('"')
                    i += 1
            else:
                current.append("\\" * slashes)
            have_arg = True
            continue
        if ch == '"':
            in_quotes = not in_quotes
            have_arg = True
        elif ch in " \t" and not in_quotes:
            if have_arg:
                args.append("".join(current))
                current, have_arg = [], False
        else:
            current.append(ch)
            have_arg = True
        i += 1
    if have_arg:
        args.append("".join(current))
    return args


@dataclass
class BatchCall:
    """The CPUU invocation a batch file (or a direct command line) makes."""

    exe: str
    args: list[str]
    current_dir: str
    batch_name: str


def split_program(command: str) -> tuple[str, str]:
    """The program of a command line and the rest of it, raw (as cmd hands ``%*`` on)."""
    command = command.lstrip()
    if command.startswith('"'):
        end = command.find('"', 1)
        if end < 0:
            return command[1:], ""
        return command[1:end], command[end + 1 :].strip()
    program, _, rest = command.partition(" ")
    return program, rest.strip()


_BATCH_PERCENT = re.compile(r"%%|%~dp0|%\*|%[1-9]")


def _expand_batch_percent(line: str, batch_dir: str, raw_args: str, batch_args: list[str]) -> str:
    """Expand a batch line in one pass, as cmd does: ``%%`` is a literal ``%`` (so a value such as
    a profile name holding ``%`` survives), ``%~dp0`` the batch folder, ``%*`` and ``%1``..``%9`` the
    arguments. One pass matters: an expanded argument is never expanded again."""

    def expand(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "%%":
            return "%"
        if token == "%~dp0":
            return batch_dir
        if token == "%*":
            return raw_args
        n = int(token[1])
        return batch_args[n - 1] if n <= len(batch_args) else ""

    return _BATCH_PERCENT.sub(expand, line)


def find_cpuu_call(
    batch_text: str, batch_path: str, raw_args: str, working_dir: str
) -> BatchCall | None:
    """Walk the batch file as cmd would, as far as CPUU cares: ``cd``/``pushd`` change the current
    folder, ``%~dp0``, ``%*`` and ``%1``..``%9`` expand, the first line that names CPUU's exe is
    the call; other commands are passed over (they run and do not concern the emulator)."""
    batch_dir = ntpath.dirname(batch_path) + "\\"
    batch_args = _CMD_ARG.findall(raw_args)  # cmd keeps the quotes in %1..%9
    current = working_dir
    for raw in batch_text.splitlines():
        line = raw.strip().lstrip("@").strip()
        if not line or line.lower().startswith(("rem ", "rem\t", "::", "echo", "setlocal", ":")):
            continue
        if line.lower() == "rem":
            continue
        line = _expand_batch_percent(line, batch_dir, raw_args, batch_args)
        words = split_cmd_words(line)
        if not words:
            continue
        verb = words[0].lower()
        if verb in ("cd", "chdir", "pushd"):
            target = [w for w in words[1:] if w.lower() != "/d"]
            if target:
                path = target[0]
                current = path if ntpath.isabs(path) else ntpath.join(current, path)
            continue
        if verb in ("exit", "set", "popd", "endlocal", "goto", "if", "title", "cls"):
            continue
        if verb in ("call", "start"):
            words = [w for w in words[1:] if not w.startswith("/")]
            if not words:
                continue
        if ntpath.basename(words[0]).lower() == EXE_NAME.lower():
            exe = words[0] if ntpath.isabs(words[0]) else ntpath.join(current, words[0])
            # The exe parses its own arguments with the C runtime's rules.
            args = split_command_line(line)
            while args and ntpath.basename(args[0]).lower() != EXE_NAME.lower():
                args.pop(0)
            return BatchCall(exe, args[1:], current, ntpath.basename(batch_path))
    return None


def _quote(arg: str) -> str:
    return f'"{arg}"' if (" " in arg or not arg) else arg


# --------------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------------


@dataclass
class CpuuArguments:
    """CPUU's management parameters as the emulator understood them."""

    mode: Mode
    profiles: list[str] | None = None
    critical: list[str] = field(default_factory=list)
    process_offline: bool = False
    exclude_scp_lookup_never: bool = False
    ini_file: str | None = None
    ignored: list[str] = field(default_factory=list)
    """Arguments the emulator does not know (logged, otherwise ignored, like unknown switches)."""


def parse_arguments(args: list[str], batch_name: str) -> CpuuArguments:
    """Read ``-Profiles a "b c"``, ``-Critical Rules``, ``-ProcessOfflineProfiles On`` ...

    A parameter takes the values up to the next ``-Name`` token.
    """
    groups: list[tuple[str, list[str]]] = []
    for arg in args:
        if arg.startswith(("-", "/")) and len(arg) > 1 and not arg[1:2].isdigit():
            groups.append((arg[1:], []))
        elif groups:
            groups[-1][1].append(arg)
        else:
            groups.append(("", [arg]))
    mode = _mode_from_batch_name(batch_name)
    result = CpuuArguments(mode)
    for name, values in groups:
        key = name.lower()
        if key == "profiles":
            result.profiles = (result.profiles or []) + values
        elif key == "critical":
            result.critical += [v for value in values for v in value.split(",") if v]
        elif key == "processofflineprofiles":
            result.process_offline = bool(values) and values[0].lower() in ("on", "1", "yes")
        elif key == "excludescplookupnever":
            result.exclude_scp_lookup_never = True
        elif key == "mode" and values:
            try:
                result.mode = Mode.parse(values[0])
            except InputError:
                result.ignored.append(f"-{name} {values[0]}")
        elif key in ("undo", "rollback"):
            result.mode = Mode.UNDO
        elif key == "cleanup":
            result.mode = Mode.CLEANUP
        elif key in ("inifile", "config") and values:
            result.ini_file = values[0]
        else:
            result.ignored.append(" ".join([f"-{name}" if name else "", *values]).strip())
    return result


def _mode_from_batch_name(batch_name: str) -> Mode:
    lowered = batch_name.lower()
    if "rollback" in lowered or "undo" in lowered:
        return Mode.UNDO
    if "cleanup" in lowered:
        return Mode.CLEANUP
    return Mode.UPDATE


# --------------------------------------------------------------------------------------------------
# CPUU.ini
# --------------------------------------------------------------------------------------------------


@dataclass
class CpuuIni:
    """CPUU.ini as read leniently: keys are case-insensitive, the last value wins."""

    values: dict[str, str] = field(repr=False)
    """Raw values (quotes kept) by lower-case key. Never in the repr: they hold the encrypted
    passwords."""
    encoding: str
    skipped_lines: list[int]

    def __repr__(self) -> str:
        return f"CpuuIni(keys={sorted(self.values)}, encoding={self.encoding!r})"

    def get(self, key: str) -> str | None:
        raw = self.values.get(key.lower())
        return None if raw is None else _unquote(raw)

    def get_list(self, key: str) -> list[str]:
        raw = self.values.get(key.lower())
        return [] if raw is None else split_list(raw)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key)
        if value is None:
            return default
        return value.strip().lower() not in ("0", "no", "false", "off")


_INI_LINE = re.compile(
    r"^(?P<key>[A-Za-z][A-Za-z0-9_.]*)\s*(?:=\s*|\s+|$)(?P<value>.*)$", re.DOTALL
)


def read_ini(data: bytes, source: str = "CPUU.ini") -> CpuuIni:
    """Read CPUU.ini whatever its syntax and encoding (UTF-8 with or without BOM, UTF-16 with or
    without BOM, ANSI): ``Name value``, ``-Name value``, ``Name=value``, ``Name = "v w"``,
    ``[sections]`` (ignored: names are unique across them), ``;`` and ``#`` comments.

    Raises :class:`InputError` for a file that is not text.
    """
    text, encoding = decode_result_bytes(data, source)
    values: dict[str, str] = {}
    skipped: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw.strip().lstrip("\ufeff"))
        if not line or (line.startswith("[") and line.endswith("]")):
            continue
        line = line.lstrip("-/").strip()
        match = _INI_LINE.match(line)
        if not match:
            skipped.append(number)
            continue
        values[match.group("key").lower()] = match.group("value").strip()
    return CpuuIni(values, encoding, skipped)


def _strip_comment(line: str) -> str:
    if line.startswith((";", "#")):
        return ""
    in_quotes = False
    for index, ch in enumerate(line):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == ";" and not in_quotes and index > 0 and line[index - 1] in " \t":
            return line[:index].rstrip()
    return line


def _unquote(value: str) -> str:
    if (
        len(value) >= 2
        and value[0] == value[-1]
        and value[0] in "\"'"
        and value.count(value[0]) == 2
    ):
        return value[1:-1]
    return value


def split_list(value: str) -> list[str]:
    """A space- or comma-separated list where quoted items ("..." or '...') may hold spaces."""
    return [
        next(group for group in match.groups() if group is not None)
        for match in _LIST_ITEM.finditer(value)
    ]


_LIST_ITEM = re.compile(r'"([^"]*)"|\'([^\']*)\'|([^\s,"\']+)')


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


@dataclass
class ProfileOutcome:
    profile: str
    code: int
    previous: int


_LOG_ENCODINGS = {
    "utf-8-bom": (codecs.BOM_UTF8, "utf-8"),
    "utf-16le-bom": (codecs.BOM_UTF16_LE, "utf-16-le"),
    "utf-16be-bom": (codecs.BOM_UTF16_BE, "utf-16-be"),
    "cp1252": (b"", "cp1252"),
}
"""``CpuuBehaviour.log_encoding`` → (BOM, codec): the log's encoding, a per-host knob."""


@dataclass
class RunResult:
    """What one CPUU run did: the exit mask, the result lines and the log lines."""

    exit_code: int = 0
    outcomes: list[ProfileOutcome] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    write_csv: bool = True


class CpuuProcess:
    """A running CPUU (implements the workstation's ``TaskProcess``)."""

    def __init__(self, ws: Workstation, user: str, call: BatchCall):
        self.ws = ws
        self.user = user
        self.call = call
        self.args = parse_arguments(call.args, call.batch_name)
        self.started = ws.now()
        stamp = datetime.fromtimestamp(self.started, tz=timezone.utc)
        # #h of the vendor's pattern: the computer name, upper case as %COMPUTERNAME% has it.
        base = f"CPUU_{ws.name.upper()}_{stamp:%Y%m%d}_{stamp:%H%M%S}"
        self.log_path = join_windows(call.current_dir, base + ".log")
        self.csv_path = join_windows(call.current_dir, base + ".csv")
        self.log_failed = ws.cpuu.log_write_fails
        self._log_lines: list[str] = []
        self._log(f"ClientProfileUpdatingUtility (lab emulator) started as {user}")
        self._log(f"Mode: {self.args.mode.value}; command line: {self._safe_args()}")
        for ignored in self.args.ignored:
            self._log(f"Unknown parameter ignored: {ignored}")
        refused = ws.stop_processes(MAPI_CLIENTS)
        self._log("Stopped Outlook and other MAPI clients")
        for process in refused:
            self._log(f"Warning: {process.name} (pid {process.pid}) did not close")
        self._flush_log()  # CPUU opens its log at once: a hung or killed run leaves this much
        count = len(ws.profiles_of(user))
        behaviour = ws.cpuu
        self.finish_at: float | None = (
            None
            if behaviour.hang
            else self.started + behaviour.base_seconds + behaviour.per_profile_seconds * count
        )

    def _safe_args(self) -> str:
        return " ".join(_quote(a) for a in self.call.args)

    def _log(self, message: str, at: float | None = None) -> None:
        stamp = datetime.fromtimestamp(self.ws.now() if at is None else at, tz=timezone.utc)
        self._log_lines.append(f"{stamp:%Y-%m-%d %H:%M:%S} {message}")

    def _flush_log(self) -> None:
        """Write the log so far (the whole file again: it is small, unless padded on purpose)."""
        if self.log_failed:
            return
        text = "\r\n".join([*self._log_lines, ""])
        bom, codec = _LOG_ENCODINGS[self.ws.cpuu.log_encoding]
        if not self._may_write(self.log_path):
            return
        try:
            with self.ws.fs.open_write(self.log_path) as out:
                out.write(bom + text.encode(codec, errors="replace"))
                padding = self.ws.cpuu.log_padding_bytes - len(bom) - len(text)
                line = ("." * 1022 + "\r\n").encode(codec)
                while padding > 0:  # streamed: a padded log costs the lab no memory
                    out.write(line)
                    padding -= len(line)
        except (OSError, ValueError):
            self.log_failed = True

    def kill(self) -> int:
        self.ws.cpuu_ended(self, self.ws.now())
        return KILLED_EXIT_CODE

    def complete(self) -> int:
        # The work happened by finish_at, however late somebody looks (see Workstation.refresh).
        self.ws.cpuu_ended(self, self.finish_at if self.finish_at is not None else self.ws.now())
        ini = self._read_ini()
        result = run_cpuu(self.ws, self.user, self.args, ini)
        # The work happened by finish_at, however late somebody looks (see Workstation.refresh).
        at = self.finish_at
        if self.ws.cpuu.log_quotes_ini and not isinstance(ini, str):
            for key in ("Admin", "Password", "AdminTrg", "PasswordTrg"):
                self._log(f"Setting {key} = {ini.get(key)}", at)
        for line in result.log:
            self._log(line, at)
        if result.write_csv:
            self._write_csv(result.outcomes)
        code = result.exit_code
        self._log(f"Finished with exit code {code}", at)
        self._flush_log()
        if self.log_failed:
            code |= ExitFlags.FAILED_TO_WRITE_LOG
        elif self.ws.cpuu.log_share_fails:
            code |= ExitFlags.FAILED_TO_COPY_LOCALLOG_TO_REMOTE_SHARE
        return int(code)

    def _read_ini(self) -> CpuuIni | str:
        path = self.args.ini_file or join_windows(ntpath.dirname(self.call.exe), "CPUU.ini")
        if not ntpath.isabs(path):
            path = ntpath.join(self.call.current_dir, path)
        try:
            if not self.ws.can_read(self.user, path):  # CPUU runs as its user, not as an admin
                return f"cannot read {path}: Access to the path is denied."
            return read_ini(self.ws.fs.read_bytes(path), path)
        except FileNotFoundError:
            return f"configuration file not found: {path}"
        except (OSError, ValueError) as exc:
            return f"cannot read {path}: {exc}"
        except InputError as exc:
            return f"cannot read {path}: {exc.message}"

    def _write_csv(self, outcomes: list[ProfileOutcome]) -> None:
        extra = self.ws.cpuu.extra_result_rows
        outcomes = outcomes + [ProfileOutcome(f"Extra {n}", 10, 0) for n in range(1, extra + 1)]
        text = "".join(f"{o.profile}\t{o.code}\t{o.previous}\r\n" for o in outcomes)
        encoding = self.ws.cpuu.csv_encoding
        if encoding == "utf-16-bom":
            data = codecs.BOM_UTF16_LE + text.encode("utf-16-le")
        elif encoding == "utf-8-bom":
            data = codecs.BOM_UTF8 + text.encode("utf-8")
        elif encoding == "cp1252":
            data = text.encode("cp1252", errors="replace")
        else:
            data = text.encode("utf-8")
        if not self._may_write(self.csv_path):
            return
        try:
            self.ws.fs.write_bytes(self.csv_path, data)
        except (OSError, ValueError):
            self.log_failed = True

    def _may_write(self, path: str) -> bool:
        """CPUU writes as its user: where the ACLs refuse them, it fails to write its log
        (``FAILED_TO_WRITE_LOG``), as on a hardened image."""
        try:
            allowed = self.ws.can_write(self.user, path)
        except ValueError:
            allowed = False
        if not allowed:
            self.log_failed = True
        return allowed


def run_cpuu(ws: Workstation, user: str, args: CpuuArguments, ini: CpuuIni | str) -> RunResult:
    """Do what CPUU does to ``user``'s profiles; returns codes, log lines and the exit mask.

    Called with the workstation's lock held (from the task's completion).
    """
    behaviour = ws.cpuu
    result = RunResult()
    if behaviour.tmp_dir_fails:
        result.log.append("Cannot create the temporary folder")
        result.exit_code = ExitFlags.FAILED_TO_CREATE_TMP_DIR
        result.write_csv = False
        return result
    if isinstance(ini, str):
        return _global_error(result, ini)
    ask = ini.flag("AskCredentials") or ini.flag("AskSourceCredentialsOnly")
    if not ini.get("Admin") and not ask:
        return _global_error(result, "no Admin account in CPUU.ini")
    result.log.append(
        f"Admin: {ini.get('Admin') or '(prompt)'}; password: {'********' if ini.get('Password') else '(none)'}"
    )
    if ask and args.mode is not Mode.UNDO and not behaviour.user_answers_prompt:
        result.log.append("AskCredentials: the credential prompt was cancelled or not answered")
        result.exit_code = ExitFlags.USER_ABORT
        result.write_csv = False
        return result
    if behaviour.global_error and args.mode is not Mode.UNDO:
        return _global_error(result, "cannot connect to the source or target Exchange servers")
    mode_run = {Mode.UPDATE: _update, Mode.UNDO: _undo, Mode.CLEANUP: _cleanup}[args.mode]
    mode_run(ws, user, args, ini, result)
    return result


def _global_error(result: RunResult, reason: str) -> RunResult:
    result.log.append(f"Global error: {reason}")
    result.exit_code = ExitFlags.GLOBAL_ERR
    result.write_csv = False
    return result


def _selected(args: CpuuArguments, profile: OutlookProfile) -> bool:
    if args.profiles is None:
        return True
    name = (profile.backup_of or profile.name).casefold()
    return profile.name.casefold() in {p.casefold() for p in args.profiles} or (
        profile.backup_of is not None and name in {p.casefold() for p in args.profiles}
    )


def _each_profile(
    ws: Workstation,
    user: str,
    args: CpuuArguments,
    result: RunResult,
    handle: Callable[[OutlookProfile], int],
    *,
    include_backups: bool = True,
) -> None:
    """Run ``handle`` on each profile, honouring crash/abort facts; record outcomes."""
    behaviour = ws.cpuu
    done = 0
    profiles = list(ws.profiles_of(user))
    for index, profile in enumerate(profiles):
        if profile.backup_of is not None and not include_backups:
            continue
        if behaviour.crash_after_profiles is not None and done >= behaviour.crash_after_profiles:
            result.log.append("Unhandled exception: CPUU crashed")
            result.exit_code |= ExitFlags.CRASH
            result.write_csv = False
            return
        if (
            behaviour.user_aborts_after_profiles is not None
            and done >= behaviour.user_aborts_after_profiles
        ):
            result.log.append("The user cancelled the run")
            result.exit_code |= ExitFlags.USER_ABORT
            for rest in profiles[index:]:
                _record(result, rest, 0)
            return
        code = handle(profile) if _selected(args, profile) else 0
        if code != 0:
            done += 1
        _record(result, profile, code)


def _record(result: RunResult, profile: OutlookProfile, code: int) -> None:
    previous = profile.last_code if profile.last_code is not None else 0
    result.outcomes.append(ProfileOutcome(profile.name, code, previous))
    result.log.append(f"Profile '{profile.name}': {code} {code_info(code).name}")
    if code != 0:
        profile.last_code = code


def _update(
    ws: Workstation, user: str, args: CpuuArguments, ini: CpuuIni, result: RunResult
) -> None:
    allowed = {s.casefold() for s in ini.get_list("AllowAdditionalServices")}
    allow_all = "all" in allowed
    critical = {c.casefold() for c in args.critical}
    enabled_features = {f.casefold() for f in FEATURES if ini.flag(f, default=True)}
    flags = ExitFlags(0)
    new_backups: list[OutlookProfile] = []

    def handle(profile: OutlookProfile) -> int:
        nonlocal flags
        if profile.state is ProfileState.BACKUP:
            return 1
        if profile.state in (ProfileState.UPDATED, ProfileState.CLEANED):
            return 2
        if profile.properties_dialog_open:
            return 20
        if not profile.has_exchange_service:
            return 7
        if not profile.exchange_service_complete:
            return 5
        extra = [s for s in profile.unexpected_services if s.casefold() not in allowed]
        if extra and not allow_all:
            result.log.append(f"Unexpected services in '{profile.name}': {', '.join(extra)}")
            return 8
        if not profile.online and not args.process_offline:
            return 6
        if profile.auth_type.casefold() not in SUPPORTED_AUTH:
            return 19
        if not profile.resolvable:
            return 4
        if not profile.mailbox_switched:
            flags |= ExitFlags.NO_SWITCH_MSG
            return 0
        if not profile.switch_message_valid:
            flags |= ExitFlags.INVALID_SWITCH_MSG
            return 0
        if not profile.default_store_opens:
            return 17
        if profile.ost_size and (ws.ost_locked or ws.running("OUTLOOK")):
            return 18
        if profile.ost_size and ws.fs.free_bytes < profile.ost_size:
            return 22
        if profile.backup_fails:
            return 9
        if profile.unexpected_error:
            return 21
        failing = sorted(f for f in profile.failing_features if f.casefold() in enabled_features)
        blocking = [f for f in failing if f.casefold() in critical]
        if blocking:
            result.log.append(
                f"Critical feature(s) of '{profile.name}' cannot be updated: {', '.join(blocking)}"
            )
            return 11
        if profile.update_fails:
            return 11
        for feature in failing:
            result.log.append(f"Warning: feature {feature} of '{profile.name}' was not migrated")
        profile.state = ProfileState.UPDATED
        ws.fs.reserved_bytes += profile.ost_size
        new_backups.append(
            OutlookProfile(
                name=backup_name(profile.name),
                mailbox=profile.mailbox,
                state=ProfileState.BACKUP,
                online=profile.online,
                backup_of=profile.name,
                ost_size=profile.ost_size,
                extra_mailboxes=profile.extra_mailboxes,
            )
        )
        return 10

    _each_profile(ws, user, args, result, handle)
    ws.profiles_of(user).extend(new_backups)
    codes = {o.code for o in result.outcomes}
    if 10 in codes:
        flags |= ExitFlags.SUCCESS
    if codes & _UPDATE_FAILURES:
        flags |= ExitFlags.SWITCH_ERR
    result.exit_code |= flags


def _undo(ws: Workstation, user: str, args: CpuuArguments, ini: CpuuIni, result: RunResult) -> None:
    profiles = ws.profiles_of(user)

    def handle(profile: OutlookProfile) -> int:
        if profile.state is ProfileState.BACKUP:
            return 1
        if profile.state is ProfileState.SOURCE:
            return 0
        if profile.properties_dialog_open:
            return 20
        if profile.state is ProfileState.CLEANED:
            return 3
        if profile.restore_fails:
            return 13
        profile.state = ProfileState.SOURCE
        _drop_backup(ws, profiles, profile)
        return 12

    _each_profile(ws, user, args, result, handle)
    codes = {o.code for o in result.outcomes}
    flags = ExitFlags(0)
    if 12 in codes:
        flags |= ExitFlags.SUCCESS
    if codes & _UNDO_FAILURES:
        flags |= ExitFlags.SWITCH_ERR
    result.exit_code |= flags


def _cleanup(
    ws: Workstation, user: str, args: CpuuArguments, ini: CpuuIni, result: RunResult
) -> None:
    profiles = ws.profiles_of(user)

    def handle(profile: OutlookProfile) -> int:
        if profile.state is not ProfileState.UPDATED:
            return 0
        if profile.user_cancels_cleanup:
            return 16
        if profile.cleanup_fails:
            return 15
        profile.state = ProfileState.CLEANED
        _drop_backup(ws, profiles, profile)
        return 14

    _each_profile(ws, user, args, result, handle, include_backups=False)
    codes = {o.code for o in result.outcomes}
    flags = ExitFlags(0)
    if 14 in codes:
        flags |= ExitFlags.SUCCESS
    if 16 in codes:
        flags |= ExitFlags.USER_ABORT
    if 15 in codes:
        flags |= ExitFlags.GLOBAL_ERR
    result.exit_code |= flags


def _drop_backup(ws: Workstation, profiles: list[OutlookProfile], original: OutlookProfile) -> None:
    for candidate in list(profiles):
        if candidate.backup_of == original.name:
            profiles.remove(candidate)
            ws.fs.reserved_bytes = max(0, ws.fs.reserved_bytes - candidate.ost_size)


# --------------------------------------------------------------------------------------------------
# Starting it from a scheduled task
# --------------------------------------------------------------------------------------------------


class FinishedProcess:
    """A task action that ends at once with a fixed code (missing program, bad folder...)."""

    def __init__(self, finish_at: float, exit_code: int):
        self.finish_at = finish_at
        self.exit_code = exit_code

    def complete(self) -> int:
        return self.exit_code

    def kill(self) -> int:
        return KILLED_EXIT_CODE


def launch_task(ws: Workstation, task: ScheduledTask, user: str) -> CpuuProcess | FinishedProcess:
    """Start a task's action as ``user``: a batch file (cmd), or CPUU's exe directly."""
    now = ws.now()
    program, raw_args = split_program(task.command)
    if not program:
        return FinishedProcess(now, TASK_FILE_NOT_FOUND)
    if not ntpath.isabs(program):
        program = ntpath.join(task.working_directory, program)
    try:
        if not ws.fs.is_dir(task.working_directory):
            return FinishedProcess(now, TASK_BAD_DIRECTORY)
        if not ws.fs.is_file(program):
            return FinishedProcess(now, TASK_FILE_NOT_FOUND)
    except ValueError:
        return FinishedProcess(now, TASK_FILE_NOT_FOUND)
    if ntpath.basename(program).lower() == EXE_NAME.lower():
        args = split_command_line(raw_args)
        call = BatchCall(program, args, task.working_directory, ntpath.basename(program))
        return CpuuProcess(ws, user, call)
    if not program.lower().endswith((".bat", ".cmd")):
        return FinishedProcess(now, 0)
    text, _ = _decode_batch(ws.fs.read_bytes(program))
    call = find_cpuu_call(text, program, raw_args, task.working_directory)
    if call is None:
        return FinishedProcess(now, 0)
    try:
        present = ws.fs.is_file(call.exe)
    except ValueError:
        present = False
    if not present:
        return FinishedProcess(now, CMD_NOT_RECOGNIZED)
    try:
        if not ws.fs.is_dir(call.current_dir):
            return FinishedProcess(now, 1)
    except ValueError:
        return FinishedProcess(now, 1)
    return CpuuProcess(ws, user, call)


def _decode_batch(data: bytes) -> tuple[str, str]:
    """cmd reads batch files in the OEM/ANSI code page; UTF-8 is common in practice."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), "cp1252"
