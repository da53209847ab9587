"""Running ``python -m cpuu_fleet`` as a user does, in a subprocess."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpuu_fleet.cli.demo_lab import DEMO_SECRETS
from cpuu_fleet.journal import Journal

REPO = Path(__file__).resolve().parents[2]


def run_subprocess(*args: str, cwd: Path, env: dict[str, str] | None = None):
    """``python -m cpuu_fleet ARGS`` as a user runs it, with the repository on PYTHONPATH."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_env(wave: Any) -> dict[str, str]:
    """The environment of a ``cpuu-fleet`` subprocess against a lab wave (``tests.support.waves``):
    the lab's variables, the demo secrets and the repository on PYTHONPATH."""
    return {**os.environ, **wave.fleet.env, **DEMO_SECRETS, "PYTHONPATH": str(REPO)}


def running_run_steps(journal: Path) -> tuple[str | None, int]:
    """The run with run steps open in the journal and how many (a controller in another process
    writes it: read-only, and nothing yet while it is being created)."""
    if not journal.exists():
        return None, 0
    try:
        db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(
                "SELECT run_id, COUNT(*) FROM attempts WHERE step = 'run' AND status = 'running'"
                " GROUP BY run_id"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None, 0
    return (rows[0][0], rows[0][1]) if rows else (None, 0)


def stop_with_run_steps_open(
    wave: Any, playbook: Path, count: int, *signals: signal.Signals
) -> tuple[str | None, int]:
    """``cpuu-fleet play PLAYBOOK`` against the lab wave in a subprocess, sent ``signals`` (by
    default SIGKILL: the controller gone without a word) as soon as ``count`` run steps are open
    in its journal (CPUU at work): the run's id and how many run steps were open (fewer: it
    never got there)."""
    controller = subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", "play", str(playbook),
         "-i", str(wave.inventory_path), "--reports", str(wave.reports), "--json"],
        env=cli_env(wave), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    journal_path = wave.reports / Journal.FILENAME
    deadline = time.monotonic() + 60
    run_id, running = None, 0
    while time.monotonic() < deadline and running < count:
        run_id, running = running_run_steps(journal_path)
        time.sleep(0.05)
    for signum in signals or (signal.SIGKILL,):
        controller.send_signal(signum)
        time.sleep(0.2)  # two Ctrl-C are two key presses, not one
    controller.wait(timeout=30)
    return run_id, running
