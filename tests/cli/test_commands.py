"""The commands as an operator meets them: output, masking, and one-line errors with exit code 2."""

from __future__ import annotations

import codecs
import json

import pytest

from tests.support.commands import run_subprocess

INVENTORY = {
    "inv.yml": """
    all:
      children:
        wave1:
          hosts:
            pc-0001:
              cpuu_profiles: [Outlook]
            pc-0002:
        wave2:
          children:
            site_paris:
              hosts:
                par-pc-0101:
    """,
    "group_vars/all.yml": """
    ansible_user: 'CORP\\svc'
    ansible_password: "{{ lookup('env', 'T_WINRM_PW') }}"
    cpuu_password: "{{ lookup('env', 'T_CPUU_PW') }}"
    plain_password_literal: "Literal-Secret-42"
    """,
    "tpl/CPUU.ini.j2": "Host {{ inventory_hostname }}\nPassword {{ cpuu_password }}\n",
    "tpl/CPUU_Update.bat.j2": "@echo off\nrem {{ mode }}\n",
}
SECRETS = {"T_WINRM_PW": "Winrm-Secret-1", "T_CPUU_PW": "AQAA-Cpuu-Secret-2"}


@pytest.fixture
def fleet(tree, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return tree(INVENTORY)


def test_inventory_list_json_masks_secrets(cli, fleet):
    code, out, err = cli("inventory", "list", "-i", fleet / "inv.yml", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["pc-0001", "pc-0002", "par-pc-0101"]
    assert rows[2]["groups"] == ["wave2", "site_paris"]
    assert rows[0]["connection"]["password"] == "********"
    assert rows[0]["connection"]["port"] == 5986
    assert rows[0]["vars"]["cpuu_password"] == "********"
    assert rows[0]["vars"]["plain_password_literal"] == "********"
    for secret in [*SECRETS.values(), "Literal-Secret-42"]:
        assert secret not in out and secret not in err


def test_inventory_list_table_with_limit(cli, fleet):
    code, out, _ = cli("inventory", "list", "-i", fleet / "inv.yml", "--limit", "wave1:!pc-0002")
    assert code == 0
    assert "pc-0001" in out and "pc-0002" not in out and "********" in out
    assert "Winrm-Secret-1" not in out


def test_inventory_graph(cli, fleet):
    code, out, _ = cli("inventory", "graph", "-i", fleet / "inv.yml")
    assert code == 0
    assert "  |  |--@site_paris:\n  |  |  |--par-pc-0101\n" in out


def test_render_writes_a_masked_review_copy_per_host(cli, fleet):
    out_dir = fleet / "review"
    code, out, err = cli(
        "render", "-i", fleet / "inv.yml", "-t", fleet / "tpl", "--out", out_dir, "-l", "wave1"
    )
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == ["pc-0001", "pc-0002"]
    ini = (out_dir / "pc-0001" / "CPUU.ini").read_bytes()
    assert ini == b"Host pc-0001\r\nPassword ********\r\n"
    assert (out_dir / "pc-0001" / "CPUU_Update.bat").read_bytes() == b"@echo off\r\nrem update\r\n"
    on_disk = b"".join(p.read_bytes() for p in out_dir.rglob("*") if p.is_file())
    for secret in SECRETS.values():
        assert secret.encode() not in on_disk
        assert secret not in out + err


def test_render_with_a_missing_secret_is_one_line_naming_host_and_variable(cli, fleet, monkeypatch):
    monkeypatch.delenv("T_CPUU_PW")
    code, _, err = cli("render", "-i", fleet / "inv.yml", "-t", fleet / "tpl", "--out", fleet / "r")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "host pc-0001, variable cpuu_password" in lines[0] and "T_CPUU_PW" in lines[0]


def test_render_ask_pass_prompts_for_what_is_missing(cli, fleet, monkeypatch):
    monkeypatch.delenv("T_CPUU_PW")
    asked: list[str] = []
    monkeypatch.setattr("getpass.getpass", lambda q: asked.append(q) or "Typed-At-Prompt")
    code, _, err = cli(
        "render", "-i", fleet / "inv.yml", "-t", fleet / "tpl", "--out", fleet / "r", "--ask-pass"
    )
    assert code == 0, err
    assert len(asked) == 1
    assert b"Typed-At-Prompt" not in (fleet / "r" / "pc-0002" / "CPUU.ini").read_bytes()


def test_results_show(cli, tree):
    root = tree(
        {
            "CPUU_PC1.csv": codecs.BOM_UTF16_LE
            + "Outlook\t10\t0\r\nArchive\tsix\t\r\n".encode("utf-16-le"),
        }
    )
    code, out, _ = cli("results", "show", root / "CPUU_PC1.csv", "--json")
    assert code == 0
    data = json.loads(out)
    assert data[0]["profiles"][0]["name"] == "PROFILE_MODIFYING_OK"
    assert data[0]["problems"][0]["line"] == 2
    code, out, _ = cli("results", "show", root / "CPUU_PC1.csv")
    assert code == 0
    assert "PROFILE_MODIFYING_OK" in out
    assert f"{root / 'CPUU_PC1.csv'}:2: current code 'six' is not a number" in out


def test_results_show_reads_every_file_then_reports_the_unreadable_one(cli, tree):
    root = tree({"good.csv": b"Outlook\t2\t\n", "bad.csv": b"\x00\x01\x02PK\x03\x04\x00"})
    code, out, err = cli("results", "show", root / "good.csv", root / "bad.csv")
    assert code == 2
    assert "PROFILE_ALREADY_UPDATED" in out
    assert err.strip() == f"cpuu-fleet: error: {root / 'bad.csv'}: not a text file (binary content)"


def test_template_import_command(cli, tree):
    root = tree({"wizard/CPUU.ini": b"Admin x\r\nPassword AQAAsecretvalue\r\nAskCredentials\r\n"})
    code, out, err = cli("template", "import", root / "wizard", "--out", root / "tpl")
    assert code == 0
    assert "AQAAsecretvalue" not in out + err
    assert "cpuu_password" in out and "CPUU_FLEET_CPUU_PASSWORD" in out
    assert "AskCredentials" in err
    assert (root / "tpl" / "CPUU.ini.j2").exists() and (root / "tpl" / "templates.yml").exists()
    code, _, err = cli("template", "import", root / "wizard", "--out", root / "tpl")
    assert code == 2 and "--force" in err


# ---- as a user sees it: a real process, exit code 2, one line on stderr ----------------------


def test_yaml_syntax_error_exit_2_one_line(tree):
    root = tree({"inv.yml": "all:\n  children:\n    wave1:\n      hosts: [pc-1\n    wave2:\n"})
    proc = run_subprocess("inventory", "list", "-i", "inv.yml", cwd=root)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("cpuu-fleet: error: inv.yml:5: YAML syntax error")


def test_unknown_group_in_limit_exit_2_one_line(fleet):
    proc = run_subprocess("inventory", "list", "-i", "inv.yml", "--limit", "wave9:wave1", cwd=fleet)
    assert proc.returncode == 2
    assert proc.stderr == (
        "cpuu-fleet: error: --limit: host pattern 'wave9' matches no host or group in the "
        "inventory (did you mean 'wave2'?)\n"
    )


def test_result_file_that_is_not_text_exit_2_one_line(tree):
    root = tree({"CPUU_x.csv": bytes(range(256))})
    proc = run_subprocess("results", "show", "CPUU_x.csv", cwd=root)
    assert proc.returncode == 2
    assert proc.stderr == "cpuu-fleet: error: CPUU_x.csv: not a text file (binary content)\n"


def test_results_show_prints_hostile_profile_names_as_plain_text(cli, tree):
    root = tree({"CPUU_h.csv": b"Arch [/old] [bold]x\t10\t0\nEvil \x1b[31mred\t2\t\n"})
    code, out, err = cli("results", "show", root / "CPUU_h.csv")
    assert code == 0, err
    assert "Arch [/old] [bold]x" in out  # rich markup is not interpreted (nor a crash)
    assert "\x1b" not in out and "Evil \\x1b[31mred" in out


def test_results_show_refuses_a_file_without_one_profile_line(cli, tree):
    root = tree({"good.csv": b"Outlook\t2\t\n", "notes.txt": b"root:x:0:0\nbin:x:1:1\n"})
    code, out, err = cli("results", "show", root / "good.csv", root / "notes.txt")
    assert code == 2
    assert "PROFILE_ALREADY_UPDATED" in out  # the good file is still shown
    assert err.strip() == (
        f"cpuu-fleet: error: {root / 'notes.txt'}:1: not a CPUU result file: no profile among"
        " its 2 line(s) (the first: expected profile<TAB>current<TAB>previous)"
    )
