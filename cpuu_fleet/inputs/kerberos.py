"""Kerberos from a Linux controller: what must hold before a wave, and what a failure means.

In a domain, inventories say ``ansible_winrm_transport: kerberos`` (or leave ``negotiate``, which
prefers Kerberos). pypsrp hands the logon to pyspnego, whose Kerberos side is the ``gssapi``
library over the system's libkrb5: the ``kerberos`` extra. Without it every host failed at
connect with an ImportError, and ``negotiate`` quietly became NTLM.

:func:`check_kerberos` runs for every host before any is touched (one line each, exit code 2):

* ``kerberos`` without the extra: the install command.
* A host reached by IP address: a Kerberos service principal is ``host/<name>``; the KDC has no
  principal for an address, so ask for a name (or ``ansible_psrp_negotiate_hostname_override``).
* No ticket: a host without a password logs on with the ticket in the credential cache
  (``KRB5CCNAME``; MIT also takes a client keytab from ``KRB5_CLIENT_KTNAME``). None, or an
  expired one, is said up front with ``kinit`` as the fix; one that ends within
  :data:`SHORT_TICKET_S` is a warning (a long wave would outlive it).

:func:`kerberos_reason` turns the MIT library's messages met at a host (clock skew, an unknown
service principal, an expired ticket, ...) into a reason an operator can act on; the host's
result is an ``authentication`` failure like any other logon failure.

Assumptions where MIT's and Microsoft's docs are silent for this use: the service class is
pypsrp's default ``host`` (``ansible_psrp_negotiate_service`` changes it; Windows maps HOST to
WSMAN and HTTP); the ticket check asks GSSAPI for the default initiator credential, which is what
pyspnego will use when no password is given; with a password, pyspnego gets its own ticket for
each connection and the cache is not read.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.connection import VARIABLES, ConnectionSettings

INSTALL_HINT = (
    "pip install 'cpuu-fleet[kerberos]' (builds gssapi: needs the Kerberos headers, "
    "Debian/Ubuntu: apt install libkrb5-dev krb5-user); see docs/kerberos.md"
)
SHORT_TICKET_S = 3600
"""A ticket with less life than this left draws a warning: long waves outlive it."""
_KRB5_MECH = "1.2.840.113554.1.2.2"


def gssapi_missing() -> str | None:
    """Why this controller cannot do Kerberos (None: the ``kerberos`` extra is there)."""
    try:
        import gssapi  # noqa: F401
    except ImportError as exc:
        return f"the Python gssapi library is not installed ({exc.name or exc})"
    return None


def check_kerberos(settings: ConnectionSettings, seen: dict[str, Any]) -> list[str]:
    """Refuse (:class:`InputError`) what cannot work for this host; return warnings, each once.

    ``seen`` is shared by every host of a play: the library and the ticket are looked at once.
    """
    where = f"host {settings.host}"
    warnings: list[str] = []
    if settings.auth == "negotiate":
        if "negotiate" not in seen:
            seen["negotiate"] = gssapi_missing()
            if seen["negotiate"]:
                warnings.append(
                    "ansible_psrp_auth negotiate: without Kerberos support this controller logs "
                    f"on with NTLM only; for Kerberos: {INSTALL_HINT}"
                )
        return warnings
    if settings.auth != "kerberos":
        return warnings
    if "library" not in seen:
        seen["library"] = gssapi_missing()
    if seen["library"]:
        raise InputError(f"kerberos auth needs the kerberos extra: {INSTALL_HINT}", where=where)
    if _is_address(settings.address) and not settings.negotiate_hostname_override:
        raise InputError(
            f"{settings.address} is an IP address: Kerberos needs the host's name for its "
            "service principal (host/NAME); use the name in ansible_host, or set "
            f"{VARIABLES['negotiate_hostname_override'][0]}",
            where=where,
        )
    if settings.password is None:
        if "ticket" not in seen:
            seen["ticket"] = _ticket_state()
        problem, warning = seen["ticket"]
        if problem:
            raise InputError(problem, where=where)
        if warning and not seen.get("ticket_warned"):
            seen["ticket_warned"] = True
            warnings.append(warning)
    return warnings


def _is_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    return True


def _ticket_state() -> tuple[str | None, str | None]:
    """(refusal, warning) for the default credential cache: no ticket, expired, or short."""
    import gssapi
    from gssapi.raw.misc import GSSError

    mech = gssapi.OID.from_int_seq(_KRB5_MECH)
    try:
        creds = gssapi.Credentials(usage="initiate", mechs=[mech])
        lifetime = creds.lifetime
        principal = str(creds.name)
    except gssapi.exceptions.ExpiredCredentialsError:
        return (
            "the Kerberos ticket in the credential cache has expired: renew it with kinit "
            "(see docs/kerberos.md for long waves)",
            None,
        )
    except GSSError:
        return (
            "no Kerberos ticket (no password for this host, and no ticket in the credential "
            "cache): run kinit USER@REALM first, or give a keytab (KRB5_CLIENT_KTNAME)",
            None,
        )
    if lifetime is not None and lifetime < SHORT_TICKET_S:
        until = time.strftime("%H:%M", time.localtime(time.time() + lifetime))
        return None, (
            f"the Kerberos ticket of {principal} ends at {until} ({lifetime // 60} min): hosts "
            "visited after that fail; renew it (kinit -R, or krenew/k5start) or use a keytab"
        )
    return None, None


# MIT libkrb5/GSSAPI message (any case) -> what the operator should know.
_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"clock skew too great", re.IGNORECASE),
        "clock skew: this controller's clock and the domain's differ by more than Kerberos "
        "allows (5 minutes by default): sync the time (chrony/ntp; w32tm on the DCs)",
    ),
    (
        re.compile(r"server (\S+) not found in kerberos database", re.IGNORECASE),
        "unknown service principal {0}: the KDC knows no such name; use the host's name as "
        "in the domain (FQDN), or fix ansible_psrp_negotiate_service / "
        "ansible_psrp_negotiate_hostname_override",
    ),
    (
        re.compile(r"context has expired", re.IGNORECASE),
        "the Kerberos ticket expired during the visit (over HTTP, message encryption ends with "
        "the ticket): renew it with kinit (kinit -R, krenew or a keytab for long waves, see "
        "docs/kerberos.md); --resume asks the host what became of a CPUU already started",
    ),
    (
        re.compile(
            r"credential has expired|credentials have expired|ticket expired", re.IGNORECASE
        ),
        "the Kerberos ticket expired: renew it with kinit (kinit -R, krenew or a keytab for "
        "long waves, see docs/kerberos.md) and retry the failed hosts",
    ),
    (
        re.compile(
            r"no kerberos credentials available|can't find client principal|no credentials",
            re.IGNORECASE,
        ),
        "no Kerberos ticket: run kinit USER@REALM (or give a password or keytab)",
    ),
    (
        re.compile(r"cannot (contact|find) (any )?kdc", re.IGNORECASE),
        "no KDC answered for the realm: check krb5.conf ([realms], dns_lookup_kdc) and the "
        "network to the domain controllers",
    ),
    (
        re.compile(r"preauthentication failed|decrypt integrity check failed", re.IGNORECASE),
        "the KDC refused the password (wrong password for the Kerberos user)",
    ),
    (
        re.compile(r"client \S+ not found in kerberos database", re.IGNORECASE),
        "unknown Kerberos user: check ansible_user (user@REALM)",
    ),
)


def kerberos_reason(exc: BaseException) -> str | None:
    """What a Kerberos failure means for an operator, from the library's own words; None when
    ``exc`` is not a Kerberos failure we know (the caller keeps its generic text)."""
    text = " ".join(str(exc).split())
    for pattern, reason in _REASONS:
        match = pattern.search(text)
        if match:
            return reason.format(*match.groups())
    return None
