"""``cpuu-fleet demo``: a whole update wave against an in-process lab fleet, with its report
(the README's first command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cpuu_fleet.cli.options import EventsJsonOption, ReportsOption
from cpuu_fleet.cli.present import print_result, processors, stdout_console


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    @app.command(help="Run an update wave against an in-process lab fleet (no Windows needed).")
    def demo(
        hosts: Annotated[int, typer.Option("--hosts", help="Simulated workstations.")] = 40,
        seed: Annotated[
            int, typer.Option("--seed", help="Scenario seed (same seed, same fleet).")
        ] = 7,
        reports: ReportsOption = Path("reports"),
        as_json: EventsJsonOption = False,
    ) -> None:
        from cpuu_fleet.cli.demo_lab import run_demo
        from cpuu_fleet.engine.wave import ExitCode

        result = run_demo(
            hosts=hosts, seed=seed, reports_dir=reports, processors=processors(reports, as_json)
        )
        print_result(result, as_json=as_json, check=False)
        if not as_json:
            stdout_console().print(
                "This was a lab: the hosts are simulated workstations on 127.0.x.y, and the "
                "payload is a stand-in, not the vendor's CPUU. The failing and unreachable hosts "
                "are part of the mix on purpose."
            )
        # The demo's failures are staged, so a finished demo is a success; only an interrupted
        # one keeps its code (130), so scripts chaining "cpuu-fleet demo && ..." behave.
        code = result.exit_code
        raise typer.Exit(int(code) if code == ExitCode.INTERRUPTED else 0)
