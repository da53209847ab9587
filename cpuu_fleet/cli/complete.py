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


COMPLETION_CONNECT_S = 2
"""How long a Tab press waits for a PostgreSQL journal's server before offering nothing."""


def run_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """The journal's runs (newest first) with their kind and status as the help text: the
    shared PostgreSQL journal when one is set (``--journal``, ``CPUU_FLEET_JOURNAL``, the
    settings), else the file in ``--reports``; read-only, so a Tab press never creates one."""
    reports = Path(_param(ctx, "reports") or "reports")
    url = _param(ctx, "journal")
    if not url and not (reports / "journal.sqlite3").is_file():
        return []
    try:
        from cpuu_fleet.journal import Journal

        location = _quick_url(str(url)) if url else reports / "journal.sqlite3"
        with Journal(location, read_only=True, reports_dir=reports) as journal:
            runs = journal.runs()
    except Exception:
        return []
    found = [
        (str(run["run_id"]), f"{run.get('kind', '')} {run.get('status', '')}".strip())
        for run in reversed(runs)
    ]
    return [item for item in found if item[0].startswith(incomplete)]


def _quick_url(url: str) -> str:
    """The URL with a short connect timeout unless it sets its own: a server down must not
    hold the operator's shell for the journal's usual 10 s."""
    if "connect_timeout=" in url:
        return url
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={COMPLETION_CONNECT_S}"
