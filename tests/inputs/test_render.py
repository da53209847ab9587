"""Rendering per host: strict variables, exact bytes (encoding, CRLF), secrets only on the wire."""

from __future__ import annotations

import codecs

import pytest

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.render import Renderer

INVENTORY = """
all:
  vars:
    cpuu_admin: 'SOURCE\\svc'
    cpuu_password: "{{ lookup('env', 'TEST_CPUU_PW') }}"
  children:
    wave2:
      hosts:
        par-pc-0101:
          site: Paris
        par-pc-0102:
"""
INI = "; for {{ inventory_hostname }}\nAdmin {{ cpuu_admin }}\nPassword {{ cpuu_password }}\nSite {{ site }}\n"
BAT = '@echo off\n"%~dp0ClientProfileUpdatingUtility.exe"{{ " -Undo" if mode == "undo" else "" }}\n'


@pytest.fixture
def setup(tree, monkeypatch):
    monkeypatch.setenv("TEST_CPUU_PW", "AQAAencrypted==")

    def make(ini: str = INI, formats: str | None = None, extra: dict | None = None):
        files = {
            "inv.yml": INVENTORY,
            "tpl/CPUU.ini.j2": ini,
            "tpl/CPUU_Update.bat.j2": BAT,
            "tpl/CPUU_Rollback.bat.j2": BAT,
            **(extra or {}),
        }
        if formats is not None:
            files["tpl/templates.yml"] = formats
        root = tree(files)
        return Inventory.load(root / "inv.yml"), Renderer(root / "tpl"), root

    return make


def test_files_for_the_wire_and_a_masked_copy(setup):
    inv, renderer, _ = setup()
    out = renderer.render_host(inv.host("par-pc-0101"), "update")
    assert sorted(out.files) == ["CPUU.ini", "CPUU_Update.bat"]
    assert out.files["CPUU.ini"] == (
        b"; for par-pc-0101\r\nAdmin SOURCE\\svc\r\nPassword AQAAencrypted==\r\nSite Paris\r\n"
    )
    assert out.masked["CPUU.ini"] == (
        b"; for par-pc-0101\r\nAdmin SOURCE\\svc\r\nPassword ********\r\nSite Paris\r\n"
    )
    assert b"AQAAencrypted" not in b"".join(out.masked.values())


def test_mode_selects_the_batch_file(setup):
    inv, renderer, _ = setup()
    out = renderer.render_host(inv.host("par-pc-0101"), Mode.UNDO)
    assert sorted(out.files) == ["CPUU.ini", "CPUU_Rollback.bat"]
    assert out.files["CPUU_Rollback.bat"].endswith(b'.exe" -Undo\r\n')
    with pytest.raises(InputError, match=r"missing template CPUU_Cleanup\.bat\.j2"):
        renderer.render_host(inv.host("par-pc-0101"), "cleanup")


def test_undefined_variable_names_variable_host_template_and_line(setup):
    inv, renderer, root = setup()
    with pytest.raises(InputError) as err:
        renderer.render_host(inv.host("par-pc-0102"), "update")  # this host has no 'site'
    assert err.value.render() == (
        f"{root / 'tpl' / 'CPUU.ini.j2'}:4: host par-pc-0102: undefined variable 'site'"
    )


def test_undefined_variable_inside_another_value_points_at_the_use(setup):
    ini = "Admin {{ cpuu_admin }}\n\nShare {{ share }}\n"
    inv, renderer, _ = setup(ini=ini)
    host = inv.host("par-pc-0101")
    host.vars["share"] = "\\\\{{ fileserver }}\\cpuu"
    with pytest.raises(InputError) as err:
        renderer.render_host(host, "update")
    assert err.value.line == 3
    assert "undefined variable 'fileserver' (used in the value of 'share')" in err.value.message


