"""CLI: the mailbox options of ``report`` and ``play``, and ``cpuu-fleet plan`` (wiring only).

The files are read before anything else happens: a bad batch file stops ``play`` with exit code
2 before a host is touched, not after the wave when the report is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console

from cpuu_fleet.cli.options import ReportsOption, existing_journal
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.mailboxes import MailboxInput, load_mailboxes, parse_columns
from cpuu_fleet.journal import Journal

if TYPE_CHECKING:  # pandas takes a moment to load: the report is imported where it is used
    from cpuu_fleet.report.frames import ReportFrames

MailboxesOption = Annotated[
    Optional[Path],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "--mailboxes",
        metavar="CSV",
        help="Migration batch file (mailbox/UPN, user, batch, switch date): adds the Mailboxes"
        " sheets and mailboxes.csv.",
    ),
]
DevicesOption = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--devices",
        metavar="CSV",
        help="User-to-device map (MECM user-device affinity, Intune primary users); the users"
        " the runs saw are added to it.",
    ),
]
ColumnOption = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--mailbox-column",
        metavar="ROLE=HEADER",
        help="Name a column the batch file or map calls otherwise (mailbox, user, batch,"
        " switch_date, device); repeat for several.",
    ),
]

#: A line of a limit file is a host pattern: a device name outside this is not written there
#: (``,``, ``:``, ``!``, ``&``, ``@``, ``*`` and spaces mean something to ``--limit``).
_PLAIN_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def read_mailbox_options(
    mailboxes: Path | None, devices: Path | None, columns: list[str] | None
) -> MailboxInput | None:
    """The batch file and device map, or None without ``--mailboxes``."""
    if mailboxes is None:
        if devices is not None or columns:
            raise InputError("--devices and --mailbox-column need --mailboxes")
        return None
    return load_mailboxes(mailboxes, devices, columns=parse_columns(columns))


def plan(
    mailboxes: Annotated[
        Path, typer.Option("--mailboxes", metavar="CSV", help="Migration batch file.")
    ],
    devices: DevicesOption = None,
    columns: ColumnOption = None,
    batch: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--batch", metavar="NAME", help="Only this batch's mailboxes."),
    ] = None,
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--out", metavar="FILE", help="The limit file. Default: batch-<NAME>.txt."),
    ] = None,
    reports: ReportsOption = Path("reports"),
) -> None:
    """Write a limit file of a batch's devices (one host per line) for --limit @FILE."""
    from cpuu_fleet.report.mailboxes import batch_devices

    source = read_mailbox_options(mailboxes, devices, columns)
    assert source is not None
    if batch is not None:
        known = list(dict.fromkeys(m.batch for m in source.mailboxes))
        if batch not in known:
            raise InputError(
                f"no batch {batch!r} (the file has: {', '.join(known)})", where=mailboxes
            )
    frames = _seen_frames(reports)
    hosts, unknown = batch_devices(frames, source, batch)
    plain = [host for host in hosts if _PLAIN_HOST.match(host)]
    if not plain:
        raise InputError("no device known for these mailboxes", where=mailboxes)
    path = out or Path(f"batch-{re.sub(r'[^A-Za-z0-9._-]+', '_', batch or 'all').strip('._')}.txt")
    try:
        path.write_text("".join(f"{host}\n" for host in plain), encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the limit file ({exc.strerror})", where=path) from None
    console = Console(highlight=False, stderr=True)
    skipped = len(hosts) - len(plain)
    if skipped:
        console.print(f"{skipped} device name(s) are not host names: left out.", markup=False)
    if unknown:
        console.print(f"{unknown} mailbox(es) have no known device.", markup=False)
    typer.echo(f"{len(plain)} host(s) written to {path}: cpuu-fleet play ... --limit @{path}")


def _seen_frames(reports: Path) -> ReportFrames | None:
    """Every run's report frames, for the users the runs saw; None before the first run."""
    from cpuu_fleet.report.frames import load_frames
    from cpuu_fleet.report.selection import resolve_runs

    if not (reports / Journal.FILENAME).is_file():
        return None
    with existing_journal(reports) as journal:
        return load_frames(journal, resolve_runs(journal, None, all_runs=True))


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the root app."""
    app.command("plan")(plan)
