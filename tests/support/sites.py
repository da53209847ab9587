"""Two sites of lab workstations and relays for them (``tests/sites/``).

Each site is its own :class:`~cpuu_fleet.lab.fleet.LabFleet` (its own loopback block and port).
Both fleets name their workstations ``pc-0001``..., so the inventory names a site's hosts
``<site>-pc-0001`` (with the lab's address as ``ansible_host``) and sets ``cpuu_site`` on the
site's group, as an operator would in group_vars. Relays are real ``cpuu-fleet relay``
processes, given the broker URL and the lab's secrets in their own environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from cpuu_fleet.cli.demo_lab import DEMO_SECRETS, make_standin_payload, write_lab_inventory
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.fleet import LabFleet
from tests.support.waves import Wave

SITES = ("north", "south")


class TwoSites(Wave):
    """Lab fleets per site, one inventory over both, a payload, and the controller's folder;
    run, follow up and request as a :class:`~tests.support.waves.Wave` (the fleets share the
    lab's password, so one fleet's environment serves both)."""

    def __init__(
        self, fleets: dict[str, LabFleet], root: Path, journal_url: str | None = None
    ):  # no Wave.__init__: two fleets
        self.journal_url = journal_url
        """A shared PostgreSQL journal (relays as on other machines), else reports/' SQLite."""
        self.fleets = fleets
        self.fleet = next(iter(fleets.values()))
        self.root = root
        self.inventory_path = self._write_inventory(root / "inventory" / "sites.yml")
        self.payload = make_standin_payload(root / "payload", size=200_000)
        self.reports = root / "reports"

    def _write_inventory(self, path: Path) -> Path:
        groups: dict[str, Any] = {}
        for site, fleet in self.fleets.items():
            scratch = write_lab_inventory(fleet, self.root / f"lab-{site}.yml", waves=None)
            body = yaml.safe_load(scratch.read_text(encoding="utf-8"))["all"]["children"]["lab"]
            body["hosts"] = {f"{site}-{name}": entry for name, entry in body["hosts"].items()}
            groups[site] = {"hosts": body["hosts"]}
            group_vars = path.parent / "group_vars"
            group_vars.mkdir(parents=True, exist_ok=True)
            (group_vars / f"{site}.yml").write_text(
                yaml.safe_dump({**body["vars"], "cpuu_site": site}), encoding="utf-8"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"all": {"children": groups}}), encoding="utf-8")
        return path

    @property
    def environment(self) -> dict[str, str]:
        """What a process visiting these hosts needs: the lab's password, CPUU's secrets."""
        return {**self.fleet.env, **DEMO_SECRETS}

    def host_names(self) -> list[str]:
        return [f"{site}-{h.name}" for site, fleet in self.fleets.items() for h in fleet.hosts]

    def cpuu_starts(self) -> dict[str, int]:
        """CPUU starts per inventory host, as the lab counted them."""
        return {
            f"{site}-{name}": count
            for site, fleet in self.fleets.items()
            for name, count in fleet.cpuu_start_counts().items()
        }

    def journal(self) -> Journal:
        return Journal.in_reports(self.reports, self.journal_url)

    def run(self, playbook: Any = None, **overrides: Any) -> Any:
        return super().run(playbook, **{"journal_url": self.journal_url, **overrides})


@contextmanager
def two_sites(
    root: Path,
    hosts: int,
    scenario: str = "healthy",
    journal_url: str | None = None,
    **lab: Any,
) -> Iterator[TwoSites]:
    with ExitStack() as stack:
        fleets = {
            site: stack.enter_context(
                LabFleet(hosts, scenario=scenario, workdir=root / f"lab-{site}", **lab)
            )
            for site in SITES
        }
        yield TwoSites(fleets, root, journal_url)


class RelayProcess:
    """One ``cpuu-fleet relay`` child process; :meth:`stop` ends it (warm), :meth:`kill` -9."""

    def __init__(self, sites: TwoSites, site: str, broker_url: str, name: str, concurrency: int):
        self.site = site
        self.work_dir = sites.root / f"relay-{name}"
        self.log = sites.root / f"relay-{name}.log"
        env = {**os.environ, **sites.environment, "CPUU_FLEET_BROKER": broker_url}
        command = [
            sys.executable,
            "-m",
            "cpuu_fleet",
            "relay",
            "--site",
            site,
            "--journal",
            sites.journal_url or str(sites.reports / Journal.FILENAME),
            "--concurrency",
            str(concurrency),
            "--work-dir",
            str(self.work_dir),
        ]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def listening(self) -> list[str]:
        """The TCP sockets this relay listens on (a relay connects outward only: none), read
        from /proc: its sockets' inodes, matched with the kernel's table in the LISTEN state."""
        inodes = set()
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                    found.append(fields[1])
        return found


def start_controller(sites: TwoSites, broker_url: str, *args: str) -> subprocess.Popen[str]:
    """``cpuu-fleet ARGS --reports DIR`` with the broker in its environment, as its own process
    (own process group: a signal for it never reaches pytest)."""
    env = {**os.environ, **sites.environment, "CPUU_FLEET_BROKER": broker_url}
    return subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", *args, "--reports", str(sites.reports)],
        cwd=sites.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


@contextmanager
def relays(
    sites: TwoSites,
    broker_url: str,
    per_site: int = 1,
    concurrency: int = 2,
    only: tuple[str, ...] = SITES,
) -> Iterator[list[RelayProcess]]:
    """``per_site`` relays for each site (of ``only``), stopped at the end (whatever happened)."""
    sites.reports.mkdir(parents=True, exist_ok=True)
    sites.journal().close()  # the relays open the controller's journal
    started = [
        RelayProcess(sites, site, broker_url, f"{site}-{n}", concurrency)
        for site in only
        for n in range(per_site)
    ]
    try:
        yield started
    finally:
        for relay in started:
            relay.stop()


def join_while_relays_live(
    thread: threading.Thread, started: list[RelayProcess], timeout: float
) -> None:
    """Wait for the controller's thread; a relay that exits meanwhile fails the test at once,
    with its output (a deadline only against hangs)."""
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        for relay in started:
            if relay.process.poll() is not None:
                raise AssertionError(f"relay {relay.site} exited:\n{relay.output()[-3000:]}")
        thread.join(timeout=0.2)
    if thread.is_alive():
        outputs = "\n".join(relay.output()[-1500:] for relay in started)
        raise AssertionError(f"the wave did not end in {timeout} s; relays said:\n{outputs}")


def in_background(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``call`` in a thread; its result or exception lands in the returned dict."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is true (a deadline only against hangs, never a measurement)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
