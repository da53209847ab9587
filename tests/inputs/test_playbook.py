"""Playbooks: Ansible's serial arithmetic, and validation errors that point at file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.playbook import (
    load_playbook,
    max_fail_exceeded,
    max_unreachable_exceeded,
    parse_percentage_option,
    parse_serial_option,
    serial_batches,
)

REPO = Path(__file__).resolve().parents[2]


def sizes(count, serial):
    return [len(b) for b in serial_batches(list(range(count)), serial)]


@pytest.mark.parametrize(
    ("count", "serial", "expected"),
    [
        (20, ["30%"], [6, 6, 6, 2]),  # Ansible's documented example
        (20, [1, 5, "20%"], [1, 5, 4, 4, 4, 2]),  # a list: the last value repeats
        (10, [3], [3, 3, 3, 1]),
        (7, [], [7]),  # no serial: one batch
        (7, [0], [7]),  # Ansible: 0 means everything
        (3, ["10%"], [1, 1, 1]),  # 10% of 3 truncates to 0: at least one host per batch
        (11, ["50%"], [5, 5, 1]),  # percentages of all the play's hosts, truncated
        (4, [1, "100%"], [1, 3]),
        (2, [5], [2]),
        (0, ["30%"], []),
    ],
)
def test_serial_batches_follow_ansible(count, serial, expected):
    assert sizes(count, serial) == expected


def test_batches_keep_the_host_order():
    assert serial_batches(["a", "b", "c", "d", "e"], [2]) == [["a", "b"], ["c", "d"], ["e"]]


def test_max_unreachable_percentage_is_of_the_plays_hosts_and_must_be_exceeded():
    assert not max_unreachable_exceeded(1, 10, 10)  # one laptop of ten: carry on
    assert max_unreachable_exceeded(2, 10, 10)
    assert not max_unreachable_exceeded(2, 10, 25)
    assert max_unreachable_exceeded(3, 10, 25)
    assert not max_unreachable_exceeded(1, 4, 25)  # a canary of 1, off: 1 of the play's 4
    assert max_unreachable_exceeded(1, 1000, 0)
    assert not max_unreachable_exceeded(1000, 1000, 100)


@pytest.mark.parametrize(
    ("text", "expected"), [("1,10%,50%", (1, "10%", "50%")), ("5", (5,)), (" 0 ", (0,))]
)
def test_serial_on_the_command_line_takes_the_playbooks_grammar(text, expected):
    assert parse_serial_option(text) == expected


@pytest.mark.parametrize("text", ["", "1,,2", "-1", "ten", "150%", "1;2"])
def test_a_bad_serial_on_the_command_line_names_the_option(text):
    with pytest.raises(InputError, match="--serial"):
        parse_serial_option(text)


def test_percentages_on_the_command_line():
    assert parse_percentage_option("20", "--max-fail-percentage") == 20
    assert parse_percentage_option("7.5%", "--max-fail-percentage") == 7.5
    for bad in ("101", "-1", "nan", "lots", "20 %x"):
        with pytest.raises(InputError, match="--max-unreachable-percentage"):
            parse_percentage_option(bad, "--max-unreachable-percentage")


def test_a_play_may_audit_before_and_after_its_run(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text(
        "- hosts: all\n  steps: [audit, preflight, push, {run: {mode: update}}, collect, audit]\n",
        "utf-8",
    )
    names = load_playbook(path).plays[0].step_names
    assert names == ("audit", "preflight", "push", "run", "collect", "audit")
    path.write_text("- hosts: all\n  steps: [preflight, audit]\n", "utf-8")
    assert load_playbook(path).plays[0].step_names == ("preflight", "audit")


def test_max_unreachable_percentage_in_a_playbook(tmp_path):
    path = tmp_path / "p.yml"
    path.write_text(
        "- hosts: all\n  max_unreachable_percentage: 10%\n  steps: [preflight]\n", "utf-8"
    )
    assert load_playbook(path).plays[0].max_unreachable_percentage == 10
    path.write_text(
        "- hosts: all\n  steps: [preflight]\n  max_unreachable_percentage: 120\n", "utf-8"
    )
    with pytest.raises(InputError, match="'max_unreachable_percentage' must be a number") as err:
        load_playbook(path)
    assert err.value.line == 3


def test_max_fail_percentage_must_be_exceeded():
    assert not max_fail_exceeded(2, 10, 20)  # equal: carry on
    assert max_fail_exceeded(3, 10, 20)
    assert max_fail_exceeded(2, 4, 49)  # Ansible's doc: serial 4, 49 stops on 2 failures
    assert not max_fail_exceeded(1, 4, 49)
    assert max_fail_exceeded(1, 1, 0)
    assert not max_fail_exceeded(0, 1, 0)
    assert not max_fail_exceeded(9, 10, None)  # no percentage: only a fully failed batch stops
    assert max_fail_exceeded(10, 10, None)
    assert not max_fail_exceeded(10, 10, 100)  # 100% can never be exceeded


@pytest.mark.parametrize("name", ["preflight", "update", "undo", "cleanup"])
def test_shipped_playbooks_load(name):
    playbook = load_playbook(REPO / "playbooks" / f"{name}.yml")
    play = playbook.plays[0]
    assert play.step_names[0] == "preflight"
    if name == "preflight":
        assert play.step_names == ("preflight",)
    else:
        assert play.step_names == ("preflight", "push", "run", "collect")
        assert play.run_options.mode == Mode(name)
        assert play.max_fail_percentage is not None and play.serial[0] == 1  # a canary first
        assert play.payload == (REPO / "playbooks" / "payload").resolve()
    assert play.templates == (REPO / "playbooks" / "templates").resolve()


def test_update_playbook_has_the_documented_waves():
    play = load_playbook(REPO / "playbooks" / "update.yml").plays[0]
    assert play.serial == (1, "10%", "50%")
    assert play.max_fail_percentage == 20
    assert play.hosts == "wave*"
    assert sizes(100, play.serial) == [1, 10, 50, 39]


def test_a_full_play_loads_into_dataclasses(write_playbook):
    playbook = write_playbook(
        """
        - name: Paris wave
          hosts: "wave2:&paris"
          serial: ["25%", 10]
          max_fail_percentage: "12.5%"
          forks: 30
          retries: 0
          retry_backoff: 1.5
          payload: vendor/cpuu
          templates: ini
          wave_groups: "site_*"
          vars: {target_server: exch2.corp.example, features: [Rules, Delegates]}
          steps:
            - preflight
            - push
            - run: {mode: rollback, when_no_user: at_logon, timeout: 600, batch_file: Undo.bat}
            - collect: {}
        """
    )
    play = playbook.plays[0]
    assert (play.name, play.hosts, play.serial) == ("Paris wave", "wave2:&paris", ("25%", 10))
    assert (play.max_fail_percentage, play.forks, play.retries, play.retry_backoff) == (
        12.5,
        30,
        0,
        1.5,
    )
    assert play.vars == {"target_server": "exch2.corp.example", "features": ["Rules", "Delegates"]}
    assert type(play.vars["features"]) is list
    run = play.run_options
    assert (run.mode, run.when_no_user, run.timeout, run.command) == (
        Mode.UNDO,
        "at_logon",
        600,
        "Undo.bat",
    )
    assert (run.attached, run.expected_seconds) == (False, None)  # detached unless asked
    assert play.payload == playbook.path.parent / "vendor" / "cpuu"
    assert play.templates == playbook.path.parent / "ini"
    assert play.wave_of(["all", "site_lyon", "wave2"]) == "site_lyon"
    assert play.wave_of(["all"]) == "wave2:&paris"


def _error(write_playbook, text) -> InputError:
    with pytest.raises(InputError) as info:
        write_playbook(text)
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "- name: x\n  hosts: wave1\n  serail: 5\n  steps: [preflight]\n",
            3,
            "unknown key 'serail' (did you mean 'serial'?)",
        ),
        (
            "- name: x\n  hosts: wave1\n  tasks: []\n",
            3,
            "'steps' (preflight, push, run, collect), not 'tasks'",
        ),
        (
            "- name: x\n  hosts: wave1\n  serial:\n    - 1\n    - lots\n  steps: [preflight]\n",
            5,
            "'serial' value 'lots' is not a host count",
        ),
        (
            "- name: x\n  hosts: wave1\n  max_fail_percentage: 150\n  steps: [preflight]\n",
            3,
            "'max_fail_percentage' must be a number from 0 to 100",
        ),
        ("- name: x\n  hosts: wave1\n  forks: 0\n  steps: [preflight]\n", 3, "'forks'"),
        ("- name: x\n  hosts: wave1\n  forks: yes\n  steps: [preflight]\n", 3, "'forks'"),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - preflight\n    - psuh\n",
            5,
            "unknown step 'psuh' (did you mean 'push'?)",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run: {mode: update}\n    - push\n",
            5,
            "step 'push' must come before 'run'",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps: [audit, preflight, audit]\n",
            3,
            "step 'audit' may be listed twice only before and after 'run'",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps: [audit, {run: {mode: update}}, audit, audit]\n",
            3,
            "step 'audit' may be listed twice only before and after 'run'",
        ),
        ("- name: x\n  hosts: wave1\n  steps:\n    - run\n", 4, "step 'run' needs a mode"),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run:\n        mode: update\n"
            "        timout: 60\n",
            6,
            "step 'run': unknown key 'timout' (did you mean 'timeout'?)",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run:\n        mode: upgrade\n",
            5,
            "unknown mode 'upgrade'",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run: {mode: undo, when_no_user: wait}\n",
            4,
            "'when_no_user' must be one of: skip, at_logon",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run: {mode: update, attached: 'no'}\n",
            4,
            "'attached' must be true or false",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run: {mode: update, expected_seconds: 0}\n",
            4,
            "'expected_seconds' must be a whole number of seconds > 0",
        ),
        ("- name: x\n  hosts: wave1\n  hosts: wave2\n  steps: [push]\n", 3, "duplicate key"),
        ("- name: x\n  steps: [push]\n", 1, "'hosts' is required"),
        ("- name: x\n  hosts: wave1\n", 1, "'steps' is required"),
        ("- name: x\n  hosts: [wave1]\n  steps: [push]\n", 2, "one host pattern string"),
        ("name: x\nhosts: wave1\n", 1, "a playbook is a YAML list of plays"),
        ("- name: x\n  hosts: wave1\n  steps: [push\n", 4, "YAML syntax error"),
        (
            "- {name: a, hosts: w, steps: [push]}\n- {name: a, hosts: v, steps: [push]}\n",
            2,
            "two plays are named 'a'",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps: [preflight, {push: {x: 1}}]\n",
            3,
            "takes no options",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run:\n        mode: update\n"
            "        batch_file: ..\\..\\Windows\\evil.bat\n",
            6,
            "'batch_file' must be a file name in the staging folder (no path)",
        ),
        (
            "- name: x\n  hosts: wave1\n  steps:\n    - run: {mode: update, batch_file: 'C:x.bat'}\n",
            4,
            "'batch_file' must be a file name",
        ),
    ],
)
def test_validation_errors_name_file_line_and_key(write_playbook, text, line, fragment):
    error = _error(write_playbook, text)
    assert error.where.endswith("play.yml")
    assert error.line == line, error.render()
    assert fragment in error.message
    assert error.render().startswith(f"{error.where}:{line}: ")


_EACH = "- name: rds\n  hosts: rds\n  steps:\n    - preflight\n    - run:\n        mode: update\n"


def test_per_host_caps_users_each_and_defaults_to_one_run_at_a_time(write_playbook):
    default = write_playbook(_EACH + "        users: each\n").plays[0].run_options
    capped = write_playbook(_EACH + "        users: each\n        per_host: 3\n").plays[0]
    assert (default.users, default.per_host) == ("each", 1)
    assert (capped.run_options.users, capped.run_options.per_host) == ("each", 3)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("        users: each\n        per_host: 0\n", "'per_host' must be a whole number >= 1"),
        ("        users: each\n        per_host: '3'\n", "'per_host' must be a whole number"),
        ("        users: each\n        per_host: true\n", "'per_host' must be a whole number"),
        ("        users: each\n        per_host: 2.5\n", "'per_host' must be a whole number"),
        ("        per_host: 3\n", "'per_host' caps the runs of 'users: each'"),
        ("        users: one\n        per_host: 3\n", "add 'users: each' or remove 'per_host'"),
    ],
)
def test_a_bad_per_host_names_the_line_and_says_why(write_playbook, extra, fragment):
    error = _error(write_playbook, _EACH + extra)
    assert fragment in error.message, error.render()
    assert error.line == _EACH.count("\n") + extra.count("\n"), error.render()  # per_host's line


def test_a_missing_playbook_or_payload_is_one_clear_error(tmp_path, write_playbook):
    with pytest.raises(InputError, match="playbook not found"):
        load_playbook(tmp_path / "nope.yml")
    play = write_playbook("- name: x\n  hosts: w\n  payload: cpuu\n  steps: [push]\n").plays[0]
    with pytest.raises(InputError) as info:
        play.require_payload()
    assert info.value.line == 3 and "payload folder not found" in info.value.message
    (tmp_path / "cpuu").mkdir()
    assert play.require_payload() == tmp_path / "cpuu"


@pytest.mark.timeout(20)
def test_a_playbook_alias_bomb_is_refused_before_it_is_walked(tmp_path):
    """Nine levels of nine aliases: 10**9 values in a few hundred bytes."""
    lines = ["- name: bomb", "  hosts: all", '  vars_l0: &l0 ["lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"  vars_l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yml"
    path.write_text("\n".join([*lines, "  steps: [preflight]", ""]), encoding="utf-8")
    with pytest.raises(InputError, match="alias bomb") as refused:
        load_playbook(path)
    assert str(path) in refused.value.render()
