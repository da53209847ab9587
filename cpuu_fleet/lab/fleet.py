"""A fleet of simulated Windows workstations on loopback addresses, served from this process.

``LabFleet`` is a context manager used by pytest fixtures and ``cpuu-fleet lab up``: it plans the
hosts (``scenarios.plan_fleet``), gives each its own address ``127.0.x.y`` (x, y from 1; port 5985
for HTTP, 5986 for HTTPS), makes the certificates, registers the NTLM accounts, starts one
:class:`~cpuu_fleet.lab.server.LabServer` and writes an Ansible inventory for the hosts.

NTLM accounts: pyspnego's acceptor reads them from the file named by the ``NTLM_USER_FILE``
environment variable, which is process-global. The lab therefore keeps ONE file per process
holding every lab account of every fleet alive in it, and sets the variable once; a fleet only
adds its lines (``:user:password`` for the fleet account, ``HOST:user:password`` for a host that
keeps its own password).

The fleet's own record (the fault matrix's witness): every start of CPUU on any of its
workstations is in :attr:`LabFleet.cpuu_starts` and, with ``launch_log``, one JSON line per start
in that file, written and flushed as it happens so that another process can follow it live.

Kerberos (``auth="kerberos"`` with a ``realm``): the hosts accept Kerberos only, with the service
keys of ``host/<name>`` from the keytab named by ``KRB5_KTNAME`` (the realm and its KDC are the
caller's: the tests start a real MIT KDC, ``tests/support/kdc.py``). The lab's hosts listen on
127.x addresses that have no names of their own (no /etc/hosts entries, no DNS), so clients
connect by address and name the service principal with ``negotiate_hostname_override`` (the
inventory's ``ansible_psrp_negotiate_hostname_override``): the host's inventory name.
:meth:`LabFleet.logons` says which mechanism each logon used.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import random
import secrets
import shutil
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from spnego.channel_bindings import GssChannelBindings

from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.dispatch import load_handlers
from cpuu_fleet.lab.mailprofiles import SOURCE_SERVER, TARGET_SERVER
from cpuu_fleet.lab.scenarios import plan_fleet
from cpuu_fleet.lab.server import LabServer, assert_loopback
from cpuu_fleet.lab.transport import AuthPolicy, HostEndpoint, Logon, upn_other_name
from cpuu_fleet.lab.workstation import CpuuStart, Workstation
from cpuu_fleet.lab.wsman import HostIdentity, WSManDispatcher

AUTHS = ("basic", "ntlm", "negotiate", "certificate")
KERBEROS = "kerberos"
"""Kerberos only (NTLM refused): needs a ``realm`` whose KDC knows ``host/<name>`` for each host."""
HTTP_PORT = 5985
HTTPS_PORT = 5986
PASSWORD_ENV = "CPUU_FLEET_LAB_PASSWORD"
MAX_HOSTS = 254 * 254


def host_address(index: int, block: int = 0) -> str:
    """The n-th host's loopback address: 127.<block>.x.y with x, y from 1."""
    x, y = divmod(index, 254)
    return f"127.{block}.{x + 1}.{y + 1}"


