"""Which Python handler plays which PowerShell script.

cpuu-fleet's own scripts (``cpuu_fleet/visit/remote/*.ps1``) start with a marker line
``# cpuu-fleet: <name>``; the handler registered under ``<name>`` plays them. Scripts without a
marker are recognised by the protocol layer (pypsrp's copy/fetch, execute_ps) before this lookup.
"""

from __future__ import annotations

import re

from cpuu_fleet.lab.contract import ScriptHandler

MARKER = re.compile(r"^\s*#\s*cpuu-fleet:\s*(?P<name>[A-Za-z0-9_.-]+)\s*$", re.MULTILINE)

_HANDLERS: dict[str, ScriptHandler] = {}


def register(name: str) -> callable:
    """Decorator: ``@register("preflight")`` makes the function the handler for that marker."""

    def decorate(func: ScriptHandler) -> ScriptHandler:
        if name in _HANDLERS and _HANDLERS[name] is not func:
            raise ValueError(f"a lab handler for {name!r} is already registered")
        _HANDLERS[name] = func
        return func

    return decorate


def marker_name(script: str) -> str | None:
    """The ``# cpuu-fleet: <name>`` marker of a script, if it has one (first match wins)."""
    match = MARKER.search(script)
    return match.group("name") if match else None


def lookup(name: str) -> ScriptHandler | None:
    return _HANDLERS.get(name)


def registered_names() -> list[str]:
    return sorted(_HANDLERS)
