"""Fixtures for the engine core: a real journal and playbooks written on the fly."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.journal import Journal


@pytest.fixture
def journal(tmp_path: Path):
    journal = Journal.in_reports(tmp_path / "reports")
    yield journal
    journal.close()


@pytest.fixture
def write_playbook(tmp_path: Path):
    """Write a playbook (dedented YAML) beside the test and load it."""

    def write(text: str, name: str = "play.yml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_playbook(path)

    return write
