"""``init``'s project folder and the shipped files any folder can use."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuu_fleet.cpuu import Mode
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.config import PROJECT_FILE, load_settings
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.inputs.project import create_project, project_files
from cpuu_fleet.inputs.render import Renderer
from cpuu_fleet.inputs.shipped import default_templates, shipped_playbook

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_playbooks_are_the_checkouts_files() -> None:
    """One copy of each file: what ships is what the README's commands name in a checkout."""
    shipped = shipped_playbook("update.yml")
    assert shipped.read_bytes() == (REPO / "playbooks" / "update.yml").read_bytes()
    for name in ("update", "undo", "cleanup", "preflight"):
        assert load_playbook(shipped.parent / f"{name}.yml").plays


def test_a_new_project_is_ready_to_use(tmp_path: Path) -> None:
    folder = tmp_path / "migration"
    written = create_project(folder)
    assert {str(p) for p in written} >= {
        PROJECT_FILE,
        "inventories/fleet.yml",
        "inventories/group_vars/windows.yml",
        "inventories/group_vars/all.yml",
        "playbooks/update.yml",
        "playbooks/templates/CPUU.ini.j2",
        "playbooks/templates/templates.yml",
    }
    assert (folder / "reports").is_dir() and (folder / "playbooks" / "payload").is_dir()
    # The config file points at the skeleton, which reads as an inventory with the wave groups.
    settings = load_settings(folder, {"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert settings.get("inventory") == folder / "inventories" / "fleet.yml"
    assert settings.get("reports") == folder / "reports"
    assert Inventory.load(settings.get("inventory")).groups.keys() >= {"wave1", "wave2", "wave3"}
    (folder / "inventories" / "fleet.yml").write_text(
        (folder / "inventories" / "fleet.yml")
        .read_text(encoding="utf-8")
        .replace("# it-pc-0001.corp.example:", "it-pc-0001.corp.example:"),
        encoding="utf-8",
    )
    inventory = Inventory.load(settings.get("inventory"))
    (host,) = inventory.select("wave1")
    # The WinRM variables are all commented out: a host gets the defaults until they are set.
    assert "ansible_user" not in host.vars
    assert host.vars["cpuu_admin_trg"] == "svc-cpuu@target.example"
    # The project's playbook finds the project's templates and payload folder.
    (play, *_) = load_playbook(folder / "playbooks" / "update.yml").plays
    assert play.templates == (folder / "playbooks" / "templates").resolve()
    assert play.payload == (folder / "playbooks" / "payload").resolve()


def test_init_never_overwrites_and_names_what_is_in_the_way(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "playbooks").mkdir(parents=True)
    (folder / "playbooks" / "update.yml").write_text("# mine\n", encoding="utf-8")
    (folder / PROJECT_FILE).write_text('reports = "r"\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        create_project(folder)
    message = caught.value.render()
    assert "would overwrite 2 existing file(s)" in message
    assert "playbooks/update.yml" in message and PROJECT_FILE in message
    assert "nothing was written" in message
    assert (folder / "playbooks" / "update.yml").read_text(encoding="utf-8") == "# mine\n"
    assert sorted(p.name for p in folder.rglob("*")) == sorted(
        ["playbooks", "update.yml", PROJECT_FILE]
    )


def test_init_into_an_existing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="not a folder"):
        create_project(tmp_path / "taken")


def test_a_payload_in_the_playbooks_folder_is_never_copied(tmp_path: Path) -> None:
    assert not [p for p in project_files() if "payload" in p.parts]


def test_outside_a_project_the_shipped_templates_render(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD", "AQAA-src")
    monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD_TRG", "AQAA-trg")
    templates = default_templates()
    assert templates.is_absolute() and (templates / "CPUU.ini.j2").is_file()
    create_project(tmp_path)
    assert default_templates() == Path("playbooks") / "templates"  # the project's own win
    inventory = Inventory.load(REPO / "inventories" / "example.yml")
    host = inventory.select("it-pc-0001.corp.example")[0]
    rendered = Renderer(templates).render_host(host, Mode.UPDATE, {})
    assert "CPUU.ini" in rendered.masked
