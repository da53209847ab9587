"""The lab accepts Kerberos from a real MIT KDC (``kdc_realm``), and says which mechanism each
logon used: Negotiate falls back to NTLM without a word, so only the server side can tell.

Real pypsrp clients, real tickets (a password logon through pyspnego, or a ``kinit`` ticket in
the credential cache), message encryption over HTTP and channel binding over HTTPS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pypsrp.exceptions import AuthenticationError
from spnego.channel_bindings import GssChannelBindings

from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.lab.transport import KERBEROS_PROTOCOL, AuthPolicy
from tests.support.lab import client_for


def _fleet(kdc_realm, tmp_path_factory, **options) -> Iterator[LabFleet]:
    with kdc_realm.environment():
        fleet = LabFleet(
            2,
            auth="kerberos",
            realm=kdc_realm.realm,
            workdir=tmp_path_factory.mktemp("krb"),
            **options,
        )
        with fleet:
            kdc_realm.add_hosts(host.name for host in fleet.hosts)
            yield fleet


@pytest.fixture(scope="module")
def kerberos_fleet(kdc_realm, tmp_path_factory) -> Iterator[LabFleet]:
    yield from _fleet(kdc_realm, tmp_path_factory)


@pytest.fixture(scope="module")
def kerberos_https_fleet(kdc_realm, tmp_path_factory) -> Iterator[LabFleet]:
    yield from _fleet(kdc_realm, tmp_path_factory, https=True)


def _mechanisms(fleet: LabFleet, host: str, since: int = 0) -> list[tuple[str, bool]]:
    logons = [logon for name, logon in fleet.logons() if name == host]
    return [(logon.mechanism, logon.accepted) for logon in logons[since:]]


def _count(fleet: LabFleet, host: str) -> int:
    return len(_mechanisms(fleet, host))


@pytest.mark.parametrize("fleet_name", ["kerberos_fleet", "kerberos_https_fleet"])
def test_a_password_logon_runs_a_pipeline_over_kerberos(fleet_name, request, kdc_realm):
    fleet: LabFleet = request.getfixturevalue(fleet_name)
    before = _count(fleet, "pc-0001")
    with kdc_realm.environment():
        output, _streams, had_errors = client_for(fleet, "pc-0001").execute_ps("'over kerberos'")
    assert (output, had_errors) == ("over kerberos", False)
    assert _mechanisms(fleet, "pc-0001", before) == [("kerberos", True)]


def test_a_ticket_from_kinit_needs_no_password(kerberos_fleet, kdc_realm):
    with kdc_realm.environment():
        kdc_realm.kinit()
        before = _count(kerberos_fleet, "pc-0002")
        client = client_for(kerberos_fleet, "pc-0002", password=None)
        assert client.execute_ps("'from the cache'")[0] == "from the cache"
    assert _mechanisms(kerberos_fleet, "pc-0002", before) == [("kerberos", True)]


def test_negotiate_prefers_kerberos_where_the_client_has_it(kerberos_fleet, kdc_realm):
    before = _count(kerberos_fleet, "pc-0001")
    with kdc_realm.environment():
        client = client_for(kerberos_fleet, "pc-0001", auth="negotiate")
        assert client.execute_ps("'negotiated'")[0] == "negotiated"
    assert _mechanisms(kerberos_fleet, "pc-0001", before) == [("kerberos", True)]


def test_a_kerberos_only_host_refuses_ntlm_and_records_it(kerberos_fleet, kdc_realm):
    """The NTLM logon itself is good (the lab's NTLM account exists): the host refuses it for
    its mechanism, as a Kerberos-only listener does."""
    before = _count(kerberos_fleet, "pc-0002")
    with kdc_realm.environment():
        client = client_for(
            kerberos_fleet, "pc-0002", auth="ntlm", username=kerberos_fleet.username
        )
        with pytest.raises(AuthenticationError):
            client.execute_ps("'never'")
    assert _mechanisms(kerberos_fleet, "pc-0002", before) == [("ntlm", False)]


def test_an_ntlm_lab_records_the_silent_fallback(ntlm_fleet):
    """Without a realm, Negotiate ends in NTLM and the pipeline works: only the record tells."""
    before = _count(ntlm_fleet, "pc-0001")
    client = client_for(ntlm_fleet, "pc-0001", auth="negotiate")
    assert client.execute_ps("'fell back'")[0] == "fell back"
    assert _mechanisms(ntlm_fleet, "pc-0001", before) == [("ntlm", True)]


def test_https_checks_the_kerberos_channel_binding(kerberos_https_fleet, kdc_realm):
    """A client whose binding is not this TLS channel's (a relayed ticket) is refused."""
    endpoint = kerberos_https_fleet.host("pc-0002").endpoint
    good = endpoint.channel_bindings
    endpoint.channel_bindings = GssChannelBindings(
        application_data=b"tls-server-end-point:" + bytes(32)
    )
    try:
        with kdc_realm.environment(), pytest.raises(AuthenticationError):
            client_for(kerberos_https_fleet, "pc-0002").execute_ps("'relayed'")
    finally:
        endpoint.channel_bindings = good
    with kdc_realm.environment():
        assert client_for(kerberos_https_fleet, "pc-0002").execute_ps("'bound'")[0] == "bound"


def test_a_kerberos_lab_needs_a_realm(tmp_path):
    with pytest.raises(ValueError, match="realm"):
        LabFleet(1, auth="kerberos", workdir=tmp_path)


def test_the_kerberos_scheme_alone_seals_with_its_own_protocol(kerberos_fleet, kdc_realm):
    """A listener that offers only ``Kerberos`` (no ``Negotiate``): pypsrp logs on under that
    scheme and seals messages as ``HTTP-Kerberos-session-encrypted``; the lab answers alike."""
    endpoint = kerberos_fleet.host("pc-0001").endpoint
    offered = endpoint.policy
    endpoint.policy = AuthPolicy(negotiate=False, ntlm=False, kerberos=True)
    before = _count(kerberos_fleet, "pc-0001")
    try:
        with kdc_realm.environment():
            client = client_for(kerberos_fleet, "pc-0001")
            assert client.execute_ps("'sealed'")[0] == "sealed"
            assert client.wsman.transport.encryption.protocol == KERBEROS_PROTOCOL
    finally:
        endpoint.policy = offered
    assert _mechanisms(kerberos_fleet, "pc-0001", before) == [("kerberos", True)]
