"""The vault options as an operator uses them: a real process, secrets never printed or written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cpuu_fleet.inputs import vault
from tests.support.commands import REPO, run_subprocess

DATA = REPO / "tests" / "data" / "ansible" / "vault"
SECRETS = ("Inline-S3cret!", "Winrm-Pa55word-42", "tok-9f8e7d", "Local-Adm1n-pc02")


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(DATA, tmp_path / "inv")
    return tmp_path / "inv"


def test_inventory_list_with_two_vault_ids_masks_every_vault_value(tmp_path):
    root = _copy(tmp_path)
    proc = run_subprocess(
        "inventory", "list", "-i", "inventory.yml", "--json",
        "--vault-id", "default@vault-pass.txt", "--vault-id", "prod@prod-pass.txt",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert '"vault_local_admin": "********"' in proc.stdout  # from the 1.2;prod file
    assert '"cpuu_api_key": "********"' in proc.stdout  # inline value, not a secret by name
    for secret in SECRETS:
        assert secret not in proc.stdout


def test_graph_works_without_a_password_and_warns(tmp_path):
    root = _copy(tmp_path)
    proc = run_subprocess("inventory", "graph", "-i", "inventory.yml", cwd=root)
    assert proc.returncode == 0
    assert "|--pc-02" in proc.stdout
    assert "vault.yml: encrypted with Ansible Vault and no vault password was given" in proc.stderr


def test_wrong_password_is_exit_2_one_line_naming_the_file(tmp_path):
    root = _copy(tmp_path)
    (root / "wrong.txt").write_text("guess\n")
    proc = run_subprocess(
        "inventory", "list", "-i", "inventory.yml", "--vault-password-file", "wrong.txt", cwd=root
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("cpuu-fleet: error: group_vars/windows/vault.yml: cannot decrypt")


def test_render_takes_the_password_file_from_the_environment_and_masks_vault_values(tmp_path):
    root = tmp_path / "fleet"
    shutil.copytree(REPO / "inventories", root)
    password = (DATA / "vault-pass.txt").read_text().strip()
    (root / "group_vars" / "wave1").mkdir()
    (root / "group_vars" / "wave1" / "vault.yml").write_text(
        vault.encrypt("cpuu_admin: 'SOURCE\\vault-admin-7'\n", password)
    )
    proc = run_subprocess(
        "render", "-i", root / "example.yml", "--out", tmp_path / "review", "-l", "wave1",
        "-t", REPO / "playbooks" / "templates", "--json",
        cwd=tmp_path,
        env={
            "ANSIBLE_VAULT_PASSWORD_FILE": str(DATA / "vault-pass.txt"),
            "CPUU_FLEET_CPUU_PASSWORD": "AQAAcpuu-source",
            "CPUU_FLEET_CPUU_PASSWORD_TRG": "AQAAcpuu-target",
        },
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    review = (tmp_path / "review" / "it-pc-0001.corp.example" / "CPUU.ini").read_text("utf-8-sig")
    assert "vault-admin-7" not in review
    assert "********" in review
    other = (tmp_path / "review" / "par-pc-0101.corp.example").exists()
    assert not other  # -l wave1


def test_ask_vault_pass_without_a_terminal_is_one_line_naming_the_option(tmp_path):
    root = _copy(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "cpuu_fleet", "inventory", "list", "-i", "inventory.yml", "-J"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal, even when the tests run in one
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("cpuu-fleet: error: --ask-vault-pass needs a terminal")
    assert proc.stderr.count("\n") == 1


def test_an_encrypted_extra_vars_file_is_read_and_all_its_values_are_secrets(tmp_path):
    from cpuu_fleet.cli.options import parse_extra_vars
    from cpuu_fleet.inputs.hostvars import HostScope, make_environment

    password = (DATA / "vault-pass.txt").read_text().strip()
    (tmp_path / "extra.yml").write_text(vault.encrypt("cpuu_site_key: K-771-Lyon\n", password))
    previous = vault.use(vault.secrets_from_options(password_files=[DATA / "vault-pass.txt"]))
    try:
        extra = parse_extra_vars([f"@{tmp_path / 'extra.yml'}"])
        environment = make_environment()
        masked = HostScope("pc-1", extra, environment=environment, reveal=False)
        revealed = HostScope("pc-1", extra, environment=environment, reveal=True)
        assert masked["cpuu_site_key"] == "********"
        assert revealed["cpuu_site_key"] == "K-771-Lyon"
    finally:
        vault.use(previous)
