"""A play's ``limits:`` are read like every other playbook key: units, and bad values that name
their line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.limits import MIB, Limits


def _playbook(tmp_path: Path, limits: str) -> Path:
    path = tmp_path / "play.yml"
    path.write_text(
        f"- name: p\n  hosts: all\n  limits: {limits}\n  steps: [preflight]\n", encoding="utf-8"
    )
    return path


def test_a_play_reads_its_limits_with_units(tmp_path):
    play = load_playbook(
        _playbook(tmp_path, "{file_size: 1 MiB, output_size: 512KiB, step_time: 90}")
    ).plays[0]
    assert play.limits == Limits(file_bytes=MIB, output_bytes=512 * 1024, step_seconds=90.0)
    assert load_playbook(_playbook(tmp_path, "{}")).plays[0].limits == Limits()


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{file_size: lots}", "'file_size'"),
        ("{result_rows: 0}", "'result_rows' must be a whole number"),
        ("{step_time: -1}", "'step_time' must be a number of seconds"),
        ("{file_sise: 1 MiB}", "unknown key 'file_sise'"),
        ("64 MiB", "'limits' must be a mapping"),
    ],
)
def test_a_bad_limit_is_an_input_error_on_its_line(tmp_path, limits, message):
    with pytest.raises(InputError) as caught:
        load_playbook(_playbook(tmp_path, limits))
    assert message in caught.value.message and caught.value.line == 3
