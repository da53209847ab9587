"""The example templates as the lab's CPUU emulator reads them: mode, arguments, INI values.

The emulator is the lab's model of what CPUU does with the files a workstation receives; if it
cannot find the call, the mode or the passwords in what we render, a wave would fail in the lab.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.render import Renderer
from cpuu_fleet.lab.cpuu_emulator import find_cpuu_call, parse_arguments, read_ini

REPO = Path(__file__).resolve().parents[2]
STAGING = "C:\\ProgramData\\cpuu-fleet\\0123456789ab"


@pytest.fixture
def rendered(monkeypatch):
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD", "AQAAsrc+encrypted==")
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD_TRG", "AQAAtrg+encrypted==")
    inv = Inventory.load(REPO / "inventories" / "example.yml")
    renderer = Renderer(REPO / "playbooks" / "templates")
    return lambda host, mode: renderer.render_host(inv.host(host), mode)


@pytest.mark.parametrize("mode", list(Mode))
def test_emulator_finds_the_call_and_the_mode(rendered, mode):
    out = rendered("lyo-lt-0302.corp.example", mode)
    batch = out.files[mode.batch_file].decode("cp1252")
    call = find_cpuu_call(batch, f"{STAGING}\\{mode.batch_file}", "", "C:\\Windows\\System32")
    assert call is not None
    assert call.exe.lower() == f"{STAGING}\\ClientProfileUpdatingUtility.exe".lower()
    assert call.current_dir.rstrip("\\").lower() == STAGING.lower()
    args = parse_arguments(call.args, call.batch_name)
    assert args.mode is mode
    assert args.profiles == ["Outlook", "Archive 2019"]
    assert args.process_offline is True
    assert args.ignored == []


def test_emulator_reads_the_rendered_ini(rendered):
    out = rendered("par-pc-0101.corp.example", Mode.UPDATE)
    ini = read_ini(out.files["CPUU.ini"])
    assert ini.get("Admin") == "SOURCE\\svc-cpuu"
    assert ini.get("Password") == "AQAAsrc+encrypted=="
    assert ini.get("PasswordTrg") == "AQAAtrg+encrypted=="
    assert ini.get_list("AllowAdditionalServices") == ["MSEMS", "MSPST AB", "MSPST MS", "MSUPST MS"]
    assert not ini.flag("AskCredentials")
    assert ini.skipped_lines == []
    args = parse_arguments(
        find_cpuu_call(
            out.files["CPUU_Update.bat"].decode("cp1252"),
            f"{STAGING}\\CPUU_Update.bat",
            "",
            STAGING,
        ).args,
        "CPUU_Update.bat",
    )
    assert args.profiles is None and args.process_offline is False  # a desktop: defaults


def test_pilot_wave_passes_its_critical_features(rendered):
    out = rendered("it-pc-0001.corp.example", Mode.UPDATE)
    batch = out.files["CPUU_Update.bat"].decode("cp1252")
    args = parse_arguments(
        find_cpuu_call(batch, f"{STAGING}\\CPUU_Update.bat", "", STAGING).args, "x"
    )
    assert args.critical == ["Rules", "Delegates"] and args.profiles == ["Outlook"]
