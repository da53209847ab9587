"""The settings (:mod:`cpuu_fleet.inputs.config`) made the defaults of every command's options.

Click's ``default_map`` does it in one place: an option given on the command line wins, else the
setting (environment over file), else the option's own default. A setting applies to every
command with an option of its name (``inventory`` to ``-i``, ``reports`` to ``--reports``,
``forks`` to ``-f``), so each command keeps its options as they are.
"""

from __future__ import annotations

from typing import Any

import typer

from cpuu_fleet.inputs.config import Settings, load_settings
from cpuu_fleet.inputs.inventory import READERS, use_reader


def apply_settings(ctx: typer.Context) -> Settings:
    """Load the settings and make them the defaults of the commands below ``ctx`` (not of
    ``init``, which makes a project and must work beside a broken config file)."""
    if ctx.invoked_subcommand == "init":
        return Settings()
    settings = load_settings()
    use_reader(settings.get("inventory_reader") or READERS[0])
    if settings.values:
        ctx.default_map = _default_map(ctx.command, settings)
    return settings


def _default_map(command: Any, settings: Settings) -> dict[str, Any]:
    """``{command: {option: default}}``, nested as the command groups are."""
    found: dict[str, Any] = {}
    for param in getattr(command, "params", []):
        if param.name in settings.values:
            found[param.name] = settings.get(param.name)
    for name, sub in getattr(command, "commands", {}).items():
        nested = _default_map(sub, settings)
        if nested:
            found[name] = nested
    return found


def from_settings(ctx: typer.Context, option: str) -> bool:
    """Did ``option`` get its value from the settings (not the command line)? ``play --resume``
    then reads the run's own inventory instead (click's public ``get_parameter_source``)."""
    source = ctx.get_parameter_source(option)
    return source is not None and source.name == "DEFAULT_MAP"
