"""CLI commands: ``play``, the single steps (``preflight``, ``push``, ``run``, ``collect``),
``status`` and ``demo``. Wiring and presentation only: the work is in ``cpuu_fleet.engine``.

Exit codes (also in ``play --help``): 0 no host needs attention; 2 bad input (nothing touched);
3 at least one host is in a state that needs attention (:mod:`cpuu_fleet.vocabulary`); 4 the
controller could not write (disk full, a read-only or unwritable folder; the run is recorded
interrupted where the journal can still be written); 130 interrupted (Ctrl-C, SIGTERM or SIGHUP;
``--resume RUN`` carries on).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cpuu_fleet import vocabulary
from cpuu_fleet.cli.inventory import warn
from cpuu_fleet.cli.options import (
    AskPassOption,
    ExtraVarsOption,
    InventoryOption,
    JsonOption,
    LimitOption,
    ReportsOption,
    existing_journal,
    parse_extra_vars,
)
from cpuu_fleet.errors import InputError
from cpuu_fleet.lease import live_status
from cpuu_fleet.redact import printable

EventsJsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON object per event on stdout, then the result.")
]
ForksOption = Annotated[int, typer.Option("--forks", "-f", help="Hosts at once.")]
PayloadOption = Annotated[
    Path | None,
    typer.Option("--payload", help="The vendor's CPUU folder (default playbooks/payload)."),
]
TemplatesOption = Annotated[
    Path | None,
    typer.Option(
        "--templates",
        "-t",
        help="Folder of *.j2 templates and templates.yml (default playbooks/templates).",
    ),
]

EXIT_CODES_HELP = (
    "Exit codes: 0 no host needs attention; 2 bad input, nothing touched; 3 some hosts need "
    f"attention ({vocabulary.describe(vocabulary.EXIT_3_STATES, 'or')}); "
    "4 the controller could not write (disk full, read-only folder; the run is interrupted, "
    "--resume RUN once there is room); 130 interrupted (Ctrl-C, SIGTERM, SIGHUP)."
)


def _console() -> Console:
    return Console(stderr=False, highlight=False)


def _processors(reports: Path, as_json: bool) -> list[Any]:
    from cpuu_fleet.progress import JsonLinesPrinter, LiveProgress

    # Presentation only: the runner writes run.log itself.
    return [JsonLinesPrinter() if as_json else LiveProgress()]


def _warn(message: str) -> None:
    warn([message])


def _ask_pass(enabled: bool) -> Any:
    if not enabled:
        return None
    from cpuu_fleet.credentials import AskPass

    return AskPass()


def _print_result(result: Any, *, as_json: bool, check: bool) -> None:
    """The end of a run: summary table (or one JSON object), where the files are."""
    if as_json:
        data = {
            "event": "result",
            "run_id": result.run_id,
            "status": result.summary.status,
            "stop_reason": result.summary.stop_reason,
            "counts": result.counts,
            "exit_code": int(result.exit_code),
            "run_dir": str(result.run_dir),
        }
        if check:
            data["check"] = {h: _check_line(d) for h, d in result.details.items()}
        typer.echo(json.dumps(data, ensure_ascii=False))
        return
    console = _console()
    if check:
        _print_check(console, result)
    if result.report is not None:
        from cpuu_fleet.report import summary_table

        console.print(summary_table(result.report))
    else:
        console.print(_counts_table(result.counts, f"Run {result.run_id}"))
        if result.report_error:
            console.print(result.report_error, style="yellow", markup=False)
    if result.summary.stop_reason:
        console.print(f"[bold yellow]Stopped:[/] {escape(result.summary.stop_reason)}")
    console.print(f"Run [bold]{result.run_id}[/]: {result.summary.status}")
    # Paths are the operator's text (a folder may be called "reports[old]") and must survive a
    # copy and paste: plain text, never markup, never broken across lines.
    lines = [f"Files:   {result.run_dir}"]
    if result.report is not None:
        lines.append(f"Report:  {result.report.workbook}")
    lines.append(f"Journal: {result.journal_path}")
    if result.summary.status == "interrupted" and result.kind != "step":
        # Interrupted: the hosts not started (not_run) and those left running are in no retry
        # file; only --resume carries on with all of them, and asks the host where CPUU may run.
        lines.append(f"Resume:  cpuu-fleet play --resume {result.run_id}")
    elif result.summary.retry_file and Path(result.summary.retry_file).stat().st_size:
        limit = f"--limit @{result.summary.retry_file}"
        if result.kind == "step":  # no playbook to continue: repeat the step on those hosts
            lines.append(f"Retry:   the same command with {limit}")
        else:
            lines.append(
                f"Retry:   cpuu-fleet play ... --retry-failed {result.run_id}   (or {limit})"
            )
    pending = result.report.paths.get("pending.txt") if result.report is not None else None
    if pending is not None and pending.stat().st_size:
        lines.append(f"Pending: cpuu-fleet collect ... --limit @{pending}   (after the next logon)")
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


def _check_line(details: dict[str, Any]) -> dict[str, Any]:
    would = details.get("would_push") or {}
    return {
        "files": would.get("files", []),
        "bytes": would.get("bytes", 0),
        "already_there": would.get("skipped", 0),
        "run": details.get("would_run"),
        "user": (details.get("preflight") or {}).get("user"),
    }


def _print_check(console: Console, result: Any) -> None:
    table = Table(title="Check mode: what a real run would do (nothing was changed)")
    for column in ("host", "user", "files to push", "bytes", "already there", "run"):
        table.add_column(column)
    for host, details in sorted(result.details.items()):
        line = _check_line(details)
        files = line["files"]
        shown = ", ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "")
        table.add_row(
            escape(host),
            escape(printable(str(line["user"] or "-"))),
            escape(shown or "-"),
            f"{line['bytes']:,}",
            str(line["already_there"]),
            str(line["run"] or "-"),
        )
    console.print(table)


def _state_cell(key: str) -> str:
    """A state as the operator reads it: the vocabulary's label in its colour."""
    known = vocabulary.BY_KEY.get(key)
    if known is None:  # a state this version does not know: shown as it is
        return escape(key)
    return f"[{known.style}]{escape(known.label)}[/]"


