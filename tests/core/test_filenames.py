"""File names a workstation chooses: made safe on this machine, and never overwriting a file."""

from __future__ import annotations

import os

import pytest

from cpuu_fleet.filenames import create_exclusive, safe_basename


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("..\\..\\evil.csv", "evil.csv"),
        ("/etc/passwd", "passwd"),
        ("C:\\x\\CON.csv", "_CON.csv"),
        ("CPUU_a\nb.csv", "CPUU_a_b.csv"),
        ("nul", "_nul"),
        ("..", "unnamed"),
        ("a\x00b.csv", "a_b.csv"),
        ("C:evil.log", "evil.log"),
        ("report. ", "report"),
    ],
)
def test_hostile_names_become_safe_base_names(remote, local):
    assert safe_basename(remote) == local


def test_create_exclusive_never_overwrites(tmp_path):
    folder = tmp_path / "hosts" / "pc-0001"
    paths = []
    for _ in range(3):
        path, fd = create_exclusive(folder, "..\\CPUU_x.csv")
        os.write(fd, b"data")
        os.close(fd)
        paths.append(path.name)
    assert paths == ["CPUU_x.csv", "CPUU_x (2).csv", "CPUU_x (3).csv"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(paths)
    assert not (tmp_path / "hosts" / "CPUU_x.csv").exists()
