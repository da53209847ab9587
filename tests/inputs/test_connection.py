"""WinRM settings from Ansible's variable names, with Ansible's defaults, fit for real pypsrp."""

from __future__ import annotations

import pytest
from pypsrp.wsman import WSMan

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.connection import check_timeouts
from cpuu_fleet.inputs.credentials import Secret
from cpuu_fleet.inputs.inventory import Inventory


def host_with(tree, variables: str):
    text = "all:\n  hosts:\n    pc-0001.corp.example:\n"
    if variables.strip():
        text += "".join(f"      {line}\n" for line in variables.strip().splitlines())
    return Inventory.load(tree({"inv.yml": text}) / "inv.yml").host("pc-0001.corp.example")


def test_ansible_defaults(tree):
    conn = host_with(tree, "").connection
    assert (conn.address, conn.port, conn.protocol) == ("pc-0001.corp.example", 5986, "https")
    assert conn.auth == "negotiate"
    assert conn.cert_validation is True and conn.ca_cert is None
    assert (conn.connection_timeout, conn.read_timeout, conn.operation_timeout) == (30, 30, 20)
    assert conn.message_encryption == "auto"
    assert conn.reconnection_retries == 0
    assert conn.configuration_name == "Microsoft.PowerShell"
    assert conn.max_envelope_size == 153600
    assert conn.user is None and conn.password is None


def test_http_protocol_defaults_to_port_5985_and_port_5985_implies_http(tree):
    assert host_with(tree, "ansible_psrp_protocol: http").connection.port == 5985
    assert host_with(tree, "ansible_port: 5985").connection.protocol == "http"
    assert host_with(tree, "ansible_port: 443").connection.protocol == "https"


def test_every_ansible_variable_is_read(tree, monkeypatch):
    monkeypatch.setenv("WINRM_PW", "Winrm-Pass-1")
    conn = host_with(
        tree,
        """
ansible_host: 127.0.3.4
ansible_port: "15986"
ansible_user: 'CORP\\svc'
ansible_password: "{{ lookup('env', 'WINRM_PW') }}"
ansible_psrp_protocol: https
ansible_psrp_auth: ntlm
ansible_psrp_cert_validation: ignore
ansible_psrp_ca_cert: /etc/ca.pem
ansible_psrp_connection_timeout: 5
ansible_psrp_read_timeout: 45
ansible_psrp_operation_timeout: 40
ansible_psrp_message_encryption: always
ansible_psrp_reconnection_retries: 3
ansible_psrp_configuration_name: PowerShell.7
ansible_psrp_max_envelope_size: 512000
""",
    ).connection
    assert conn.address == "127.0.3.4" and conn.port == 15986
    assert conn.user == "CORP\\svc"
    assert conn.auth == "ntlm" and conn.cert_validation is False and conn.ca_cert == "/etc/ca.pem"
    assert (conn.connection_timeout, conn.read_timeout, conn.operation_timeout) == (5, 45, 40)
    assert conn.message_encryption == "always"
    assert conn.reconnection_retries == 3
    assert conn.configuration_name == "PowerShell.7"
    assert conn.max_envelope_size == 512000
    assert isinstance(conn.password, Secret)
    assert "Winrm-Pass-1" not in repr(conn)
    kwargs = conn.pypsrp_kwargs()
    assert kwargs["password"] == "Winrm-Pass-1"
    assert kwargs["cert_validation"] is False
    wsman = WSMan(conn.address, **kwargs)  # real pypsrp accepts every keyword (no connection yet)
    assert wsman.transport.endpoint == "https://127.0.3.4:15986/wsman"
    assert wsman.max_envelope_size == 512000


def test_ca_bundle_is_passed_as_cert_validation_when_validating(tree):
    conn = host_with(tree, "ansible_psrp_ca_cert: /etc/corp-ca.pem").connection
    assert conn.pypsrp_kwargs()["cert_validation"] == "/etc/corp-ca.pem"


def test_connection_values_may_be_templates(tree):
    conn = host_with(
        tree,
        'site_domain: lyon.corp.example\nansible_host: "{{ inventory_hostname_short }}.{{ site_domain }}"',
    ).connection
    assert conn.address == "pc-0001.lyon.corp.example"


@pytest.mark.parametrize(
    ("variables", "words"),
    [
        ("ansible_port: abc", "ansible_port: 'abc' is not a whole number"),
        ("ansible_port: 70000", "not a TCP port"),
        ("ansible_psrp_auth: digest", "ansible_psrp_auth: 'digest' is not one of"),
        ("ansible_psrp_cert_validation: maybe", "is not 'validate' or 'ignore'"),
        ("ansible_psrp_read_timeout: 20", "must be greater than ansible_psrp_operation_timeout"),
        ("ansible_psrp_protocol: ftp", "ansible_psrp_protocol: 'ftp' is not one of"),
        ("ansible_psrp_protocol: http\nansible_psrp_auth: basic", "cannot encrypt messages"),
        ("ansible_psrp_auth: certificate", "certificate auth needs ansible_psrp_certificate_pem"),
    ],
)
def test_bad_values_name_the_host_and_variable(tree, variables, words):
    with pytest.raises(InputError) as err:
        _ = host_with(tree, variables).connection
    assert words in err.value.message
    assert err.value.where == "host pc-0001.corp.example"


def test_basic_over_http_is_accepted_with_explicit_opt_out(tree):
    conn = host_with(
        tree,
        "ansible_psrp_protocol: http\nansible_psrp_auth: basic\nansible_psrp_message_encryption: never",
    ).connection
    assert WSMan(conn.address, **conn.pypsrp_kwargs()).transport.endpoint.startswith("http://")


def test_an_inventory_written_for_the_winrm_plugin_works_too(tree):
    conn = host_with(
        tree,
        """
ansible_connection: winrm
ansible_winrm_scheme: http
ansible_winrm_transport: [ntlm]
ansible_winrm_server_cert_validation: ignore
ansible_winrm_read_timeout_sec: 70
ansible_winrm_operation_timeout_sec: 60
ansible_winrm_path: /wsman
""",
    ).connection
    assert (conn.protocol, conn.port, conn.auth) == ("http", 5985, "ntlm")
    assert conn.cert_validation is False
    assert (conn.read_timeout, conn.operation_timeout, conn.path) == (70, 60, "wsman")


def test_a_host_that_is_not_reached_over_winrm_is_refused(tree):
    with pytest.raises(InputError, match="ansible_connection: 'ssh': cpuu-fleet reaches"):
        _ = host_with(tree, "ansible_connection: ssh").connection


def test_read_timeout_must_exceed_operation_timeout():
    check_timeouts(30, 20, "host pc-1")
    with pytest.raises(InputError, match=r"pc-1.*read_timeout"):
        check_timeouts(20, 20, "host pc-1")