def _counts_table(counts: dict[str, int], title: str | None) -> Table:
    table = Table(title=title)
    table.add_column("state")
    table.add_column("hosts", justify="right")
    order = {key: rank for rank, key in enumerate(vocabulary.BY_KEY)}
    for state, count in sorted(counts.items(), key=lambda item: order.get(item[0], len(order))):
        table.add_row(_state_cell(state), str(count))
    table.add_row("[bold]total[/]", str(sum(counts.values())))
    return table


def _finish(result: Any, *, as_json: bool, check: bool = False) -> None:
    _print_result(result, as_json=as_json, check=check)
    raise typer.Exit(int(result.exit_code))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""

    @app.command(
        help="Run a playbook wave by wave. " + EXIT_CODES_HELP,
        short_help="Run a playbook wave by wave.",
    )
    def play(
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
                help="Inventory file or folder (Ansible YAML/JSON); with --resume or"
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
                "--check", help="Read-only: preflight, then show what would be pushed and run."
            ),
        ] = False,
        resume: Annotated[
            str | None,
            typer.Option(
                "--resume",
                metavar="RUN",
                help="Carry on an interrupted run (never runs CPUU twice).",
            ),
        ] = None,
        retry_failed: Annotated[
            str | None,
            typer.Option(
                "--retry-failed",
                metavar="RUN",
                help=f"Re-run only RUN's {vocabulary.describe(vocabulary.RETRIED_STATES)} hosts.",
            ),
        ] = None,
        as_json: EventsJsonOption = False,
        reports: ReportsOption = Path("reports"),
        ask_pass: AskPassOption = False,
        extra: ExtraVarsOption = None,
        payload: Annotated[
            Path | None,
            typer.Option("--payload", help="CPUU payload folder (instead of the playbook's)."),
        ] = None,
    ) -> None:
        from cpuu_fleet.engine import PlayRequest, run_play

        if playbook is None and not (resume or retry_failed):
            raise InputError("a PLAYBOOK is required (unless --resume or --retry-failed is given)")
        request = PlayRequest(
            playbook=playbook,
            inventory=inventory,
            reports_dir=reports,
            limit=limit,
            forks=forks,
            check=check,
            resume=resume,
            retry_failed=retry_failed,
            ask_pass=_ask_pass(ask_pass),
            extra_vars=parse_extra_vars(extra),
            processors=_processors(reports, as_json),
            payload=payload,
            warn=_warn,
        )
        _finish(run_play(request), as_json=as_json, check=check)

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

    @app.command(
        help="Per-state counts of a run (default: the latest) and the hosts needing action."
    )
    def status(
        run: Annotated[str | None, typer.Argument(help="Run id (default: the latest run).")] = None,
        reports: ReportsOption = Path("reports"),
        as_json: JsonOption = False,
    ) -> None:
        _status(run, reports, as_json)

    @app.command(help="Run an update wave against an in-process lab fleet (no Windows needed).")
    def demo(
        hosts: Annotated[int, typer.Option("--hosts", help="Simulated workstations.")] = 40,
        seed: Annotated[
            int, typer.Option("--seed", help="Scenario seed (same seed, same fleet).")
        ] = 7,
        reports: ReportsOption = Path("reports"),
        as_json: EventsJsonOption = False,
    ) -> None:
        from cpuu_fleet.demo import run_demo
        from cpuu_fleet.engine import ExitCode

        result = run_demo(
            hosts=hosts, seed=seed, reports_dir=reports, processors=_processors(reports, as_json)
        )
        _print_result(result, as_json=as_json, check=False)
        if not as_json:
            _console().print(
                "This was a lab: the hosts are simulated workstations on 127.0.x.y, and the "
                "payload is a stand-in, not the vendor's CPUU. The failing and unreachable hosts "
                "are part of the mix on purpose."
            )
        # The demo's failures are staged, so a finished demo is a success; only an interrupted
        # one keeps its code (130), so scripts chaining "cpuu-fleet demo && ..." behave.
        code = result.exit_code
        raise typer.Exit(int(code) if code == ExitCode.INTERRUPTED else 0)


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
    from cpuu_fleet.engine import PlayRequest, run_step

    if step in ("push", "run"):
        payload = payload or Path("playbooks") / "payload"
        templates = templates or Path("playbooks") / "templates"
    request = PlayRequest(
        playbook=None,
        inventory=inventory,
        reports_dir=reports,
        limit=limit,
        ask_pass=_ask_pass(ask_pass),
        processors=_processors(reports, as_json),
        warn=_warn,
    )
    result = run_step(
        request,
        step,
        pattern=limit or "all",
        payload=payload,
        templates=templates,
        forks=forks,
        **options,
    )
    _finish(result, as_json=as_json)


