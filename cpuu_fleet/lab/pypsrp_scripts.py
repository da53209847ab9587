"""pypsrp's own scripts, played in Python: ``Client.copy``, ``Client.fetch``, ``Client.execute_ps``.

pypsrp sends copy.ps1/fetch.ps1 after stripping comments and blank lines
(``pypsrp._utils.get_pwsh_script``); the lab compares against that exact text. ``execute_ps`` sends
``Invoke-Expression -Command <script> | Out-String -Stream`` (after optional ``New-Item env:``
statements); only a tiny, documented set of expressions is understood, anything else fails like
Windows' CommandNotFound.

The handlers act on ``workstation.fs`` (a ``WindowsFS``) and mirror the scripts' observable
behaviour, including their exact error texts.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import ntpath
import re
import shlex
from typing import Any

from pypsrp._utils import get_pwsh_script

from cpuu_fleet.lab.contract import PipelineHost, ScriptCall, ScriptFailed, ScriptHandler

COPY_SCRIPT = get_pwsh_script("copy.ps1")
FETCH_SCRIPT = get_pwsh_script("fetch.ps1")

NOT_RECOGNIZED = (
    "The term '{term}' is not recognized as the name of a cmdlet, function, script file, or "
    "operable program. Check the spelling of the name, or if a path was included, verify that "
    "the path is correct and try again."
)


class CommandNotFound(ScriptFailed):
    """Windows' CommandNotFoundException (ObjectNotFound), a terminating error."""

    exception_type = "System.Management.Automation.CommandNotFoundException"

    def __init__(self, term: str, *, via_iex: bool = False):
        error_id = "CommandNotFoundException"
        if via_iex:
            error_id += ",Microsoft.PowerShell.Commands.InvokeExpressionCommand"
        super().__init__(
            NOT_RECOGNIZED.format(term=term), error_id=error_id, category="ObjectNotFound"
        )
        self.term = term


def current_location(host: PipelineHost) -> str:
    """The remote session's working folder (a WinRM logon starts in the user's Documents)."""
    return getattr(host, "current_location", "C:\\Users\\Public\\Documents")


def full_path(raw: str, host: PipelineHost) -> str:
    """``GetUnresolvedProviderPathFromPSPath``: absolute Windows path, relative to the cwd."""
    path = raw.replace("/", "\\")
    if re.match(r"^[A-Za-z]:\\", path):
        return ntpath.normpath(path)
    base = current_location(host)
    if path.startswith("\\"):
        return ntpath.normpath(base[:2] + path)
    return ntpath.normpath(ntpath.join(base, path))


def expand_env(raw: str, workstation: Any) -> str:
    """``[Environment]::ExpandEnvironmentVariables`` over the few variables the lab knows."""
    env = getattr(workstation, "environment", None) or {}

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        for key, value in env.items():
            if key.lower() == name.lower():
                return str(value)
        return match.group(0)

    return re.sub(r"%([^%]+)%", sub, raw)


def _args(call: ScriptCall) -> tuple[str, bool]:
    path = str(call.arguments[0]) if call.arguments else ""
    expand = bool(call.arguments[1]) if len(call.arguments) > 1 else False
    return path, expand


def method_failed(method: str, arguments: int, exc: Exception) -> ScriptFailed:
    """A .NET method call that threw, as PowerShell reports it (MethodInvocationException)."""
    if isinstance(exc, FileNotFoundError):
        kind, text = "DirectoryNotFoundException", "Could not find a part of the path."
    elif isinstance(exc, ValueError):
        kind, text = "NotSupportedException", "The given path's format is not supported."
    elif getattr(exc, "errno", None) == errno.ENOSPC or type(exc).__name__ == "DiskFullError":
        kind, text = "IOException", "There is not enough space on the disk.\r\n"
    elif isinstance(exc, PermissionError | IsADirectoryError):
        kind, text = "UnauthorizedAccessException", "Access to the path is denied."
    else:
        kind, text = "IOException", str(exc)
    return ScriptFailed(
        f'Exception calling "{method}" with "{arguments}" argument(s): "{text}"',
        error_id=kind,
        category="NotSpecified",
    )


