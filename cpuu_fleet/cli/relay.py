"""``cpuu-fleet relay --site NAME``: a Celery worker that runs one site's host visits, and the
``--broker`` option that makes ``play`` dispatch to relays. Wiring only: see cpuu_fleet/sites/.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from cpuu_fleet.cli.options import (
    AskPassOption,
    AskVaultPassOption,
    VaultIdOption,
    VaultPasswordFileOption,
)
from cpuu_fleet.cli.present import ask_pass_prompt
from cpuu_fleet.errors import InputError

BrokerOption = Annotated[
    str | None,
    typer.Option(
        "--broker",
        metavar="URL",
        envvar="CPUU_FLEET_BROKER",
        show_envvar=False,
        help="RabbitMQ URL (amqp:// or amqps://; also CPUU_FLEET_BROKER): hosts with a"
        " cpuu_site are visited by that site's relays. Its password is never shown.",
    ),
]


def broker_app(url: str | None, sites: tuple[str, ...] = ()) -> Any:
    """The Celery app for ``--broker``, or None without one; one line when the extra is absent."""
    from cpuu_fleet.sites.app import BrokerSettings, make_app

    settings = BrokerSettings.from_environment(url)
    if settings is None:
        return None
    try:
        return make_app(settings, sites)
    except ImportError as exc:
        raise InputError(
            f"relays need the sites extra (pip install 'cpuu-fleet[sites]'): {exc}"
        ) from None


def register(app: typer.Typer) -> None:
    """Add this command to the root app."""

    @app.command(
        help="Run one site's host visits from the broker's queue (a Celery worker, threads)."
        " Secrets come from this machine (environment, keyring, --ask-pass, vault options),"
        " never from the controller; connects outward only, to the broker and the journal.",
        short_help="Run one site's host visits (a relay).",
    )
    def relay(
        site: Annotated[str, typer.Option("--site", help="The site whose queue to consume.")],
        journal: Annotated[
            str,
            typer.Option(
                "--journal",
                metavar="URL|FILE",
                help="The shared journal: the controller's postgresql://USER@HOST/DB (password"
                " from PGPASSWORD, ~/.pgpass or the keyring), or its journal.sqlite3 on this"
                " machine.",
            ),
        ],
        broker: BrokerOption = None,
        concurrency: Annotated[
            int, typer.Option("--concurrency", "-c", min=1, help="Visits at once (threads).")
        ] = 4,
        work_dir: Annotated[
            Path,
            typer.Option(
                "--work-dir",
                metavar="DIR",
                help="This relay's folder: cached bundles and payloads, collected files.",
            ),
        ] = Path("relay"),
        ask_pass: AskPassOption = False,
        vault_password_file: VaultPasswordFileOption = None,
        vault_id: VaultIdOption = None,
        ask_vault_pass: AskVaultPassOption = False,
    ) -> None:
        from cpuu_fleet import journal_pg
        from cpuu_fleet.journal import Journal
        from cpuu_fleet.sites.app import VISIT_TASK, check_site, queue_name
        from cpuu_fleet.sites.relay import Relay

        check_site(site)
        if not journal_pg.is_url(journal) and not Path(journal).is_file():
            raise InputError(f"no journal at {journal} (give the controller's journal)")
        celery_app = broker_app(broker, (site,))
        if celery_app is None:
            raise InputError("a relay needs --broker URL (or CPUU_FLEET_BROKER)")
        node = f"{site}@{socket.gethostname()}.{os.getpid()}"
        runner = Relay(
            Journal(journal, reports_dir=work_dir / "reports")
            if journal_pg.is_url(journal)
            else Journal(Path(journal)),
            site,
            cache_dir=work_dir / "cache",
            reports_dir=work_dir / "reports",
            name=node,
            ask_pass=ask_pass_prompt(ask_pass),
        )

        @celery_app.task(name=VISIT_TASK, acks_late=True, reject_on_worker_lost=True)
        def visit(ids: dict[str, Any]) -> None:
            runner.run_task(ids)

        typer.echo(f"relay {node}: {concurrency} visit(s) at once from {queue_name(site)}")
        worker = celery_app.Worker(
            queues=[queue_name(site)],
            concurrency=concurrency,
            pool="threads",
            hostname=node,
            loglevel="WARNING",
            without_gossip=True,
            without_mingle=True,
            without_heartbeat=True,
            quiet=True,
        )
        worker.start()
        raise typer.Exit(worker.exitcode or 0)
