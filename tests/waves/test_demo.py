"""``cpuu-fleet demo``: a small mixed fleet end to end, report included."""

from __future__ import annotations

import openpyxl

from cpuu_fleet.cli.demo_lab import STANDIN_LABEL, run_demo, standin_bytes
from cpuu_fleet.journal import Journal


def test_standin_payload_is_deterministic_and_labelled():
    data = standin_bytes()
    assert data == standin_bytes() and len(data) == 2 * 1024 * 1024
    assert data.startswith(STANDIN_LABEL) and b"NOT the vendor" in data[:200]


def test_demo_runs_a_wave_and_writes_the_report(tmp_path):
    result = run_demo(hosts=12, seed=2, reports_dir=tmp_path, run_timeout=2)
    assert (result.run_dir / "inventory.yml").is_file()
    assert result.report is not None, result.report_error
    workbook = openpyxl.load_workbook(result.report.workbook, read_only=True)
    assert "Hosts" in workbook.sheetnames
    with Journal.in_reports(tmp_path) as journal:
        counts = journal.state_counts(result.run_id)
    assert sum(counts.values()) == 12 and counts.get("succeeded", 0) >= 6
    assert not (result.run_dir / "payload").exists()  # the stand-in never lands in reports


def test_demo_command_as_the_readme_types_it(tmp_path):
    """The README's first command: a finished demo exits 0 (its failures are staged) and says
    where the report is."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", "demo", "--hosts", "8", "--reports", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "report.xlsx" in proc.stdout
    assert list(tmp_path.glob("*/report.xlsx"))