def copy_handler(workstation: Any, call: ScriptCall, host: PipelineHost) -> None:
    """copy.ps1: base64 chunks on the input, the last input is the SHA1 hex (base64); write a
    temp file, check the hash, replace the destination, output its full path."""
    fs = workstation.fs
    raw, expand = _args(call)
    temp = fs.temp_path()
    sha1 = hashlib.sha1()
    previous: bytes | None = None
    try:
        with fs.open_write(temp) as out:
            for item in call.input:
                if previous is not None:
                    sha1.update(previous)
                    try:
                        out.write(previous)
                    except OSError as exc:
                        raise method_failed("Write", 3, exc) from exc
                previous = base64.b64decode(str(item) if item is not None else "")
        if expand:
            raw = expand_env(raw, workstation)
        dest = full_path(raw, host)
        expected = (previous or b"").decode("utf-8", "replace")
        actual = sha1.hexdigest()
        if actual != expected:
            raise ScriptFailed(
                f"Transport failure, hash mismatch\r\nActual: {actual}\r\nExpected: {expected}",
                category="OperationStopped",
            )
        try:
            if fs.exists(dest):
                fs.delete(dest)
        except (OSError, ValueError) as exc:
            raise method_failed("Delete", 1, exc) from exc
        try:
            fs.move(temp, dest)
        except (OSError, ValueError) as exc:
            raise method_failed("Move", 2, exc) from exc
        host.write_output(dest)
    finally:
        if fs.exists(temp):
            fs.delete(temp)


def fetch_handler(workstation: Any, call: ScriptCall, host: PipelineHost) -> None:
    """fetch.ps1: the whole file as ONE base64 string, then its SHA1 hex.

    A 0-byte file: fetch.ps1's read loop never runs, ``$bytes`` stays ``$null`` and
    ``TransformFinalBlock($null, 0, 0)`` throws under ``ErrorActionPreference = 'Stop'``. The lab
    reproduces that (read from the script, not verified on a real host).
    """
    fs = workstation.fs
    raw, expand = _args(call)
    if expand:
        raw = expand_env(raw, workstation)
    src = full_path(raw, host)
    try:
        is_dir, exists = fs.is_dir(src), fs.exists(src)
    except ValueError as exc:
        raise method_failed("GetUnresolvedProviderPathFromPSPath", 1, exc) from exc
    if is_dir:
        raise ScriptFailed(f"The path at '{src}' is a directory, src must be a file")
    if not exists:
        raise ScriptFailed(f"The path at '{src}' does not exist")
    try:
        with fs.open_read(src) as handle:
            data = handle.read()
    except OSError as exc:
        raise method_failed("Read", 3, exc) from exc
    if not data:
        raise ScriptFailed(
            'Exception calling "TransformFinalBlock" with "3" argument(s): "Value cannot be '
            'null.\r\nParameter name: inputBuffer"',
            error_id="ArgumentNullException",
            category="NotSpecified",
        )
    host.write_output(base64.b64encode(data).decode("ascii"))
    host.write_output(hashlib.sha1(data).hexdigest())


# -- execute_ps: Invoke-Expression with a tiny vocabulary ---------------------------------------


