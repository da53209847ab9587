"""The single steps, ad hoc: ``preflight``, ``push``, ``run --mode``, ``collect``. Each is a
one-play playbook the engine builds (``engine.run_single_step``); wiring only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from cpuu_fleet.cli.options import (
    AskPassOption,
    AskVaultPassOption,
    EventsJsonOption,
    ForksOption,
    InventoryOption,
    LimitOption,
    PayloadOption,
    ReportsOption,
    TemplatesOption,
    VaultIdOption,
    VaultPasswordFileOption,
)
from cpuu_fleet.cli.present import EXIT_CODES_HELP, ask_pass_prompt, finish, processors, warn_one
from cpuu_fleet.inputs.shipped import default_templates


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    def _read_only_step(step: str, help_text: str) -> None:
        """preflight and collect: nothing is pushed, so they take no payload or templates."""

        @app.command(name=step, help=help_text + " " + EXIT_CODES_HELP, short_help=help_text)
        def command(
            inventory: InventoryOption,
            limit: LimitOption = None,
            forks: ForksOption = 10,
            as_json: EventsJsonOption = False,
            reports: ReportsOption = Path("reports"),
            ask_pass: AskPassOption = False,
            vault_password_file: VaultPasswordFileOption = None,
            vault_id: VaultIdOption = None,
            ask_vault_pass: AskVaultPassOption = False,
        ) -> None:
            _single(step, inventory, limit, forks, None, None, as_json, reports, ask_pass)

    _read_only_step("preflight", "Read-only look at hosts: user, Outlook, disk, staged files.")

    @app.command(
        name="push",
        help="Stage the payload and rendered files (changed files only). " + EXIT_CODES_HELP,
        short_help="Stage the payload and rendered files (changed files only).",
    )
    def push_command(
        inventory: InventoryOption,
        limit: LimitOption = None,
        forks: ForksOption = 10,
        payload: PayloadOption = None,
        templates: TemplatesOption = None,
        as_json: EventsJsonOption = False,
        reports: ReportsOption = Path("reports"),
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
    ) -> None:
        _single("push", inventory, limit, forks, payload, templates, as_json, reports, ask_pass)

    _read_only_step("collect", "Fetch new CPUU result files and logs (pending hosts too).")

    @app.command(
        name="run",
        help="Run CPUU in one mode on hosts (ad hoc). " + EXIT_CODES_HELP,
        short_help="Run CPUU in one mode on hosts (ad hoc).",
    )
    def run_command(
        mode: Annotated[
            str, typer.Option("--mode", "-m", help="update, undo (rollback) or cleanup.")
        ],
        inventory: InventoryOption,
        limit: LimitOption = None,
        when_no_user: Annotated[
            str, typer.Option("--when-no-user", help="skip | at_logon")
        ] = "skip",
        timeout: Annotated[
            int, typer.Option("--timeout", help="Seconds before CPUU is stopped.")
        ] = 900,
        forks: ForksOption = 10,
        payload: PayloadOption = None,
        templates: TemplatesOption = None,
        as_json: EventsJsonOption = False,
        reports: ReportsOption = Path("reports"),
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
    ) -> None:
        from cpuu_fleet.cpuu import Mode

        _single(
            "run",
            inventory,
            limit,
            forks,
            payload,
            templates,
            as_json,
            reports,
            ask_pass,
            mode=Mode.parse(mode),
            when_no_user=when_no_user,
            timeout=timeout,
        )


def _single(
    step: str,
    inventory: Path,
    limit: str | None,
    forks: int,
    payload: Path | None,
    templates: Path | None,
    as_json: bool,
    reports: Path,
    ask_pass: bool,
    **options: Any,
) -> None:
    from cpuu_fleet.engine.wave import PlayRequest, run_single_step

    if step in ("push", "run"):
        payload = payload or Path("playbooks") / "payload"
        templates = templates or default_templates()
    request = PlayRequest(
        playbook=None,
        inventory=inventory,
        reports_dir=reports,
        limit=limit,
        ask_pass=ask_pass_prompt(ask_pass),
        processors=processors(reports, as_json),
        warn=warn_one,
    )
    result = run_single_step(
        request,
        step,
        pattern=limit or "all",
        payload=payload,
        templates=templates,
        forks=forks,
        **options,
    )
    finish(result, as_json=as_json)
