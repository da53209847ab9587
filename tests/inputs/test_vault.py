"""Ansible Vault: files and inline values made by a real ansible-vault, read in memory, kept secret.

tests/data/ansible/vault/ was made with ansible-core's own ansible-vault (see its README.md), so
these tests check the format against Ansible itself, not only against our own encrypt().
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import vault
from cpuu_fleet.inputs.datafiles import load_data_file, parse_yaml
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.redact import REDACTOR

DATA = Path(__file__).resolve().parents[1] / "data" / "ansible" / "vault"
PASSWORD = (DATA / "vault-pass.txt").read_text().strip()
PROD = (DATA / "prod-pass.txt").read_text().strip()
SECRETS = ("Inline-S3cret!", "Winrm-Pa55word-42", "tok-9f8e7d", "Local-Adm1n-pc02")


@pytest.fixture
def use_vault():
    """Set the process's vault passwords for one test, and put the previous ones back."""
    previous = vault.active()

    def set_sources(*sources: tuple[str, str], prompt=None) -> vault.VaultSecrets:
        secrets = vault.VaultSecrets(list(sources), prompt=prompt)
        vault.use(secrets)
        return secrets

    yield set_sources
    vault.use(previous)


@pytest.fixture
def both_ids(use_vault):
    return use_vault(
        ("default", str(DATA / "vault-pass.txt")), ("prod", str(DATA / "prod-pass.txt"))
    )


def test_files_and_inline_values_from_real_ansible_vault_are_read(both_ids):
    inv = Inventory.load(DATA / "inventory.yml")
    assert inv.warnings == []
    host = inv.host("pc-02")
    scope = host.scope(reveal=True)
    assert scope["cpuu_api_key"] == "Inline-S3cret!"  # inline !vault, 1.1
    assert scope["vault_winrm_password"] == "Winrm-Pa55word-42"  # group_vars file, 1.1
    assert scope["vault_local_admin"] == "Local-Adm1n-pc02"  # host_vars file, 1.2;prod
    assert host.connection.password.reveal() == "Winrm-Pa55word-42"  # through a template
    assert "vault_local_admin" not in inv.host("pc-01").vars


def test_same_hosts_groups_and_variables_as_ansible_inventory_list(both_ids):
    """ansible-inventory --list (ansible-core 2.19) over the same folder, kept beside it."""
    expected = json.loads((DATA / "ansible-inventory-list.json").read_text())
    inv = Inventory.load(DATA / "inventory.yml")
    hostvars = expected["_meta"]["hostvars"]
    assert sorted(h.name for h in inv.hosts) == sorted(hostvars)
    for host in inv.hosts:
        scope = host.scope(reveal=True)
        assert set(host.vars) == set(hostvars[host.name])
        for name, value in hostvars[host.name].items():
            if isinstance(value, dict) and "__ansible_vault" in value:
                assert scope[name] == "Inline-S3cret!"
            elif name != "ansible_password":  # Ansible lists it untemplated
                assert scope[name] == value, name
    assert inv.group_hosts()["windows"] == expected["windows"]["hosts"]


def test_vault_values_are_masked_whatever_their_name(both_ids):
    inv = Inventory.load(DATA / "inventory.yml")
    host = inv.host("pc-02")
    shown = json.dumps(host.describe())
    masked = host.scope(reveal=False)
    for secret in SECRETS:
        assert secret not in shown
    # vault_smtp_token and cpuu_api_key do not look like secrets by name; they are all the same.
    assert host.describe()["vars"]["cpuu_api_key"] == "********"
    assert masked["vault_smtp_token"] == "********"
    assert repr(host.vars["cpuu_api_key"]) == "VaultText('********')"
    assert str(host.vars["vault_local_admin"]) == "********"
    revealed = host.scope(reveal=True)
    assert revealed["vault_smtp_token"] == "tok-9f8e7d"
    assert REDACTOR.scrub("token tok-9f8e7d in a log line") == "token ******** in a log line"


def test_without_a_password_the_inventory_loads_and_says_what_was_left_out(use_vault):
    use_vault()  # no password at all
    inv = Inventory.load(DATA / "inventory.yml")
    assert "pc-01" in inv.graph()
    assert any(
        "group_vars/windows/vault.yml" in w and "no vault password" in w for w in inv.warnings
    )
    host = inv.host("pc-01")
    assert host.describe()["vars"]["cpuu_api_key"] == "********"
    with pytest.raises(InputError, match=r"undefined variable 'vault_winrm_password'.*vault.yml"):
        host.connection.password.reveal()
    with pytest.raises(InputError, match=r"inventory.yml:\d+: .*no vault password"):
        host.scope(reveal=True)["cpuu_api_key"]


