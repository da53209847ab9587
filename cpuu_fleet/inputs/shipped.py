"""The files cpuu-fleet ships: its playbooks, templates, example inventory and project skeleton.

They live under ``cpuu_fleet/data/`` so that an installed cpuu-fleet (``pip install``, pipx) has
them as well as a checkout. In a checkout ``data/playbooks`` and ``data/inventories`` are
symlinks to the top-level ``playbooks/`` and ``inventories/`` (one copy of each file, the one the
README's commands name); the wheel holds real copies.

Assumption: the package is installed as files on disk (what pip and pipx do), not run from a zip
archive, so a shipped folder is a plain :class:`~pathlib.Path` that can be copied and loaded.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from cpuu_fleet.errors import InputError

PLAYBOOKS = "playbooks"
INVENTORIES = "inventories"
PROJECT = "project"
#: The templates folder a command uses when none is given, relative to the current folder.
LOCAL_TEMPLATES = Path("playbooks") / "templates"


def shipped(name: str) -> Path:
    """The shipped folder ``name`` (``playbooks``, ``inventories``, ``project``)."""
    folder = Path(str(files("cpuu_fleet") / "data" / name))
    if not folder.is_dir():
        raise InputError(f"this cpuu-fleet install lacks its shipped {name}/ (reinstall it)")
    return folder


def shipped_playbook(name: str = "update.yml") -> Path:
    """One of the shipped playbooks (the demo runs ``update.yml``)."""
    path = shipped(PLAYBOOKS) / name
    if not path.is_file():
        raise InputError(f"no shipped playbook {name!r}")
    return path


def default_templates() -> Path:
    """``playbooks/templates`` of the current folder (a project made with ``init``, or a
    checkout), else the shipped templates: ``render`` works from any folder, and a project's own
    templates always win over the shipped ones."""
    if LOCAL_TEMPLATES.is_dir():
        return LOCAL_TEMPLATES
    return shipped(PLAYBOOKS) / "templates"
