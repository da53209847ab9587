"""CLI: ``cpuu-fleet audit``, the read-only look at where every user's profiles point.

Wiring and printing only: the audit itself is :mod:`cpuu_fleet.audit`, its files
:mod:`cpuu_fleet.report.audit`. It never uploads, registers a task or starts CPUU, and writes
nothing to the journal: it holds no hosts, so it may run beside a wave.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from cpuu_fleet.cli.options import (
    AskPassOption,
    AskVaultPassOption,
    ForksOption,
    InventoryOption,
    LimitOption,
    VaultIdOption,
    VaultPasswordFileOption,
)
from cpuu_fleet.cli.present import ask_pass_prompt

AUDIT_NEEDS_ATTENTION = 3
"""Exit code when some hosts could not be audited (as ``play``'s "some hosts need attention")."""


def _policies(inventory: Path, limit: str | None, ask_pass: Any) -> list[tuple[str, Any, Any]]:
    """(host, connection, AuditPolicy) for each host the limit selects, in inventory order."""
    from cpuu_fleet.errors import InputError
    from cpuu_fleet.inputs.inventory import Inventory
    from cpuu_fleet.visit.audit import audit_policy

    loaded = Inventory.load(inventory, ask_pass=ask_pass)
    hosts = loaded.select(limit, base_dir=Path.cwd())
    if not hosts:
        raise InputError(f"no host matches the limit {limit!r}", where=inventory)
    targets = []
    for host in hosts:
        policy = audit_policy(host.scope(reveal=False, reveal_vault=True))
        connection = host.connection
        connection.pypsrp_kwargs()  # resolves the password now: a missing one stops here
        targets.append((host.name, connection, policy))
    return targets


def _out_dir(reports: Path) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate = reports / f"audit-{stamp}"
    number = 1
    while candidate.exists():
        number += 1
        candidate = reports / f"audit-{stamp}-{number}"
    return candidate


def audit(
    inventory: InventoryOption,
    limit: LimitOption = None,
    forks: ForksOption = 10,
    compare: Annotated[
        Optional[Path],  # noqa: UP045 - typer reads this annotation at run time
        typer.Option(
            "--compare",
            metavar="AUDIT_CSV",
            help="An earlier audit.csv: also write moved.csv (what moved to the target, what not).",
        ),
    ] = None,
    reports: Annotated[
        Path,
        typer.Option("--reports", metavar="DIR", help="Where the audit-<UTC time>/ folder goes."),
    ] = Path("reports"),
    ask_pass: AskPassOption = False,
    vault_password_file: VaultPasswordFileOption = None,
    vault_id: VaultIdOption = None,
    ask_vault_pass: AskVaultPassOption = False,
) -> None:
    """Read-only: every user's Outlook profiles on each host, where they point, what CPUU would
    say. Writes audit.csv, still-on-source.csv and audit.xlsx (and moved.csv with --compare). Exit 0, or 3
    when some hosts could not be audited, 2 on bad input."""
    from cpuu_fleet.report.audit import (
        AUDIT_CSV,
        AUDIT_XLSX,
        moved_frame,
        read_audit_csv,
        summary_lines,
        write_audit,
        write_audit_workbook,
        write_moved,
    )
    from cpuu_fleet.report.summary import plain
    from cpuu_fleet.visit.audit import audit_fleet
    from cpuu_fleet.visit.host_visit import open_session

    before = read_audit_csv(compare) if compare is not None else None
    targets = _policies(inventory, limit, ask_pass_prompt(ask_pass))
    run = audit_fleet(targets, open_session, forks=forks)
    out_dir = _out_dir(reports)
    paths = write_audit(run.rows, out_dir)
    console = Console(highlight=False)
    for line in summary_lines(run.rows):
        console.print(plain(line))
    moved = None
    if before is not None:
        from cpuu_fleet.audit import compare as compare_rows

        comparison = compare_rows(before, read_audit_csv(paths[AUDIT_CSV]))
        moved = moved_frame(comparison)
        paths["moved.csv"] = write_moved(moved, out_dir)
        console.print(
            plain(
                f"since {compare}: {len(comparison.moved)} account(s) moved to the target,"
                f" {len(comparison.stayed)} stayed on the source,"
                f" {len(comparison.moved_back)} moved back"
            )
        )
    paths[AUDIT_XLSX] = write_audit_workbook(run.rows, out_dir / AUDIT_XLSX, moved)
    rate = len(targets) / run.seconds * 60 if run.seconds > 0 else 0.0
    console.print(plain(f"{len(targets)} host(s) in {run.seconds:.1f} s ({rate:.0f} hosts/min)"))
    console.print("Written:")
    for path in paths.values():
        console.print(plain(f"  {path}"), soft_wrap=True)
    if run.failed:
        raise typer.Exit(AUDIT_NEEDS_ATTENTION)


def register(app: typer.Typer) -> None:
    """Add ``audit`` to the root app."""
    app.command("audit")(audit)
