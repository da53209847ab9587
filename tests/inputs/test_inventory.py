"""Reading Ansible inventories: nesting, group_vars/host_vars, precedence, order, bad input."""

from __future__ import annotations

import json

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.inventory import Inventory

NESTED = """
all:
  vars:
    level: all
    from_all: yes
  children:
    wave1:
      vars:
        level: wave1
      hosts:
        pc-0001:
        pc-0002:
          level: host-inline
    wave3:
      vars:
        level: wave3
      children:
        site_lyon:
          vars:
            level: site_lyon
          children:
            lyon_gerland:
              vars:
                level: lyon_gerland
              hosts:
                lyo-0301:
                lyo-0302:
"""


def test_nested_groups_to_any_depth_and_precedence_all_parent_child_host(tree):
    root = tree({"inv.yml": NESTED})
    inv = Inventory.load(root / "inv.yml")
    by_name = {h.name: h for h in inv.hosts}
    assert by_name["pc-0001"].vars["level"] == "wave1"
    assert by_name["pc-0002"].vars["level"] == "host-inline"
    assert by_name["lyo-0301"].vars["level"] == "lyon_gerland"
    assert by_name["lyo-0301"].vars["from_all"] is True
    assert by_name["lyo-0301"].groups == ["wave3", "site_lyon", "lyon_gerland"]
    assert inv.groups["lyon_gerland"].depth == 3
    assert inv.groups["site_lyon"].children == ["lyon_gerland"]


def test_hosts_keep_inventory_order(tree):
    root = tree(
        {
            "inv.yml": """
            all:
              hosts:
                zz-lonely:
              children:
                b_group:
                  hosts: {pc-9: , pc-1: }
                a_group:
                  hosts: {pc-5: , pc-9: }
            """
        }
    )
    inv = Inventory.load(root / "inv.yml")
    # Ansible's order inside a group: children before hosts; then file order.
    assert [h.name for h in inv.hosts] == ["pc-9", "pc-1", "pc-5", "zz-lonely"]
    assert inv.host("zz-lonely").groups == ["ungrouped"]


def test_group_vars_and_host_vars_files_and_folders_in_every_format(tree):
    root = tree(
        {
            "inv.yml": NESTED,
            "group_vars/all.yml": "from_file_all: 1\nlevel: all-file\n",
            "group_vars/wave3.yaml": "level: wave3-file\nwave3_only: true\n",
            "group_vars/site_lyon/10-connection.yml": "ansible_port: 5985\nlevel: lyon-dir-a\n",
            "group_vars/site_lyon/20-more.json": json.dumps({"level": "lyon-dir-b"}),
            "host_vars/lyo-0302.json": json.dumps({"level": "host-file"}),
            "host_vars/pc-0001": "level: host-file-noext\n",
        }
    )
    inv = Inventory.load(root / "inv.yml")
    lyo1, lyo2 = inv.host("lyo-0301"), inv.host("lyo-0302")
    assert lyo1.vars["level"] == "lyon-dir-b"  # the later file of a folder wins
    assert lyo1.vars["ansible_port"] == 5985
    assert lyo1.vars["wave3_only"] is True
    assert lyo1.vars["from_file_all"] == 1
    assert lyo2.vars["level"] == "host-file"
    assert inv.host("pc-0001").vars["level"] == "host-file-noext"
    # pc-0002's inline host var beats every group file.
    assert inv.host("pc-0002").vars["level"] == "host-inline"


def test_group_vars_file_of_all_beats_inline_child_vars_as_in_ansible(tree):
    """Ansible's documented order: inventory-file group vars < group_vars/all < group_vars/*."""
    root = tree({"inv.yml": NESTED, "group_vars/all.yml": "level: all-file\n"})
    inv = Inventory.load(root / "inv.yml")
    assert inv.host("pc-0001").vars["level"] == "all-file"
    root2 = tree({"group_vars/wave1.yml": "level: wave1-file\n"})
    assert Inventory.load(root2 / "inv.yml").host("pc-0001").vars["level"] == "wave1-file"


def test_inventory_as_json_file(tree):
    data = {"all": {"children": {"wave1": {"hosts": {"pc-1": {"x": 1}}, "vars": {"y": 2}}}}}
    root = tree({"inv.json": json.dumps(data)})
    host = Inventory.load(root / "inv.json").host("pc-1")
    assert host.vars == {"y": 2, "x": 1}
    assert host.groups == ["wave1"]


