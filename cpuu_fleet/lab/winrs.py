"""The WinRS cmd shell (``Client.execute_cmd``): a tiny ``cmd.exe`` over the workstation model.

The lab cannot run programs, so a command line is understood only if it is one of: ``echo``,
``hostname``, ``type <file>``, ``exit /b N``, ``cmd /c <one of these>``, or ``powershell[.exe]
[-Command] <script>`` / ``-EncodedCommand <base64>``, the script then going through the same tiny
vocabulary as ``Client.execute_ps``. Anything else answers as cmd.exe does for an unknown program
(stderr text, exit code 1). Each command runs to completion when it is created; Receive returns
stdout, stderr and the exit code at once, as Windows does for a quick process.
"""

from __future__ import annotations

import base64
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cpuu_fleet.lab.contract import PipelineStopped, ScriptFailed
from cpuu_fleet.lab.psrp import ShellSettings, UnknownCommand
from cpuu_fleet.lab.pypsrp_scripts import full_path, run_expressions

NOT_A_COMMAND = (
    "'{name}' is not recognized as an internal or external command,\r\n"
    "operable program or batch file.\r\n"
)


@dataclass
class CommandResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class _TextHost:
    """A PipelineHost that renders what a script writes as console text (powershell.exe)."""

    def __init__(self, current_location: str):
        self.stopping = threading.Event()
        self.current_location = current_location
        self.out: list[str] = []
        self.err: list[str] = []

    def write_output(self, value: Any) -> None:
        self.out.append(str(value))

    def write_error(
        self, message: str, *, error_id: str = "", category: str = "NotSpecified"
    ) -> None:
        self.err.append(message)

    def write_warning(self, message: str) -> None:
        self.out.append(f"WARNING: {message}")

    def write_verbose(self, message: str) -> None:
        """Verbose output is not shown by default ($VerbosePreference = SilentlyContinue)."""

    def sleep(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise PipelineStopped()


def _lines(items: list[str]) -> bytes:
    return "".join(f"{item}\r\n" for item in items).encode("utf-8")


def run_command_line(line: str, workstation: Any, current_location: str) -> CommandResult:
    """Play one cmd.exe command line (see module docstring)."""
    text = line.strip()
    words = text.split(None, 1)
    name = words[0] if words else ""
    rest = words[1] if len(words) > 1 else ""
    lower = name.lower()
    if lower == "cmd" and re.match(r"/c\s", rest, re.I):
        return run_command_line(rest[3:], workstation, current_location)
    if lower == "echo":
        return CommandResult(_lines([rest]), b"", 0)
    if lower == "hostname" and not rest:
        return CommandResult(_lines([str(getattr(workstation, "name", "")).upper()]), b"", 0)
    if lower == "exit":
        match = re.fullmatch(r"(?:/b\s+)?(-?\d+)", rest.strip(), re.I)
        return CommandResult(b"", b"", int(match.group(1)) if match else 0)
    if lower == "type" and rest:
        path = full_path(rest.strip().strip('"'), _TextHost(current_location))  # type: ignore[arg-type]
        if not workstation.fs.exists(path):
            return CommandResult(b"", b"The system cannot find the file specified.\r\n", 1)
        return CommandResult(workstation.fs.read_bytes(path), b"", 0)
    if lower in ("powershell", "powershell.exe"):
        return _powershell(rest, workstation, current_location)
    return CommandResult(b"", NOT_A_COMMAND.format(name=name).encode("utf-8"), 1)


def _powershell(arguments: str, workstation: Any, current_location: str) -> CommandResult:
    encoded = re.match(r"-(?:e|ec|encodedcommand)\s+(\S+)", arguments, re.I)
    if encoded:
        script = base64.b64decode(encoded.group(1)).decode("utf-16-le")
    else:
        script = re.sub(r"^-(?:c|command)\s+", "", arguments, flags=re.I)
    host = _TextHost(current_location)
    try:
        run_expressions(script, workstation, host)  # type: ignore[arg-type]
    except ScriptFailed as exc:
        host.err.append(exc.message)
        return CommandResult(_lines(host.out), _lines(host.err), 1)
    return CommandResult(_lines(host.out), _lines(host.err), 1 if host.err else 0)


@dataclass
class WinRSShell:
    """One ``.../windows/shell/cmd`` shell and the results of its commands."""

    shell_id: str
    resource_uri: str
    settings: ShellSettings
    workstation: Any
    results: dict[str, CommandResult] = field(default_factory=dict)
    created_at: float = field(default_factory=time.monotonic)
    last_activity: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run_time(self) -> str:
        seconds = int(time.monotonic() - self.created_at)
        return f"P0DT{seconds // 3600}H{seconds // 60 % 60}M{seconds % 60}S"

    @property
    def current_location(self) -> str:
        user = self.settings.owner.rsplit("\\", 1)[-1] or "Public"
        return f"C:\\Users\\{user}"

    def idle_for(self, now: float) -> float:
        return now - self.last_activity

    def command(self, command: str, arguments: list[str]) -> str:
        self.last_activity = time.monotonic()
        line = " ".join([command, *arguments])
        result = run_command_line(line, self.workstation, self.current_location)
        command_id = str(uuid.uuid4()).upper()
        with self._lock:
            self.results[command_id] = result
        return command_id

    def receive(self, command_id: str) -> CommandResult:
        with self._lock:
            result = self.results.get(command_id)
        if result is None:
            raise UnknownCommand(command_id)
        return result

    def signal(self, command_id: str) -> None:
        with self._lock:
            self.results.pop(command_id, None)

    def close(self) -> None:
        with self._lock:
            self.results.clear()
