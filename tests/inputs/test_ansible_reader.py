"""An installed ansible-inventory as the reader (``inventory_reader = "ansible-inventory"``): any
source Ansible reads, plugins included, while group_vars, host_vars and vault files stay ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuu_fleet.inputs import inventory_script
from tests.support.commands import run_subprocess

VAULT = Path(__file__).resolve().parents[1] / "data" / "ansible" / "vault"
GENERATOR = """plugin: ansible.builtin.generator
hosts:
  name: "{{ site }}-pc-{{ n }}"
  parents:
    - name: "wave_{{ site }}"
      vars:
        site_code: "{{ site }}"
layers:
  site: [lyo, par]
  n: ["01", "02"]
"""
READER = {"CPUU_FLEET_INVENTORY_READER": "ansible-inventory"}

pytestmark = pytest.mark.skipif(
    inventory_script.find_ansible_inventory() is None, reason="ansible-core is not installed here"
)


def listed(*args: str, cwd: Path, env: dict[str, str]) -> dict[str, dict]:
    done = run_subprocess("inventory", "list", "--json", *args, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


def test_an_inventory_plugin_is_read_through_ansible_inventory(tmp_path):
    (tmp_path / "fleet.yml").write_text(GENERATOR)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "wave_lyo.yml").write_text("cpuu_mode: Undo\n")
    rows = listed("-i", "fleet.yml", cwd=tmp_path, env=READER)
    assert sorted(rows) == ["lyo-pc-01", "lyo-pc-02", "par-pc-01", "par-pc-02"]
    assert rows["lyo-pc-01"]["groups"] == ["wave_lyo"]
    assert rows["lyo-pc-01"]["vars"] == {"site_code": "lyo", "cpuu_mode": "Undo"}
    native = run_subprocess("inventory", "list", "-i", "fleet.yml", cwd=tmp_path)
    assert native.returncode == 2 and "inventory_reader" in native.stderr  # says what to do


def test_vault_files_stay_ours_and_secret_through_the_ansible_reader(tmp_path):
    vault_ids = ["--vault-id", f"default@{VAULT / 'vault-pass.txt'}"]
    vault_ids += ["--vault-id", f"prod@{VAULT / 'prod-pass.txt'}"]
    source = str(VAULT / "inventory.yml")
    through_ansible = listed("-i", source, *vault_ids, cwd=tmp_path, env=READER)
    ours = listed("-i", source, *vault_ids, cwd=tmp_path, env={})
    assert through_ansible == ours
    # A vault file's value is masked whatever its name (vault_local_admin is no secret-like name).
    assert through_ansible["pc-02"]["vars"]["vault_local_admin"] == "********"
    assert "Local-Adm1n-pc02" not in json.dumps(through_ansible)


def test_an_unknown_reader_in_the_settings_is_one_error(tmp_path):
    (tmp_path / "cpuu-fleet.toml").write_text('inventory_reader = "ansible"\n')
    done = run_subprocess("inventory", "list", "-i", str(VAULT / "inventory.yml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "inventory_reader must be one of: cpuu-fleet, ansible-inventory" in done.stderr
