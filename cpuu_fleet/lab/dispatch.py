"""Which Python handler plays a pipeline: the lab's stand-in for running PowerShell.

Order, as the task's contract says: pypsrp's own scripts first (copy.ps1, fetch.ps1,
``Invoke-Expression`` from ``execute_ps``), then the ``# cpuu-fleet: <name>`` marker looked up in
the handler registry; anything else fails like Windows' CommandNotFound, never a silent success.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from cpuu_fleet.lab import pypsrp_scripts, registry
from cpuu_fleet.lab.contract import ScriptCall, ScriptHandler

Resolver = Callable[[Any], tuple[ScriptCall, ScriptHandler]]
"""Turns a psrpcore pipeline description into the call and the handler that plays it."""


def load_handlers() -> None:
    """Run the ``@register`` decorators of the model's handlers, if that module exists yet."""
    try:
        importlib.import_module("cpuu_fleet.lab.handlers")
    except ModuleNotFoundError as exc:
        if exc.name != "cpuu_fleet.lab.handlers":
            raise


def _first_term(script: str) -> str:
    for line in script.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.split()[0]
    return script.strip()[:40]


def resolve_pipeline(metadata: Any) -> tuple[ScriptCall, ScriptHandler]:
    """Which handler plays this pipeline: pypsrp's own scripts first, then the
    ``# cpuu-fleet: <name>`` marker through the registry; anything else is CommandNotFound."""
    commands = list(metadata.commands)
    known = pypsrp_scripts.recognise(commands)
    if known is not None:
        return known
    if not commands:
        raise pypsrp_scripts.CommandNotFound("")
    first = commands[0]
    text = str(first.command_text)
    if first.is_script:
        name = registry.marker_name(text)
        handler = registry.lookup(name) if name else None
        if handler is None and name:
            load_handlers()
            handler = registry.lookup(name)
        if handler is not None and name:
            arguments, parameters = pypsrp_scripts.split_parameters(first)
            return ScriptCall(name, text, arguments, parameters), handler
        raise pypsrp_scripts.CommandNotFound(_first_term(text))
    raise pypsrp_scripts.CommandNotFound(text)
