"""Errors that mean "the operator gave us something we cannot use".

The CLI turns an :class:`InputError` into one line on stderr and exit code 2. Everything that goes
wrong on a workstation is *not* an exception: it is a per-host result (see the runner).
"""

from __future__ import annotations

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
