"""Errors that mean "the operator gave us something we cannot use".

The CLI turns an :class:`InputError` into one line on stderr and exit code 2. Everything that goes
wrong on a workstation is *not* an exception: it is a per-host result (see the runner).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from cpuu_fleet.redact import printable


class InputError(Exception):
    """Bad operator input: a file, a pattern, a variable. Printed as one line, exit code 2.

    ``where`` names the place (``file:line``, a host, a variable) so the operator can go straight
    to it. The message must never contain a secret value.
    """

    def __init__(self, message: str, *, where: str | Path | None = None, line: int | None = None):
        self.message = message
        self.where = str(where) if where is not None else None
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        """One line, always: names that come from files or workstations may hold newlines or
        control characters, and an error must never spill over (or forge) further lines."""
        if self.where is None:
            text = self.message
        else:
            location = self.where if self.line is None else f"{self.where}:{self.line}"
            text = f"{location}: {self.message}"
        return _one_line(text)


def _one_line(text: str) -> str:
    return printable(text)  # the one place that makes such text safe


class ControllerWriteError(Exception):
    """The controller could not write its own files: disk full, over quota, a read-only or
    unwritable folder. Printed as one line, exit code 4 (:data:`CONTROLLER_WRITE_EXIT`).

    Not bad input (nothing the operator typed is wrong) and not a host's result (no workstation
    did anything): the run stops starting hosts and is recorded as ``interrupted`` where the
    journal can still be written, so ``--resume`` carries on once there is room.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(self.render())

    def render(self) -> str:
        return _one_line(self.message)


#: The exit code of :class:`ControllerWriteError` (documented in README and ``play --help``).
CONTROLLER_WRITE_EXIT = 4

# errno values that mean "this controller cannot write here": no space, a file over the size
# limit (RLIMIT_FSIZE gives EFBIG), over quota, a read-only file system, no permission.
_WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EFBIG", "EDQUOT", "EROFS", "EACCES", "EPERM")
    if hasattr(errno, name)
)
# SQLite's primary result codes for the same (FULL, IOERR, READONLY), and their messages for
# Pythons before 3.11, whose sqlite3 exceptions carry no code.
_SQLITE_WRITE_CODES = frozenset({13, 10, 8})
_SQLITE_WRITE_TEXTS = ("database or disk is full", "disk i/o error", "readonly database")


def write_fault(exc: BaseException) -> str | None:
    """Why the controller could not write, if ``exc`` (or its cause) says so; else None.

    A short reason (``No space left on device: reports/…/run.log``), never a traceback.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ControllerWriteError):
            return current.message
        if isinstance(current, OSError) and current.errno in _WRITE_ERRNOS:
            why = current.strerror or os.strerror(current.errno or 0)
            return f"{why}: {current.filename}" if current.filename else why
        code = getattr(current, "sqlite_errorcode", None)
        text = str(current)
        if type(current).__module__ == "sqlite3" and (
            (code is not None and code & 0xFF in _SQLITE_WRITE_CODES)
            or any(t in text.lower() for t in _SQLITE_WRITE_TEXTS)
        ):
            return f"the journal: {text}"
        current = current.__cause__ or current.__context__
    return None
