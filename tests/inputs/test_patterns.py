"""``--limit`` patterns with Ansible's grammar; results in inventory order; no silent misses."""

from __future__ import annotations

import codecs

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.inventory import Inventory

FLEET = """
all:
  children:
    wave1:
      hosts:
        it-pc-0001:
        it-pc-0002:
    wave2:
      children:
        site_paris:
          hosts:
            par-pc-0101:
            par-pc-0102:
            par-lt-0150:
    pilot:
      hosts:
        par-pc-0102:
        it-pc-0002:
"""


@pytest.fixture
def inv(tree):
    return Inventory.load(tree({"inv.yml": FLEET}) / "inv.yml")


def names(hosts):
    return [h.name for h in hosts]


ALL = ["it-pc-0001", "it-pc-0002", "par-pc-0101", "par-pc-0102", "par-lt-0150"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, ALL),
        ("all", ALL),
        ("*", ALL),
        ("par-pc-0101", ["par-pc-0101"]),
        ("wave2", ["par-pc-0101", "par-pc-0102", "par-lt-0150"]),  # a group with its children
        ("site_*", ["par-pc-0101", "par-pc-0102", "par-lt-0150"]),  # glob on group names
        ("par-pc-*", ["par-pc-0101", "par-pc-0102"]),  # glob on host names
        ("par-lt-0150:it-pc-0001", ["it-pc-0001", "par-lt-0150"]),  # union, inventory order
        ("par-lt-0150,it-pc-0001", ["it-pc-0001", "par-lt-0150"]),
        ("wave2:!par-lt-0150", ["par-pc-0101", "par-pc-0102"]),  # exclusion
        ("wave2:&pilot", ["par-pc-0102"]),  # intersection
        ("!wave1", ["par-pc-0101", "par-pc-0102", "par-lt-0150"]),  # only exclusions: from all
        ("!pilot:wave1", ["it-pc-0001"]),  # unions first, whatever the order
        ("~par-(pc|lt)-01[05]0$", ["par-lt-0150"]),  # regular expression (re.match)
        ("wave2[0]", ["par-pc-0101"]),  # subscripts, as Ansible
        ("wave2[-1]", ["par-lt-0150"]),
        ("wave2[0:1]", ["par-pc-0101", "par-pc-0102"]),
        ("wave2[1:]", ["par-pc-0102", "par-lt-0150"]),
        ("it-pc-000[2-9]", ["it-pc-0002"]),  # a glob character class, not a subscript
    ],
)
def test_pattern_forms(inv, pattern, expected):
    assert names(inv.select(pattern)) == expected


def test_limit_file_such_as_a_retry_file(inv, tmp_path):
    retry = tmp_path / "failed.retry"
    retry.write_text("par-lt-0150\n\n# comment\nit-pc-0001\n", encoding="utf-8")
    assert names(inv.select(f"@{retry}")) == ["it-pc-0001", "par-lt-0150"]
    assert names(inv.select(f"wave2:!@{retry}")) == ["par-pc-0101", "par-pc-0102"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-8-sig", "utf-16-be"])
def test_limit_file_written_on_windows(inv, tmp_path, encoding):
    # PowerShell 5's Out-File writes UTF-16 with a BOM; Notepad may add a UTF-8 BOM; CRLF.
    hosts = tmp_path / "hosts.txt"
    text = "par-lt-0150\r\nit-pc-0001\r\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    hosts.write_bytes(data)
    assert names(inv.select(f"@{hosts}")) == ["it-pc-0001", "par-lt-0150"]


def test_limit_file_that_is_not_text(inv, tmp_path):
    hosts = tmp_path / "hosts.txt"
    hosts.write_bytes(b"\x81\xfe\x00pc\n")
    with pytest.raises(InputError, match="limit file is not UTF-8"):
        inv.select(f"@{hosts}")


def test_limit_file_with_an_unknown_host_names_file_and_line(inv, tmp_path):
    retry = tmp_path / "failed.retry"
    retry.write_text("par-lt-0150\npar-pc-0999\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        inv.select(f"@{retry}")
    assert err.value.render().startswith(f"{retry}:2: host pattern 'par-pc-0999'")


def test_missing_limit_file(inv, tmp_path):
    with pytest.raises(InputError, match="limit file not found"):
        inv.select(f"@{tmp_path / 'nope.retry'}")


@pytest.mark.parametrize("pattern", ["wave9", "wave1:wave9", "wave1:!wave9", "nomatch-*", "~^zz"])
def test_a_term_that_matches_nothing_is_an_error(inv, pattern):
    with pytest.raises(InputError, match="matches no host or group"):
        inv.select(pattern)


def test_unknown_group_suggests_the_close_name(inv):
    with pytest.raises(InputError) as err:
        inv.select("Wave1")
    assert "did you mean 'wave1'" in err.value.message


def test_a_pattern_that_selects_nothing_is_an_error(inv):
    with pytest.raises(InputError, match="selects no hosts"):
        inv.select("wave1:&site_paris")


def test_subscript_out_of_range(inv):
    with pytest.raises(InputError, match="out of range"):
        inv.select("wave1[5]")
