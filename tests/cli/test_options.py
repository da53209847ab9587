"""``-e/--extra-vars``: one parser for ``render`` and ``play``, so the review copy an operator
reads has exactly the variables the wave will push."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cpuu_fleet.cli.options import parse_extra_vars
from cpuu_fleet.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_pairs_split_only_where_a_new_name_starts():
    assert parse_extra_vars(["a=1 b=2", "cpuu_admin=Domain Admins"]) == {
        "a": "1",
        "b": "2",
        "cpuu_admin": "Domain Admins",
    }


def test_windows_values_are_kept_as_written():
    parsed = parse_extra_vars([r"cpuu_admin=SOURCE\svc-cpuu", r"dest=C:\Program Files\CPUU x=1"])
    assert parsed == {"cpuu_admin": r"SOURCE\svc-cpuu", "dest": r"C:\Program Files\CPUU", "x": "1"}


def test_mapping_and_file_and_later_ones_win(tmp_path):
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text("site: lyon\nwave: 2\n", encoding="utf-8")
    parsed = parse_extra_vars(['{"site": "paris", "n": 3}', f"@{vars_file}", "wave=3"])
    assert parsed == {"site": "lyon", "n": 3, "wave": "3"}


@pytest.mark.parametrize(
    ("value", "said"),
    [("Hunter2secret", "a word without '='"), ("1pass=Hunter2secret", "'1pass' is not a variable")],
)
def test_bad_pairs_name_the_problem_but_never_echo_the_value(value, said):
    with pytest.raises(InputError) as caught:
        parse_extra_vars([value])
    assert said in caught.value.render()
    assert "Hunter2secret" not in caught.value.render()


def test_play_reads_extra_vars_with_the_same_parser(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", "play", "x.yml", "-e", "1pass=Hunter2secret"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == "cpuu-fleet: error: --extra-vars: '1pass' is not a variable name\n"
