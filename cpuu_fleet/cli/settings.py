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

#: Options whose value, when given, means "take the inventory from that run".
_CONTINUING = ("resume", "retry_failed")


def apply_settings(ctx: typer.Context) -> Settings:
    """Load the settings and make them the defaults of the commands below ``ctx`` (not of
    ``init``, which makes a project and must work beside a broken config file)."""
    if ctx.invoked_subcommand == "init":
        return Settings()
    settings = load_settings()
    if settings.values:
        ctx.default_map = _default_map(ctx.command, settings)
    return settings


def _default_map(command: Any, settings: Settings) -> dict[str, Any]:
    """``{command: {option: default}}``, nested as the command groups are."""
    found: dict[str, Any] = {}
    params = getattr(command, "params", [])
    continues = any(param.name in _CONTINUING for param in params)
    for param in params:
        if param.name in settings.values:
            value = settings.get(param.name)
            found[param.name] = (
                _unless_continuing(value) if param.name == "inventory" and continues else value
            )
    for name, sub in getattr(command, "commands", {}).items():
        nested = _default_map(sub, settings)
        if nested:
            found[name] = nested
    return found


def _unless_continuing(value: Any) -> Any:
    """For a command that continues runs, an inventory default that gives way to the run's own:
    ``play --resume RUN`` reads RUN's inventory unless ``-i`` is given. Click processes the
    options given on the command line before the defaulted ones, so ``--resume`` is known."""

    def inventory() -> Any:
        params = _current_params()
        return None if any(params.get(option) for option in _CONTINUING) else value

    return inventory


def _current_params() -> dict[str, Any]:
    """The options the running command has processed so far."""
    try:
        # typer 0.25+ carries its own click and exports no way to the running context
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - an older typer, on click
        from click import get_current_context
    return get_current_context().params
