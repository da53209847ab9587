"""Settings as an operator sets them: the user's file, the project's file, the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.config import PROJECT_FILE, load_settings, user_config_path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    project = tmp_path / "project"
    xdg = tmp_path / "xdg"
    project.mkdir()
    return project, xdg, {"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path / "home")}


def test_project_file_over_user_file_and_environment_over_both(folders) -> None:
    project, xdg, env = folders
    _write(xdg / "cpuu-fleet" / "config.toml", 'inventory = "/srv/all.yml"\nforks = 5\n')
    _write(project / PROJECT_FILE, 'inventory = "inventories/fleet.yml"\n')
    settings = load_settings(project, env)
    assert settings.get("inventory") == project / "inventories" / "fleet.yml"
    assert settings.get("forks") == 5  # the user's file still gives what the project leaves
    assert settings.sources["forks"] == str(xdg / "cpuu-fleet" / "config.toml")

    env = {**env, "CPUU_FLEET_INVENTORY": "other.yml", "CPUU_FLEET_FORKS": "12"}
    settings = load_settings(project, env)
    assert settings.get("inventory") == Path("other.yml")  # the shell's path, as typed
    assert settings.get("forks") == 12
    assert settings.sources["inventory"] == "$CPUU_FLEET_INVENTORY"


def test_relative_paths_in_a_file_are_relative_to_that_file(folders) -> None:
    project, xdg, env = folders
    _write(xdg / "cpuu-fleet" / "config.toml", 'reports = "runs"\n')
    assert load_settings(project, env).get("reports") == xdg / "cpuu-fleet" / "runs"
    _write(project / PROJECT_FILE, 'reports = "~/cpuu-reports"\n')
    assert load_settings(project, env).get("reports") == Path.home() / "cpuu-reports"


def test_the_user_file_is_under_xdg_config_home_else_dot_config(tmp_path: Path) -> None:
    assert user_config_path({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "cpuu-fleet" / "config.toml"
    )
    assert user_config_path({"XDG_CONFIG_HOME": ""}) == (
        Path.home() / ".config" / "cpuu-fleet" / "config.toml"
    )


def test_no_files_and_no_variables_is_no_settings(folders) -> None:
    project, _xdg, env = folders
    assert load_settings(project, {**env, "CPUU_FLEET_REPORTS": "  "}).values == {}


@pytest.mark.parametrize(
    "key", ["password", "ansible_password", "vault_password_file", "api_token", "client_secret"]
)
def test_a_secret_in_the_file_is_refused_without_echoing_it(folders, key: str) -> None:
    project, _xdg, env = folders
    _write(project / PROJECT_FILE, f'{key} = "Hunter2-Secret"\n')
    with pytest.raises(InputError) as caught:
        load_settings(project, env)
    message = caught.value.render()
    assert key in message and "secrets never go in the config file" in message
    assert "Hunter2-Secret" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('inventroy = "x.yml"\n', "unknown setting 'inventroy'; valid: inventory, reports, forks"),
        ("forks = 0\n", "forks must be a whole number of at least 1"),
        ("forks = 2.5\n", "forks must be a whole number of at least 1"),
        ("reports = 3\n", "reports must be a path"),
        ('inventory = "x.yml\n', "not valid TOML"),
    ],
)
def test_a_wrong_file_names_itself_and_what_is_wrong(folders, text: str, expected: str) -> None:
    project, _xdg, env = folders
    path = _write(project / PROJECT_FILE, text)
    with pytest.raises(InputError) as caught:
        load_settings(project, env)
    assert str(path) in caught.value.render()
    assert expected in caught.value.render()


def test_a_wrong_environment_variable_is_named(folders) -> None:
    project, _xdg, env = folders
    with pytest.raises(InputError, match=r"\$?CPUU_FLEET_FORKS: forks must be a whole number"):
        load_settings(project, {**env, "CPUU_FLEET_FORKS": "many"})
