"""An existing Ansible inventory against the lab, unchanged: INI, the WinRM password in an
ansible-vault file beside it, the vault password from a file; nothing decrypted is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from cpuu_fleet.inputs import vault
from cpuu_fleet.lab.fleet import PASSWORD_ENV

REPO = Path(__file__).resolve().parents[2]
VAULT_PASSWORD = "lab vault pass 7"


def _ini_value(value: object) -> str:
    """A value as an INI inventory writes it: a Python literal for lists and numbers."""
    return repr(value) if isinstance(value, (list, int)) else str(value)


def _as_ansible_shop(wave, folder: Path) -> Path:
    """The lab's inventory rewritten as an ops team keeps it: INI, group_vars/lab/vars.yml
    pointing at group_vars/lab/vault.yml."""
    document = yaml.safe_load(wave.inventory_path.read_text())
    lab = document["all"]["children"]["lab"]
    lines = ["[lab]"]
    lines += [f"{name} ansible_host={body['ansible_host']}" for name, body in lab["hosts"].items()]
    lines.append("[lab:vars]")
    lines += [
        f"{key}={_ini_value(value)}"
        for key, value in lab["vars"].items()
        if key != "ansible_password"
    ]
    (folder / "group_vars" / "lab").mkdir(parents=True)
    (folder / "hosts").write_text("\n".join(lines) + "\n")
    (folder / "group_vars" / "lab" / "vars.yml").write_text(
        'ansible_password: "{{ vault_lab_password }}"\n'
    )
    (folder / "group_vars" / "lab" / "vault.yml").write_text(
        vault.encrypt(f"vault_lab_password: '{wave.fleet.password}'\n", VAULT_PASSWORD)
    )
    (folder / "vault-pass.txt").write_text(VAULT_PASSWORD + "\n")
    return folder / "hosts"


def test_preflight_with_an_ini_inventory_and_a_vault_file(wave_factory, tmp_path):
    wave = wave_factory(2)
    inventory = _as_ansible_shop(wave, tmp_path / "shop")
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env["PYTHONPATH"] = str(REPO)
    command = [
        sys.executable, "-m", "cpuu_fleet", "preflight", "-i", str(inventory),
        "--reports", str(wave.reports), "--json",
    ]  # fmt: skip
    locked = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert locked.returncode == 2  # the password is in the vault, and no vault password given
    assert "vault_lab_password" in locked.stderr and "vault.yml" in locked.stderr

    done = subprocess.run(
        [*command, "--vault-password-file", str(tmp_path / "shop" / "vault-pass.txt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["counts"] == {"succeeded": 2}
    secret = wave.fleet.password.encode()
    assert secret not in (done.stdout + done.stderr + locked.stderr).encode()
    for path in wave.reports.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
