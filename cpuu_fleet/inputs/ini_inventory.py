"""Ansible's INI inventory format, read into the same shape as a YAML inventory.

The format, as Ansible documents it ("How to build your inventory"): ``[group]`` sections list
hosts, one a line, with optional ``key=value`` variables after the name (quoted with shell
rules); ``[group:vars]`` holds ``key=value`` lines; ``[group:children]`` names child groups; host
lines before any section are ungrouped. Ranges (``pc[01:20]``) and ``host:port`` are expanded by
the inventory as for YAML.

:func:`parse_ini` returns the mapping a YAML inventory would give (``{group: {hosts, vars,
children}}``, with line numbers), so one code path checks names, expands ranges and applies
precedence, and every error names ``file:line``.

Values: as ansible-core does (checked against ``ansible-inventory --list``, 2.19), a value that is
a Python literal (``2``, ``0.5``, ``True``, ``None``, ``[1, 2]``, ``'quoted'``) becomes that value
and anything else stays a string (``true``, ``yes`` and ``Lyon Gerland`` stay text). In a
``:vars`` section the value is the rest of the line after the first ``=``.
As in ansible-core, a ``[group:vars]`` section or a ``[...:children]`` entry for a group that no
``[group]`` or ``[group:children]`` section defines is an error (likely a typo), and so is a
section suffix other than ``vars`` and ``children``.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.datafiles import LineDict

_SECTION = re.compile(r"^\[(?P<name>[^\]:\s]+)(?::(?P<kind>[^\]\s]*))?\]\s*(?:[#;].*)?$")
_YAML_START = re.compile(r"^(?:---|\{|[A-Za-z0-9_.\-]+:\s*(?:#.*)?$)")
_MAX_LITERAL = 10_000
"""Longest value tried as a Python literal (a longer one stays text: literal_eval is recursive)."""


def looks_like_ini(text: str) -> bool:
    """True when a file with no data suffix holds an INI inventory rather than YAML.

    A YAML inventory starts with ``---``, ``{`` or a ``name:`` line that opens a mapping;
    anything else (a ``[group]`` header, a host line) is INI, as Ansible would read it.
    """
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        return not _YAML_START.match(stripped)
    return False


def parse_value(text: str) -> Any:
    """A Python literal becomes its value (numbers, booleans, None, lists, dicts, quoted
    strings); anything else is the text itself."""
    if len(text) > _MAX_LITERAL:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if isinstance(value, tuple):
        return list(value)  # as YAML and JSON would hold it
    if isinstance(value, (bytes, complex, set, frozenset)):
        return text  # no such values in YAML or JSON: keep what was written
    return value


def split_words(text: str) -> list[str]:
    """A host line's words with shell quoting, ``#`` starting a comment (as ``shlex`` in POSIX
    mode does, even inside a word). A line without quotes or backslashes, nearly every line,
    is split without shlex, which is ten times slower: 40,000 hosts took 3.5 s in shlex alone."""
    if "'" in text or '"' in text or "\\" in text:
        return shlex.split(text, comments=True)
    return text.split("#", 1)[0].split()


class _Reader:
    """One pass over the lines, building group bodies in the YAML shape."""

    def __init__(self, file: Path):
        self.file = file
        self.top = LineDict()
        self.top.line = 1
        self.defined: set[str] = set()
        """Groups that a [group] or [group:children] section defines."""
        self.wanted: dict[str, tuple[str, int]] = {}
        """Groups named in a [...:vars] section or as a child: (what names it, line)."""

    def body(self, group: str, line: int) -> LineDict:
        if group not in self.top:
            body = LineDict()
            body.line = line
            self.top[group] = body
            self.top.key_lines[group] = line
        return self.top[group]

    def part(self, group: str, key: str, line: int) -> LineDict:
        body = self.body(group, line)
        if key not in body:
            part = LineDict()
            part.line = line
            body[key] = part
            body.key_lines[key] = line
        return body[key]

    def host_line(self, group: str, text: str, line: int) -> None:
        try:
            words = split_words(text)
        except ValueError as exc:
            raise InputError(
                f"cannot split the host line ({exc})", where=self.file, line=line
            ) from None
        if not words:
            return
        name, *pairs = words
        hosts = self.part(group, "hosts", line)
        variables = hosts.get(name)
        if variables is None:
            variables = LineDict()
            variables.line = line
        for pair in pairs:
            key, value = self.pair(pair, f"after host {name!r}", line)
            variables[key] = parse_value(value)
            variables.key_lines[key] = line
        hosts[name] = variables
        hosts.key_lines.setdefault(name, line)

    def vars_line(self, group: str, text: str, line: int) -> None:
        key, value = self.pair(text, f"in [{group}:vars]", line)
        variables = self.part(group, "vars", line)
        variables[key] = parse_value(value.strip())
        variables.key_lines[key] = line

    def pair(self, text: str, place: str, line: int) -> tuple[str, str]:
        """``key=value`` split at the first ``=``. The text is never quoted back in the error: it
        may be a password written with a space instead of ``=``."""
        key, sep, value = text.partition("=")
        if not sep:
            raise InputError(
                f"expected key=value {place}, found a word without '='", where=self.file, line=line
            )
        return key.strip(), value

    def child_line(self, group: str, text: str, line: int) -> None:
        child = text.split("#", 1)[0].split(";", 1)[0].strip()
        if not child:
            return
        children = self.part(group, "children", line)
        children[child] = None
        children.key_lines[child] = line
        self.wanted.setdefault(child, (f"[{group}:children] names group {child!r}", line))


def parse_ini(text: str, file: Path) -> LineDict:
    """The groups of an INI inventory as a YAML inventory's mapping (see the module doc)."""
    reader = _Reader(file)
    group, kind = "all", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            match = _SECTION.match(stripped)
            if match is None:
                raise InputError(f"bad section header {stripped!r}", where=file, line=number)
            group, kind = match["name"], match["kind"] or "hosts"
            if kind not in ("hosts", "vars", "children") or match["kind"] == "hosts":
                raise InputError(
                    f"unknown section [{stripped[1:-1]}] (expected [group], [group:vars] or "
                    "[group:children])",
                    where=file,
                    line=number,
                )
            if kind == "vars":
                reader.wanted.setdefault(group, (f"[{group}:vars] is for group {group!r}", number))
            else:
                reader.defined.add(group)
            reader.body(group, number)
            continue
        if kind == "hosts":
            reader.host_line(group, stripped, number)
        elif kind == "vars":
            reader.vars_line(group, stripped, number)
        else:
            reader.child_line(group, stripped, number)
    for name, (what, number) in reader.wanted.items():
        if name not in reader.defined and name not in ("all", "ungrouped"):
            raise InputError(
                f"{what}, which no [{name}] or [{name}:children] section defines (as in Ansible)",
                where=file,
                line=number,
            )
    if "all" in reader.top and not reader.top["all"]:
        del reader.top["all"]
    return reader.top
