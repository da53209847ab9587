"""Fixtures of the fault matrix (the bench itself is ``fault_bench.py``).

Each case's row of the table (case, signal, step, CPUU starts per host, final state, verdict)
travels on its test report as a user property (:data:`ROW_PROPERTY`), so the table is whole when
the cases ran in several pytest-xdist workers: ``tests/conftest.py`` gathers and prints it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.fault_bench import ROW_PROPERTY, FaultLab, MatrixRow


@pytest.fixture
def matrix_row(request: pytest.FixtureRequest) -> Iterator[MatrixRow]:
    """This case's row in the table; it is kept whether the case passes or fails (it rides on
    the teardown report, which every case has)."""
    row = MatrixRow(case=request.node.name.removeprefix("test_"))
    yield row
    request.node.user_properties.append((ROW_PROPERTY, row.cells()))


@pytest.fixture
def fault_lab(tmp_path: Path) -> Iterator[FaultLab]:
    """A fresh healthy lab (a case that interrupts a wave changes its workstations)."""
    with FaultLab(tmp_path) as lab:
        yield lab
