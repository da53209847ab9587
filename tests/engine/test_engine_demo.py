"""``cpuu-fleet demo``: a small mixed fleet end to end, report included."""

from __future__ import annotations

import openpyxl

from cpuu_fleet.demo import STANDIN_LABEL, run_demo, standin_bytes
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
