"""``cpuu-fleet play``: a playbook wave by wave, a ``--check`` of it, ``--resume`` and
``--retry-failed``. Wiring only: the engine plans and runs; :mod:`cpuu_fleet.cli.present` shows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.complete import run_ids
from cpuu_fleet.cli.mailboxes import (
    ColumnOption,
    DevicesOption,
    MailboxesOption,
    read_mailbox_options,
)
from cpuu_fleet.cli.options import (
    AskPassOption,
    AskVaultPassOption,
    EventsJsonOption,
    ExtraVarsOption,
    JournalOption,
    LimitOption,
    ReportsOption,
    VaultIdOption,
    VaultPasswordFileOption,
    VerboseOption,
    parse_extra_vars,
)
from cpuu_fleet.cli.policy import (
    MaxFailOption,
    MaxUnreachableOption,
    SerialOption,
    policy_fields,
)
from cpuu_fleet.cli.present import EXIT_CODES_HELP, ask_pass_prompt, finish, processors, warn_one
from cpuu_fleet.cli.relay import BrokerOption, broker_app
from cpuu_fleet.cli.report import CsvDialectOption, TimezoneOption, check_report_style
from cpuu_fleet.cli.settings import from_settings
from cpuu_fleet.errors import InputError


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    @app.command(
        help="Run a playbook wave by wave. " + EXIT_CODES_HELP,
        short_help="Run a playbook wave by wave.",
    )
    def play(
        ctx: typer.Context,
        playbook: Annotated[
            Path | None,
            typer.Argument(
                help="Playbook YAML (optional with --resume/--retry-failed: taken from RUN)."
            ),
        ] = None,
        inventory: Annotated[
            Path | None,
            typer.Option(
                "-i",
                "--inventory",
                help="Inventory file or folder (Ansible YAML, INI or --list JSON); with --resume or"
                " --retry-failed, RUN's by default.",
            ),
        ] = None,
        limit: LimitOption = None,
        forks: Annotated[
            int | None, typer.Option("--forks", "-f", help="Hosts at once (overrides plays).")
        ] = None,
        check: Annotated[
            bool,
            typer.Option(
                "--check",
                "-C",
                help="Read-only: preflight, then show what would be pushed and run.",
            ),
        ] = False,
        list_hosts: Annotated[
            bool,
            typer.Option(
                "--list-hosts",
                help="List the hosts each play would visit, batch by batch, and exit (no host"
                " is contacted).",
            ),
        ] = False,
        verbose: VerboseOption = 0,
        serial: SerialOption = None,
        max_fail_percentage: MaxFailOption = None,
        max_unreachable_percentage: MaxUnreachableOption = None,
        resume: Annotated[
            str | None,
            typer.Option(
                "--resume",
                metavar="RUN",
                autocompletion=run_ids,
                help="Carry on an interrupted run (never runs CPUU twice).",
            ),
        ] = None,
        retry_failed: Annotated[
            str | None,
            typer.Option(
                "--retry-failed",
                metavar="RUN",
                autocompletion=run_ids,
                help=f"Re-run only RUN's {vocabulary.describe(vocabulary.RETRIED_STATES)} hosts.",
            ),
        ] = None,
        as_json: EventsJsonOption = False,
        reports: ReportsOption = Path("reports"),
        journal: JournalOption = None,
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
        extra: ExtraVarsOption = None,
        payload: Annotated[
            Path | None,
            typer.Option("--payload", help="CPUU payload folder (instead of the playbook's)."),
        ] = None,
        mailboxes: MailboxesOption = None,
        devices: DevicesOption = None,
        mailbox_columns: ColumnOption = None,
        csv_dialect: CsvDialectOption = "en",
        timezone: TimezoneOption = None,
        broker: BrokerOption = None,
    ) -> None:
        from cpuu_fleet.engine.wave import PlayRequest, run_play

        if playbook is None and not (resume or retry_failed):
            raise InputError("a PLAYBOOK is required (unless --resume or --retry-failed is given)")
        check_report_style(csv_dialect, timezone)
        if (resume or retry_failed) and from_settings(ctx, "inventory"):
            inventory = None  # a follow-up keeps its run's inventory unless -i names one
        request = PlayRequest(
            playbook=playbook,
            inventory=inventory,
            reports_dir=reports,
            journal_url=journal,
            limit=limit,
            forks=forks,
            check=check,
            resume=resume,
            retry_failed=retry_failed,
            ask_pass=ask_pass_prompt(ask_pass),
            extra_vars=parse_extra_vars(extra),
            processors=processors(reports, as_json, verbose),
            payload=payload,
            warn=warn_one,
            mailboxes=read_mailbox_options(mailboxes, devices, mailbox_columns),
            report_style={"csv_dialect": csv_dialect, "timezone": timezone},
            wrap_work=_relays(broker, extra),
            **policy_fields(serial, max_fail_percentage, max_unreachable_percentage),
        )
        if list_hosts:
            from cpuu_fleet.cli.present import print_plan
            from cpuu_fleet.engine.wave import plan_play

            print_plan(plan_play(request), as_json=as_json)
            return
        finish(run_play(request), as_json=as_json, check=check)


def _relays(broker: str | None, extra: list[str] | None) -> Any:
    """``--broker``: hosts with a ``cpuu_site`` are visited by their site's relays."""
    celery_app = broker_app(broker)
    if celery_app is None:
        return None
    if extra:
        # Relays render from the bundle (inventory, playbook, templates) and their own secrets:
        # -e would make the controller's checks and the relays' files differ.
        raise InputError(
            "-e/--extra-vars is not passed to relays: put the variables in the inventory"
        )
    from cpuu_fleet.sites.dispatch import dispatching

    return dispatching(celery_app)
