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
    ExtraVarsOption,
    ForksOption,
    InventoryOption,
    JournalOption,
    LimitOption,
    ModeOption,
    PayloadOption,
    ReportsOption,
    TemplatesOption,
    VaultIdOption,
    VaultPasswordFileOption,
    VerboseOption,
    WhenNoUserOption,
    parse_extra_vars,
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
            journal: JournalOption = None,
            ask_pass: AskPassOption = False,
            vault_password_file: VaultPasswordFileOption = None,
            vault_id: VaultIdOption = None,
            ask_vault_pass: AskVaultPassOption = False,
            verbose: VerboseOption = 0,
        ) -> None:
            given = (inventory, limit, forks, None, None, as_json, reports, ask_pass, verbose)
            _single(step, *given, journal_url=journal)

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
        journal: JournalOption = None,
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
        extra: ExtraVarsOption = None,
        verbose: VerboseOption = 0,
    ) -> None:
        given = (inventory, limit, forks, payload, templates, as_json, reports, ask_pass, verbose)
        _single("push", *given, journal_url=journal, extra_vars=parse_extra_vars(extra))

    _read_only_step("collect", "Fetch new CPUU result files and logs (pending hosts too).")

    @app.command(
        name="run",
        help="Run CPUU in one mode on hosts (ad hoc). " + EXIT_CODES_HELP,
        short_help="Run CPUU in one mode on hosts (ad hoc).",
    )
    def run_command(
        mode: ModeOption,
        inventory: InventoryOption,
        limit: LimitOption = None,
        when_no_user: WhenNoUserOption = "skip",
        timeout: Annotated[
            int, typer.Option("--timeout", help="Seconds before CPUU is stopped.")
        ] = 900,
        forks: ForksOption = 10,
        payload: PayloadOption = None,
        templates: TemplatesOption = None,
        as_json: EventsJsonOption = False,
        reports: ReportsOption = Path("reports"),
        journal: JournalOption = None,
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
        extra: ExtraVarsOption = None,
        verbose: VerboseOption = 0,
    ) -> None:
        from cpuu_fleet.cpuu import Mode

        given = (inventory, limit, forks, payload, templates, as_json, reports, ask_pass, verbose)
        _single(
            "run",
            *given,
            journal_url=journal,
            extra_vars=parse_extra_vars(extra),
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
    verbosity: int = 0,
    extra_vars: dict[str, Any] | None = None,
    journal_url: str | None = None,
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
        journal_url=journal_url,
        limit=limit,
        ask_pass=ask_pass_prompt(ask_pass),
        extra_vars=extra_vars or {},
        processors=processors(reports, as_json, verbosity),
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
    finish(result, as_json=as_json, readiness=step == "preflight")
