"""Shell completion's answers: the hosts and groups of the inventory for ``--limit``, the runs of
the journal for ``--resume`` and ``--retry-failed``.

Completion runs on every Tab press, so each answer is cheap and never fails: a missing or broken
inventory or journal gives no candidates rather than a traceback in the operator's shell. The
inventory is read without vault passwords (names need none) and no template is evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cpuu_fleet.inputs.config import load_settings


def _param(ctx: typer.Context, name: str) -> Any:
    """An option's value as typed so far, else the settings' (completion resolves the command
    line without running the root callback that makes them the defaults)."""
    value = ctx.params.get(name)
    if value is None:
        try:
            value = load_settings().get(name)
        except Exception:
            value = None
    return value


def limit_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Host and group names of the inventory (``-i``, or the settings' one) that start with
    what was typed after the last ``:`` or ``,`` of a pattern."""
    inventory = _param(ctx, "inventory")
    if not inventory:
        return []
    head, word = _split_pattern(incomplete)
    try:
        from cpuu_fleet.inputs.inventory import Inventory

        loaded = Inventory.load(Path(inventory))
        names = sorted(set(loaded.groups) | {host.name for host in loaded.hosts})
    except Exception:
        return []
    return [head + name for name in names if name.startswith(word)]


def _split_pattern(text: str) -> tuple[str, str]:
    """``"wave1:!pc-0"`` → ``("wave1:!", "pc-0")``: complete the term being typed."""
    cut = max(text.rfind(":"), text.rfind(","))
    head, word = text[: cut + 1], text[cut + 1 :]
    while word[:1] in ("!", "&"):
        head, word = head + word[0], word[1:]
    return head, word


def run_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The journal's runs (newest first) with their kind and status as the help text."""
    reports = _param(ctx, "reports") or Path("reports")
    journal_file = Path(reports) / "journal.sqlite3"
    if not journal_file.is_file():
        return []
    try:
        from cpuu_fleet.journal import Journal

        with Journal.in_reports(Path(reports)) as journal:
            runs = journal.runs()
    except Exception:
        return []
    found = [
        (str(run["run_id"]), f"{run.get('kind', '')} {run.get('status', '')}".strip())
        for run in reversed(runs)
    ]
    return [item for item in found if item[0].startswith(incomplete)]
