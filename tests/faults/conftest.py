"""Fixtures of the fault matrix (the bench itself is ``fault_bench.py``) and its table.

The table (case, signal, step, CPUU starts per host, final state, verdict) is written to
``fault-matrix.txt`` in pytest's base temp folder and shown in the terminal summary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.fault_bench import ROWS, FaultLab, MatrixRow, render_table

_TABLE_FILE: list[Path] = []


@pytest.fixture
def matrix_row(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MatrixRow]:
    """This case's row in the table; it is kept whether the case passes or fails."""
    if not _TABLE_FILE:
        _TABLE_FILE.append(tmp_path_factory.getbasetemp() / "fault-matrix.txt")
    row = MatrixRow(case=request.node.name.removeprefix("test_"))
    yield row
    ROWS.append(row)


@pytest.fixture
def fault_lab(tmp_path: Path) -> Iterator[FaultLab]:
    """A fresh healthy lab (a case that interrupts a wave changes its workstations)."""
    with FaultLab(tmp_path) as lab:
        yield lab


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if not ROWS:
        return
    table = render_table(ROWS)
    path = _TABLE_FILE[0]
    path.write_text(table + "\n", encoding="utf-8")
    terminalreporter.section("fault matrix")
    terminalreporter.write_line(table)
    terminalreporter.write_line(f"(also in {path})")
