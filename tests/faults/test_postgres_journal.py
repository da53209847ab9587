"""The controller with its journal on PostgreSQL (``--journal URL``), against a lab fleet: the
same wave and report as on SQLite, ``kill -9`` in the run step then ``--resume`` with CPUU
started once per host, and two controllers on one wave where exactly one runs it.

The judge is the lab's launch log (CPUU starts per host), as in the fault matrix. The database is
a private cluster (``postgres_cluster``); each test gets a database of its own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.faults.fault_bench import FaultLab

pytestmark = [pytest.mark.slow]

_WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
_RUN_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")


def _comparable(value: Any) -> Any:
    """A report's figures without clock times, run ids and durations (two runs of one wave)."""
    if isinstance(value, dict):
        return {
            key: _comparable(item)
            for key, item in value.items()
            if "duration" not in key and "seconds" not in key and key not in ("at", "wall_s")
        }
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if isinstance(value, str):
        return _RUN_ID.sub("<run>", _WHEN.sub("<time>", value))
    return value


def _wave(root: Path, journal_url: str | None) -> dict[str, Any]:
    with FaultLab(root, journal_url=journal_url) as lab:
        played = lab.play()
        assert played.returncode == 0, played.stdout[-3000:]
        (run_id,) = lab.run_ids()
        report = lab.run("report", "--json", "--run", run_id)
        assert report.returncode == 0, report.stdout[-3000:]
        return {
            "starts": lab.start_counts(),
            "states": {host: row["state"] for host, row in lab.final_rows(run_id).items()},
            "lost": lab.lost_results(),
            "figures": json.loads(report.stdout),
            "journal_file": (lab.reports / "journal.sqlite3").exists(),
        }


def test_a_wave_on_postgresql_reports_what_the_same_wave_on_sqlite_does(tmp_path, pg_url):
    on_sqlite = _wave(tmp_path / "sqlite", None)
    on_postgresql = _wave(tmp_path / "postgresql", pg_url)
    assert on_postgresql["journal_file"] is False  # nothing went to a SQLite file
    assert set(on_postgresql["starts"].values()) == {1}
    assert on_postgresql["states"] == on_sqlite["states"]
    assert on_postgresql["lost"] == [] == on_sqlite["lost"]
    figures = _comparable(on_postgresql["figures"])
    assert figures == _comparable(on_sqlite["figures"])


def test_kill_9_in_the_run_step_then_resume_starts_cpuu_once_per_host(tmp_path, pg_url):
    with FaultLab(tmp_path, journal_url=pg_url) as lab:
        lab.assert_resumed_once(lab.killed_in_run_step())


def test_two_controllers_on_one_wave_exactly_one_runs_it(tmp_path, pg_url):
    with FaultLab(tmp_path, journal_url=pg_url) as lab:
        first, second = lab.two_plays()
        first_out, second_out = first.stdout, second.stdout
        runs = lab.run_ids()
        assert len(runs) == 1, runs
        assert sorted((first.returncode, second.returncode)) == [0, 2], first_out + second_out
        refused = second_out if second.returncode == 2 else first_out
        assert runs[0] in refused and "postgresql://" in refused
        assert set(lab.start_counts().values()) == {1}
