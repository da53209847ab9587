"""cpuu-fleet installed as a tool, the way an operator installs it on a jump host: the wheel built
from this checkout, installed into a fresh venv, run from a folder that is not a checkout.

One test, marked slow (it builds and installs: about half a minute): the newcomer's path
``init NEWDIR && cd NEWDIR && cpuu-fleet demo`` with nothing but the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.commands import REPO

pytestmark = pytest.mark.slow
_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "payload")


def _run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # never the checkout
    env["COLUMNS"] = "200"
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_an_installed_wheel_makes_a_project_and_runs_the_demo_there(tmp_path: Path) -> None:
    # Built from a copy of the sources: setuptools' build/ in the checkout may hold stale files.
    source = tmp_path / "source"
    for name in ("cpuu_fleet", "playbooks", "inventories"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=_NOT_SOURCES)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    built = _run(
        sys.executable, "-m", "pip", "wheel", source, "-w", wheels, "--no-deps", "-q", cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("cpuu_fleet-*.whl")
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    installed = _run(
        venv / "bin" / "pip", "install", "-q", "-c", REPO / "constraints.txt", wheel, cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    tool = venv / "bin" / "cpuu-fleet"
    where = _run(venv / "bin" / "python", "-c", "import cpuu_fleet; print(cpuu_fleet.__file__)",
                 cwd=tmp_path)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    helped = _run(tool, "demo", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--hosts" in helped.stdout, helped.stderr
    made = _run(tool, "init", "migration", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "migration"
    assert (project / "playbooks" / "templates" / "CPUU.ini.j2").is_file()
    demo = _run(tool, "demo", "--hosts", "3", cwd=project)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    # The project's cpuu-fleet.toml put the run into the project's reports/.
    assert list((project / "reports").glob("*/report.xlsx")), demo.stdout[-2000:]
    listed = _run(tool, "inventory", "graph", cwd=project)
    assert listed.returncode == 0 and "@wave1" in listed.stdout, listed.stderr
