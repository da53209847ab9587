"""The few ``ansible.cfg`` settings an Ansible shop already has that mean the same here.

An operator who runs Ansible from a project folder has its inventory, forks and vault password
file in ``ansible.cfg``; cpuu-fleet started in that folder finds them, at the lowest precedence
(its own settings files, ``CPUU_FLEET_*`` and the command line all win).

Found as Ansible documents it: the first of ``$ANSIBLE_CONFIG``, ``./ansible.cfg`` (ignored when
the current folder is world-writable, as Ansible does, so another user cannot plant one),
``~/.ansible.cfg`` and ``/etc/ansible/ansible.cfg``; only that one file is read. Read from its
``[defaults]`` section: ``inventory``, ``forks``, ``vault_password_file`` and
``vault_identity_list``; a relative path is relative to the file's folder (Ansible's reading for
path settings). ``ANSIBLE_INVENTORY`` and ``ANSIBLE_FORKS`` override the file, as in Ansible.
Every other key is Ansible's own business and ignored.
"""

from __future__ import annotations

import configparser
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cpuu_fleet.errors import InputError

SECTION = "defaults"
ETC_FILE = Path("/etc/ansible/ansible.cfg")


@dataclass(frozen=True)
class AnsibleCfg:
    """What cpuu-fleet reads of Ansible's configuration, and the file it came from."""

    path: Path | None = None
    inventory: list[Path] = field(default_factory=list)
    forks: int | None = None
    vault_password_files: list[Path] = field(default_factory=list)
    vault_ids: list[str] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)


def find_config(cwd: Path, environ: Mapping[str, str]) -> Path | None:
    """The one file Ansible would read, or None."""
    named = environ.get("ANSIBLE_CONFIG", "").strip()
    if named:
        path = Path(named).expanduser()
        path = path / "ansible.cfg" if path.is_dir() else path
        return path if path.is_file() else None
    local = cwd / "ansible.cfg"
    if local.is_file() and not _world_writable(cwd):
        return local
    home = Path(environ.get("HOME") or Path.home())
    for path in (home / ".ansible.cfg", ETC_FILE):
        if path.is_file():
            return path
    return None


def _world_writable(folder: Path) -> bool:
    try:
        return bool(folder.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return True


def load_ansible_cfg(
    cwd: Path | None = None, environ: Mapping[str, str] | None = None
) -> AnsibleCfg:
    """The settings above from the file Ansible would read and Ansible's own variables."""
    env = os.environ if environ is None else environ
    folder = Path.cwd() if cwd is None else cwd
    path = find_config(folder, env)
    values = _read(path) if path else {}
    base = path.parent if path else folder
    sources: dict[str, str] = {}
    inventory_text, forks_text = values.get("inventory"), values.get("forks")
    if inventory_text:
        sources["inventory"] = str(path)
    if forks_text:
        sources["forks"] = str(path)
    if env.get("ANSIBLE_INVENTORY", "").strip():
        inventory_text, base_inventory = env["ANSIBLE_INVENTORY"], folder
        sources["inventory"] = "$ANSIBLE_INVENTORY"
    else:
        base_inventory = base
    if env.get("ANSIBLE_FORKS", "").strip():
        forks_text = env["ANSIBLE_FORKS"]
        sources["forks"] = "$ANSIBLE_FORKS"
    return AnsibleCfg(
        path=path,
        inventory=_paths(inventory_text, base_inventory),
        forks=_forks(forks_text, sources.get("forks", "")),
        vault_password_files=_paths(values.get("vault_password_file"), base),
        vault_ids=_list(values.get("vault_identity_list")),
        sources=sources,
    )


def _read(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except OSError as exc:
        raise InputError(
            f"cannot read Ansible's config file ({exc.strerror})", where=path
        ) from None
    except (UnicodeDecodeError, configparser.Error) as exc:
        why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not an INI file"
        raise InputError(f"Ansible's config file is {why}", where=path) from None
    if not parser.has_section(SECTION):
        return {}
    return {key: value.strip() for key, value in parser.items(SECTION)}


def _list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _paths(text: str | None, base: Path) -> list[Path]:
    paths = []
    for item in _list(text):
        path = Path(os.path.expandvars(item)).expanduser()
        paths.append(path if path.is_absolute() else base / path)
    return paths


def _forks(text: str | None, where: str) -> int | None:
    if not text:
        return None
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise InputError("forks must be a whole number of at least 1", where=where)
    return number
