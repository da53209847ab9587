"""``cpuu-fleet lab up`` as an operator runs it: a real process, a real client, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from pypsrp.client import Client

REPO = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path, *args: str, columns: int = 200) -> tuple[subprocess.Popen[str], Path]:
    inventory = tmp_path / "lab.yml"
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpuu_fleet", "lab", "up", "--inventory-out", str(inventory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    return proc, inventory


def _read_until_serving(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    seen = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "Serving" in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError("lab up did not start:\n" + "".join(seen))


def test_lab_up_serves_until_ctrl_c(tmp_path: Path) -> None:
    proc, inventory = _start(tmp_path, "--hosts", "30", "--auth", "ntlm", "--waves", "3")
    try:
        banner = _read_until_serving(proc)
        password = re.search(r"export CPUU_FLEET_LAB_PASSWORD=(\S+)", banner).group(1).strip("'")
        assert "healthy" in banner
        doc = yaml.safe_load(inventory.read_text())
        lab = doc["all"]["children"]["lab"]
        assert lab["vars"]["ansible_psrp_auth"] == "ntlm"
        assert lab["vars"]["ansible_password"] == "{{ lookup('env', 'CPUU_FLEET_LAB_PASSWORD') }}"
        assert sorted(lab["children"]) == ["wave1", "wave2", "wave3"]
        wave3 = lab["children"]["wave3"]["hosts"]
        assert len(wave3) == 10
        name, host_vars = next(iter(wave3.items()))
        first_host = next(iter(lab["children"]["wave1"]["hosts"].values()))
        assert f"addresses  {first_host['ansible_host']} .." in banner
        client = Client(
            host_vars["ansible_host"],
            port=lab["vars"]["ansible_port"],
            username=lab["vars"]["ansible_user"],
            password=password,
            ssl=False,
            auth="ntlm",
        )
        with client:
            assert client.execute_ps("$env:COMPUTERNAME")[0] == name.upper()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "lab stopped" in out


def test_lab_up_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    proc, _ = _start(tmp_path, "--scenario", "volcano")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "'volcano' is not one of" in out and "'healthy'" in out  # the choices, named


def test_lab_up_prints_a_wave_that_runs_as_printed(tmp_path: Path) -> None:
    """The README's lab flow: `lab up`, then the exports and the `play` command it prints, each on
    one line even in an 80-column terminal (they are meant to be copied). The lab's launch log
    shows, while the lab still runs, exactly one CPUU start per host, for the task and user the
    journal names; CPUU took the time asked for."""
    launches = tmp_path / "launches.jsonl"
    proc, _inventory = _start(
        tmp_path,
        *("--hosts", "4", "--auth", "basic"),
        *("--launch-log", str(launches), "--cpuu-seconds", "0.5"),
        columns=80,
    )
    try:
        banner = _read_until_serving(proc)
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", banner, re.MULTILINE))
        assert set(exports) == {
            "CPUU_FLEET_LAB_PASSWORD",
            "CPUU_FLEET_CPUU_PASSWORD",
            "CPUU_FLEET_CPUU_PASSWORD_TRG",
        }
        command = re.search(r"^cpuu-fleet (play .*)$", banner, re.MULTILINE).group(1).split()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            **{k: v.strip("'") for k, v in exports.items()},
        }
        play = subprocess.run(
            [sys.executable, "-m", "cpuu_fleet", *command, "--reports", str(tmp_path / "r")],
            cwd=tmp_path,  # the folder the lab was started in: no checkout, no playbooks/
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert play.returncode == 0, play.stdout[-3000:] + play.stderr[-3000:]
        assert list((tmp_path / "r").glob("*/report.xlsx"))
        from cpuu_fleet.journal import Journal

        with Journal.in_reports(tmp_path / "r") as journal:
            (run,) = journal.runs()
            assert journal.state_counts(run["run_id"]) == {"succeeded": 4}
            rows = {row["host"]: row for row in journal.hosts(run["run_id"])}
        starts = [json.loads(line) for line in launches.read_text(encoding="utf-8").splitlines()]
        assert sorted(start["host"] for start in starts) == sorted(rows)
        for start in starts:
            assert start["task"] == rows[start["host"]]["task_name"]
            assert start["user"].casefold() == rows[start["host"]]["user"].casefold()
        assert "CPUU runs  0.5 s on every workstation" in banner
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


def test_lab_up_with_an_inventory_it_cannot_write_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be\n")
    target = tmp_path / "taken" / "lab.yml"
    proc, _ = _start(tmp_path, "--hosts", "1", "--inventory-out", str(target))  # the last wins
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert out.splitlines()[-1].startswith("cpuu-fleet: error: ")
    assert "cannot write the lab's inventory" in out and "Traceback" not in out


def test_lab_up_with_a_launch_log_it_cannot_open_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a folder should be\n")
    proc, _ = _start(tmp_path, "--hosts", "1", "--launch-log", str(tmp_path / "taken" / "l.jsonl"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "cannot open the launch log" in out and "Traceback" not in out
