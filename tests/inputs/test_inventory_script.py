"""Dynamic inventory scripts: run with --list (and --host without _meta), their output bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import inventory_script
from cpuu_fleet.inputs.inventory import Inventory
from tests.support.commands import run_subprocess

LIST = {
    "wave1": {"hosts": ["pc-1", "pc-2"], "vars": {"site": "Lyon"}},
    "_meta": {"hostvars": {"pc-1": {"asset": 17}}},
}


def script(folder: Path, name: str, body: str, *, executable: bool = True) -> Path:
    path = folder / name
    path.write_text("#!/usr/bin/env python3\nimport json, sys\n" + body)
    if executable:
        path.chmod(0o755)
    return path


def test_a_script_is_run_with_list_and_read_as_ansible_does(tmp_path):
    script(tmp_path, "cmdb.py", f"assert sys.argv[1:] == ['--list']\nprint(json.dumps({LIST!r}))\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "wave1.yml").write_text("cpuu_mode: Undo\n")
    proc = run_subprocess("inventory", "list", "-i", "cmdb.py", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    inv = Inventory.load(tmp_path / "cmdb.py")
    assert inv.host("pc-1").vars == {"site": "Lyon", "cpuu_mode": "Undo", "asset": 17}
    assert sorted(row["name"] for row in json.loads(proc.stdout)) == ["pc-1", "pc-2"]


def test_without_meta_each_host_is_asked_with_host(tmp_path):
    script(
        tmp_path,
        "ad.sh",
        "if sys.argv[1] == '--list':\n"
        "    print(json.dumps({'wave1': ['pc-1', 'pc-2']}))\n"
        "else:\n"
        "    print(json.dumps({'asset': sys.argv[2]}))\n",
    )
    inv = Inventory.load(tmp_path / "ad.sh")
    assert inv.host("pc-2").vars == {"asset": "pc-2"}


def test_a_script_in_an_inventory_folder_runs_beside_the_yaml(tmp_path):
    script(tmp_path, "cmdb.py", f"print(json.dumps({LIST!r}))\n")
    (tmp_path / "static.yml").write_text("all:\n  hosts:\n    kiosk-1:\n")
    inv = Inventory.load(tmp_path)
    assert {host.name for host in inv.hosts} == {"pc-1", "pc-2", "kiosk-1"}


def test_an_ini_file_with_the_executable_bit_and_no_shebang_stays_data(tmp_path):
    path = tmp_path / "hosts"
    path.write_text("[wave1]\npc-1\n")
    path.chmod(0o755)
    assert not inventory_script.is_inventory_script(path)
    assert Inventory.load(path).host("pc-1").groups == ["wave1"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("sys.stderr.write('Traceback\\nldap: bind refused\\n'); sys.exit(3)", "exit code 3"),
        ("print('not json')", "did not print JSON"),
        ("print(json.dumps([1, 2]))", "JSON object of groups"),
    ],
)
def test_a_failing_script_is_one_error_naming_the_file(tmp_path, body, words):
    script(tmp_path, "cmdb.py", body + "\n")
    with pytest.raises(InputError, match=words) as err:
        Inventory.load(tmp_path / "cmdb.py")
    assert "cmdb.py" in str(err.value)


def test_stderr_shows_only_its_last_line_made_printable(tmp_path):
    script(
        tmp_path,
        "cmdb.py",
        "sys.stderr.write('password=Hunter2\\nbind refused \\x1b[31mred\\n'); sys.exit(1)\n",
    )
    with pytest.raises(InputError) as err:
        Inventory.load(tmp_path / "cmdb.py")
    assert "bind refused" in str(err.value)
    assert "Hunter2" not in str(err.value)
    assert "\x1b" not in str(err.value)


def test_output_above_the_bound_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(inventory_script, "MAX_OUTPUT_BYTES", 1000)
    script(tmp_path, "big.py", "print(json.dumps({'wave1': ['pc-%d' % i for i in range(500)]}))\n")
    with pytest.raises(InputError, match="printed more than"):
        Inventory.load(tmp_path / "big.py")


def test_a_hung_script_is_stopped_at_its_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(inventory_script, "TIMEOUT", 1)
    script(tmp_path, "hang.py", "import time\ntime.sleep(30)\n")
    with pytest.raises(InputError, match="timed out after 1 s"):
        Inventory.load(tmp_path / "hang.py")
