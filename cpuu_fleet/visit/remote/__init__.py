"""The PowerShell that cpuu-fleet runs on workstations, one packaged ``<name>.ps1`` per operation.

Each script starts with the marker line ``# cpuu-fleet: <name>``: the lab recognises a script by
it, and so can an administrator reading a WinRM log. The contract of every script (parameters,
output, error ids) is ``docs/remote-scripts.md``.
"""

from __future__ import annotations

from importlib import resources

SCRIPT_NAMES: tuple[str, ...] = (
    "preflight",
    "upload",
    "run-task",
    "list-files",
    "download",
    "audit",
)


def load_script(name: str) -> str:
    """The text of a packaged script, read from the installed package (works from a wheel too)."""
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown remote script {name!r} (known: {', '.join(SCRIPT_NAMES)})")
    return resources.files(__name__).joinpath(f"{name}.ps1").read_text(encoding="utf-8")
