"""The Kerberos checks made before a wave (``cpuu_fleet.inputs.kerberos``) on hosts read from an
inventory: the missing extra is one line with the install command, a host reached by IP address
needs a name, and ``negotiate`` without Kerberos support says once that it means NTLM.

The ticket checks and the failures met at a host need a real KDC: ``tests/waves/test_kerberos_wave.py``.
A missing ``gssapi`` is played by making its import fail (``sys.modules[name] = None``), the way
Python itself reports a module that is not installed.
"""

from __future__ import annotations

import sys

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.inputs.kerberos import check_kerberos


def hosts_with(tree, variables: str, names=("pc-0001.corp.example", "pc-0002.corp.example")):
    text = "all:\n  vars:\n"
    text += "".join(f"    {line}\n" for line in variables.strip().splitlines())
    text += "  hosts:\n" + "".join(f"    {name}:\n" for name in names)
    inventory = Inventory.load(tree({"inv.yml": text}) / "inv.yml")
    return [inventory.host(name).connection for name in names]


@pytest.fixture
def without_gssapi(monkeypatch):
    monkeypatch.setitem(sys.modules, "gssapi", None)


def test_kerberos_without_the_extra_is_one_line_with_the_install_command(tree, without_gssapi):
    first, _ = hosts_with(tree, "ansible_winrm_transport: kerberos\nansible_password: pw")
    with pytest.raises(InputError) as caught:
        check_kerberos(first, {})
    text = str(caught.value)
    assert "\n" not in text
    assert "pc-0001.corp.example" in text
    assert "pip install 'cpuu-fleet[kerberos]'" in text and "libkrb5-dev" in text


def test_negotiate_without_kerberos_support_warns_once_that_it_means_ntlm(tree, without_gssapi):
    seen: dict = {}
    warnings = [
        w for c in hosts_with(tree, "ansible_psrp_auth: negotiate") for w in check_kerberos(c, seen)
    ]
    assert len(warnings) == 1
    assert "NTLM only" in warnings[0] and "cpuu-fleet[kerberos]" in warnings[0]


def test_ntlm_and_basic_are_not_looked_at(tree, without_gssapi):
    for auth in ("ntlm", "basic\nansible_psrp_protocol: https"):
        for connection in hosts_with(tree, f"ansible_psrp_auth: {auth}"):
            assert check_kerberos(connection, {}) == []


def test_an_ip_address_needs_a_name_for_the_service_principal(tree):
    pytest.importorskip("gssapi", reason="the kerberos extra is not installed")
    by_address = hosts_with(
        tree, "ansible_psrp_auth: kerberos\nansible_password: pw\nansible_host: 10.1.2.3"
    )[0]
    with pytest.raises(InputError, match=r"10\.1\.2\.3 is an IP address") as caught:
        check_kerberos(by_address, {})
    assert "ansible_psrp_negotiate_hostname_override" in str(caught.value)
    named = hosts_with(
        tree,
        "ansible_psrp_auth: kerberos\nansible_password: pw\nansible_host: 10.1.2.3\n"
        "ansible_psrp_negotiate_hostname_override: pc-0001.corp.example",
    )[0]
    assert check_kerberos(named, {}) == []
    ipv6 = hosts_with(
        tree, "ansible_psrp_auth: kerberos\nansible_password: pw\nansible_host: '::1'"
    )[0]
    with pytest.raises(InputError, match="is an IP address"):
        check_kerberos(ipv6, {})


def test_negotiate_with_kerberos_support_says_nothing(tree):
    pytest.importorskip("gssapi", reason="the kerberos extra is not installed")
    seen: dict = {}
    assert [
        w for c in hosts_with(tree, "ansible_psrp_auth: negotiate") for w in check_kerberos(c, seen)
    ] == []