class _NtlmAccounts:
    """The process-wide NTLM_USER_FILE (see module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, tuple[str, int]] = {}
        self._path = Path(tempfile.gettempdir()) / f"cpuu-fleet-lab-ntlm-{os.getpid()}.txt"

    def add(self, username: str, password: str) -> None:
        """Register an account while a fleet uses it; the same name with another password
        while the first is alive is refused (one file serves every fleet of the process)."""
        with self._lock:
            key = username.lower()
            current = self._accounts.get(key)
            if current and current[0] != password:
                raise ValueError(
                    f"lab account {username!r} is already in use with another password in this "
                    "process; give this fleet another username"
                )
            self._accounts[key] = (password, (current[1] if current else 0) + 1)
            self._write()

    def remove(self, username: str) -> None:
        with self._lock:
            key = username.lower()
            password, count = self._accounts.get(key, ("", 0))
            if count <= 1:
                self._accounts.pop(key, None)
            else:
                self._accounts[key] = (password, count - 1)
            self._write()

    def _write(self) -> None:
        if not self._accounts:
            self._path.unlink(missing_ok=True)  # no lab password left lying around
            return
        text = "".join(f":{user}:{pw}\n" for user, (pw, _) in self._accounts.items())
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o600)
        os.replace(tmp, self._path)
        os.environ["NTLM_USER_FILE"] = str(self._path)


NTLM_ACCOUNTS = _NtlmAccounts()
DEFAULT_PASSWORD = secrets.token_urlsafe(12) + "a1!"
"""One generated password per process, so fleets alive together share the NTLM account."""


@dataclass
class LabHost:
    """One simulated workstation as a client sees it."""

    name: str
    address: str
    port: int
    workstation: Any
    faults: TransportFaults
    scenario: str
    endpoint: HostEndpoint


class LabFleet:
    """Simulated workstations speaking WS-Management/PSRP on 127.0.x.y (see module docstring)."""

    def __init__(
        self,
        hosts: int,
        scenario: str = "healthy",
        seed: int = 0,
        auth: str = "ntlm",
        https: bool = False,
        workdir: Path | None = None,
        latency_s: float | None = None,
        *,
        username: str = "labadmin",
        password: str | None = None,
        block: int | None = None,
        faults: Mapping[str, TransportFaults] | None = None,
        cpuu_seconds: float | None = None,
        launch_log: Path | None = None,
        realm: str | None = None,
        cpuu_spread: float = 0.0,
    ):
        if auth not in AUTHS and auth != KERBEROS:
            raise ValueError(f"unknown auth {auth!r}; use one of {', '.join(AUTHS)}")
        if auth == KERBEROS and not realm:
            raise ValueError("kerberos auth needs the realm whose KDC knows the hosts")
        if auth == "certificate" and not https:
            raise ValueError("certificate auth needs https")
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts must be between 1 and {MAX_HOSTS}")
        if cpuu_seconds is not None and cpuu_seconds < 0:
            raise ValueError("cpuu_seconds must be 0 or more")
        if not 0.0 <= cpuu_spread <= 1.0:
            raise ValueError("cpuu_spread must be between 0 and 1")
        self.auth = auth
        self.realm = realm
        self.https = https
        self.scenario = scenario
        self.seed = seed
        self.username = username
        self.password = password or DEFAULT_PASSWORD
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="cpuu-fleet-lab-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_cert_path = self.workdir / "lab-ca.pem"
        self.client_cert_path = self.workdir / "lab-client-cert.pem"
        self.client_key_path = self.workdir / "lab-client-key.pem"
        plans = plan_fleet(hosts, scenario, seed, self.workdir / "hosts")
        self._plans = plans
        self._latency = latency_s
        self._fault_overrides = dict(faults or {})
        """Per-host faults that replace the scenario's (tests, ad-hoc experiments)."""
        self._block = block
        self.hosts: list[LabHost] = []
        self._server: LabServer | None = None
        self.cpuu_seconds = cpuu_seconds
        """How long CPUU runs on every workstation (None: the model's own time per profile)."""
        self.cpuu_spread = cpuu_spread
        """With ``cpuu_seconds``: each workstation's time is drawn (seeded, per host) uniformly
        from ``cpuu_seconds`` × [1 - spread, 1 + spread], as real profiles differ in size."""
        self.launch_log = Path(launch_log) if launch_log is not None else None
        self.cpuu_starts: list[CpuuStart] = []
        """Every start of CPUU on the fleet's workstations, in order (see module docstring)."""
        self._starts_lock = threading.Lock()
        self._launch_log_file: TextIO | None = None
        for index, plan in enumerate(plans):
            self._watch(plan.workstation, random.Random(seed * 1_000_003 + index))

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> LabFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        load_handlers()  # the model's @register handlers, before any pipeline arrives
        self._open_launch_log()
        NTLM_ACCOUNTS.add(self.username, self.password)
        try:
            server, hosts, block = self._bind()
            if self.https:
                # The certificate names only the addresses actually taken (a handshake with
                # thousands of SANs would be slow).
                context, bindings = self._tls(block)
                server.ssl_context = context
                for host in hosts:
                    host.endpoint.channel_bindings = bindings
            server.start()
        except BaseException:
            NTLM_ACCOUNTS.remove(self.username)
            self._close_launch_log()
            raise
        self._server = server
        self.hosts = hosts

    def _bind(self) -> tuple[LabServer, list[LabHost], int]:
        """Take the first loopback block whose addresses are all free on this machine (other
        labs, e.g. concurrent test runs, may hold 127.0.x.y already)."""
        blocks = [self._block] if self._block is not None else range(0, 64)
        last_error: OSError | None = None
        for block in blocks:
            server = LabServer()
            hosts = self._build_hosts(block)
            try:
                for host in hosts:
                    if host.faults.listening:
                        server.add(host.endpoint)
                    else:
                        server.reserve(host.address, host.port)
            except OSError as exc:
                server.stop()
                if exc.errno != errno.EADDRINUSE:
                    raise
                last_error = exc
                continue
            return server, hosts, block
        raise RuntimeError(f"no free loopback block for the lab: {last_error}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            NTLM_ACCOUNTS.remove(self.username)
        self._close_launch_log()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what clients need ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return HTTPS_PORT if self.https else HTTP_PORT

    def host(self, name: str) -> LabHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a client process needs (the inventory reads the password)."""
        return {PASSWORD_ENV: self.password}

    def client_kwargs(self, host: LabHost | str) -> dict[str, Any]:
        """pypsrp ``Client``/``WSMan`` keyword arguments that reach ``host`` as configured."""
        lab_host = self.host(host) if isinstance(host, str) else host
        kwargs: dict[str, Any] = {
            "server": lab_host.address,
            "port": lab_host.port,
            "username": self.username,
            "password": self.password,
            "ssl": self.https,
            "auth": self.auth,
        }
        if self.https:
            kwargs["cert_validation"] = str(self.ca_cert_path)
        if self.auth == "basic" and not self.https:
            kwargs["encryption"] = "never"
        if self.auth == "certificate":
            kwargs.pop("password")
            kwargs["certificate_pem"] = str(self.client_cert_path)
            kwargs["certificate_key_pem"] = str(self.client_key_path)
        if self.auth == KERBEROS:
            kwargs["username"] = self.principal
            kwargs["negotiate_hostname_override"] = lab_host.name
        return kwargs

    @property
    def principal(self) -> str:
        """The fleet user's name as a client logs on with it (``user@REALM`` for Kerberos)."""
        return f"{self.username}@{self.realm}" if self.auth == KERBEROS else self.username

    def logons(self) -> list[tuple[str, Logon]]:
        """Every completed Negotiate/Kerberos logon on the fleet's hosts: (host, logon)."""
        return [(host.name, logon) for host in self.hosts for logon in list(host.endpoint.logons)]

    def write_inventory(self, path: Path, group: str = "lab", waves: int | None = None) -> Path:
        """An Ansible YAML inventory with psrp connection variables for every host."""
        path = Path(path)
        group_vars: dict[str, Any] = {
            "ansible_connection": "psrp",
            "ansible_port": self.port,
            "ansible_user": self.principal,
            "ansible_password": "{{ lookup('env', '" + PASSWORD_ENV + "') }}",
            "ansible_psrp_protocol": "https" if self.https else "http",
            "ansible_psrp_auth": self.auth,
            "ansible_psrp_message_encryption": "never" if self.auth == "basic" else "auto",
            # Where the lab's profiles point (``mailprofiles``): what ``cpuu-fleet audit`` matches.
            "cpuu_source_servers": [SOURCE_SERVER],
            "cpuu_target_servers": [TARGET_SERVER],
        }
        if self.https:
            group_vars["ansible_psrp_ca_cert"] = str(self.ca_cert_path)
        if self.auth == "certificate":
            del group_vars["ansible_password"]
            group_vars["ansible_psrp_certificate_pem"] = str(self.client_cert_path)
            group_vars["ansible_psrp_certificate_key_pem"] = str(self.client_key_path)
        entries: dict[str, dict[str, Any]] = {
            h.name: {"ansible_host": h.address} for h in self.hosts
        }
        if self.auth == KERBEROS:
            for name, entry in entries.items():
                entry["ansible_psrp_negotiate_hostname_override"] = name
        group_body: dict[str, Any] = {"vars": group_vars}
        if waves:
            names = list(entries)
            size = -(-len(names) // waves)
            group_body["children"] = {
                f"wave{i + 1}": {"hosts": {n: entries[n] for n in names[i * size : (i + 1) * size]}}
                for i in range(waves)
            }
        else:
            group_body["hosts"] = entries
        document = {"all": {"children": {group: group_body}}}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        return path

    def cpuu_start_counts(self) -> dict[str, int]:
        """How many times CPUU started on each workstation of the fleet (0 where it never did)."""
        with self._starts_lock:
            counts = Counter(start.host for start in self.cpuu_starts)
        return {plan.name: counts.get(plan.name, 0) for plan in self._plans}

    def cpuu_peaks(self) -> dict[str, int]:
        """The most CPUU processes that ran at one time on each workstation (0: none ran), from
        each workstation's own record of CPUU starts and ends."""
        return {host.name: host.workstation.cpuu_peak for host in self.hosts}

    def summary(self) -> dict[str, int]:
        """Hosts per scenario."""
        counts: dict[str, int] = {}
        for host in self.hosts:
            counts[host.scenario] = counts.get(host.scenario, 0) + 1
        return counts

    # -- internals -----------------------------------------------------------------------

    def _watch(self, workstation: Workstation, draw: random.Random) -> None:
        """Record the workstation's CPUU starts here, and give CPUU the fleet's run time."""
        workstation.on_cpuu_start = self._record_start
        if self.cpuu_seconds is not None:
            # The emulator's run time is base + per profile; a set time is all base.
            factor = 1.0 + self.cpuu_spread * (2.0 * draw.random() - 1.0)
            workstation.cpuu.base_seconds = self.cpuu_seconds * factor
            workstation.cpuu.per_profile_seconds = 0.0

    def _record_start(self, start: CpuuStart) -> None:
        with self._starts_lock:
            self.cpuu_starts.append(start)
            if self._launch_log_file is not None:
                self._launch_log_file.write(json.dumps(start.as_dict()) + "\n")
                self._launch_log_file.flush()  # a reader in another process sees it now

    def _open_launch_log(self) -> None:
        """Open the launch log for appending (a restarted lab adds to the same record)."""
        if self.launch_log is None or self._launch_log_file is not None:
            return
        self._launch_log_file = self.launch_log.open("a", encoding="utf-8")

    def _close_launch_log(self) -> None:
        with self._starts_lock:
            if self._launch_log_file is not None:
                self._launch_log_file.close()
                self._launch_log_file = None

    def _policy(self) -> AuthPolicy:
        if self.auth == "basic":
            return AuthPolicy(basic=True, negotiate=True, allow_unencrypted=True)
        if self.auth == "certificate":
            return AuthPolicy(negotiate=True, certificate=True, allow_unencrypted=True)
        if self.auth == KERBEROS:
            return AuthPolicy(negotiate=True, ntlm=False, kerberos=True, allow_unencrypted=False)
        return AuthPolicy(negotiate=True, allow_unencrypted=False)

    def _build_hosts(self, block: int) -> list[LabHost]:
        hosts = []
        for index, plan in enumerate(self._plans):
            address = host_address(index, block)
            assert_loopback(address)
            faults = self._fault_overrides.get(plan.name, plan.faults)
            if self._latency is not None:
                faults = replace(faults, latency_s=self._latency)
            workstation = plan.workstation
            # The WinRM account's profile exists, as after its first logon: sessions start in
            # its Documents folder.
            workstation.fs.mkdir(f"C:\\Users\\{self.username}\\Documents")
            identity = HostIdentity(machine=address, owner=f"{plan.name.upper()}\\{self.username}")
            dispatcher = WSManDispatcher(identity, workstation)
            endpoint = HostEndpoint(
                name=plan.name,
                address=address,
                port=self.port,
                https=self.https,
                dispatcher=dispatcher,
                username=self.username,
                password=self.password,
                faults=faults,
                policy=self._policy(),
                cert_users={client_upn(self.username): self.username},
                realm=self.realm,
            )
            hosts.append(
                LabHost(plan.name, address, self.port, workstation, faults, plan.scenario, endpoint)
            )
        return hosts

    def _tls(self, block: int) -> tuple[ssl.SSLContext, GssChannelBindings]:
        """A trustme CA (written where the inventory's ansible_psrp_ca_cert points), one
        server certificate whose SANs are the addresses the fleet took, and the client
        certificate for certificate auth (see :func:`issue_client_cert`)."""
        ca = trustme.CA(organization_name="cpuu-fleet lab")
        names = ["localhost", *(host_address(i, block) for i in range(len(self._plans)))]
        server_cert = ca.issue_cert(*names)
        ca.cert_pem.write_to_path(str(self.ca_cert_path))
        cert_pem, key_pem = issue_client_cert(ca, self.username)
        self.client_cert_path.write_bytes(cert_pem)
        self.client_key_path.write_bytes(key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        ca.configure_trust(context)
        context.verify_mode = ssl.CERT_OPTIONAL
        der = x509.load_pem_x509_certificate(server_cert.cert_chain_pems[0].bytes())
        digest = hashlib.sha256(der.public_bytes(Encoding.DER)).digest()
        bindings = GssChannelBindings(application_data=b"tls-server-end-point:" + digest)
        return context, bindings


def client_upn(username: str) -> str:
    """The UPN a local account's client certificate carries. Windows maps a client certificate
    to a local account by the UPN in its SAN (``WSMan:\\localhost\\ClientCertificate`` with
    ``-Subject user@localhost``, as Ansible's WinRM guide sets it up); the lab does the same."""
    return f"{username}@localhost"


def issue_client_cert(ca: trustme.CA, username: str) -> tuple[bytes, bytes]:
    """A client certificate (PEM) and its key (PEM, unencrypted) for ``username``, signed by
    ``ca``: what WinRM certificate auth needs (a SAN otherName UPN and the clientAuth EKU).

    Built with cryptography's public x509 API because trustme's ``issue_cert`` cannot add an
    otherName, and a certificate without any SAN is refused by current cryptography ("general_names
    must be a non-empty list").
    """
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, username)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([upn_other_name(client_upn(username))]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(Encoding.PEM), key_pem
