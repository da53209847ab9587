"""Fixtures for the lab's tests: real fleets on loopback, real pypsrp clients, and the
workstation model on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.support.lab  # noqa: F401 - registers the test-only script handlers
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.lab.workstation import Workstation
from tests.support.workstation import USER, CpuuBench, FakeClock


@pytest.fixture(scope="module")
def basic_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    with LabFleet(2, auth="basic", workdir=tmp_path_factory.mktemp("basic")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def ntlm_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    with LabFleet(2, auth="ntlm", workdir=tmp_path_factory.mktemp("ntlm")) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def https_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    with LabFleet(2, auth="ntlm", https=True, workdir=tmp_path_factory.mktemp("https")) as fleet:
        yield fleet


@pytest.fixture(params=["basic_fleet", "ntlm_fleet", "https_fleet"])
def any_fleet(request: pytest.FixtureRequest) -> LabFleet:
    return request.getfixturevalue(request.param)


@pytest.fixture
def local_file(tmp_path: Path):
    def make(size: int, name: str = "src.bin") -> Path:
        path = tmp_path / name
        path.write_bytes(bytes((i * 7 + size) % 251 for i in range(size)))
        return path

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ws(tmp_path, clock) -> Workstation:
    station = Workstation("pc-0001", tmp_path / "pc-0001", clock=clock)
    station.logon(USER)
    return station


@pytest.fixture
def bench(ws, clock) -> CpuuBench:
    b = CpuuBench(ws, clock)
    b.stage()
    return b