def _statements(script: str) -> list[str]:
    """Split on newlines and ``;`` outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    for ch in script:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
            current.append(ch)
        elif ch in ";\n\r":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip() and not p.strip().startswith("#")]


def _literal(token: str) -> str | None:
    token = token.strip()
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    if re.fullmatch(r"-?\d+(\.\d+)?", token):
        return token
    return None


def _argument(token: str) -> str | None:
    """A command argument: a quoted/number literal, or a bare word as PowerShell binds it."""
    value = _literal(token)
    if value is not None:
        return value
    token = token.strip()
    if token and re.fullmatch(r"[^\s$()@{}'\";|&]+", token):
        return token
    return None


def _words(statement: str) -> list[str]:
    try:
        return shlex.split(statement, posix=False)
    except ValueError:
        return statement.split()


def _iex_statement(
    statement: str, workstation: Any, host: PipelineHost, environment: dict[str, str]
) -> None:
    words = _words(statement)
    head = words[0].lower()
    rest = " ".join(words[1:])
    literal = _literal(statement)
    name = str(getattr(workstation, "name", "WORKSTATION")).upper()
    if literal is not None:
        host.write_output(literal)
        return
    if statement.lower() in ("$true", "$false"):
        host.write_output("True" if statement.lower() == "$true" else "False")
        return
    variable = re.fullmatch(r"\$env:([A-Za-z_][A-Za-z0-9_]*)", statement)
    if variable and variable.group(1).lower() != "computername":
        wanted = variable.group(1).lower()
        for key, value in environment.items():
            if key.lower() == wanted:
                host.write_output(value)
        return
    if statement.lower() in ("$env:computername", "hostname", "[environment]::machinename"):
        host.write_output(name)
        return
    if statement.lower() in ("$psversiontable.psversion.tostring()", "$psversiontable.psversion"):
        host.write_output("5.1.14393.2248")
        return
    if statement.lower() == "$psversiontable.psversion.major":
        host.write_output("5")
        return
    if head in ("write-output", "echo") and len(words) > 1:
        value = _argument(rest.removeprefix("-InputObject ").strip())
        if value is not None:
            host.write_output(value)
            return
    if head == "write-error" and len(words) > 1:
        value = _argument(rest.removeprefix("-Message ").strip())
        if value is not None:
            host.write_error(value, error_id="Microsoft.PowerShell.Commands.WriteErrorException")
            return
    if head == "write-warning" and len(words) > 1:
        value = _argument(rest.removeprefix("-Message ").strip())
        if value is not None:
            host.write_warning(value)
            return
    if head == "throw" and len(words) > 1:
        value = _literal(rest)
        if value is not None:
            raise ScriptFailed(value, error_id=value, category="OperationStopped")
    if head == "start-sleep":
        match = re.fullmatch(
            r"(?:-(s|seconds|milliseconds|m)\s+)?(\d+(?:\.\d+)?)", rest.strip(), re.I
        )
        if match:
            unit = (match.group(1) or "s").lower()
            amount = float(match.group(2))
            host.sleep(amount / 1000 if unit in ("m", "milliseconds") else amount)
            return
    if head == "test-path" and len(words) > 1:
        value = _argument(rest.removeprefix("-Path ").removeprefix("-LiteralPath ").strip())
        if value is not None:
            host.write_output("True" if workstation.fs.exists(full_path(value, host)) else "False")
            return
    if head in ("get-content", "type", "cat") and len(words) > 1:
        value = _argument(rest.removeprefix("-Path ").removeprefix("-LiteralPath ").strip())
        if value is not None:
            path = full_path(value, host)
            if not workstation.fs.exists(path):
                raise ScriptFailed(
                    f"Cannot find path '{path}' because it does not exist.",
                    error_id="PathNotFound,Microsoft.PowerShell.Commands.GetContentCommand",
                    category="ObjectNotFound",
                )
            with workstation.fs.open_read(path) as handle:
                text = handle.read().decode("utf-8-sig", "replace")
            for line in text.splitlines():
                host.write_output(line)
            return
    raise CommandNotFound(words[0], via_iex=True)


def iex_handler(workstation: Any, call: ScriptCall, host: PipelineHost) -> None:
    """``Invoke-Expression -Command <script> | Out-String -Stream`` over the tiny vocabulary:
    literals, ``Write-Output``/``echo``, ``Write-Error``, ``Write-Warning``, ``throw``,
    ``Start-Sleep``, ``Test-Path``, ``Get-Content``, ``$env:COMPUTERNAME``/``hostname``,
    ``$env:NAME`` (set through execute_ps's ``environment``),
    ``$PSVersionTable.PSVersion``; each output line is a string, as Out-String -Stream makes it."""
    environment = dict(call.param("Environment", {}) or {})
    run_expressions(str(call.param("Command", "")), workstation, host, environment)


def run_expressions(
    script: str, workstation: Any, host: PipelineHost, environment: dict[str, str] | None = None
) -> None:
    """Run each statement of ``script`` through the tiny vocabulary (see :func:`iex_handler`);
    ``$env:NAME`` reads ``environment`` (execute_ps's ``New-Item env:`` statements)."""
    for statement in _statements(script):
        _iex_statement(statement, workstation, host, environment or {})


# -- recognition -----------------------------------------------------------------------------


def split_parameters(command: Any) -> tuple[list[Any], dict[str, Any]]:
    arguments: list[Any] = []
    parameters: dict[str, Any] = {}
    for name, value in command.parameters:
        if name is None:
            arguments.append(value)
        else:
            parameters[str(name)] = True if value is None else value
    return arguments, parameters


def recognise(commands: list[Any]) -> tuple[ScriptCall, ScriptHandler] | None:
    """pypsrp's copy/fetch/execute_ps pipelines -> (call, handler); None for anything else."""
    if not commands:
        return None
    first = commands[0]
    text = str(first.command_text)
    if first.is_script and text in (COPY_SCRIPT, FETCH_SCRIPT):
        arguments, parameters = split_parameters(first)
        name = "pypsrp:copy" if text == COPY_SCRIPT else "pypsrp:fetch"
        handler = copy_handler if text == COPY_SCRIPT else fetch_handler
        return ScriptCall(name, text, arguments, parameters), handler
    environment: dict[str, str] = {}
    index = 0
    while index < len(commands) and str(commands[index].command_text).lower() == "new-item":
        _, params = split_parameters(commands[index])
        if str(params.get("Path", "")).lower() == "env:":
            environment[str(params.get("Name"))] = str(params.get("Value"))
        index += 1
        if index < len(commands) and str(commands[index].command_text).lower() == "out-null":
            index += 1
    rest = commands[index:]
    names = [str(c.command_text).lower() for c in rest]
    if names == ["invoke-expression", "out-string"] and not rest[0].is_script:
        arguments, parameters = split_parameters(rest[0])
        script = str(parameters.get("Command", arguments[0] if arguments else ""))
        parameters = {"Command": script, "Environment": environment}
        return ScriptCall("iex", script, [], parameters), iex_handler
    return None