def _status(run_id: str | None, reports: Path, as_json: bool) -> None:
    with existing_journal(reports) as journal:
        run = journal.run(run_id) if run_id else journal.latest_run()
        if run is None:
            raise InputError(
                f"no run {run_id!r} in the journal" if run_id else "no runs in the journal",
                where=journal.path,
            )
        run = {**run, "status": live_status(journal, run)}  # a dead controller's run: interrupted
        rows = _status_rows(run, journal.hosts(run["run_id"]), reports)
    counts = dict(Counter(row["state"] for row in rows))
    hosts = [h for h in rows if vocabulary.state(h["state"]).attention]
    pending = [h["host"] for h in rows if h["state"] in vocabulary.PENDING_STATES]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run": {k: run[k] for k in ("run_id", "kind", "status", "stop_reason", "mode")},
                    "counts": counts,
                    "needs_action": [
                        {
                            **{k: h[k] for k in ("host", "state", "error_class", "error_message")},
                            "follow_up": h["follow_up"],
                        }
                        for h in hosts
                    ],
                    "pending": pending,
                },
                ensure_ascii=False,
            )
        )
        return
    console = _console()
    title = f"Run {run['run_id']} ({run['kind']}, {run['mode'] or '-'}): {run['status']}"
    # Above the table, not as its title: a title wraps to the width of a two-column table.
    console.print(title, markup=False, soft_wrap=True)
    console.print(_counts_table(counts, None))
    if run.get("stop_reason"):
        console.print(f"[bold yellow]Stopped:[/] {escape(run['stop_reason'])}")
    if hosts:
        table = Table(title="Hosts needing action")
        for column in ("host", "wave", "state", "error", "message"):
            table.add_column(column, overflow="fold")
        for host in hosts:
            table.add_row(
                escape(printable(host["host"])),
                escape(printable(host["wave"] or "-")),
                _state_cell(host["state"]),
                escape(host["error_class"] or "-"),
                escape(printable((host["error_message"] or "")[:200])),
            )
        console.print(table)
        _print_follow_ups(console, hosts)
    if pending:
        follow_up = vocabulary.BY_KEY[vocabulary.PENDING].follow_up_for(run["run_id"], reports)
        console.print(f"pending ({len(pending)}): {follow_up}", markup=False, soft_wrap=True)


def _print_follow_ups(console: Console, hosts: list[dict[str, Any]]) -> None:
    """One line per state shown: what to do next about its hosts (the vocabulary's follow-up)."""
    counts = Counter(host["state"] for host in hosts)
    follow_ups = {host["state"]: host["follow_up"] for host in hosts}
    for key in sorted(counts, key=list(vocabulary.BY_KEY).index):
        line = f"{vocabulary.label(key)} ({counts[key]}): {follow_ups[key]}"
        console.print(line, markup=False, soft_wrap=True)


def _status_rows(
    run: dict[str, Any], rows: list[dict[str, Any]], reports: Path
) -> list[dict[str, Any]]:
    """The run's host rows as ``status`` shows them: a run that is over has its transient states
    settled (as in the report), and every row carries its follow-up from the vocabulary."""
    live = run["status"] == vocabulary.RUN_RUNNING
    shown = []
    for row in rows:
        key = row["state"] if live else vocabulary.settle(row["state"])
        follow_up = vocabulary.state(key).follow_up_for(row["run_id"], reports)
        shown.append({**row, "state": key, "follow_up": follow_up})
    return shown