def test_inventory_folder_reads_every_file(tree):
    root = tree(
        {
            "fleet/a.yml": "wave1:\n  hosts: {pc-1: }\n",
            "fleet/b.yaml": "wave2:\n  hosts: {pc-2: }\n",
            "fleet/group_vars/wave2.yml": "site: paris\n",
        }
    )
    inv = Inventory.load(root / "fleet")
    assert [h.name for h in inv.hosts] == ["pc-1", "pc-2"]
    assert inv.host("pc-2").vars["site"] == "paris"


SIBLINGS = """
all:
  children:
    zeta:
      vars: {color: zeta}
      hosts: {pc-1: }
    alpha:
      vars: {color: alpha}
      hosts: {pc-1: }
    site:
      children:
        deep:
          vars: {color: deep}
          hosts: {pc-1: }
"""


def test_host_in_several_groups_deeper_wins_then_name(tree):
    root = tree({"inv.yml": SIBLINGS})
    host = Inventory.load(root / "inv.yml").host("pc-1")
    assert host.groups == ["alpha", "site", "zeta", "deep"]
    assert host.vars["color"] == "deep"
    root = tree({"inv.yml": SIBLINGS.replace("vars: {color: deep}", "vars: {}")})
    # Same depth: ordered by name, so 'zeta' (last) wins over 'alpha'.
    assert Inventory.load(root / "inv.yml").host("pc-1").vars["color"] == "zeta"


def test_ansible_group_priority_reorders_siblings(tree):
    text = SIBLINGS.replace("vars: {color: deep}", "vars: {}").replace(
        "vars: {color: alpha}", "vars: {color: alpha, ansible_group_priority: 10}"
    )
    root = tree({"inv.yml": text})
    assert Inventory.load(root / "inv.yml").host("pc-1").vars["color"] == "alpha"


def test_host_ranges_and_port_shorthand(tree):
    root = tree(
        {
            "inv.yml": """
            wave2:
              hosts:
                par-pc-[08:11].corp.example:
                lab-[a:c]:5985:
            """
        }
    )
    inv = Inventory.load(root / "inv.yml")
    names = [h.name for h in inv.hosts]
    assert names == [
        "par-pc-08.corp.example",
        "par-pc-09.corp.example",
        "par-pc-10.corp.example",
        "par-pc-11.corp.example",
        "lab-a",
        "lab-b",
        "lab-c",
    ]
    assert inv.host("lab-b").connection.port == 5985
    assert inv.host("lab-b").connection.protocol == "http"


def test_graph_like_ansible_inventory(tree):
    root = tree({"inv.yml": NESTED + "  hosts:\n    stray:\n"})
    assert Inventory.load(root / "inv.yml").graph().splitlines() == [
        "@all:",
        "  |--@ungrouped:",
        "  |  |--stray",
        "  |--@wave1:",
        "  |  |--pc-0001",
        "  |  |--pc-0002",
        "  |--@wave3:",
        "  |  |--@site_lyon:",
        "  |  |  |--@lyon_gerland:",
        "  |  |  |  |--lyo-0301",
        "  |  |  |  |--lyo-0302",
    ]


def test_yaml_syntax_error_names_file_and_line(tree):
    root = tree({"inv.yml": "all:\n  children:\n    wave1:\n      hosts: [pc-1\n    wave2:\n"})
    with pytest.raises(InputError) as err:
        Inventory.load(root / "inv.yml")
    assert str(root / "inv.yml") in str(err.value)
    assert err.value.line == 5
    assert "YAML syntax error" in err.value.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("all:\n  children:\n    wave1:\n      host:\n        pc-1:\n", 4, "unexpected key 'host'"),
        ("all:\n  hosts:\n    - pc-1\n", 2, "must be a mapping of host names"),
        ("all:\n  hosts:\n    ../../etc:\n", 3, "host name '../../etc' is not valid"),
        ("all:\n  hosts:\n    pc-1: {}\n    pc-1: {}\n", 4, "duplicate key 'pc-1'"),
        ("all:\n  hosts:\n    pc-1:\n      bad-name: 1\n", 4, "variable name 'bad-name'"),
    ],
)
def test_structural_mistakes_name_file_and_line(tree, text, line, words):
    root = tree({"inv.yml": text})
    with pytest.raises(InputError) as err:
        Inventory.load(root / "inv.yml")
    assert err.value.line == line
    assert words in err.value.message