def test_a_wrong_password_is_one_error_naming_the_file(use_vault):
    use_vault(("default", "env:CPUU_TEST_VAULT_PW"))
    os.environ["CPUU_TEST_VAULT_PW"] = "not the password"
    try:
        with pytest.raises(InputError) as caught:
            Inventory.load(DATA / "inventory.yml")
    finally:
        del os.environ["CPUU_TEST_VAULT_PW"]
    message = caught.value.render()
    assert "group_vars/windows/vault.yml" in message and "none of the 1 vault password" in message


def test_a_labelled_file_says_its_vault_id_when_no_password_fits(use_vault):
    use_vault(("default", str(DATA / "vault-pass.txt")))
    with pytest.raises(InputError, match=r"host_vars/pc-02/vault.yml.*vault id 'prod'"):
        Inventory.load(DATA / "inventory.yml")


def test_a_tampered_file_fails_its_hmac(tmp_path, use_vault):
    use_vault(("default", str(DATA / "vault-pass.txt")))
    text = (DATA / "group_vars" / "windows" / "vault.yml").read_text()
    lines = text.splitlines()
    last = lines[-1]
    lines[-1] = last[:-1] + ("0" if last[-1] != "0" else "1")  # one hex digit of the ciphertext
    (tmp_path / "vault.yml").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"vault.yml: cannot decrypt.*HMAC"):
        load_data_file(tmp_path / "vault.yml")
    (tmp_path / "bad.yml").write_text("$ANSIBLE_VAULT;1.1;AES256\nzz\n")
    with pytest.raises(InputError, match="damaged"):
        load_data_file(tmp_path / "bad.yml")
    (tmp_path / "new.yml").write_text("$ANSIBLE_VAULT;2.0;CHACHA\n00\n")
    with pytest.raises(InputError, match=r"format 2.0 .* not supported"):
        load_data_file(tmp_path / "new.yml")


def test_encrypt_round_trip_and_vault_id_order():
    text = vault.encrypt("a: 1\nb: [x, y]\n", "s3cret-pw", vault_id="prod")
    assert text.startswith("$ANSIBLE_VAULT;1.2;AES256;prod\n")
    assert all(len(line) <= 80 for line in text.splitlines())
    asked: list[str] = []

    def prompt(question: str) -> str:
        asked.append(question)
        return "s3cret-pw"

    secrets = vault.VaultSecrets([("dev", "prompt"), ("prod", "prompt")], prompt=prompt)
    assert vault.decrypt(text, "x", secrets) == "a: 1\nb: [x, y]\n"
    assert asked == ["Vault password (prod): "]  # the matching id is tried first, alone
    unlabelled = vault.encrypt("é", "s3cret-pw")
    assert vault.decrypt(unlabelled, "x", secrets) == "é"  # tried in the order given
    assert asked == ["Vault password (prod): ", "Vault password (dev): "]
    assert vault.decrypt(text, "x", secrets) == vault.decrypt(text, "y", secrets)
    assert len(asked) == 2  # each password is asked once, then remembered


def test_our_encryption_is_read_by_the_real_format_too():
    """Our encrypt() with the salt of the real file gives the real file's bytes back."""
    real = (DATA / "host_vars" / "pc-02" / "vault.yml").read_text()
    envelope = vault._parse(real, "x")
    again = vault.encrypt(
        "vault_local_admin: Local-Adm1n-pc02\n", PROD, vault_id="prod", salt=envelope.salt
    )
    assert again == real


def test_inline_vault_in_yaml_is_no_longer_a_syntax_error_and_json_form_is_read(use_vault):
    use_vault(("default", "env:CPUU_TEST_VAULT_PW2"))
    os.environ["CPUU_TEST_VAULT_PW2"] = PASSWORD
    try:
        block = vault.encrypt("json-secret", PASSWORD)
        data = parse_yaml(
            "k: !vault |\n" + "".join(f"  {line}\n" for line in block.splitlines()), "f.yml"
        )
        assert data["k"].reveal() == "json-secret"
        assert data["k"].where == "f.yml:1"
        listed = json.loads((DATA / "ansible-inventory-list.json").read_text())
        from cpuu_fleet.inputs.datafiles import parse_json

        parsed = parse_json(json.dumps(listed), "list.json")
        assert parsed["_meta"]["hostvars"]["pc-01"]["cpuu_api_key"].reveal() == "Inline-S3cret!"
    finally:
        del os.environ["CPUU_TEST_VAULT_PW2"]


def test_an_encrypted_inventory_file_has_all_its_values_secret(tmp_path, use_vault):
    use_vault(("default", "env:CPUU_TEST_VAULT_PW3"))
    os.environ["CPUU_TEST_VAULT_PW3"] = PASSWORD
    try:
        inventory = "all:\n  vars:\n    site_code: LYO-7731\n  hosts:\n    pc-1:\n"
        (tmp_path / "inv.yml").write_text(vault.encrypt(inventory, PASSWORD))
        inv = Inventory.load(tmp_path / "inv.yml")
        assert inv.host("pc-1").describe()["vars"]["site_code"] == "********"
        assert inv.host("pc-1").scope(reveal=True)["site_code"] == "LYO-7731"
    finally:
        del os.environ["CPUU_TEST_VAULT_PW3"]


