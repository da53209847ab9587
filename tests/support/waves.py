"""Lab waves for the tests: lab fleets in this process, playbooks built in code, runs
(``wave_factory`` in ``tests/conftest.py`` starts them).

Everything is real: pypsrp over sockets to the lab (NTLM with message encryption over HTTP), the
real runner and journal, real files. Fleets are small and shared per module where a test only
reads what a wave left behind; CPUU's simulated run time is the lab's (a fraction of a second).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from cpuu_fleet.cli.demo_lab import find_playbook, make_standin_payload, write_lab_inventory
from cpuu_fleet.cli.demo_lab import lab_environment as lab_env
from cpuu_fleet.cpuu import Mode
from cpuu_fleet.engine.wave import Engine, PlayRequest, PlayResult
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.playbook import Playbook, load_playbook
from cpuu_fleet.journal import Journal
from cpuu_fleet.lab.fleet import LabFleet

TEMPLATES = find_playbook().parent / "templates"
ALL_STEPS = ("preflight", "push", "run", "collect")


def make_playbook(
    payload: Path | None,
    *,
    steps: tuple[str, ...] = ALL_STEPS,
    mode: Mode = Mode.UPDATE,
    when_no_user: str = "skip",
    timeout: int = 3,
    serial: list[int | str] | None = None,
    max_fail_percentage: float | None = None,
    forks: int = 25,
    retries: int = 1,
    hosts: str = "all",
    folder: Path | None = None,
    users: str | None = None,
    disconnected: str | None = None,
    attached: bool | None = None,
    expected_seconds: int | None = None,
    per_host: int | None = None,
) -> Playbook:
    """Write a real playbook YAML (as an operator would) and load it with the real loader."""
    spec: list[object] = []
    for name in steps:
        if name == "run":
            run = {"mode": mode.value, "when_no_user": when_no_user, "timeout": timeout}
            if users is not None:
                run["users"] = users
            if disconnected is not None:
                run["disconnected"] = disconnected
            if attached is not None:
                run["attached"] = attached
            if expected_seconds is not None:
                run["expected_seconds"] = expected_seconds
            if per_host is not None:
                run["per_host"] = per_host
            spec.append({"run": run})
        else:
            spec.append(name)
    play: dict[str, object] = {
        "name": f"test {mode.value}",
        "hosts": hosts,
        "forks": forks,
        "retries": retries,
        "retry_backoff": 0.05,
        "templates": str(TEMPLATES),
        "steps": spec,
    }
    if payload is not None:
        play["payload"] = str(payload)
    if serial is not None:
        play["serial"] = serial
    if max_fail_percentage is not None:
        play["max_fail_percentage"] = max_fail_percentage
    folder = folder or (payload.parent if payload is not None else Path.cwd())
    path = folder / f"playbook-{mode.value}-{'-'.join(steps)}.yml"
    path.write_text(yaml.safe_dump([play], sort_keys=False), encoding="utf-8")
    return load_playbook(path)


class Wave:
    """A lab fleet with its inventory and payload, and a way to run playbooks against it."""

    def __init__(self, fleet: LabFleet, root: Path):
        self.fleet = fleet
        self.root = root
        self.inventory_path = write_lab_inventory(fleet, root / "inventory.yml", waves=None)
        self.payload = make_standin_payload(root / "payload", size=300_000)
        self.reports = root / "reports"

    def request(self, **overrides: Any) -> PlayRequest:
        values: dict[str, Any] = {
            "playbook": None,
            "inventory": self.inventory_path,
            "reports_dir": self.reports,
            "handle_sigint": False,
            "retry_backoff": 0.05,
        }
        values.update(overrides)
        return PlayRequest(**values)

    def run(self, playbook: Playbook | None = None, **overrides: Any) -> PlayResult:
        playbook = playbook or make_playbook(self.payload)
        with lab_env(self.fleet), Engine(self.request(**overrides)) as engine:
            return engine.run(playbook, Inventory.load(self.inventory_path), None)

    def follow_up(self, **overrides: Any) -> PlayResult:
        """``--resume RUN`` / ``--retry-failed RUN``, as the CLI does it."""
        with lab_env(self.fleet), Engine(self.request(**overrides)) as engine:
            playbook, inventory, selection = engine.load()
            return engine.run(playbook, inventory, selection)

    def workstation(self, name: str) -> Any:
        return self.fleet.host(name).workstation

    def scenario_hosts(self, scenario: str) -> list[str]:
        return [h.name for h in self.fleet.hosts if h.scenario == scenario]


@contextmanager
def started_wave(tmp: Path, hosts: int, scenario: str, seed: int = 0) -> Iterator[Wave]:
    with LabFleet(hosts, scenario=scenario, seed=seed, workdir=tmp / "lab") as fleet:
        yield Wave(fleet, tmp)


def host_row(wave: Any, run_id: str, host: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The host's journal row in a run, and the files collected from it."""
    with Journal.in_reports(wave.reports) as journal:
        row = journal.host(run_id, host)
        files = journal.files(run_id, host)
    assert row is not None
    return row, files
