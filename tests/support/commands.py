"""Running ``python -m cpuu_fleet`` as a user does, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
