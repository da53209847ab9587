"""Ansible's common filters and tests in inventory values and templates, as Ansible documents them."""

from __future__ import annotations

import json

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.hostvars import make_environment
from cpuu_fleet.inputs.inventory import Inventory
from tests.support.commands import run_subprocess


def render(text: str, **variables) -> str:
    return make_environment().from_string(text).render(**variables)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'pc-0042.corp.example' | regex_replace('\\\\.corp\\\\.example$', '') }}", "pc-0042"),
        ("{{ 'LYO-PC-1' | regex_replace('^lyo', 'par', ignorecase=True) }}", "par-PC-1"),
        ("{{ 'a-b-c' | regex_replace('-', '_', count=1) }}", "a_b-c"),
        ("{{ 'lyo-pc-17' | regex_replace('^(\\\\w+)-pc-(\\\\d+)$', '\\\\2@\\\\1') }}", "17@lyo"),
        ("{{ 'lyo-pc-17' | regex_search('pc-\\\\d+') }}", "pc-17"),
        (
            "{{ 'lyo-pc-17' | regex_search('^(\\\\w+)-pc-(\\\\d+)$', '\\\\2', '\\\\1') }}",
            "['17', 'lyo']",
        ),
        ("{{ 'x' | regex_search('y') is none }}", "True"),
        ("{{ 'a1b22' | regex_findall('\\\\d+') }}", "['1', '22']"),
        ("{{ 'a.b' | regex_escape }}", "a\\.b"),
        ("{{ true | ternary('on', 'off') }}", "on"),
        ("{{ none | ternary('on', 'off', 'unknown') }}", "unknown"),
        (
            "{{ {'a': {'x': 1}} | combine({'a': {'y': 2}}, recursive=True) }}",
            "{'a': {'x': 1, 'y': 2}}",
        ),
        ("{{ {'a': [1]} | combine({'a': [2]}, list_merge='append') }}", "{'a': [1, 2]}"),
        ("{{ {'k': 'v'} | dict2items }}", "[{'key': 'k', 'value': 'v'}]"),
        ("{{ [{'key': 'k', 'value': 'v'}] | items2dict }}", "{'k': 'v'}"),
        ("{{ [1, [2, [3, none]]] | flatten }}", "[1, 2, 3]"),
        ("{{ [1, [2, [3]]] | flatten(levels=1) }}", "[1, 2, [3]]"),
        ("{{ [1, 2] | union([2, 3]) }} {{ [1, 2] | intersect([2, 3]) }}", "[1, 2, 3] [2]"),
        (
            "{{ [1, 2] | difference([2]) }} {{ [1, 2] | symmetric_difference([2, 3]) }}",
            "[1] [1, 3]",
        ),
        ("{{ 'a,b' | split(',') }}", "['a', 'b']"),
        (
            "{{ 'C:\\\\CPUU\\\\cpuu.ini' | win_basename }} {{ '/a/b.txt' | basename }}",
            "cpuu.ini b.txt",
        ),
        ("{{ 'C:\\\\CPUU\\\\cpuu.ini' | win_dirname }}", "C:\\CPUU"),
        ("{{ 'secret' | b64encode }} {{ 'c2VjcmV0' | b64decode }}", "c2VjcmV0 secret"),
        ("{{ {'a': 1} | to_json }} {{ '{\"b\": 2}' | from_json }}", "{\"a\": 1} {'b': 2}"),
        ("{{ 'a: [1]' | from_yaml }}", "{'a': [1]}"),
        ("{{ 'it s' | quote }}", "'it s'"),
        ("{{ 'lyo-pc-1' is match('lyo') }} {{ 'lyo-pc-1' is match('pc') }}", "True False"),
        ("{{ 'lyo-pc-1' is search('pc') }} {{ 'x' is regex('X', ignorecase=True) }}", "True True"),
        ("{{ [1, 2] is subset([1, 2, 3]) }} {{ [1, 2] is contains(2) }}", "True True"),
    ],
)
def test_filter_and_test_give_what_ansible_documents(template, expected):
    assert render(template) == expected


def test_mandatory_names_what_is_missing():
    with pytest.raises(InputError, match="site code is required"):
        render("{{ site | mandatory('site code is required') }}")


def test_an_inventory_written_for_ansible_templates_with_its_filters(tree):
    root = tree(
        {
            "fleet.yml": (
                "all:\n"
                "  vars:\n"
                "    ansible_host: \"{{ inventory_hostname | regex_replace('^pc-', 'ws-') }}.corp\"\n"
                "    site: \"{{ 'lyon' if inventory_hostname is match('pc-0') else 'paris' }}\"\n"
                "  hosts:\n"
                "    pc-01:\n"
                "    pc-11:\n"
            )
        }
    )
    proc = run_subprocess("inventory", "list", "-i", "fleet.yml", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    assert rows["pc-01"]["connection"]["address"] == "ws-01.corp"
    assert rows["pc-11"]["connection"]["address"] == "ws-11.corp"
    inv = Inventory.load(root / "fleet.yml")
    assert inv.host("pc-01").scope(reveal=True)["site"] == "lyon"
    assert inv.host("pc-11").scope(reveal=True)["site"] == "paris"


def test_a_filter_we_do_not_have_is_named_with_the_variable(tree):
    root = tree(
        {"fleet.yml": 'all:\n  hosts:\n    pc-01:\n      ansible_host: "{{ x | ipaddr }}"\n'}
    )
    proc = run_subprocess("inventory", "list", "-i", "fleet.yml", "--json", cwd=root)
    assert proc.returncode != 0
    assert "No filter named 'ipaddr'" in proc.stderr
    assert "ansible_host" in proc.stderr
