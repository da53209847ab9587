"""The ansible.cfg of an Ansible project folder: its inventory, forks and vault password file."""

from __future__ import annotations

import json
from pathlib import Path

from cpuu_fleet.inputs.ansible_cfg import load_ansible_cfg
from cpuu_fleet.inputs.config import PROJECT_FILE, load_settings
from tests.support.commands import run_subprocess

VAULT = Path(__file__).resolve().parents[1] / "data" / "ansible" / "vault"

CFG = """[defaults]
inventory = inventories/fleet.yml  ; our Lyon fleet
forks = 7
host_key_checking = False
"""


def project(tmp_path: Path, cfg: str = CFG) -> tuple[Path, dict[str, str]]:
    folder = tmp_path / "proj"
    (folder / "inventories").mkdir(parents=True)
    (folder / "inventories" / "fleet.yml").write_text("all:\n  hosts:\n    pc-01:\n    pc-02:\n")
    (folder / "ansible.cfg").write_text(cfg)
    folder.chmod(0o755)
    return folder, {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}


def test_an_ansible_project_folder_works_without_i(tmp_path):
    folder, env = project(tmp_path)
    proc = run_subprocess("inventory", "list", "--json", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [row["name"] for row in json.loads(proc.stdout)] == ["pc-01", "pc-02"]
    settings = load_settings(folder, env)
    assert settings.get("forks") == 7
    assert settings.sources["inventory"] == str(folder / "ansible.cfg")


def test_our_own_settings_and_ansibles_variables_win_over_the_file(tmp_path):
    folder, env = project(tmp_path)
    (folder / PROJECT_FILE).write_text("forks = 3\n")
    assert load_settings(folder, env).get("forks") == 3
    env = {**env, "ANSIBLE_INVENTORY": "other.yml", "ANSIBLE_FORKS": "9"}
    (folder / PROJECT_FILE).unlink()
    settings = load_settings(folder, env)
    assert settings.get("inventory") == folder / "other.yml"
    assert settings.get("forks") == 9
    assert settings.sources["forks"] == "$ANSIBLE_FORKS"


def test_only_the_first_file_is_read_and_ansible_config_names_it(tmp_path):
    folder, env = project(tmp_path)
    other = tmp_path / "elsewhere.cfg"
    other.write_text("[defaults]\nforks = 2\n")
    cfg = load_ansible_cfg(folder, {**env, "ANSIBLE_CONFIG": str(other)})
    assert (cfg.path, cfg.forks, cfg.inventory) == (other, 2, [])


def test_a_world_writable_folder_s_ansible_cfg_is_ignored_as_ansible_does(tmp_path):
    folder, env = project(tmp_path)
    folder.chmod(0o777)
    try:
        assert load_ansible_cfg(folder, env).path is None
    finally:
        folder.chmod(0o755)


def test_several_inventory_sources_are_not_guessed(tmp_path):
    folder, env = project(tmp_path, "[defaults]\ninventory = a.yml, b.yml\n")
    assert load_settings(folder, env).get("inventory") is None
    proc = run_subprocess("inventory", "list", cwd=folder, env=env)
    assert proc.returncode != 0
    assert "Missing option '-i'" in proc.stderr


def test_the_vault_password_file_of_ansible_cfg_opens_a_vault_inventory(tmp_path):
    folder, env = project(
        tmp_path,
        f"[defaults]\ninventory = {VAULT / 'inventory.yml'}\n"
        f"vault_identity_list = default@{VAULT / 'vault-pass.txt'}, prod@{VAULT / 'prod-pass.txt'}\n",
    )
    env = {**env, "ANSIBLE_VAULT_PASSWORD_FILE": "", "CPUU_FLEET_VAULT_PASSWORD": ""}
    proc = run_subprocess("inventory", "list", "--json", cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "no vault password was given" not in proc.stderr
    assert "vault_winrm_password" in json.loads(proc.stdout)[0]["vars"]
    without = tmp_path / "no-vault.cfg"
    without.write_text(f"[defaults]\ninventory = {VAULT / 'inventory.yml'}\n")
    proc = run_subprocess(
        "inventory", "list", "--json", cwd=folder, env={**env, "ANSIBLE_CONFIG": str(without)}
    )
    assert "no vault password was given" in proc.stderr