def _alias_bomb() -> str:
    """A "billion laughs" inventory: nine levels of nine aliases, 10**9 values in ~600 bytes."""
    lines = ["all:", "  vars:", '    l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"    l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join([*lines, "  hosts:", "    pc-1:", ""])


@pytest.mark.timeout(20)
def test_a_yaml_alias_bomb_is_refused_with_one_line_naming_the_file(tree, cli):
    bomb = _alias_bomb()
    assert len(bomb) < 700
    root = tree({"inv.yml": bomb})
    code, out, err = cli("inventory", "list", "-i", root / "inv.yml")
    assert code == 2
    assert out == ""
    assert err.strip().splitlines() == [
        f"cpuu-fleet: error: {root / 'inv.yml'}: YAML aliases expand to more than 2,000,000 "
        "values or refer to themselves (an alias bomb?); write the values out, or share them "
        "through group vars"
    ]


@pytest.mark.timeout(20)
def test_an_alias_inside_its_own_anchor_is_refused(tree):
    root = tree({"inv.yml": "all:\n  vars:\n    loop: &a [1, *a]\n  hosts:\n    pc-1:\n"})
    with pytest.raises(InputError, match="refer to themselves") as err:
        Inventory.load(root / "inv.yml")
    assert str(root / "inv.yml") in str(err.value)


def test_ordinary_anchors_and_merge_keys_still_work(tree):
    root = tree(
        {
            "inv.yml": """
            all:
              hosts:
                pc-1: &office {site: paris, floor: 2}
                pc-2: {<<: *office, floor: 3}
                pc-3: *office
            """
        }
    )
    inv = Inventory.load(root / "inv.yml")
    assert [(h.vars["site"], h.vars["floor"]) for h in inv.hosts] == [
        ("paris", 2),
        ("paris", 3),
        ("paris", 2),
    ]


def test_group_cycle_is_an_error(tree):
    root = tree({"inv.yml": "a:\n  children:\n    b:\n      children:\n        a:\n"})
    with pytest.raises(InputError, match="cycle: a -> b -> a"):
        Inventory.load(root / "inv.yml")


def test_vars_file_that_is_not_a_mapping_and_vault_files(tree):
    root = tree({"inv.yml": NESTED, "group_vars/wave1.yml": "- a\n- b\n"})
    with pytest.raises(InputError, match="must be a mapping"):
        Inventory.load(root / "inv.yml")
    root = tree({"group_vars/wave1.yml": "$ANSIBLE_VAULT;1.1;AES256\n6162\n"})
    with pytest.raises(InputError, match="Vault"):
        Inventory.load(root / "inv.yml")


def test_group_vars_for_an_unknown_group_is_a_warning(tree):
    root = tree({"inv.yml": NESTED, "group_vars/wave9.yml": "x: 1\n"})
    inv = Inventory.load(root / "inv.yml")
    assert any("wave9" in w for w in inv.warnings)


def test_unsafe_values_are_not_templated(tree):
    root = tree(
        {"inv.yml": "all:\n  hosts:\n    pc-1:\n      note: !unsafe '{{ not a template }}'\n"}
    )
    host = Inventory.load(root / "inv.yml").host("pc-1")
    assert host.scope(reveal=False)["note"] == "{{ not a template }}"


def test_missing_inventory_file(tmp_path):
    with pytest.raises(InputError, match="inventory not found"):
        Inventory.load(tmp_path / "nope.yml")


def test_an_ini_inventory_without_extension_is_read(tree):
    root = tree({"hosts": "[wave1]\npc-1 ansible_host=10.0.0.1\n"})
    inv = Inventory.load(root / "hosts")
    assert inv.host("pc-1").groups == ["wave1"]
    assert inv.host("pc-1").vars["ansible_host"] == "10.0.0.1"


def test_names_differing_only_in_case_are_a_warning(tree):
    root = tree({"inv.yml": "all:\n  hosts:\n    PC-0001:\n    pc-0001:\n"})
    inv = Inventory.load(root / "inv.yml")
    assert len(inv.hosts) == 2
    assert any("differ only in case" in w for w in inv.warnings)
