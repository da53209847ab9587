"""``cpuu-fleet demo``: a whole update wave against simulated workstations, in about a minute.

Why: an operator (or a reviewer) should see what cpuu-fleet does - batches, retries, the journal,
the per-host states, the Excel report - before pointing it at a real fleet. The demo starts an
in-process lab fleet on loopback addresses with a realistic mix of problems (``scenario="mixed"``),
writes its inventory into the run's folder, builds a stand-in payload, and runs the shipped
``playbooks/update.yml`` with demo-friendly timeouts (a hanging CPUU is stopped after seconds, not
fifteen minutes; transient failures are retried after half a second).

The stand-in ``ClientProfileUpdatingUtility.exe`` is NOT the vendor's program: it is 2 MB of
deterministic bytes, labelled as a lab stand-in in its first bytes and in a README beside it. The
lab's CPUU emulator plays the program's behaviour; nothing here ever runs it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.payload import CPUU_EXE
from cpuu_fleet.inputs.shipped import shipped_playbook
from cpuu_fleet.journal import new_run_id

find_playbook = shipped_playbook  # the name the tests and benches know it by

STANDIN_SIZE = 2 * 1024 * 1024
STANDIN_LABEL = (
    b"MZ cpuu-fleet LAB STAND-IN - this is NOT the vendor's ClientProfileUpdatingUtility.exe; "
    b"it is deterministic filler for demos and benchmarks and is never executed.\r\n"
)
DEMO_RUN_TIMEOUT_S = 6
DEMO_RETRY_BACKOFF_S = 0.5

#: Stand-in values for the INI's secrets in the lab (the lab accepts any wizard-encrypted value).
DEMO_SECRETS = {
    "CPUU_FLEET_CPUU_PASSWORD": "lab-src-Encrypted==Q1BVVQ",
    "CPUU_FLEET_CPUU_PASSWORD_TRG": "lab-trg-Encrypted==VFJHVA",
}

#: Template variables a lab inventory needs for the shipped templates.
LAB_TEMPLATE_VARS = {
    "cpuu_admin": "SOURCE\\svc-cpuu",
    "cpuu_password": "{{ lookup('env', 'CPUU_FLEET_CPUU_PASSWORD') }}",
    "cpuu_admin_trg": "svc-cpuu@target.example",
    "cpuu_password_trg": "{{ lookup('env', 'CPUU_FLEET_CPUU_PASSWORD_TRG') }}",
    # as in inventories/group_vars/all.yml: how the generic batch files select the mode
    "cpuu_mode_switch": {"update": "", "undo": "-Undo", "cleanup": "-Cleanup"},
}


def standin_bytes(size: int = STANDIN_SIZE) -> bytes:
    """The stand-in exe's content: the label, then SHA-256 counter-mode filler (deterministic)."""
    blocks = [STANDIN_LABEL]
    total = len(STANDIN_LABEL)
    counter = 0
    while total < size:
        block = hashlib.sha256(b"cpuu-fleet-standin-%d" % counter).digest() * 64
        blocks.append(block)
        total += len(block)
        counter += 1
    return b"".join(blocks)[:size]


def make_standin_payload(folder: Path, size: int = STANDIN_SIZE) -> Path:
    """A payload folder with the stand-in exe and a README that says what it is."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CPUU_EXE).write_bytes(standin_bytes(size))
    (folder / "README-LAB-STANDIN.txt").write_text(
        "This payload is a cpuu-fleet lab stand-in, not the vendor's CPUU.\r\n"
        "Put the vendor's ClientProfileUpdatingUtility.exe (and its files) here for a real wave.\r\n",
        encoding="utf-8",
    )
    return folder


def write_lab_inventory(fleet: Any, path: Path, *, waves: int | None = 3) -> Path:
    """The fleet's inventory plus the template variables the shipped templates need."""
    fleet.write_inventory(path, waves=waves)
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    group = document["all"]["children"]["lab"]
    group.setdefault("vars", {}).update(LAB_TEMPLATE_VARS)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def lab_environment(fleet: Any) -> Iterator[None]:
    """Export the lab password and the stand-in CPUU secrets while the demo runs."""
    wanted = {**fleet.env, **DEMO_SECRETS}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def demo_playbook(payload: Path, run_timeout: int = DEMO_RUN_TIMEOUT_S) -> Any:
    """``playbooks/update.yml`` with the stand-in payload and demo-friendly limits.

    The failure and unreachable thresholds are lifted (the mix fails hosts on purpose, and the demo should show a
    whole wave, not stop after the canary); everything else is the shipped playbook.
    """
    from cpuu_fleet.inputs.playbook import RunOptions, load_playbook

    playbook = load_playbook(shipped_playbook())
    plays = []
    for play in playbook.plays:
        steps = tuple(
            replace(s, run=replace(s.run, timeout=run_timeout))
            if isinstance(s.run, RunOptions)
            else s
            for s in play.steps
        )
        templates = play.templates or playbook.path.parent / "templates"
        plays.append(
            replace(
                play,
                steps=steps,
                payload=payload,
                templates=templates,
                max_fail_percentage=100,
                max_unreachable_percentage=100,
                retry_backoff=DEMO_RETRY_BACKOFF_S,
            )
        )
    return replace(playbook, plays=tuple(plays))


def run_demo(
    *,
    hosts: int = 40,
    seed: int = 7,
    reports_dir: Path = Path("reports"),
    processors: list[Any] | None = None,
    scenario: str = "mixed",
    run_timeout: int = DEMO_RUN_TIMEOUT_S,
) -> Any:
    """Start the lab, run the update playbook against it, return the engine's PlayResult."""
    from cpuu_fleet.engine.wave import Engine, PlayRequest
    from cpuu_fleet.inputs.inventory import Inventory
    from cpuu_fleet.lab.fleet import LabFleet

    if not 1 <= hosts <= 2000:
        raise InputError(f"--hosts must be between 1 and 2000, not {hosts}")
    reports_dir = Path(reports_dir)
    run_id = new_run_id()
    run_dir = reports_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run folder ({exc.strerror})", where=run_dir) from None
    workdir = Path(tempfile.mkdtemp(prefix="cpuu-fleet-demo-"))
    try:
        payload = make_standin_payload(workdir / "payload")
        playbook = demo_playbook(payload, run_timeout)
        with LabFleet(hosts, scenario=scenario, seed=seed, workdir=workdir) as fleet:
            inventory_path = write_lab_inventory(fleet, run_dir / "inventory.yml")
            with lab_environment(fleet):
                request = PlayRequest(
                    playbook=playbook.path,
                    inventory=inventory_path,
                    reports_dir=reports_dir,
                    processors=list(processors or []),
                    run_id=run_id,
                    retry_backoff=DEMO_RETRY_BACKOFF_S,
                )
                with Engine(request) as engine:
                    inventory = Inventory.load(inventory_path)
                    return engine.run(playbook, inventory, None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
