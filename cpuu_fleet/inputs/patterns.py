"""Host patterns for ``--limit``, with Ansible's grammar.

``wave1``, ``pc-00*``, ``wave1:wave2`` or ``wave1,wave2`` (union), ``wave2:!pc-0101`` (exclusion),
``site_paris:&pilot`` (intersection), ``~pc-0[0-9]+`` (regular expression), ``wave1[0:4]``
(subscript, the end included as in Ansible), ``@failed.retry`` (one pattern per line: a retry
file). As in Ansible, unions are taken first, then intersections, then exclusions, whatever order
they are written in; the result keeps inventory order.

Unlike Ansible, which only warns, a term that matches nothing is an error: during a rollout a
mistyped group name must not quietly shrink a wave.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from cpuu_fleet.errors import InputError
from cpuu_fleet.wintext import decode

_SUBSCRIPT = re.compile(r"^(?P<base>.+?)\[(?P<start>-?\d+)?(?::(?P<end>-?\d+)?)?\]$")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Term:
    """One term of a pattern, with where it came from (for error messages)."""

    text: str
    op: str  # "union", "intersect" or "exclude"
    source: str | None = None
    line: int | None = None


def split_pattern(pattern: str) -> list[str]:
    """Split on commas, or on colons outside ``[...]`` when there is no comma (Ansible's rule)."""
    if "," in pattern:
        parts = pattern.split(",")
    else:
        parts, depth, current = [], 0, []
        for char in pattern:
            if char == "[":
                depth += 1
            elif char == "]":
                depth = max(0, depth - 1)
            if char == ":" and depth == 0:
                parts.append("".join(current))
                current = []
            else:
                current.append(char)
        parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def parse_pattern(pattern: str, *, base_dir: Path | None = None) -> list[Term]:
    """Turn a ``--limit`` string into terms; ``@file`` lines are read here."""
    terms: list[Term] = []
    for part in split_pattern(pattern):
        op = "union"
        text = part
        if text[0] in "!&":
            op = "exclude" if text[0] == "!" else "intersect"
            text = text[1:].strip()
        if text.startswith("@"):
            terms.extend(_read_limit_file(text[1:], op, base_dir))
        elif text:
            terms.append(Term(text, op))
        else:
            raise InputError(f"empty term in host pattern {pattern!r}", where="--limit")
    return terms


def _read_limit_file(name: str, op: str, base_dir: Path | None) -> list[Term]:
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("limit file not found", where=path) from None
    except OSError as exc:
        raise InputError(f"cannot read limit file ({exc.strerror})", where=path) from None
    # Windows PowerShell 5's Out-File and Notepad's "Unicode" write UTF-16 with a BOM.
    try:
        text, _ = decode(data, path, ansi=False)
    except InputError:
        raise InputError(
            "limit file is not UTF-8 (or UTF-16 with a BOM) text", where=path
        ) from None
    terms: list[Term] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for part in split_pattern(line):
            line_op = op
            if part[0] in "!&" and op == "union":
                line_op = "exclude" if part[0] == "!" else "intersect"
                part = part[1:].strip()
            terms.append(Term(part, line_op, str(path), number))
    if not terms:
        raise InputError("limit file lists no hosts", where=path)
    return terms


def select(
    pattern: str,
    *,
    host_names: Sequence[str],
    group_members: Callable[[str], list[str] | None],
    group_names: Sequence[str],
    base_dir: Path | None = None,
) -> list[str]:
    """Evaluate ``pattern`` to host names in inventory order.

    ``host_names`` is the inventory's hosts in order; ``group_members(name)`` gives a group's hosts
    (with its descendants') or None when no such group exists.
    """
    terms = parse_pattern(pattern, base_dir=base_dir)
    if not terms:
        raise InputError(f"empty host pattern {pattern!r}", where="--limit")
    order = {name: index for index, name in enumerate(host_names)}
    names = _Names(host_names, order.keys(), group_names, frozenset(group_names), group_members)

    def match(term: Term) -> list[str]:
        found = _match_term(term.text, names)
        if found is None:
            hint = _hint(term.text, [*group_names, *host_names])
            message = f"host pattern {term.text!r} matches no host or group in the inventory{hint}"
            raise InputError(message, where=term.source or "--limit", line=term.line)
        return found

    unions = [t for t in terms if t.op == "union"]
    selected: dict[str, None] = {}
    if unions:
        for term in unions:
            selected.update(dict.fromkeys(match(term)))
    else:
        selected = dict.fromkeys(host_names)
    for term in (t for t in terms if t.op == "intersect"):
        keep = set(match(term))
        selected = {name: None for name in selected if name in keep}
    for term in (t for t in terms if t.op == "exclude"):
        drop = set(match(term))
        selected = {name: None for name in selected if name not in drop}
    if not selected:
        raise InputError(f"host pattern {pattern!r} selects no hosts", where="--limit")
    return sorted(selected, key=order.__getitem__)


@dataclass(frozen=True)
class _Names:
    """What a term is matched against: the names in inventory order (for globs and regular
    expressions) and as sets, so that a retry file of thousands of host names is matched in
    linear time, not one scan of the inventory per line."""

    hosts: Sequence[str]
    host_set: AbstractSet[str]
    groups: Sequence[str]
    group_set: AbstractSet[str]
    group_members: Callable[[str], list[str] | None]


def _match_term(text: str, names: _Names) -> list[str] | None:
    """Hosts matched by one term, or None when it matches nothing at all."""
    host_names, group_names, group_members = names.hosts, names.groups, names.group_members
    if text.startswith("~"):
        try:
            regex = re.compile(text[1:])
        except re.error as exc:
            raise InputError(
                f"bad regular expression in host pattern {text!r}: {exc}", where="--limit"
            ) from None
        return _collect(
            [g for g in group_names if regex.match(g)],
            [h for h in host_names if regex.match(h)],
            group_members,
        )
    subscript = _SUBSCRIPT.match(text)
    if subscript and text not in names.host_set and text not in names.group_set:
        base = subscript.group("base")
        found = _match_term(base, names)
        if found is not None:
            return _apply_subscript(found, subscript.group("start"), subscript.group("end"), text)
        # Not a known base: the brackets may be a glob character class; go on below.
    if text in ("all", "*"):
        return list(host_names)
    if _GLOB_CHARS & set(text):
        return _collect(
            [g for g in group_names if fnmatch.fnmatchcase(g, text)],
            [h for h in host_names if fnmatch.fnmatchcase(h, text)],
            group_members,
        )
    members = group_members(text)
    if members is not None:
        return members
    if text in names.host_set:
        return [text]
    return None


def _collect(
    groups: list[str], hosts: list[str], group_members: Callable[[str], list[str] | None]
) -> list[str] | None:
    if not groups and not hosts:
        return None
    found: dict[str, None] = {}
    for group in groups:
        found.update(dict.fromkeys(group_members(group) or []))
    found.update(dict.fromkeys(hosts))
    return list(found)


def _apply_subscript(found: list[str], start: str | None, end: str | None, text: str) -> list[str]:
    """``[i]`` one host, ``[i:j]`` i to j inclusive, ``[i:]`` from i on (Ansible's semantics)."""
    if start is None and end is None:
        raise InputError(f"empty subscript in host pattern {text!r}", where="--limit")
    if ":" not in text[text.rindex("[") :]:
        index = int(start or 0)
        if not -len(found) <= index < len(found):
            raise InputError(
                f"host pattern {text!r}: index {index} is out of range ({len(found)} hosts)",
                where="--limit",
            )
        return [found[index]]
    first = int(start) if start else 0
    if end is None:
        return found[first:]
    last = int(end)
    last = last + len(found) if last < 0 else last
    return found[first : last + 1]


def _hint(text: str, names: list[str]) -> str:
    lowered = {name.lower(): name for name in names}
    if text.lower() in lowered:
        return f" (did you mean {lowered[text.lower()]!r}? patterns are case-sensitive)"
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
