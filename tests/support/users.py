"""Helpers for lab waves about who CPUU runs for (issue 10): the host's expected users in the
lab inventory, and waiting for the lab's CPUU to end."""

from __future__ import annotations

import time
from typing import Any

import yaml


def expect_users(wave: Any, host: str, users: Any) -> None:
    """Set the host's ``cpuu_user`` in the lab inventory (one user or a list, or a bad value)."""
    document = yaml.safe_load(wave.inventory_path.read_text(encoding="utf-8"))
    document["all"]["children"]["lab"]["hosts"][host]["cpuu_user"] = users
    wave.inventory_path.write_text(yaml.safe_dump(document), encoding="utf-8")


def wait_for_cpuu(ws: Any) -> None:
    """Until the workstation's tasks are no longer running (the lab's CPUU takes a moment)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ws.refresh()
        if not any(task.running for task in ws.tasks.values()):
            return
        time.sleep(0.05)
    raise AssertionError("CPUU still running after 10 s")


TECHNICIAN = "CORP\\helpdesk"


def technician_at_the_console(wave_factory: Any) -> tuple[Any, str, Any, str]:
    """One lab host whose user (with Outlook profiles) left the console to a technician:
    (wave, host name, workstation, the user)."""
    wave = wave_factory(1)
    host = wave.fleet.hosts[0].name
    ws = wave.workstation(host)
    owner = ws.interactive_user
    ws.logoff()
    ws.logon(TECHNICIAN)
    return wave, host, ws, owner
