"""Waves against a Kerberos-only lab and a real MIT KDC (issue 12): a whole play succeeds and the
lab's record shows Kerberos, never NTLM, for every logon, over HTTP (message encryption) and
HTTPS (channel binding); and the usual Kerberos failures are said clearly, up front where they
can be known before a host is touched, per host (``authentication``) where they cannot.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cpuu_fleet import journal as states
from cpuu_fleet.errors import InputError
from cpuu_fleet.lab.fleet import LabFleet
from cpuu_fleet.vocabulary import ErrorClass
from tests.support.waves import Wave, host_row, make_playbook

pytestmark = pytest.mark.slow


@pytest.fixture
def kerberos_wave(kdc_realm, tmp_path) -> Iterator[Any]:
    """``kerberos_wave(hosts, https=False)``: a Kerberos-only lab with its inventory; the realm's
    environment (KRB5_CONFIG, KRB5CCNAME, KRB5_KTNAME) is on for the whole test."""
    fleets: list[LabFleet] = []

    def start(hosts: int = 2, *, https: bool = False) -> Wave:
        fleet = LabFleet(
            hosts,
            auth="kerberos",
            realm=kdc_realm.realm,
            https=https,
            workdir=tmp_path / f"lab{len(fleets)}",
        )
        fleet.start()
        fleets.append(fleet)
        kdc_realm.add_hosts(host.name for host in fleet.hosts)
        return Wave(fleet, tmp_path / f"wave{len(fleets)}")

    with kdc_realm.environment():
        kdc_realm.kdestroy()
        try:
            yield start
        finally:
            for fleet in fleets:
                fleet.stop()


def _edit_inventory(wave: Wave, group_vars: dict[str, Any], hosts: dict[str, dict] | None = None):
    """Change the lab inventory as an operator would (a None value removes the variable)."""
    document = yaml.safe_load(wave.inventory_path.read_text(encoding="utf-8"))
    group = document["all"]["children"]["lab"]
    for name, value in group_vars.items():
        if value is None:
            group["vars"].pop(name, None)
        else:
            group["vars"][name] = value
    for host, variables in (hosts or {}).items():
        for name, value in variables.items():
            if value is None:
                group["hosts"][host].pop(name, None)
            else:
                group["hosts"][host][name] = value
    wave.inventory_path.write_text(yaml.safe_dump(document), encoding="utf-8")


def _assert_not_written(wave: Wave, secret: str) -> None:
    """``secret`` is in no journal, run log or report the wave wrote."""
    written = [path for path in wave.reports.rglob("*") if path.is_file()]
    assert written
    assert [path for path in written if secret.encode() in path.read_bytes()] == []


def _mechanisms(wave: Wave) -> set[tuple[str, bool]]:
    return {(logon.mechanism, logon.accepted) for _host, logon in wave.fleet.logons()}


@pytest.mark.parametrize("https", [False, True], ids=["http-encrypted", "https-cbt"])
def test_a_whole_play_succeeds_over_kerberos_only(kerberos_wave, https):
    wave = kerberos_wave(3, https=https)
    result = wave.run()
    assert set(result.summary.states.values()) == {states.SUCCEEDED}, result.summary.states
    logons = wave.fleet.logons()
    assert {host for host, _ in logons} == {host.name for host in wave.fleet.hosts}
    assert _mechanisms(wave) == {("kerberos", True)}
    _assert_not_written(wave, wave.fleet.password)


def test_a_ticket_from_kinit_serves_a_wave_without_a_password(kerberos_wave, kdc_realm):
    wave = kerberos_wave(2)
    _edit_inventory(wave, {"ansible_password": None})
    kdc_realm.kinit()
    result = wave.run()
    assert set(result.summary.states.values()) == {states.SUCCEEDED}, result.summary.states
    assert _mechanisms(wave) == {("kerberos", True)}


def test_no_ticket_is_said_before_any_host_is_touched(kerberos_wave):
    wave = kerberos_wave(2)
    _edit_inventory(wave, {"ansible_password": None})
    with pytest.raises(InputError, match="no Kerberos ticket") as caught:
        wave.run()
    assert "kinit" in str(caught.value)
    assert wave.fleet.logons() == []


def test_an_ip_address_without_a_name_is_said_before_any_host_is_touched(kerberos_wave):
    wave = kerberos_wave(2)
    host = wave.fleet.hosts[1]
    _edit_inventory(wave, {}, {host.name: {"ansible_psrp_negotiate_hostname_override": None}})
    with pytest.raises(InputError, match="is an IP address") as caught:
        wave.run()
    assert host.name in str(caught.value) and host.address in str(caught.value)
    assert wave.fleet.logons() == []


def test_an_unknown_service_principal_fails_that_host_only(kerberos_wave):
    wave = kerberos_wave(2)
    wrong, right = (host.name for host in wave.fleet.hosts)
    _edit_inventory(
        wave, {}, {wrong: {"ansible_psrp_negotiate_hostname_override": "pc-not-in-the-kdc"}}
    )
    result = wave.run()
    assert result.summary.states[right] == states.SUCCEEDED
    row, _files = host_row(wave, result.run_id, wrong)
    assert row["error_class"] == ErrorClass.AUTHENTICATION.value, row
    assert "unknown service principal host/pc-not-in-the-kdc@" in row["error_message"], row
    assert {host for host, _ in wave.fleet.logons()} == {right}
    _assert_not_written(wave, wave.fleet.password)


def _wait_until_expired(realm_ccache: Path) -> None:
    """Until the short ticket in the cache is past its end (the KDC gave it seconds to live)."""
    import gssapi

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if gssapi.Credentials(usage="initiate").lifetime == 0:
                return
        except gssapi.exceptions.ExpiredCredentialsError:
            return
        time.sleep(0.5)
    raise AssertionError(f"the ticket in {realm_ccache} did not expire")


def test_an_expired_ticket_is_said_up_front(kerberos_wave, kdc_realm):
    wave = kerberos_wave(1)
    _edit_inventory(wave, {"ansible_password": None})
    kdc_realm.kinit(lifetime="2s")
    _wait_until_expired(kdc_realm.ccache)
    with pytest.raises(InputError, match="ticket in the credential cache has expired"):
        wave.run()
    assert wave.fleet.logons() == []


@pytest.mark.parametrize("https", [False, True], ids=["http-encrypted", "https"])
def test_a_ticket_that_expires_during_the_wave_fails_hosts_clearly(kerberos_wave, kdc_realm, https):
    """A long wave outlives a short ticket. The play visits one host at a time and the first
    host's CPUU run outlasts the ticket. Over HTTP the first visit fails when the ticket ends
    (MIT refuses to seal with an expired context), over HTTPS it finishes (TLS protects the
    messages); the second host fails at connect. Each failure is ``authentication`` with the
    reason and the fix, never a traceback."""
    wave = kerberos_wave(2, https=https)
    for host in wave.fleet.hosts:
        host.workstation.cpuu.base_seconds = 8.0
        host.workstation.cpuu.per_profile_seconds = 0.0
    _edit_inventory(wave, {"ansible_password": None})
    kdc_realm.kinit(lifetime="5s")
    # Attached: the first visit holds its connection through CPUU's run (detached, the ticket
    # would simply have ended before the settling visit, which fails at connect like the second).
    result = wave.run(make_playbook(wave.payload, forks=1, timeout=30, attached=True))
    first, second = (host.name for host in wave.fleet.hosts)
    failed = [second] if https else [first, second]
    if https:
        assert result.summary.states[first] == states.SUCCEEDED, result.summary.states
    for name in failed:
        row, _files = host_row(wave, result.run_id, name)
        assert row["error_class"] == ErrorClass.AUTHENTICATION.value, row
        assert "Kerberos ticket expired" in row["error_message"], row
        assert "kinit" in row["error_message"], row


def test_clock_skew_fails_the_host_with_the_reason(kerberos_wave, kdc_realm):
    """The controller's Kerberos clock an hour off (see ``Realm.skew_cache_clock``): the real
    KDC refuses the service ticket, and the host says why and what to do."""
    wave = kerberos_wave(1)
    _edit_inventory(wave, {"ansible_password": None})
    kdc_realm.kinit()
    kdc_realm.skew_cache_clock(3600)
    result = wave.run()
    (host,) = (h.name for h in wave.fleet.hosts)
    row, _files = host_row(wave, result.run_id, host)
    assert row["error_class"] == ErrorClass.AUTHENTICATION.value, row
    assert "clock skew" in row["error_message"] and "sync the time" in row["error_message"], row
    assert wave.fleet.logons() == []


def test_the_cli_says_no_ticket_in_one_line_and_exits_2(kerberos_wave, cli, tmp_path):
    wave = kerberos_wave(1)
    _edit_inventory(wave, {"ansible_password": None})
    playbook = make_playbook(wave.payload)
    code, out, err = cli(
        "play", playbook.path, "-i", wave.inventory_path, "--reports", tmp_path / "r"
    )
    assert code == 2, out + err
    (line,) = err.splitlines()
    assert "no Kerberos ticket" in line and "kinit" in line
    assert wave.fleet.logons() == []


def test_a_ticket_ending_soon_is_a_warning_said_once(kerberos_wave, kdc_realm):
    wave = kerberos_wave(2)
    _edit_inventory(wave, {"ansible_password": None})
    kdc_realm.kinit(lifetime="20m")
    said: list[str] = []
    result = wave.run(warn=said.append)
    assert set(result.summary.states.values()) == {states.SUCCEEDED}, result.summary.states
    ticket_lines = [line for line in said if "Kerberos ticket" in line]
    assert len(ticket_lines) == 1, said
    assert kdc_realm.principal in ticket_lines[0] and "kinit -R" in ticket_lines[0]


def test_negotiate_in_the_inventory_logs_on_with_kerberos(kerberos_wave):
    """``negotiate`` (Ansible's default) prefers Kerberos where the controller can do it: the
    Kerberos-only lab accepts every logon, and its record shows no NTLM."""
    wave = kerberos_wave(2)
    _edit_inventory(wave, {"ansible_psrp_auth": "negotiate"})
    result = wave.run()
    assert set(result.summary.states.values()) == {states.SUCCEEDED}, result.summary.states
    assert _mechanisms(wave) == {("kerberos", True)}


def test_a_wrong_password_is_said_and_never_written(kerberos_wave, monkeypatch):
    wave = kerberos_wave(1)
    wrong = "Wr0ng-" + wave.fleet.password[::-1]
    monkeypatch.setenv("KERBEROS_TEST_PASSWORD", wrong)
    _edit_inventory(wave, {"ansible_password": "{{ lookup('env', 'KERBEROS_TEST_PASSWORD') }}"})
    result = wave.run()
    (host,) = (h.name for h in wave.fleet.hosts)
    row, _files = host_row(wave, result.run_id, host)
    assert row["error_class"] == ErrorClass.AUTHENTICATION.value, row
    assert "the KDC refused the password" in row["error_message"], row
    _assert_not_written(wave, wrong)
