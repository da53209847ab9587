"""Settings: a config file and environment variables for the defaults of the command line.

Found where operators look (a file in the current folder, as ``ansible.cfg`` is, then the user's
XDG config) and merged key by key, the later winning (unlike Ansible, which reads only the first
file it finds: a user's ``forks`` then still applies in a project that sets only its inventory):

0. Ansible's own: ``inventory`` and ``forks`` of the ``ansible.cfg`` Ansible would read, and
   ``ANSIBLE_INVENTORY``/``ANSIBLE_FORKS`` (:mod:`cpuu_fleet.inputs.ansible_cfg`), so a project
   folder that Ansible works in works here; an ``inventory`` naming several sources is not used
   (cpuu-fleet reads one: ``-i`` says which);
1. the user's file, ``$XDG_CONFIG_HOME/cpuu-fleet/config.toml`` (``~/.config/cpuu-fleet/...``);
2. the project's file, ``cpuu-fleet.toml`` in the current folder (``cpuu-fleet init`` writes one);
3. the environment: ``CPUU_FLEET_INVENTORY``, ``CPUU_FLEET_REPORTS``, ``CPUU_FLEET_FORKS``;
4. the command line's options, which always win (the CLI uses these settings as defaults only).

A relative path in a file is relative to that file's folder, so a file's settings name the same
files whichever folder the command runs from; a relative path in the environment is relative to
the current folder, as the shell user means it.

Secrets never go in a config file: a key that looks like one (password, secret, token, ...) is
refused with the way to give it instead, and so is any unknown key (a typo would otherwise be
silently ignored). TOML is read with :mod:`tomllib` (Python 3.11+), or ``tomli`` on 3.10.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.ansible_cfg import load_ansible_cfg
from cpuu_fleet.inputs.inventory import READERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

PROJECT_FILE = "cpuu-fleet.toml"
USER_FILE = Path("cpuu-fleet") / "config.toml"
PATH_KEYS = ("inventory", "reports")
"""Settings that name a file or folder."""
INT_KEYS = ("forks",)
"""Settings that are a whole number of at least 1."""
CHOICE_KEYS = {"inventory_reader": READERS}
"""Settings that are one of a few words."""
ENV_VARS = {
    "inventory": "CPUU_FLEET_INVENTORY",
    "reports": "CPUU_FLEET_REPORTS",
    "forks": "CPUU_FLEET_FORKS",
    "inventory_reader": "CPUU_FLEET_INVENTORY_READER",
    "journal": "CPUU_FLEET_JOURNAL",  # a postgresql:// URL (no password), see journal_pg.py
}
"""Each setting's environment variable (``CPUU_FLEET_*``; the secrets' variables are others)."""
_SECRET_LIKE = re.compile(r"pass|secret|token|credential|api_?key|private", re.IGNORECASE)


@dataclass(frozen=True)
class Settings:
    """The settings in force, and where each came from (a file's path or ``$VARIABLE``)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return self.values.get(key)


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's config file, under ``$XDG_CONFIG_HOME`` (``~/.config`` when unset or empty,
    as the XDG Base Directory specification says)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / USER_FILE


def load_settings(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the user's file, the project's file and the environment, in that order
    of precedence (later wins)."""
    env = os.environ if environ is None else environ
    folder = Path.cwd() if cwd is None else cwd
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    ansible = load_ansible_cfg(folder, env)
    if len(ansible.inventory) == 1:  # several sources: cpuu-fleet reads one, so -i must say
        values["inventory"], sources["inventory"] = (
            ansible.inventory[0],
            ansible.sources["inventory"],
        )
    if ansible.forks is not None:
        values["forks"], sources["forks"] = ansible.forks, ansible.sources["forks"]
    for path in (user_config_path(env), folder / PROJECT_FILE):
        for key, value in read_config_file(path).items():
            values[key] = value
            sources[key] = str(path)
    for key, name in ENV_VARS.items():
        text = env.get(name, "")
        if text.strip():
            values[key] = _value(key, text.strip(), name, base=None)
            sources[key] = f"${name}"
    return Settings(values, sources)


def read_config_file(path: Path) -> dict[str, Any]:
    """One config file's settings (none when there is no such file), checked and with its
    relative paths made absolute against the file's folder."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InputError(f"cannot read the config file ({exc.strerror})", where=path) from None
    except UnicodeDecodeError:
        raise InputError("the config file is not UTF-8 text", where=path) from None
    except tomllib.TOMLDecodeError as exc:
        # The message names line and column; it quotes no value of the file.
        raise InputError(f"not valid TOML: {exc}", where=path) from None
    settings: dict[str, Any] = {}
    for key, value in data.items():
        _check_key(key, path)
        settings[key] = _value(key, value, str(path), base=path.parent)
    return settings


def _check_key(key: str, path: Path) -> None:
    """Refuse secrets (the file is meant to be shared and committed) and unknown keys."""
    if _SECRET_LIKE.search(key):
        raise InputError(
            f"{key!r}: secrets never go in the config file; use an environment lookup or a vault"
            " in the inventory, or --ask-pass",
            where=path,
        )
    if key not in ENV_VARS:
        raise InputError(f"unknown setting {key!r}; valid: {', '.join(ENV_VARS)}", where=path)


def _value(key: str, value: Any, where: str, base: Path | None) -> Any:
    """A setting's value, checked: a path (absolute against ``base`` when given) or a count."""
    if key in CHOICE_KEYS:
        if value not in CHOICE_KEYS[key]:
            raise InputError(f"{key} must be one of: {', '.join(CHOICE_KEYS[key])}", where=where)
        return value
    if key == "journal":  # a database URL, not a path: checked (no password) when opened
        if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
            raise InputError("journal must be a postgresql:// URL", where=where)
        return value
    if key in INT_KEYS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = 0
        if isinstance(value, (bool, float)) or number < 1:
            raise InputError(f"{key} must be a whole number of at least 1", where=where)
        return number
    if not isinstance(value, str) or not value:
        raise InputError(f"{key} must be a path (a string)", where=where)
    path = Path(value).expanduser()
    return base / path if base is not None and not path.is_absolute() else path
