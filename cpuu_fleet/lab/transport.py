"""The HTTP side of one simulated host: keep-alive, authentication, message encryption, faults.

Behaves as a Windows WinRM listener does for pypsrp 0.9.1:

* HTTP/1.1 keep-alive; an NTLM/Negotiate logon (and its sealing keys) belongs to the TCP
  connection, so the security context lives on the connection's handler.
* ``Basic`` (pre-emptive, only where the host allows it), ``Negotiate`` carrying raw NTLM or
  SPNEGO (pyspnego's acceptor, accounts from ``NTLM_USER_FILE``, see :mod:`.accounts`), channel
  binding (CBT) over HTTPS, certificate auth over HTTPS. A failed logon gets a fresh 401, never a
  dropped connection.
* Kerberos (where the host has a realm): pyspnego's acceptor with the service keys from the
  keytab named by ``KRB5_KTNAME`` (process-wide, like ``NTLM_USER_FILE``), inside ``Negotiate``
  or under Windows' own ``Kerberos`` scheme, with message encryption over HTTP and channel
  binding over HTTPS. A Kerberos-only host (``AuthPolicy.ntlm`` off) refuses a logon that
  Negotiate completed with NTLM. Every logon is recorded with its mechanism
  (:attr:`HostEndpoint.logons`): Negotiate falls back to NTLM silently, so only the server
  can tell which one a client really used.
* Message encryption over HTTP (``multipart/encrypted``); plain SOAP on an encryption-required
  listener (Windows ``AllowUnencrypted=false``) is refused with 401.
* MaxEnvelopeSize: a SOAP request over 500 KiB gets HTTP 413, which pypsrp reports as
  ``WinRMTransportError`` (Windows' client names it ERROR_WSMAN_HTTP_REQUEST_TOO_LARGE_STATUS,
  0x80338111). Assumption: the limit applies to the SOAP envelope after decryption, not to the
  slightly larger encrypted HTTP body (unverified on Windows; see ansible.windows#391).
* :class:`~cpuu_fleet.lab.contract.TransportFaults`: added latency per request, a connection
  dropped once after N bytes of Send requests, a per-host password.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import spnego
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pypsrp.encryption import WinRMEncryption
from spnego.channel_bindings import GssChannelBindings

from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.wsman import SERVER_MAX_ENVELOPE, WSManDispatcher

log = logging.getLogger(__name__)

CERT_AUTH_HEADER = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
"""Microsoft's User Principal Name otherName (szOID_NT_PRINCIPAL_NAME) in a certificate's SAN."""
_UTF8STRING = 0x0C
SOAP_CONTENT_TYPE = "application/soap+xml;charset=UTF-8"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
"""The MIME protocol of messages sealed after a logon under the ``Kerberos`` scheme."""
KEEP_ALIVE_IDLE_S = 120.0
"""Idle keep-alive connections are closed after this long (Windows' HTTP.sys idle timeout)."""


@dataclass
class AuthPolicy:
    """Which logons a listener accepts, like WinRM's ``Service/Auth`` and ``AllowUnencrypted``."""

    basic: bool = False
    negotiate: bool = True
    ntlm: bool = True
    """A Negotiate logon that ends in NTLM is accepted (off: Kerberos only, NTLM refused)."""
    kerberos: bool = False
    """The ``Kerberos`` scheme is offered beside ``Negotiate``, as Windows does in a domain."""
    certificate: bool = False
    allow_unencrypted: bool = False
    """Plain SOAP accepted after logon (always true in effect over HTTPS: TLS protects it)."""


@dataclass(frozen=True)
class Logon:
    """One completed Negotiate/Kerberos logon as the host saw it."""

    mechanism: str
    """What pyspnego's acceptor negotiated: ``kerberos`` or ``ntlm``."""
    principal: str
    accepted: bool


@dataclass
class HostEndpoint:
    """Everything one host's listener needs: who it is, who may log on, how it misbehaves."""

    name: str
    address: str
    port: int
    https: bool
    dispatcher: WSManDispatcher
    username: str
    password: str = field(repr=False)
    faults: TransportFaults = field(default_factory=TransportFaults)
    policy: AuthPolicy = field(default_factory=AuthPolicy)
    channel_bindings: GssChannelBindings | None = None
    """Set over HTTPS: the tls-server-end-point binding a client's NTLM token must carry."""
    cert_users: dict[str, str] = field(default_factory=dict)
    """Client-certificate UPN (SAN otherName) -> local user it maps to (certificate auth)."""
    realm: str | None = None
    """The Kerberos realm whose users may log on (None: no Kerberos logon is accepted)."""
    logons: list[Logon] = field(default_factory=list)
    """Every completed Negotiate/Kerberos logon, accepted or refused, in order."""
    _sent_bytes: int = 0
    _dropped: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted_password(self) -> str:
        return self.faults.password if self.faults.password is not None else self.password

    def principal_allowed(self, principal: str, mechanism: str = "ntlm") -> bool:
        """A principal proven by pyspnego: NTLM against the fleet password in NTLM_USER_FILE,
        Kerberos by a ticket for this host's service key (``user@REALM``, the fleet's user).

        A host playing "wrong password" (``faults.password`` set) refuses every NTLM logon: the
        process-wide account file only knows the fleet password. Basic logons there work with
        the host's own password."""
        if mechanism == "kerberos":
            user, _, realm = principal.rpartition("@")
            return (
                self.realm is not None
                and realm == self.realm
                and user.lower() == self.username.lower()
            )
        domain, _, user = principal.rpartition("\\")
        if user.lower() != self.username.lower() or domain:
            return False
        return self.faults.password is None

    def basic_allowed(self, user: str, password: str) -> bool:
        domain, _, name = user.rpartition("\\")
        if name.lower() != self.username.lower():
            return False
        if domain and domain.upper() != self.name.upper():
            return False
        return hmac.compare_digest(password.encode(), self.accepted_password.encode())

    def record_logon(self, mechanism: str, principal: str, accepted: bool) -> None:
        """Note which mechanism a connection's logon used (the witness for Kerberos tests)."""
        with self._lock:
            self.logons.append(Logon(mechanism, principal, accepted))
        log.info(
            "%s: %s logon %s for %s",
            self.name,
            mechanism,
            "accepted" if accepted else "refused",
            principal or "?",
        )

    def should_drop(self, send_bytes: int) -> bool:
        """Count Send bytes; True exactly once, when the configured threshold is crossed."""
        limit = self.faults.drop_after_send_bytes
        if limit is None:
            return False
        with self._lock:
            if self._dropped:
                return False
            self._sent_bytes += send_bytes
            if self._sent_bytes >= limit:
                self._dropped = True
                return True
        return False


class WSManRequestHandler(BaseHTTPRequestHandler):
    """One TCP connection to one host (``self.server`` is its :class:`HostEndpoint`)."""

    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = KEEP_ALIVE_IDLE_S
    server: HostEndpoint  # type: ignore[assignment]

    def setup(self) -> None:
        super().setup()
        self._ctx: Any = None
        self._ctx_done = False
        self._encryption: WinRMEncryption | None = None
        self._cert_user: str | None = None
        self._scheme = "Negotiate"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.server.name, format % args)

    # -- HTTP --------------------------------------------------------------------------

    def do_POST(self) -> None:
        endpoint = self.server
        if endpoint.faults.latency_s > 0:
            time.sleep(endpoint.faults.latency_s)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""

        if not self._authenticate(body):
            return

        content_type = self.headers.get("Content-Type", "")
        encrypted = content_type.startswith("multipart/encrypted")
        if encrypted:
            if self._encryption is None:
                self._reply(400, b"")
                return
            boundary = _boundary(content_type)
            try:
                soap = self._encryption.unwrap_message(body, boundary)
            except Exception:
                log.info("%s: undecryptable message", endpoint.name)
                self._reply(400, b"")
                return
        else:
            soap = body
            if soap and self._needs_encryption():
                # AllowUnencrypted=false: Windows refuses plain SOAP after an NTLM logon.
                self._reply_401()
                return

        if not soap:
            # pypsrp's empty POST that only runs the NTLM handshake before encrypting.
            self._reply(200, b"")
            return

        if b"/windows/shell/Send</" in soap[:2000] and endpoint.should_drop(len(soap)):
            log.info("%s: dropping the connection mid transfer (fault)", endpoint.name)
            self.close_connection = True
            self.connection.close()
            return

        if len(soap) > SERVER_MAX_ENVELOPE:
            self._reply(413, b"")
            return

        status, response = endpoint.dispatcher.handle(soap, self.client_address[0])
        if encrypted and self._encryption is not None:
            _, wrapped = self._encryption.wrap_message(response)
            self._reply(status, wrapped, content_type=_encrypted_type(self._encryption.protocol))
        else:
            self._reply(status, response, content_type=SOAP_CONTENT_TYPE)

    def _reply(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        if content_type and body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    # -- authentication ----------------------------------------------------------------

    def _needs_encryption(self) -> bool:
        endpoint = self.server
        return not endpoint.https and not endpoint.policy.allow_unencrypted

    def _reply_401(self, token: str | None = None) -> None:
        policy = self.server.policy
        headers = []
        if token:
            headers.append(("WWW-Authenticate", f"{self._scheme} {token}"))
        else:
            if policy.negotiate:
                headers.append(("WWW-Authenticate", "Negotiate"))
            if policy.kerberos:
                headers.append(("WWW-Authenticate", "Kerberos"))
            if policy.basic:
                headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        self._reply(401, b"", headers=headers)

    def _authenticate(self, body: bytes) -> bool:
        """True when the request may proceed; otherwise an answer was already sent."""
        endpoint = self.server
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme_l = scheme.lower()
        self._final_token = None

        if scheme_l == "basic" and endpoint.policy.basic:
            try:
                user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if endpoint.basic_allowed(user, password):
                return True
            self._reply_401()
            return False

        if scheme_l in ("negotiate", "ntlm") and endpoint.policy.negotiate and value:
            self._scheme = "Negotiate"
            return self._negotiate_step(value.strip())
        if scheme_l == "kerberos" and endpoint.policy.kerberos and value:
            self._scheme = "Kerberos"
            return self._negotiate_step(value.strip())

        if header == CERT_AUTH_HEADER and endpoint.policy.certificate and endpoint.https:
            if self._certificate_user():
                return True
            self._reply_401()
            return False

        if not header and self._ctx_done:
            return True  # a connection already authenticated by NTLM/Negotiate
        self._reply_401()
        return False

    def _negotiate_step(self, token_b64: str) -> bool:
        endpoint = self.server
        if self._ctx is None or self._ctx_done:
            self._ctx = spnego.server(
                protocol="negotiate",
                options=spnego.NegotiateOptions.wrapping_winrm,
                channel_bindings=endpoint.channel_bindings,
            )
            self._ctx_done = False
            self._encryption = None
        try:
            out = self._ctx.step(base64.b64decode(token_b64))
        except Exception as exc:
            log.info("%s: logon failed: %s", endpoint.name, type(exc).__name__)
            self._ctx = None
            self._reply_401()
            return False
        out_b64 = base64.b64encode(out).decode() if out else None
        if not self._ctx.complete:
            self._reply_401(out_b64)
            return False
        principal = self._ctx.client_principal or ""
        mechanism = self._ctx.negotiated_protocol or "unknown"
        allowed = (mechanism != "ntlm" or endpoint.policy.ntlm) and endpoint.principal_allowed(
            principal, mechanism
        )
        endpoint.record_logon(mechanism, principal, allowed)
        if not allowed:
            self._ctx = None
            self._reply_401()
            return False
        self._ctx_done = True
        self._final_token = out_b64
        if not endpoint.https:
            protocol = KERBEROS_PROTOCOL if self._scheme == "Kerberos" else SPNEGO_PROTOCOL
            self._encryption = WinRMEncryption(self._ctx, protocol)
        return True

    def _certificate_user(self) -> str | None:
        """The local user the TLS client certificate maps to, as Windows maps it: by a UPN in
        the certificate's SAN (never its subject CN), and only for a certificate that carries the
        clientAuth EKU. The TLS layer has already verified the chain against the lab CA."""
        getpeercert = getattr(self.connection, "getpeercert", None)
        der = getpeercert(binary_form=True) if getpeercert else None
        if not der:
            return None
        for upn in client_certificate_upns(der):
            if upn in self.server.cert_users:
                self._cert_user = self.server.cert_users[upn]
                return self._cert_user
        return None

    def end_headers(self) -> None:
        # Send the final SPNEGO token on the 200 that completes a logon (pypsrp verifies its
        # mechListMIC; without it auth="negotiate" fails with BadMICError).
        final = getattr(self, "_final_token", None)
        if final:
            self.send_header("WWW-Authenticate", f"{self._scheme} {final}")
            self._final_token = None
        super().end_headers()


def upn_other_name(upn: str) -> x509.OtherName:
    """A SAN entry holding ``upn`` as Windows writes it: otherName UPN, a DER UTF8String."""
    value = upn.encode("utf-8")
    if len(value) >= 128:  # short-form DER length only; a lab UPN is far shorter
        raise ValueError("UPN too long for a lab client certificate")
    return x509.OtherName(UPN_OID, bytes([_UTF8STRING, len(value)]) + value)


def client_certificate_upns(der: bytes) -> list[str]:
    """The UPNs in a DER client certificate's SAN; none when it lacks the clientAuth EKU, has
    no SAN or cannot be parsed (a client's certificate is input like any other)."""
    try:
        cert = x509.load_der_x509_certificate(der)
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return []
    upns = []
    for name in san.get_values_for_type(x509.OtherName):
        if name.type_id != UPN_OID:
            continue
        value = name.value
        # DER UTF8String with a short-form length; anything else is not a UPN this lab issued.
        if len(value) >= 2 and value[0] == _UTF8STRING and value[1] == len(value) - 2:
            try:
                upns.append(value[2:].decode("utf-8"))
            except UnicodeDecodeError:
                continue
    return upns


def _encrypted_type(protocol: str) -> str:
    """The Content-Type of a sealed reply: the MIME protocol the logon's scheme implies."""
    return f'multipart/encrypted;protocol="{protocol}";boundary="Encrypted Boundary"'


def _boundary(content_type: str) -> str:
    for part in content_type.split(";"):
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            return value.strip('"')
    return "Encrypted Boundary"
