"""Importing the wizard's files: byte-for-byte round trips, escaped Jinja, secret variables."""

from __future__ import annotations

import codecs

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.render import Renderer
from cpuu_fleet.inputs.wizard_import import import_wizard

ENCRYPTED = "AQAAANCMnd8BFdERjHoAwE/Cl+sBAAAA9x=="
ENCRYPTED_TRG = "AQAAANCMnd8BFdERjHoAwE/Cl+sBAAAAtrg="
WIZARD_INI = (
    "; Généré par l'assistant {{ pas jinja }} {% non %} {#ni ça#}\r\n"
    "Admin SOURCE\\svc-cpuu\r\n"
    f'Password "{ENCRYPTED}"\r\n'
    "AdminTrg svc-cpuu@target.example\r\n"
    f"PasswordTrg={ENCRYPTED_TRG}\r\n"
    "AskSourceCredentialsOnly 0\r\n"
    'AllowAdditionalServices MSEMS "MSPST AB"\r\n'
)
WIZARD_BAT = '@echo off\r\nrem Mise à jour «CPUU»\r\n"%~dp0ClientProfileUpdatingUtility.exe" -ProcessOfflineProfiles On\r\n'


def wizard_folder(tree, ini_bytes: bytes, bat_bytes: bytes):
    return tree(
        {
            "wizard/CPUU.ini": ini_bytes,
            "wizard/CPUU_Update.bat": bat_bytes,
            "wizard/cpuu_rollback.BAT": b"@echo off\nrem rollback\n",
            "wizard/CPUU_CleanUp.bat": b"@echo off\r\nrem cleanup\r\n",
            "wizard/ClientProfileUpdatingUtility.exe": b"MZ\x90\x00binary",
            "inv.yml": (
                "all:\n  hosts:\n    pc-0001:\n"
                f"      cpuu_password: '{ENCRYPTED}'\n      cpuu_password_trg: '{ENCRYPTED_TRG}'\n"
            ),
        }
    )


@pytest.mark.parametrize(
    ("ini_bytes", "bat_bytes", "ini_encoding"),
    [
        (
            codecs.BOM_UTF16_LE + WIZARD_INI.encode("utf-16-le"),
            WIZARD_BAT.encode("cp1252"),
            "utf-16-le-bom",
        ),
        (WIZARD_INI.encode("cp1252"), WIZARD_BAT.encode("cp1252"), "cp1252"),
        (codecs.BOM_UTF8 + WIZARD_INI.encode(), WIZARD_BAT.encode("utf-8"), "utf-8-bom"),
    ],
)
def test_round_trip_gives_the_original_bytes(tree, ini_bytes, bat_bytes, ini_encoding):
    root = wizard_folder(tree, ini_bytes, bat_bytes)
    result = import_wizard(root / "wizard", root / "templates")
    by_name = {f.template.name: f for f in result.files}
    assert sorted(by_name) == [
        "CPUU.ini.j2",
        "CPUU_Cleanup.bat.j2",
        "CPUU_Rollback.bat.j2",
        "CPUU_Update.bat.j2",
    ]
    assert by_name["CPUU.ini.j2"].format.encoding == ini_encoding
    assert by_name["CPUU_Rollback.bat.j2"].format.newline == "lf"
    assert by_name["CPUU.ini.j2"].secrets == [(3, "cpuu_password"), (5, "cpuu_password_trg")]
    assert result.skipped == ["ClientProfileUpdatingUtility.exe"]

    template_text = (root / "templates" / "CPUU.ini.j2").read_text(encoding="utf-8")
    assert ENCRYPTED not in template_text and ENCRYPTED_TRG not in template_text
    assert 'Password "{{ cpuu_password }}"' in template_text

    host = Inventory.load(root / "inv.yml").host("pc-0001")
    renderer = Renderer(root / "templates")
    update = renderer.render_host(host, "update")
    assert update.files["CPUU.ini"] == ini_bytes
    assert update.files["CPUU_Update.bat"] == bat_bytes
    assert renderer.render_host(host, "undo").files["CPUU_Rollback.bat"] == (
        b"@echo off\nrem rollback\n"
    )
    assert renderer.render_host(host, "cleanup").files["CPUU_Cleanup.bat"] == (
        b"@echo off\r\nrem cleanup\r\n"
    )
    masked = update.masked["CPUU.ini"]
    assert ENCRYPTED.encode(ini_encoding.replace("-bom", "")) not in masked
    assert "********".encode(ini_encoding.replace("-bom", "")) in masked


def test_templatised_parts_render_per_host(tree):
    root = wizard_folder(tree, WIZARD_INI.encode("cp1252"), WIZARD_BAT.encode("cp1252"))
    import_wizard(root / "wizard", root / "templates")
    ini = root / "templates" / "CPUU.ini.j2"
    ini.write_text(
        ini.read_text(encoding="utf-8").replace("SOURCE\\svc-cpuu", "{{ cpuu_admin }}"),
        encoding="utf-8",
    )
    host = Inventory.load(root / "inv.yml").host("pc-0001")
    host.vars["cpuu_admin"] = "OTHER\\admin"
    out = Renderer(root / "templates").render_host(host, "update")
    assert b"Admin OTHER\\admin\r\n" in out.files["CPUU.ini"]


def test_existing_templates_are_not_overwritten_without_force(tree):
    root = wizard_folder(tree, WIZARD_INI.encode("cp1252"), WIZARD_BAT.encode("cp1252"))
    import_wizard(root / "wizard", root / "templates")
    with pytest.raises(InputError, match="use --force"):
        import_wizard(root / "wizard", root / "templates")
    assert import_wizard(root / "wizard", root / "templates", force=True).files


def test_ask_credentials_and_mixed_line_endings_are_warnings(tree):
    ini = b"Admin x\r\nAskCredentials 1\nPassword abc\r\n"
    root = tree({"wizard/CPUU.ini": ini})
    result = import_wizard(root / "wizard", root / "out")
    assert any("AskCredentials" in w and ":2:" in w for w in result.warnings)
    assert any("mixed line endings" in w for w in result.warnings)


def test_a_wizard_folder_without_ini_or_with_a_binary_ini(tree):
    root = tree({"wizard/CPUU_Update.bat": b"@echo off\r\n"})
    with pytest.raises(InputError, match=r"no CPUU\.ini"):
        import_wizard(root / "wizard", root / "out")
    root = tree({"wizard2/CPUU.ini": b"\x00\x01\x02\x03\xff\xfe\x00"})
    with pytest.raises(InputError, match="not a text file"):
        import_wizard(root / "wizard2", root / "out")


def test_a_mode_without_a_wizard_batch_file_is_reported(tree):
    root = tree({"wizard/CPUU.ini": b"Admin x\r\n", "wizard/CPUU_Update.bat": b"@echo off\r\n"})
    result = import_wizard(root / "wizard", root / "out")
    missing = [w for w in result.warnings if "no batch file" in w]
    assert len(missing) == 2 and any("CPUU_Rollback.bat" in w for w in missing)
