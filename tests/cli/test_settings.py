"""``init`` and the settings as the commands see them: a project folder's cpuu-fleet.toml, the
user's config, CPUU_FLEET_* variables, and the command line over all of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.inputs.config import PROJECT_FILE
from cpuu_fleet.journal import Journal
from tests.support.commands import REPO

INVENTORY = """
all:
  children:
    wave1:
      hosts:
        {host}:
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch, cli) -> Path:
    """A folder made by ``init``, with one host in each of two inventories, as the current one."""
    folder = tmp_path / "project"
    code, _out, err = cli("init", folder)
    assert code == 0, err
    for name, host in (("fleet.yml", "pc-from-config"), ("other.yml", "pc-from-env")):
        (folder / "inventories" / name).write_text(INVENTORY.format(host=host), encoding="utf-8")
    monkeypatch.chdir(folder)
    return folder


def test_init_prints_what_it_made_and_what_to_do_next(cli, tmp_path: Path) -> None:
    code, out, err = cli("init", tmp_path / "new")
    assert code == 0, err
    assert "inventories/fleet.yml" in out and PROJECT_FILE in out
    assert f"cd {tmp_path / 'new'}" in out and "cpuu-fleet demo" in out
    assert "playbooks/payload/" in out


def test_init_twice_refuses_and_says_which_files(cli, tmp_path: Path) -> None:
    assert cli("init", tmp_path)[0] == 0
    (tmp_path / "playbooks" / "update.yml").write_text("# edited\n", encoding="utf-8")
    code, _out, err = cli("init", tmp_path)
    assert code == 2
    assert "would overwrite 13 existing file(s): playbooks/cleanup.yml" in err
    assert (tmp_path / "playbooks" / "update.yml").read_text(encoding="utf-8") == "# edited\n"


def test_the_project_inventory_is_the_default_and_env_then_i_override_it(
    cli, project: Path, monkeypatch
) -> None:
    code, out, err = cli("inventory", "list")
    assert code == 0, err
    assert "pc-from-config" in out
    monkeypatch.setenv("CPUU_FLEET_INVENTORY", str(project / "inventories" / "other.yml"))
    code, out, err = cli("inventory", "list")
    assert "pc-from-env" in out and "pc-from-config" not in out
    code, out, err = cli("inventory", "list", "-i", project / "inventories" / "fleet.yml")
    assert "pc-from-config" in out and "pc-from-env" not in out


def test_the_user_config_applies_in_any_folder(cli, tmp_path: Path, monkeypatch) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "cpuu-fleet").mkdir(parents=True)
    (xdg / "cpuu-fleet" / "config.toml").write_text(
        f'reports = "{tmp_path / "shared-reports"}"\n', encoding="utf-8"
    )
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    monkeypatch.chdir(tmp_path)
    code, _out, err = cli("status")
    assert code == 2
    assert f"no runs in {tmp_path / 'shared-reports' / Journal.FILENAME}" in err
    code, _out, err = cli("status", "--reports", tmp_path / "mine")
    assert f"no runs in {tmp_path / 'mine' / Journal.FILENAME}" in err


def test_a_password_in_the_config_file_stops_every_command(cli, project: Path) -> None:
    (project / PROJECT_FILE).write_text('ansible_password = "Hunter2-Secret"\n', encoding="utf-8")
    code, out, err = cli("inventory", "list")
    assert code == 2
    assert "'ansible_password': secrets never go in the config file" in err
    assert "Hunter2-Secret" not in out + err


def test_a_continued_run_keeps_its_own_inventory_over_the_config(cli, project: Path) -> None:
    """``play --resume RUN`` reads RUN's inventory, not the project's default; ``-i`` still
    overrides. (The run's inventory is gone here, so the error names which one was read.)"""
    with Journal.in_reports(project / "reports") as journal:
        run_id = journal.start_run(
            playbook=str(REPO / "playbooks" / "preflight.yml"),
            inventory=str(project / "run-inventory.yml"),
        )
        journal.finish_run(run_id, "interrupted")
    code, _out, err = cli("play", "--resume", run_id)
    assert code == 2
    assert "run-inventory.yml" in err and "fleet.yml" not in err
    code, _out, err = cli("play", "--resume", run_id, "-i", project / "missing.yml")
    assert "missing.yml" in err and "run-inventory.yml" not in err


def test_the_settings_show_as_the_defaults_in_help(cli, project: Path) -> None:
    (project / PROJECT_FILE).write_text(
        'inventory = "inventories/fleet.yml"\nforks = 7\n', encoding="utf-8"
    )
    code, out, _err = cli("play", "--help")
    assert code == 0
    forks_line = next(line for line in out.splitlines() if "--forks" in line)
    assert "[default: 7]" in forks_line
    code, out, _err = cli("render", "--help")
    assert str(project / "inventories" / "fleet.yml") in out.replace("│", "").replace(" ", "")