def test_a_secret_unused_by_the_templates_is_not_needed(setup, monkeypatch):
    ini = "{% if use_target | default(false) %}\nPasswordTrg {{ cpuu_password_trg }}\n{% endif %}\nX 1\n"
    inv, renderer, _ = setup(ini=ini)
    monkeypatch.delenv("TEST_TRG_PW", raising=False)
    host = inv.host("par-pc-0101")
    host.vars["cpuu_password_trg"] = "{{ lookup('env', 'TEST_TRG_PW') }}"
    assert renderer.render_host(host, "update").files["CPUU.ini"] == b"X 1\r\n"
    host.vars["use_target"] = True
    with pytest.raises(InputError) as err:
        renderer.render_host(host, "update")
    message = err.value.render()
    assert (
        "CPUU.ini.j2:2" in message and "cpuu_password_trg" in message and "par-pc-0101" in message
    )


def test_secrets_derived_from_secrets_are_masked_too(setup):
    inv, renderer, _ = setup(ini="Line {{ combo }}\nRaw {{ lookup('env', 'TEST_CPUU_PW') }}\n")
    host = inv.host("par-pc-0101")
    host.vars["combo"] = "user:{{ cpuu_password }}"
    out = renderer.render_host(host, "update")
    assert out.files["CPUU.ini"] == b"Line user:AQAAencrypted==\r\nRaw AQAAencrypted==\r\n"
    assert out.masked["CPUU.ini"] == b"Line user:********\r\nRaw ********\r\n"


@pytest.mark.parametrize(
    ("encoding", "expected"),
    [
        ("utf-8", "Site Zoë\r\n".encode()),
        ("utf-8-bom", codecs.BOM_UTF8 + "Site Zoë\r\n".encode()),
        ("utf-16-le-bom", codecs.BOM_UTF16_LE + "Site Zoë\r\n".encode("utf-16-le")),
        ("cp1252", "Site Zoë\r\n".encode("cp1252")),
    ],
)
def test_encodings_and_crlf(setup, encoding, expected):
    formats = f"files:\n  CPUU.ini.j2:\n    encoding: {encoding}\n"
    inv, renderer, _ = setup(ini="Site {{ site }}\n", formats=formats)
    host = inv.host("par-pc-0101")
    host.vars["site"] = "Zoë"
    assert renderer.render_host(host, "update").files["CPUU.ini"] == expected


def test_line_endings_of_values_are_normalised_and_lf_is_possible(setup):
    inv, renderer, _ = setup(
        ini="A {{ multi }}\nB\n", formats="defaults:\n  newline: lf\n  encoding: utf-8\n"
    )
    host = inv.host("par-pc-0101")
    host.vars["multi"] = "one\r\ntwo"
    out = renderer.render_host(host, "update")
    assert out.files["CPUU.ini"] == b"A one\ntwo\nB\n"
    assert out.files["CPUU_Update.bat"].count(b"\r") == 0


def test_a_character_the_encoding_cannot_hold_is_an_error_with_its_line(setup):
    formats = "files:\n  CPUU.ini.j2:\n    encoding: cp1252\n"
    inv, renderer, _ = setup(ini="A 1\nSite {{ site }}\n", formats=formats)
    host = inv.host("par-pc-0101")
    host.vars["site"] = "Łódź"
    with pytest.raises(InputError) as err:
        renderer.render_host(host, "update")
    assert (
        err.value.line == 2 and "U+0141" in err.value.message and "par-pc-0101" in err.value.message
    )


def test_bad_templates_yml_names_file_and_line(setup):
    with pytest.raises(InputError) as err:
        setup(formats="files:\n  CPUU.ini.j2:\n    encoding: ebcdic\n")
    assert err.value.line == 3 and "unknown encoding 'ebcdic'" in err.value.message


def test_template_syntax_error_names_file_and_line(setup):
    inv, renderer, root = setup(ini="A 1\nB {{ site \n")
    with pytest.raises(InputError) as err:
        renderer.render_host(inv.host("par-pc-0101"), "update")
    assert err.value.where == str(root / "tpl" / "CPUU.ini.j2") and err.value.line == 2


@pytest.mark.parametrize(
    ("line", "warned"),
    [
        ("AskCredentials", True),
        ("AskCredentials 1", True),
        ("-AskCredentials=yes", True),
        ("AskCredentials 0", False),
        ("; AskCredentials 1", False),
        ("AskSourceCredentialsOnly 1", False),
    ],
)
def test_ask_credentials_is_a_warning_not_a_failure(setup, line, warned):
    inv, renderer, _ = setup(ini=f"Admin x\n{line}\n")
    out = renderer.render_host(inv.host("par-pc-0101"), "update")
    assert bool(out.warnings) is warned
    if warned:
        assert "CPUU.ini.j2:2" in out.warnings[0] and "AskCredentials" in out.warnings[0]


