"""Authentication, encryption and transport faults, as a pypsrp client meets them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID
from pypsrp.exceptions import AuthenticationError, WinRMTransportError
from pypsrp.wsman import WSMan

from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.lab.transport import client_certificate_upns
from tests.support.lab import client_for


def test_wrong_password_gets_authentication_error_over_basic(basic_fleet: LabFleet) -> None:
    with (
        client_for(basic_fleet, password="not-the-password") as client,
        pytest.raises(AuthenticationError),
    ):
        client.execute_ps("'x'")


def test_wrong_password_gets_authentication_error_over_ntlm(ntlm_fleet: LabFleet) -> None:
    with (
        client_for(ntlm_fleet, password="not-the-password") as client,
        pytest.raises(AuthenticationError),
    ):
        client.execute_ps("'x'")


def test_negotiate_auth_with_spnego_tokens_works(ntlm_fleet: LabFleet) -> None:
    with client_for(ntlm_fleet, auth="negotiate") as client:
        assert client.execute_ps("'spnego'")[0] == "spnego"


def test_https_requires_channel_binding(https_fleet: LabFleet) -> None:
    with (
        client_for(https_fleet, negotiate_send_cbt=False) as client,
        pytest.raises(AuthenticationError),
    ):
        client.execute_ps("'x'")
    with client_for(https_fleet) as client:
        assert client.execute_ps("'cbt'")[0] == "cbt"


def test_plain_soap_after_ntlm_is_refused_over_http(ntlm_fleet: LabFleet) -> None:
    # Windows' AllowUnencrypted=false: without message encryption nothing gets through.
    with client_for(ntlm_fleet, encryption="never") as client, pytest.raises(AuthenticationError):
        client.execute_ps("'x'")


def test_basic_is_refused_where_the_host_does_not_allow_it(ntlm_fleet: LabFleet) -> None:
    with (
        client_for(ntlm_fleet, auth="basic", encryption="never") as client,
        pytest.raises(AuthenticationError),
    ):
        client.execute_ps("'x'")


def test_certificate_auth_over_https(tmp_path: Path) -> None:
    with LabFleet(1, auth="certificate", https=True, workdir=tmp_path) as fleet:
        with client_for(fleet) as client:
            assert client.execute_ps("'by cert'")[0] == "by cert"
        with (
            pytest.raises(AuthenticationError),
            client_for(fleet, auth="ntlm", password="bad") as client,
        ):
            client.execute_ps("'x'")


def test_client_certificate_maps_by_its_upn_as_windows_does(tmp_path: Path) -> None:
    # Windows maps a client certificate to a local account by the UPN in its SAN and wants the
    # clientAuth EKU; a certificate naming the user only in its subject CN maps to nobody.
    with LabFleet(1, auth="certificate", https=True, workdir=tmp_path) as fleet:
        cert = x509.load_pem_x509_certificate(fleet.client_cert_path.read_bytes())
        assert client_certificate_upns(cert.public_bytes(Encoding.DER)) == ["labadmin@localhost"]
        assert (
            ExtendedKeyUsageOID.CLIENT_AUTH
            in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        )
    cn_only = trustme.CA().issue_cert("pc-0001", common_name="labadmin")
    cn_only_der = x509.load_pem_x509_certificate(cn_only.cert_chain_pems[0].bytes())
    assert client_certificate_upns(cn_only_der.public_bytes(Encoding.DER)) == []
    assert client_certificate_upns(b"not a certificate") == []


def test_oversized_envelope_is_refused_with_http_413(basic_fleet: LabFleet) -> None:
    host = basic_fleet.host("pc-0001")
    wsman = WSMan(**basic_fleet.client_kwargs(host))
    huge = "<s:Envelope xmlns:s='http://www.w3.org/2003/05/soap-envelope'>" + "x" * 600_000
    with pytest.raises(WinRMTransportError) as info:
        wsman.transport.send(huge.encode())
    assert info.value.code == 413
    wsman.close()


def test_fault_hosts(tmp_path: Path, local_file) -> None:
    faults = {
        "pc-0001": TransportFaults(listening=False),
        "pc-0002": TransportFaults(password="only-this-host-knows"),
        "pc-0003": TransportFaults(latency_s=0.05),
        "pc-0004": TransportFaults(drop_after_send_bytes=600_000),
    }
    with LabFleet(4, auth="basic", workdir=tmp_path, faults=faults) as fleet:
        with (
            client_for(fleet, "pc-0001", connection_timeout=5) as client,
            pytest.raises(requests.exceptions.ConnectionError),
        ):
            client.execute_ps("'x'")

        with client_for(fleet, "pc-0002") as client, pytest.raises(AuthenticationError):
            client.execute_ps("'x'")
        with client_for(fleet, "pc-0002", password="only-this-host-knows") as client:
            assert client.execute_ps("'own password'")[0] == "own password"

        with client_for(fleet, "pc-0003") as client:
            started = time.monotonic()
            client.execute_ps("'slow'")
            # execute_ps makes at least 5 requests (Create, Receive, Command, Receive, Delete)
            assert time.monotonic() - started >= 5 * 0.05

        src = local_file(2 * 1024 * 1024)
        with (
            client_for(fleet, "pc-0004") as client,
            pytest.raises(requests.exceptions.ConnectionError),
        ):
            client.copy(str(src), "C:\\Windows\\Temp\\big.bin")
        with client_for(fleet, "pc-0004") as client:  # a blip: the next connection works
            assert (
                client.copy(str(src), "C:\\Windows\\Temp\\big.bin") == "C:\\Windows\\Temp\\big.bin"
            )


@pytest.mark.parametrize(
    ("scenario", "error"),
    [("unreachable", requests.exceptions.ConnectionError), ("wrong_password", AuthenticationError)],
)
def test_scenario_faults_reach_the_client(tmp_path: Path, scenario: str, error: type) -> None:
    with LabFleet(2, scenario=scenario, auth="ntlm", workdir=tmp_path) as fleet:
        for host in fleet.hosts:
            with client_for(fleet, host.name, connection_timeout=5) as client, pytest.raises(error):
                client.execute_ps("'x'")


def test_the_fleet_password_stays_out_of_reprs_and_files(tmp_path: Path) -> None:
    fleet = LabFleet(
        1, auth="ntlm", workdir=tmp_path, password="S3cret-lab-pw!", username="reprcheck"
    )
    with fleet:
        host = fleet.hosts[0]
        assert "S3cret-lab-pw!" not in repr(host)
        assert "S3cret-lab-pw!" not in repr(fleet)
        user_file = Path(os.environ["NTLM_USER_FILE"])
        assert "S3cret-lab-pw!" in user_file.read_text()  # the acceptor needs it while serving
    if user_file.exists():  # other fleets of this process may still be serving
        assert "S3cret-lab-pw!" not in user_file.read_text()


def test_inventory_names_what_a_client_needs(tmp_path: Path) -> None:
    with LabFleet(3, auth="certificate", https=True, workdir=tmp_path) as fleet:
        inventory = yaml.safe_load(fleet.write_inventory(tmp_path / "inv.yml").read_text())
    lab = inventory["all"]["children"]["lab"]
    assert lab["vars"]["ansible_psrp_protocol"] == "https"
    assert lab["vars"]["ansible_port"] == 5986
    assert Path(lab["vars"]["ansible_psrp_ca_cert"]) == fleet.ca_cert_path
    assert lab["vars"]["ansible_psrp_certificate_pem"] == str(fleet.client_cert_path)
    assert "ansible_password" not in lab["vars"]
    assert [h["ansible_host"] for h in lab["hosts"].values()] == [h.address for h in fleet.hosts]
