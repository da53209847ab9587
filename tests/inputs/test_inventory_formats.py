"""INI inventories and ``ansible-inventory --list`` JSON, checked against real ansible-core output.

tests/data/ansible/ini/ansible-inventory-list.json is what ansible-inventory 2.19 printed for
hosts.ini beside it (see tests/data/ansible/README.md).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import vault
from cpuu_fleet.inputs.ini_inventory import looks_like_ini, parse_value, split_words
from cpuu_fleet.inputs.inventory import Inventory
from tests.support.commands import run_subprocess

DATA = Path(__file__).resolve().parents[1] / "data" / "ansible"
INI = DATA / "ini"


def _as_ansible_lists(inv: Inventory) -> dict:
    """Our inventory in ansible-inventory --list's terms: hostvars, and each group's direct
    hosts and children (``all``'s direct hosts are Ansible's ``ungrouped``)."""
    groups = {}
    for name, group in inv.groups.items():
        entry = {}
        hosts = [] if name == "all" else group.hosts
        if hosts:
            entry["hosts"] = list(hosts)
        if group.children:
            entry["children"] = sorted(group.children)
        groups[name] = entry
    hostvars = {host.name: dict(host.vars) for host in inv.hosts}
    return {"hostvars": hostvars, "groups": groups}


def _expected(listing: dict) -> dict:
    groups = {}
    for name, body in listing.items():
        if name == "_meta":
            continue
        entry = {}
        if body.get("hosts"):
            entry["hosts"] = body["hosts"]
        children = [c for c in body.get("children", []) if c != "ungrouped" or c in listing]
        if children:  # Ansible names an empty 'ungrouped' under 'all' without listing it
            entry["children"] = sorted(children)
        groups[name] = entry
    return {"hostvars": listing["_meta"]["hostvars"], "groups": groups}


def test_ini_inventory_gives_what_ansible_inventory_list_gives():
    expected = _expected(json.loads((INI / "ansible-inventory-list.json").read_text()))
    inv = Inventory.load(INI / "hosts.ini")
    got = _as_ansible_lists(inv)
    assert got["hostvars"] == expected["hostvars"]
    # Ansible lists an empty group under all's children only; compare the groups it prints.
    assert {k: v for k, v in got["groups"].items() if v or k == "empty"} == {
        **expected["groups"],
        "empty": {},
    }
    assert inv.host("lyo-kiosk").vars["kiosk"] == "true"  # not a Python literal: text
    assert inv.host("lyo-pc01.corp.example").vars["retries"] == 2
    assert inv.host("par-pcb").groups == ["sites", "paris"]


def test_the_list_json_of_ansible_reads_back_to_the_same_inventory(tmp_path):
    shutil.copy(INI / "ansible-inventory-list.json", tmp_path / "cmdb.json")
    from_json = Inventory.load(tmp_path / "cmdb.json")
    from_ini = Inventory.load(INI / "hosts.ini")
    assert _as_ansible_lists(from_json)["hostvars"] == _as_ansible_lists(from_ini)["hostvars"]
    # The listing's order (groups as Ansible prints them, ungrouped last), the same hosts.
    assert [h.name for h in from_json.hosts] == [
        *(h.name for h in from_ini.hosts if h.name != "gateway.corp.example"),
        "gateway.corp.example",
    ]
    assert from_json.host("par-pca").groups == from_ini.host("par-pca").groups
    assert from_json.group_hosts()["sites"] == from_ini.group_hosts()["sites"]
    assert from_json.host("gateway.corp.example").groups == ["ungrouped"]


def test_list_json_with_vault_values_from_real_ansible(tmp_path):
    previous = vault.use(vault.VaultSecrets([("default", str(DATA / "vault" / "vault-pass.txt"))]))
    try:
        shutil.copy(DATA / "vault" / "ansible-inventory-list.json", tmp_path / "export")
        inv = Inventory.load(tmp_path / "export")  # no suffix: detected by its content
        host = inv.host("pc-02")
        assert host.describe()["vars"]["cpuu_api_key"] == "********"
        assert host.scope(reveal=True)["cpuu_api_key"] == "Inline-S3cret!"
        assert host.connection.password.reveal() == "Winrm-Pa55word-42"
        assert host.groups == ["windows"]
    finally:
        vault.use(previous)


def test_script_form_groups_as_lists_and_hosts_only_in_meta(tree):
    root = tree(
        {
            "dyn.json": json.dumps(
                {
                    "wave1": ["pc-1", "pc-2"],
                    "wave2": {"hosts": "pc-3", "vars": {"site": "Lyon"}},
                    "windows": {"children": ["wave1", "wave2"], "vars": {"ansible_port": 5985}},
                    "_meta": {"hostvars": {"pc-1": {"asset": 17}, "pc-9": {"asset": 99}}},
                }
            )
        }
    )
    inv = Inventory.load(root / "dyn.json")
    assert inv.host("pc-1").vars == {"ansible_port": 5985, "asset": 17}
    assert inv.host("pc-3").vars == {"ansible_port": 5985, "site": "Lyon"}
    assert inv.host("pc-3").groups == ["windows", "wave2"]
    assert inv.host("pc-9").groups == ["ungrouped"]


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"_meta": {}, "wave1": 3}, "group 'wave1' must be a list of hosts or a mapping"),
        ({"wave1": {"hosts": [1]}}, "hosts of group 'wave1' must be a list of names"),
        ({"_meta": {"hostvars": []}}, "_meta must hold a mapping 'hostvars'"),
        ({"_meta": {"hostvars": {"pc-1": "x"}}}, "_meta.hostvars of 'pc-1' must be a mapping"),
        ({"wave1": ["../evil"]}, "host name '../evil' is not valid"),
    ],
)
def test_bad_list_json_is_one_error_naming_the_file(tree, document, words):
    root = tree({"dyn.json": json.dumps(document)})
    with pytest.raises(InputError, match=r"dyn\.json") as err:
        Inventory.load(root / "dyn.json")
    assert words in err.value.message


# ---------------------------------------------------------------------------------- INI details


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("[wave1]\npc-1\n[wave1:hostvars]\nx=1\n", 3, "unknown section [wave1:hostvars]"),
        ("[wave1\npc-1\n", 1, "bad section header"),
        ("[wave1]\npc-1 ansible_host\n", 2, "expected key=value after host 'pc-1'"),
        ("[wave1]\npc-1 ansible_password= Pa55-word\n", 2, "found a word without '='"),
        ("[wave1]\npc-1\n\n[wave9:vars]\nx=1\n", 4, "[wave9:vars] is for group 'wave9', which no"),
        ("[wave1]\npc-1\n[all2:children]\nwave1\nwave7\n", 5, "names group 'wave7', which no"),
        ("[wave1]\npc-1\n[wave1:vars]\njust words\n", 4, "expected key=value in [wave1:vars]"),
        ("[wave1]\npc-1 note='open\n", 2, "cannot split the host line"),
        ("[wave1]\npc-1\npc-2 bad-name=1\n", 3, "variable name 'bad-name' is not valid"),
        ("[wave1]\npc-[05:01]\n", 2, "empty host range"),
        ("[wave 1]\npc-1\n", 1, "bad section header"),
    ],
)
def test_ini_mistakes_name_file_and_line(tree, text, line, words):
    root = tree({"hosts.ini": text})
    with pytest.raises(InputError) as err:
        Inventory.load(root / "hosts.ini")
    assert err.value.line == line, err.value.render()
    assert words in err.value.message
    assert err.value.where.endswith("hosts.ini")
    assert "Pa55-word" not in err.value.render()


def test_ini_ranges_ports_children_all_vars_and_group_vars(tree):
    root = tree(
        {
            "production": """
                # ungrouped, before any section
                jump.corp.example:5986
                [all:vars]
                ansible_connection=winrm
                [wave1]
                pc-[1:3] cpuu_profiles="['Outlook']"
                [wave2]
                lt-[a:b]:5985
                [windows:children]
                wave1
                wave2   ; a comment
                [windows:vars]
                cpuu_admin=SOURCE\\svc-cpuu
                """.replace("\n                ", "\n"),
            "group_vars/wave2.yml": "site: Lyon\n",
            "host_vars/pc-2.yml": "cpuu_profiles: [Mail]\n",
        }
    )
    inv = Inventory.load(root / "production")
    assert [h.name for h in inv.hosts] == [
        "jump.corp.example", "pc-1", "pc-2", "pc-3", "lt-a", "lt-b",
    ]  # fmt: skip
    assert inv.host("jump.corp.example").vars == {
        "ansible_connection": "winrm",
        "ansible_port": 5986,
    }
    assert inv.host("pc-1").vars["cpuu_profiles"] == ["Outlook"]
    assert inv.host("pc-2").vars["cpuu_profiles"] == ["Mail"]
    assert inv.host("lt-b").vars["ansible_port"] == 5985
    assert inv.host("lt-b").vars["site"] == "Lyon"
    assert inv.host("lt-b").vars["cpuu_admin"] == "SOURCE\\svc-cpuu"
    assert inv.host("lt-a").groups == ["windows", "wave2"]
    assert inv.select("windows:&wave1") == [inv.host(f"pc-{i}") for i in (1, 2, 3)]


def test_a_folder_holds_ini_and_yaml_files_and_yaml_without_extension_stays_yaml(tree):
    root = tree(
        {
            "inv/10-hosts": "[wave1]\npc-1\n",
            "inv/20-more.yml": "wave2:\n  hosts:\n    pc-2:\n",
            "inv/30-yaml-hosts": "# YAML without an extension\nall:\n  hosts:\n    pc-3:\n",
            "inv/notes.txt": "not an inventory",
        }
    )
    inv = Inventory.load(root / "inv")
    assert [h.name for h in inv.hosts] == ["pc-1", "pc-2", "pc-3"]


def test_ini_values_follow_python_literals_as_ansible_does():
    assert parse_value("2") == 2 and parse_value("0.5") == 0.5 and parse_value("True") is True
    assert parse_value("true") == "true" and parse_value("yes") == "yes"
    assert parse_value("'quoted'") == "quoted" and parse_value("[1, 'a']") == [1, "a"]
    assert parse_value("(1, 2)") == [1, 2] and parse_value("{1, 2}") == "{1, 2}"
    assert parse_value("Lyon Gerland") == "Lyon Gerland" and parse_value("010") == "010"
    assert parse_value("[" * 200 + "]" * 200) is not None  # deep nesting is no crash


@pytest.mark.parametrize(
    "line",
    [
        "pc-1 a=1 b=2",
        "pc-1 a=b#c d=e",
        "pc-1\ta=1   # comment a=2",
        "pc-1 note='a # b' x=1",
        'pc-1 note="say \\"hi\\"" x=2 # c',
        "pc-1 path=C:\\\\Temp",
        "#all a comment",
    ],
)
def test_host_line_words_are_what_shlex_gives(line):
    assert split_words(line) == shlex.split(line, comments=True)


def test_ini_is_told_from_yaml_by_content():
    assert looks_like_ini("[wave1]\npc-1\n")
    assert looks_like_ini("pc-1:5986\n")
    assert looks_like_ini("; comment\npc-1 ansible_host=x\n")
    assert not looks_like_ini("---\nall:\n")
    assert not looks_like_ini("# c\nall:\n  hosts:\n")
    assert not looks_like_ini('{"_meta": {}}')


def test_inventory_list_reads_an_ini_file_as_a_user_runs_it(tmp_path):
    shutil.copy(INI / "hosts.ini", tmp_path / "hosts")
    proc = run_subprocess("inventory", "list", "-i", "hosts", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["lyo-kiosk"]["connection"]["address"] == "10.1.2.3"
    assert rows["par-pcc"]["connection"]["port"] == 5985
    assert rows["lyo-pc02.corp.example"]["groups"] == ["sites", "lyon"]


# ------------------------------------------------------- against a live ansible-core, when installed

ANSIBLE_INVENTORY = shutil.which("ansible-inventory") or next(
    (str(p) for p in [Path(sys.executable).parent / "ansible-inventory"] if p.exists()), None
)
"""The dev extra installs ansible-core beside the interpreter, whether or not the venv is on PATH."""


def _raw(value):
    """Our raw value as ansible-inventory --list prints it (vault files decrypted, inline values
    as {"__ansible_vault": ...})."""
    if isinstance(value, vault.Vaulted):
        return _raw(value.value)
    if isinstance(value, vault.VaultText):
        return {"__ansible_vault": value.ciphertext}
    if isinstance(value, dict):
        return {k: _raw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_raw(v) for v in value]
    return value


@pytest.mark.skipif(ANSIBLE_INVENTORY is None, reason="ansible-core is not installed here")
@pytest.mark.parametrize(
    ("source", "options"),
    [
        (INI / "hosts.ini", []),
        (
            DATA / "vault" / "inventory.yml",
            ["--vault-id", "default@vault-pass.txt", "--vault-id", "prod@prod-pass.txt"],
        ),
        (Path(__file__).resolve().parents[2] / "inventories" / "example.yml", []),
        (DATA / "script" / "cmdb.py", []),
    ],
    ids=["ini", "vault", "example", "script"],
)
def test_same_hosts_groups_and_vars_as_a_live_ansible_inventory(source, options):
    done = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", str(source), "--list", *options],
        cwd=source.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    expected = _expected(json.loads(done.stdout))
    previous = vault.use(
        vault.secrets_from_options(
            vault_ids=[
                f"{o.split('@')[0]}@{source.parent / o.split('@')[1]}" for o in options[1::2]
            ],
            environ={},
        )
    )
    try:
        inv = Inventory.load(source)
    finally:
        vault.use(previous)
    got = _as_ansible_lists(inv)
    assert {h: _raw(v) for h, v in got["hostvars"].items()} == expected["hostvars"]
    assert {k: v for k, v in got["groups"].items() if k in expected["groups"]} == expected["groups"]
    assert set(expected["groups"]) <= set(got["groups"])