def test_extra_vars_win_and_magic_variables_are_available(setup):
    ini = "{{ site }} {{ mode }} {{ group_names | join(',') }} {{ extra_vars.run_id }} {{ groups['wave2'] | length }}\n"
    inv, renderer, _ = setup(ini=ini)
    out = renderer.render_host(
        inv.host("par-pc-0101"), "undo", {"site": "Override", "run_id": "r42"}
    )
    assert out.files["CPUU.ini"] == b"Override undo wave2 r42 2\r\n"


def test_batch_arguments_are_quoted_for_cmd(setup):
    bat = '"x.exe" -Profiles {{ cpuu_profiles | bat_args }}\n'
    inv, renderer, _ = setup(extra={"tpl/CPUU_Update.bat.j2": bat})
    host = inv.host("par-pc-0101")
    host.vars["cpuu_profiles"] = ["Outlook", "Archive 2019", "100% mine"]
    out = renderer.render_host(host, "update")
    assert (
        out.files["CPUU_Update.bat"] == b'"x.exe" -Profiles Outlook "Archive 2019" "100%% mine"\r\n'
    )
    host.vars["cpuu_profiles"] = ['bad "quote"']
    with pytest.raises(InputError, match="cannot be passed as a Windows argument"):
        renderer.render_host(host, "update")


def test_example_inventory_and_templates_render(monkeypatch):
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD", "AQAAsrc")
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD_TRG", "AQAAtrg")
    monkeypatch.setenv("CPUU_FLEET_WINRM_PASSWORD", "winrm-pw")
    inv = Inventory.load(repo / "inventories" / "example.yml")
    assert {"wave1", "wave2", "wave3"} <= set(inv.groups)
    renderer = Renderer(repo / "playbooks" / "templates")
    host = inv.host("lyo-lt-0302.corp.example")
    out = renderer.render_host(host, "update")
    ini = out.files["CPUU.ini"].decode("cp1252")
    assert "Password AQAAsrc\r\n" in ini and "PasswordTrg AQAAtrg\r\n" in ini
    bat = out.files["CPUU_Update.bat"].decode("cp1252")
    assert '-Profiles Outlook "Archive 2019"' in bat and "-ProcessOfflineProfiles On" in bat
    assert bat.endswith("exit /b %ERRORLEVEL%\r\n")
    assert host.connection.read_timeout == 120  # site_lyon's group_vars
    assert host.connection.pypsrp_kwargs()["cert_validation"] == "/etc/pki/corp/lyon-winrm-ca.pem"
    for mode in Mode:
        for h in inv.hosts:
            assert b"AQAA" not in b"".join(renderer.render_host(h, mode).masked.values())


def test_keyring_values_are_masked_whatever_the_variable_name(setup, memory_keyring):
    memory_keyring.set_password("cpuu-fleet", "share", "Share-Key-777")
    inv, renderer, _ = setup(ini="Share {{ share_key_text }}\n")
    host = inv.host("par-pc-0101")
    host.vars["share_key_text"] = "{{ lookup('keyring', 'cpuu-fleet', 'share') }}"
    out = renderer.render_host(host, "update")
    assert out.files["CPUU.ini"] == b"Share Share-Key-777\r\n"
    assert out.masked["CPUU.ini"] == b"Share ********\r\n"


def test_a_missing_key_is_named_as_a_key(setup):
    inv, renderer, root = setup(ini="Switch {{ cpuu_mode_switch['undo'] }}\n")
    host = inv.host("par-pc-0101")
    host.vars["cpuu_mode_switch"] = {"update": ""}
    with pytest.raises(InputError) as err:
        renderer.render_host(host, "undo")
    assert err.value.render() == (
        f"{root / 'tpl' / 'CPUU.ini.j2'}:1: host par-pc-0101: undefined key 'undo' of a dict object"
    )
