"""Fixtures for the lab's protocol tests: real fleets on loopback, real pypsrp clients."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lab_testkit  # noqa: F401 - registers the test-only script handlers
import pytest

from cpuu_fleet.lab.fleet import LabFleet


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