# --------------------------------------------------------------------------- password sources


def test_password_sources_from_options_and_environment(tmp_path):
    plain = tmp_path / "pw.txt"
    plain.write_text("from-file  \n")
    secrets = vault.secrets_from_options(password_files=[plain], environ={})
    assert [p for _, p in secrets.passwords()] == ["from-file"]
    secrets = vault.secrets_from_options(environ={"ANSIBLE_VAULT_PASSWORD_FILE": str(plain)})
    assert [p for _, p in secrets.passwords()] == ["from-file"]
    env = {"CPUU_FLEET_VAULT_PASSWORD": "from-env"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CPUU_FLEET_VAULT_PASSWORD", "from-env")
        secrets = vault.secrets_from_options(environ=env)
        assert [p for _, p in secrets.passwords()] == ["from-env"]
    assert not vault.secrets_from_options(environ={}).configured
    secrets = vault.secrets_from_options(vault_ids=[f"prod@{plain}", str(plain)], environ={})
    assert secrets.labels == ["prod", "default"]
    with pytest.raises(InputError, match="LABEL@FILE"):
        vault.secrets_from_options(vault_ids=["prod@"], environ={})


def test_an_executable_password_file_is_run(tmp_path):
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    script = tmp_path / "vault-pass.sh"
    script.write_text("#!/bin/sh\necho 'scripted-pw'\n")
    script.chmod(0o755)
    client = tmp_path / "keys-client.sh"
    client.write_text('#!/bin/sh\n[ "$1" = --vault-id ] && echo "pw-for-$2"\n')
    client.chmod(0o755)
    failing = tmp_path / "broken.sh"
    failing.write_text("#!/bin/sh\necho oops >&2\nexit 3\n")
    failing.chmod(0o755)
    secrets = vault.secrets_from_options(vault_ids=[f"dev@{script}", f"prod@{client}"], environ={})
    assert [p for _, p in secrets.passwords()] == ["scripted-pw", "pw-for-prod"]
    secrets = vault.secrets_from_options(password_files=[failing], environ={})
    with pytest.raises(
        InputError, match=r"broken.sh: vault password script failed \(exit code 3\)"
    ):
        list(secrets.passwords())


def test_no_password_is_read_until_a_vault_text_needs_it(tmp_path, use_vault):
    asked: list[str] = []
    use_vault(("default", "prompt"), prompt=lambda q: asked.append(q) or PASSWORD)
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "inv.yml").write_text("all:\n  hosts:\n    pc-1:\n")
    Inventory.load(tmp_path / "plain" / "inv.yml").host("pc-1").connection.describe()
    assert asked == []
    shutil.copytree(DATA / "group_vars", tmp_path / "group_vars")
    shutil.copy(DATA / "inventory.yml", tmp_path / "windows.yml")
    inv = Inventory.load(tmp_path / "windows.yml")  # group_vars/windows/vault.yml is read
    assert asked == ["Vault password: "]
    assert inv.host("pc-01").connection.password.reveal() == "Winrm-Pa55word-42"
    assert inv.host("pc-01").scope(reveal=True)["cpuu_api_key"] == "Inline-S3cret!"
    assert asked == ["Vault password: "]


def test_a_vaulted_user_and_address_are_real_on_the_wire_and_masked_in_listings(tree, use_vault):
    """A common layout: vars.yml points ansible_user (not a secret by name) at vault.yml."""
    use_vault(("default", str(DATA / "vault-pass.txt")))
    root = tree(
        {
            "inv.yml": "all:\n  hosts:\n    pc-1:\n      ansible_host: '{{ vault_address }}'\n",
            "group_vars/all/vars.yml": 'ansible_user: "{{ vault_user }}"\n'
            'ansible_password: "{{ vault_pw }}"\n',
            "group_vars/all/vault.yml": vault.encrypt(
                "vault_user: CORP\\svc-vaulted\nvault_pw: Pw-123456\nvault_address: 10.9.8.7\n",
                PASSWORD,
            ),
        }
    )
    host = Inventory.load(root / "inv.yml").host("pc-1")
    wire = host.connection.pypsrp_kwargs()
    assert (wire["username"], host.connection.address, wire["password"]) == (
        "CORP\\svc-vaulted",
        "10.9.8.7",
        "Pw-123456",
    )
    shown = json.dumps(host.describe())
    for secret in ("svc-vaulted", "10.9.8.7", "Pw-123456"):
        assert secret not in shown
    assert host.describe()["connection"]["user"] == "********"
