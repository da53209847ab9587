"""``cpuu-fleet report``: default folders, run selection, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cpuu_fleet import journal as J
from cpuu_fleet.cli import app
from cpuu_fleet.errors import InputError
from cpuu_fleet.journal import HostEntry, Journal
from cpuu_fleet.report import summary_table, write_report

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    """The real entry point (``python -m cpuu_fleet``), where InputError becomes exit code 2."""
    return subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_on_the_latest_run_writes_into_its_folder_and_prints_the_summary(fleet):
    fleet.journal.close()
    result = CliRunner().invoke(
        app, ["report", "--reports", str(fleet.reports)], terminal_width=100
    )
    assert result.exit_code == 0, result.output
    out = fleet.reports / fleet.retry_run
    for name in ("report.xlsx", "hosts.csv", "profiles.csv", "actions.csv", "retry.txt"):
        assert (out / name).is_file(), name
    assert "succeeded" in result.output and "Total" in result.output
    book = openpyxl.load_workbook(out / "report.xlsx", read_only=True)
    hosts = [row[1] for row in book["Hosts"].iter_rows(min_row=2, values_only=True)]
    assert hosts == ["pc-02", "pc-07"]  # the retry run targeted only these


def test_report_on_several_runs_goes_to_a_timestamped_folder(fleet):
    fleet.journal.close()
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--reports",
            str(fleet.reports),
            "--run",
            fleet.first_run,
            "--run",
            fleet.retry_run,
        ],
        terminal_width=100,
    )
    assert result.exit_code == 0, result.output
    folders = [p for p in fleet.reports.iterdir() if p.name.startswith("report-")]
    assert len(folders) == 1 and (folders[0] / "report.xlsx").is_file()
    assert "33.3%" in result.output  # 3 of 9 succeeded across both runs
    assert "@" + str(folders[0] / "retry.txt") in result.output.replace("\n", "")


def test_report_all_with_a_wave_and_an_explicit_out_folder(fleet, tmp_path):
    fleet.journal.close()
    out = tmp_path / "wave2-report"
    result = CliRunner().invoke(
        app,
        ["report", "--reports", str(fleet.reports), "--all", "--wave", "wave2", "--out", str(out)],
        terminal_width=100,
    )
    assert result.exit_code == 0, result.output
    assert (out / "retry.txt").read_text() == "pc-09\npc-07\n"  # failed, not run (wave stopped)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "20990101-000000-ffff"], "unknown run id 20990101-000000-ffff"),
        (["--wave", "nowave"], "no wave matches 'nowave'"),
        (["--all", "--run", "x"], "--run and --all cannot be used together"),
        (["--csv-dialect", "fr"], "unknown CSV dialect 'fr'"),
        (["--timezone", "Europe/Pariss"], "unknown time zone 'Europe/Pariss'"),
    ],
)
def test_bad_selections_are_input_errors_naming_the_culprit(fleet, args, message):
    """main() turns these into one line and exit code 2 (checked end to end below)."""
    fleet.journal.close()
    result = CliRunner().invoke(app, ["report", "--reports", str(fleet.reports), *args])
    assert isinstance(result.exception, InputError)
    assert message in result.exception.render()
    assert "\n" not in result.exception.render()
    assert not [p for p in fleet.reports.iterdir() if p.is_dir()]  # nothing written


def test_no_journal_means_no_runs_and_creates_nothing(tmp_path):
    completed = _cli("report", "--reports", str(tmp_path / "reports"))
    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        f"cpuu-fleet: error: no runs in {tmp_path / 'reports' / 'journal.sqlite3'}"
    )
    assert not (tmp_path / "reports").exists()


def test_names_from_the_journal_are_printed_as_text_not_markup(tmp_path):
    journal = Journal(tmp_path / "j.sqlite3")
    run = journal.start_run(run_id="r1")
    journal.add_hosts(run, [HostEntry("pc-1", wave="[red]w1[/red]\x1b[2J")])
    journal.set_host(run, "pc-1", state=J.SUCCEEDED, exit_code=1)
    result = write_report(journal, [run], tmp_path / "out")
    console = Console(record=True, width=120, color_system=None)
    console.print(summary_table(result))
    text = console.export_text()
    assert "[red]w1[/red]" in text  # shown literally, not turned into a colour
    assert "\x1b" not in text and "\\x1b[2J" in text  # the escape sequence is shown, not sent


def test_a_wave_report_does_not_replace_the_runs_full_report(fleet):
    fleet.journal.close()
    runner = CliRunner()
    full = runner.invoke(app, ["report", "--reports", str(fleet.reports), "--run", fleet.first_run])
    assert full.exit_code == 0, full.output
    part = runner.invoke(
        app,
        [
            "report",
            "--reports",
            str(fleet.reports),
            "--run",
            fleet.first_run,
            "--wave",
            "wave*:!wave1",
        ],
    )
    assert part.exit_code == 0, part.output
    run_dir = fleet.reports / fleet.first_run
    assert (run_dir / "retry.txt").read_text() == "pc-04\npc-02\npc-03\npc-09\npc-07\n"
    assert (run_dir / "wave-wave_wave1" / "retry.txt").read_text() == "pc-09\npc-07\n"


def test_report_writes_the_csvs_in_the_dialect_and_zone_asked_for(fleet, tmp_path):
    fleet.journal.close()
    out = tmp_path / "eu"
    args = ["report", "--reports", str(fleet.reports), "--out", str(out)]
    args += ["--csv-dialect", "eu", "--timezone", "America/New_York"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    header, *rows = (out / "hosts.csv").read_text(encoding="utf-8-sig").splitlines()
    assert header.startswith("wave;host;user;state;")
    assert rows[0].split(";")[header.split(";").index("time_zone")] == "America/New_York"


def test_play_refuses_an_unknown_time_zone_before_anything_runs(tmp_path):
    completed = _cli("play", "nothing.yml", "--reports", str(tmp_path), "--timezone", "Mars/Base")
    assert completed.returncode == 2, completed.stderr
    assert "unknown time zone 'Mars/Base'" in completed.stderr
    assert not list(tmp_path.iterdir())  # no journal, no run folder


def test_the_terminal_shows_the_verdict_and_the_causes_with_their_owners(fleet):
    fleet.journal.close()
    result = CliRunner().invoke(
        app, ["report", "--reports", str(fleet.reports), "--all"], terminal_width=120
    )
    assert result.exit_code == 0, result.output
    assert "Next wave: NO-GO (judged on wave2:" in result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["wave1", "1", "needs", "action", "error:", "unreachable", "desktop", "team"] in lines
    assert ["wave2", "1", "waiting", "pending", "the", "user"] in lines
