"""``results show``: it stops at ``--max-rows`` and says so."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cpuu_fleet.cli import app
from cpuu_fleet.errors import InputError
from tests.support.result_files import big_result_file


def test_results_show_stops_at_max_rows_and_says_so(tmp_path):
    path = big_result_file(tmp_path / "CPUU_huge.csv", 5000)
    shown = CliRunner().invoke(app, ["results", "show", "--json", "--max-rows", "10", str(path)])
    (data,) = json.loads(shown.stdout)
    assert data["truncated"] and len(data["profiles"]) == 10
    # The CLI's entry point turns this into one line on stderr and exit code 2.
    assert isinstance(shown.exception, InputError)
    assert "more than 10 lines" in str(shown.exception) and "--max-rows" in str(shown.exception)
