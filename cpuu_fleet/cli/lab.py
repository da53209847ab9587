"""CLI: ``cpuu-fleet lab up``, a simulated workstation fleet served in the foreground."""

from __future__ import annotations

import enum
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, make_standin_payload, write_lab_inventory
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.shipped import shipped_playbook
from cpuu_fleet.lab.fleet import AUTHS, PASSWORD_ENV, LabFleet
from cpuu_fleet.lab.scenarios import SCENARIOS

lab_app = typer.Typer(
    help="A lab of simulated Windows workstations speaking WinRM on 127.0.0.0/8.",
    no_args_is_help=True,
)

ScenarioName = enum.Enum("ScenarioName", {name: name for name in SCENARIOS}, type=str)
"""The lab's scenarios as choices (``--scenario`` lists them in its help, completes them)."""
_SCENARIO_HELP = "Fleet scenario: " + "; ".join(f"{k} = {v}" for k, v in SCENARIOS.items())


@lab_app.command("up")
def up(
    inventory_out: Annotated[
        Path,
        typer.Option("--inventory-out", help="Write the fleet's Ansible inventory (YAML) here."),
    ],
    hosts: Annotated[int, typer.Option("--hosts", min=1, help="Number of workstations.")] = 10,
    scenario: Annotated[ScenarioName, typer.Option("--scenario", help=_SCENARIO_HELP)] = (
        ScenarioName.healthy  # type: ignore[attr-defined]
    ),
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same fleet.")] = 0,
    auth: Annotated[
        str, typer.Option("--auth", help="basic | ntlm | negotiate | certificate")
    ] = "ntlm",
    https: Annotated[
        bool, typer.Option("--https", help="Listen on 5986 with TLS (the inventory names the CA).")
    ] = False,
    latency: Annotated[
        float | None,
        typer.Option("--latency", min=0, help="Added latency per request for every host, in ms."),
    ] = None,
    waves: Annotated[
        int,
        typer.Option(
            "--waves", min=1, help="Split the hosts into wave1..N groups (the playbooks' 'wave*')."
        ),
    ] = 3,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where the disks and certificates live (default: temp)."),
    ] = None,
    launch_log: Annotated[
        Path | None,
        typer.Option(
            "--launch-log",
            help="Append one JSON line per CPUU start (host, task, user, trigger, time) to FILE,"
            " flushed at once: the lab's own record of what ran where.",
        ),
    ] = None,
    cpuu_seconds: Annotated[
        float | None,
        typer.Option(
            "--cpuu-seconds",
            min=0,
            help="CPUU runs this many seconds on every workstation (default: 0.2 s + 0.05 s"
            " per profile).",
        ),
    ] = None,
) -> None:
    """Serve a fleet in the foreground until Ctrl-C, and write its inventory."""
    scenario = ScenarioName(scenario).value  # a plain name from here on
    if auth not in AUTHS:
        raise InputError(f"unknown auth {auth!r}; valid: {', '.join(AUTHS)}", where="--auth")
    if auth == "certificate" and not https:
        raise InputError("certificate auth needs --https", where="--auth")
    try:
        fleet = LabFleet(
            hosts,
            scenario=scenario,
            seed=seed,
            auth=auth,
            https=https,
            workdir=workdir,
            latency_s=latency / 1000 if latency is not None else None,
            cpuu_seconds=cpuu_seconds,
            launch_log=launch_log,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    console = Console()
    stop = threading.Event()
    # Ctrl-C and SIGTERM stop the lab cleanly, even when started from a script that ignores
    # SIGINT for background jobs.
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with _started(fleet):
            try:
                path = write_lab_inventory(fleet, inventory_out, waves=min(waves, hosts))
                payload = make_standin_payload(path.parent / f"{path.stem}-payload")
            except OSError as exc:
                why = exc.strerror or str(exc)
                raise InputError(
                    f"cannot write the lab's inventory ({why})", where=exc.filename or inventory_out
                ) from None
            _print_summary(console, fleet, path, payload)
            while not stop.wait(1.0):
                pass
            console.print("stopping the lab ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print("lab stopped")


@contextmanager
def _started(fleet: LabFleet) -> Iterator[LabFleet]:
    """The fleet, started; a launch log that cannot be opened is one line, not a traceback."""
    try:
        fleet.start()
    except OSError as exc:
        if fleet.launch_log is None or exc.filename != str(fleet.launch_log):
            raise
        why = exc.strerror or str(exc)
        raise InputError(f"cannot open the launch log ({why})", where="--launch-log") from None
    try:
        yield fleet
    finally:
        fleet.stop()


def _print_summary(console: Console, fleet: LabFleet, inventory: Path, payload: Path) -> None:
    table = Table(title=f"cpuu-fleet lab: {len(fleet.hosts)} workstations")
    table.add_column("scenario")
    table.add_column("hosts", justify="right")
    for scenario, count in sorted(fleet.summary().items()):
        table.add_row(scenario, str(count))
    console.print(table)
    first, last = fleet.hosts[0], fleet.hosts[-1]
    scheme = "https" if fleet.https else "http"
    console.print(f"addresses  {first.address} .. {last.address}  ({scheme}, port {fleet.port})")
    console.print(f"auth       {fleet.auth} as {fleet.username}")
    if fleet.https:
        console.print(f"CA         {fleet.ca_cert_path}")
    if fleet.cpuu_seconds is not None:
        console.print(f"CPUU runs  {fleet.cpuu_seconds:g} s on every workstation")
    if fleet.launch_log is not None:
        console.print(f"launch log {fleet.launch_log}", markup=False, highlight=False)
    console.print(f"inventory  {inventory}", markup=False, highlight=False)
    console.print(f"payload    {payload}  (a lab stand-in, not the vendor's CPUU)", markup=False)
    console.print("In another shell, export the lab's secrets and run a wave against it:")
    exports = {PASSWORD_ENV: fleet.password, **DEMO_SECRETS}
    for name, value in exports.items():
        console.print(
            f"export {name}={shlex.quote(value)}", markup=False, highlight=False, soft_wrap=True
        )
    console.print(
        f"cpuu-fleet play {shlex.quote(str(_update_playbook()))} -i {shlex.quote(str(inventory))}"
        f" --payload {shlex.quote(str(payload))}",
        markup=False,
        highlight=False,
        soft_wrap=True,  # one line, whatever the terminal's width: it is meant to be copied
    )
    console.print("Serving; press Ctrl-C to stop.", highlight=False)


def _update_playbook() -> Path:
    """The project's ``playbooks/update.yml`` when there is one here, else the shipped one: the
    printed command works from whatever folder the lab was started in."""
    local = Path("playbooks") / "update.yml"
    return local if local.is_file() else shipped_playbook()


def register(app: typer.Typer) -> None:
    """Add ``lab`` (``lab up``) to the root app."""
    app.add_typer(lab_app, name="lab")
