"""Helpers for the engine core tests: a small inventory standing in for the foundation's.

The inventory here is a plain stand-in with the seam the planner codes against
(``select(pattern) -> hosts with name, groups, vars``): names, groups and ``*`` globs, enough to
drive plans. The foundation's Inventory implements the full pattern language.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeHost:
    name: str
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict)


class SmallInventory:
    """Hosts by name; a pattern is a name, a group, a glob over either, or ``all``."""

    def __init__(self, groups: dict[str, list[str]]):
        self.hosts: dict[str, FakeHost] = {}
        for group, names in groups.items():
            for name in names:
                host = self.hosts.setdefault(
                    name, FakeHost(name, (), {"ansible_host": f"127.0.9.{len(self.hosts) + 1}"})
                )
                host.groups = (*host.groups, group)

    def select(self, pattern: str) -> list[FakeHost]:
        chosen = []
        for host in self.hosts.values():
            if (
                pattern == "all"
                or fnmatch.fnmatchcase(host.name, pattern)
                or any(fnmatch.fnmatchcase(g, pattern) for g in host.groups)
            ):
                chosen.append(host)
        return chosen


def names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{n:03d}" for n in range(1, count + 1)]
