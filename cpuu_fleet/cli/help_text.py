"""Readable help: metavars in words operators know, never typer's ``<bool>`` or ``<list[str]>``.

Typer shows each option's Python type as its metavar. A flag takes no value, so it gets none;
any other option without a metavar of its own gets one from its type (``PATH``, ``N``,
``TEXT``); choices stay shown as choices. Done once over the built command tree, so a new option
is covered without a word.
"""

from __future__ import annotations

from typing import Any

_BY_TYPE = {
    "Path": "PATH",
    "list[Path]": "PATH",
    "int": "N",
    "float": "NUMBER",
    "str": "TEXT",
    "list[str]": "TEXT",
}


def readable_metavars(command: Any) -> Any:
    """Give every option of ``command`` and its subcommands a readable metavar; returns it."""
    for param in getattr(command, "params", []):
        if param.metavar is not None or param.type_descriptor.is_choice:
            continue
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.param_type_name == "option":
            param.metavar = _BY_TYPE.get(param.bare_type())
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)
    return command
