"""How to reach one workstation over WinRM, read from Ansible's own variable names.

An existing Ansible inventory for the ``psrp`` connection plugin works unchanged: the names,
aliases and defaults below are those of ``ansible.builtin.psrp`` (HTTPS on 5986, or 5985 with
``http``; negotiate auth; certificate validation on; timeouts 30/30/20 seconds). A value that
cannot be used is an :class:`~cpuu_fleet.errors.InputError` naming the host and the variable.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.credentials import MASK, Secret
from cpuu_fleet.inputs.hostvars import bool_word
from cpuu_fleet.redact import mask_url_passwords

AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
ENCRYPTIONS = ("auto", "always", "never")
# Auth protocols that can encrypt WinRM messages themselves (pypsrp's list).
_ENCRYPTING_AUTHS = ("negotiate", "ntlm", "kerberos", "credssp")

# Each setting, with the variable names that feed it, first one wins: the psrp plugin's names,
# then the winrm plugin's (an inventory written for ``ansible_connection: winrm`` works too).
VARIABLES: dict[str, tuple[str, ...]] = {
    "address": ("ansible_psrp_host", "ansible_winrm_host", "ansible_host"),
    "port": ("ansible_psrp_port", "ansible_winrm_port", "ansible_port"),
    "protocol": ("ansible_psrp_protocol", "ansible_winrm_scheme"),
    "user": ("ansible_psrp_user", "ansible_winrm_user", "ansible_user"),
    "password": ("ansible_password", "ansible_winrm_pass", "ansible_winrm_password"),
    "auth": ("ansible_psrp_auth", "ansible_winrm_transport"),
    "cert_validation": ("ansible_psrp_cert_validation", "ansible_winrm_server_cert_validation"),
    "ca_cert": (
        "ansible_psrp_ca_cert",
        "ansible_psrp_cert_trust_path",
        "ansible_winrm_ca_trust_path",
    ),
    "connection_timeout": ("ansible_psrp_connection_timeout", "ansible_winrm_connection_timeout"),
    "read_timeout": ("ansible_psrp_read_timeout", "ansible_winrm_read_timeout_sec"),
    "operation_timeout": ("ansible_psrp_operation_timeout", "ansible_winrm_operation_timeout_sec"),
    "message_encryption": ("ansible_psrp_message_encryption", "ansible_winrm_message_encryption"),
    "reconnection_retries": ("ansible_psrp_reconnection_retries",),
    "reconnection_backoff": ("ansible_psrp_reconnection_backoff",),
    "configuration_name": ("ansible_psrp_configuration_name",),
    "max_envelope_size": ("ansible_psrp_max_envelope_size",),
    "path": ("ansible_psrp_path", "ansible_winrm_path"),
    "proxy": ("ansible_psrp_proxy",),
    "ignore_proxy": ("ansible_psrp_ignore_proxy",),
    "certificate_pem": ("ansible_psrp_certificate_pem", "ansible_winrm_cert_pem"),
    "certificate_key_pem": ("ansible_psrp_certificate_key_pem", "ansible_winrm_cert_key_pem"),
    "negotiate_service": ("ansible_psrp_negotiate_service",),
    "negotiate_hostname_override": ("ansible_psrp_negotiate_hostname_override",),
    "negotiate_delegate": ("ansible_psrp_negotiate_delegate",),
}
# The winrm plugin's transport names that differ from psrp's auth names.
_WINRM_TRANSPORTS = {"plaintext": "basic", "ssl": "basic"}
# ansible_connection values that mean WinRM; anything else (ssh, local...) is not for cpuu-fleet.
WINRM_CONNECTIONS = ("psrp", "winrm", "ansible.builtin.psrp", "ansible.builtin.winrm")


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything pypsrp needs to open a WinRM connection to one host. Safe to print."""

    host: str
    address: str
    port: int
    protocol: str
    user: str | None
    password: Secret | None = field(repr=False, compare=False)
    auth: str = "negotiate"
    cert_validation: bool = True
    ca_cert: str | None = None
    connection_timeout: float = 30
    read_timeout: float = 30
    operation_timeout: int = 20
    message_encryption: str = "auto"
    reconnection_retries: int = 0
    reconnection_backoff: float = 2.0
    configuration_name: str = "Microsoft.PowerShell"
    max_envelope_size: int = 153600
    path: str = "wsman"
    proxy: str | None = field(default=None, repr=False)
    """May hold ``user:password@``: kept out of the repr, masked in :meth:`describe`."""
    ignore_proxy: bool = False
    certificate_pem: str | None = None
    certificate_key_pem: str | None = None
    negotiate_service: str | None = None
    negotiate_hostname_override: str | None = None
    negotiate_delegate: bool | None = None

    def __post_init__(self) -> None:
        check_timeouts(self.read_timeout, self.operation_timeout, f"host {self.host}")

    @property
    def ssl(self) -> bool:
        return self.protocol == "https"

    def pypsrp_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pypsrp.wsman.WSMan(self.address, **kwargs)``.

        The password is revealed here (resolving its lookup now); the dict must never be logged.
        With certificate validation on and a CA bundle, ``cert_validation`` is the bundle's path,
        as pypsrp (through requests) expects.
        """
        kwargs: dict[str, Any] = {
            "port": self.port,
            "ssl": self.ssl,
            "path": self.path,
            "auth": self.auth,
            "username": self.user,
            "password": self.password.reveal() if self.password is not None else None,
            "cert_validation": (self.ca_cert or True) if self.cert_validation else False,
            "connection_timeout": self.connection_timeout,
            "read_timeout": self.read_timeout,
            "operation_timeout": self.operation_timeout,
            "encryption": self.message_encryption,
            "reconnection_retries": self.reconnection_retries,
            "reconnection_backoff": self.reconnection_backoff,
            "max_envelope_size": self.max_envelope_size,
            "proxy": mask_url_passwords(self.proxy) if self.proxy else None,
        }
        if self.proxy:
            kwargs["proxy"] = self.proxy
        if self.ignore_proxy:
            kwargs["no_proxy"] = True
        if self.auth == "certificate":
            kwargs["certificate_pem"] = self.certificate_pem
            kwargs["certificate_key_pem"] = self.certificate_key_pem
        if self.negotiate_service:
            kwargs["negotiate_service"] = self.negotiate_service
        if self.negotiate_hostname_override:
            kwargs["negotiate_hostname_override"] = self.negotiate_hostname_override
        if self.negotiate_delegate is not None:
            kwargs["negotiate_delegate"] = self.negotiate_delegate
        return kwargs

    def describe(self) -> dict[str, Any]:
        """The settings as plain data for listings: the password shows as ``********`` or None."""
        return {
            "address": self.address,
            "port": self.port,
            "protocol": self.protocol,
            "user": self.user,
            "password": MASK if self.password is not None else None,
            "auth": self.auth,
            "cert_validation": self.cert_validation,
            "ca_cert": self.ca_cert,
            "connection_timeout": self.connection_timeout,
            "read_timeout": self.read_timeout,
            "operation_timeout": self.operation_timeout,
            "message_encryption": self.message_encryption,
            "reconnection_retries": self.reconnection_retries,
            "configuration_name": self.configuration_name,
            "max_envelope_size": self.max_envelope_size,
            "proxy": mask_url_passwords(self.proxy) if self.proxy else None,
        }


def check_local_files(settings: ConnectionSettings, seen: dict[str, str | None]) -> None:
    """The controller-side files a host's connection needs exist and can be used, before any run.

    Without this a missing or unreadable CA bundle (``ansible_psrp_ca_cert``) made every host
    "unreachable" or "certificate" failed, one by one, after a connection each; and a missing
    client certificate every host "authentication". A CA *file* is loaded as a PEM bundle (what
    requests will do with it); a CA *folder* (``cert_trust_path``, c_rehash style) must be a
    readable directory. ``seen`` caches each path's verdict: a thousand hosts share one bundle.
    """
    wanted: list[tuple[str, str, str]] = []
    if settings.ssl and settings.cert_validation and settings.ca_cert:
        wanted.append((VARIABLES["ca_cert"][0], settings.ca_cert, "ca"))
    if settings.auth == "certificate":
        for setting in ("certificate_pem", "certificate_key_pem"):
            value = getattr(settings, setting)
            if value:
                wanted.append((VARIABLES[setting][0], value, "file"))
    for variable, value, kind in wanted:
        key = f"{kind}:{value}"
        if key not in seen:
            seen[key] = _local_file_problem(Path(value), kind)
        problem = seen[key]
        if problem is not None:
            raise InputError(f"{variable}: {value}: {problem}", where=f"host {settings.host}")


def _local_file_problem(path: Path, kind: str) -> str | None:
    """Why ``path`` cannot serve (``kind``: ``ca`` bundle or folder, or a plain ``file``)."""
    if path.is_dir():
        if kind == "ca" and os.access(path, os.R_OK | os.X_OK):
            return None
        return "is a folder, not a file" if kind != "ca" else "is a folder that cannot be read"
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        return "not found on this controller"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if kind == "ca":
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError, OSError) as exc:
            return f"is not a PEM bundle of CA certificates ({exc})"
    return None


class _Reader:
    """Reads one setting from a host's (templated) variables, naming the variable in errors."""

    def __init__(self, host: str, get: Callable[[str], Any], defined: Callable[[str], bool]):
        self.host = host
        self._get = get
        self._defined = defined

    def find(self, setting: str) -> tuple[str | None, Any]:
        for name in VARIABLES[setting]:
            if self._defined(name):
                return name, self._get(name)
        return None, None

    def fail(self, variable: str, message: str) -> InputError:
        return InputError(f"{variable}: {message}", where=f"host {self.host}")

    def text(self, setting: str, default: str | None = None) -> str | None:
        name, value = self.find(setting)
        if name is None or value is None or value == "":
            return default
        if isinstance(value, (dict, list)):
            raise self.fail(name, f"expected a string, got {type(value).__name__}")
        return str(value)

    def choice(self, setting: str, choices: tuple[str, ...], default: str) -> str:
        name, value = self.find(setting)
        if name is None or value is None or value == "":
            return default
        text = str(value).strip().lower()
        if text not in choices:
            raise self.fail(name, f"{value!r} is not one of {', '.join(choices)}")
        return text

    def number(self, setting: str, default: float, *, integer: bool, minimum: float) -> Any:
        name, value = self.find(setting)
        if name is None or value is None or value == "":
            return default
        if isinstance(value, bool):
            raise self.fail(name, f"expected a number, got {value!r}")
        try:
            number = int(str(value).strip()) if integer else float(str(value).strip())
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise self.fail(name, f"{value!r} is not {kind}") from None
        if number < minimum:
            raise self.fail(name, f"{value!r} must be at least {minimum:g}")
        if not integer and float(number).is_integer():
            number = int(number)
        return number

    def flag(self, setting: str, default: bool | None) -> bool | None:
        name, value = self.find(setting)
        if name is None or value is None or value == "":
            return default
        parsed = bool_word(value)
        if parsed is None:
            raise self.fail(name, f"{value!r} is not a boolean (true/false)")
        return parsed


def check_timeouts(read_timeout: float, operation_timeout: float, where: str) -> None:
    """``read_timeout`` must exceed ``operation_timeout``: a Receive long-poll may legitimately
    take the whole operation timeout, and a read timeout below it would cut every long-poll off
    (pypsrp issue 182). Refused as operator input, before anything connects. The one check:
    settings built from variables or by hand, and a session's raw pypsrp arguments."""
    if read_timeout <= operation_timeout:
        raise InputError(
            f"ansible_psrp_read_timeout ({read_timeout:g}) must be greater than "
            f"ansible_psrp_operation_timeout ({operation_timeout:g})",
            where=where,
        )


DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(ConnectionSettings) if f.default is not MISSING
}
"""Each setting's default, from :class:`ConnectionSettings` itself: stated once."""

_NUMBERS: tuple[tuple[str, bool, float], ...] = (
    # setting (ansible_psrp_<setting>), whole number?, smallest value accepted
    ("connection_timeout", False, 0.001),
    ("read_timeout", False, 0.001),
    ("operation_timeout", True, 1),
    ("reconnection_retries", True, 0),
    ("reconnection_backoff", False, 0),
    ("max_envelope_size", True, 1024),
)
"""The numeric settings, read alike: a typo'd or too small value is an error naming the variable."""


def settings_from_vars(
    host: str,
    get: Callable[[str], Any],
    defined: Callable[[str], bool],
    password: Callable[[str | None], Secret | None],
) -> ConnectionSettings:
    """Build the settings of ``host`` from its variables.

    ``get`` returns a templated, non-secret value; ``defined`` says whether the host sets a
    variable; ``password`` turns the password variable's name (or None) into a lazy Secret.
    """
    read = _Reader(host, get, defined)
    if defined("ansible_connection"):
        plugin = str(get("ansible_connection")).strip().lower()
        if plugin not in WINRM_CONNECTIONS:
            raise read.fail(
                "ansible_connection",
                f"{plugin!r}: cpuu-fleet reaches workstations over WinRM only (psrp or winrm); "
                "leave this host out with --limit",
            )
    address = read.text("address", host) or host

    protocol_name, _ = read.find("protocol")
    port_name, _ = read.find("port")
    if protocol_name is not None:
        protocol = read.choice("protocol", ("https", "http"), "https")
        port = read.number("port", 5986 if protocol == "https" else 5985, integer=True, minimum=1)
    else:
        # Ansible: without a protocol, port 5985 means http and anything else https.
        port = read.number("port", 5986, integer=True, minimum=1)
        protocol = "http" if port == 5985 else "https"
    if port > 65535:
        raise read.fail(port_name or "ansible_port", f"{port} is not a TCP port")

    cert_name, cert_value = read.find("cert_validation")
    if cert_name is None or cert_value in (None, ""):
        cert_validation = DEFAULTS["cert_validation"]
    elif isinstance(cert_value, bool):
        cert_validation = cert_value
    else:
        text = str(cert_value).strip().lower()
        parsed = {"validate": True, "ignore": False}.get(text, bool_word(text))
        if parsed is None:
            raise read.fail(cert_name, f"{cert_value!r} is not 'validate' or 'ignore'")
        cert_validation = parsed

    auth_name, auth_value = read.find("auth")
    if (
        isinstance(auth_value, list) and auth_value
    ):  # winrm's transport may be a list: take the first
        auth_value = auth_value[0]
    if auth_name is None or auth_value in (None, ""):
        auth = DEFAULTS["auth"]
    else:
        auth = _WINRM_TRANSPORTS.get(
            str(auth_value).strip().lower(), str(auth_value).strip().lower()
        )
        if auth not in AUTHS:
            raise read.fail(auth_name, f"{auth_value!r} is not one of {', '.join(AUTHS)}")
    encryption = read.choice("message_encryption", ENCRYPTIONS, DEFAULTS["message_encryption"])
    numbers = {
        setting: read.number(setting, DEFAULTS[setting], integer=integer, minimum=minimum)
        for setting, integer, minimum in _NUMBERS
    }
    check_timeouts(numbers["read_timeout"], numbers["operation_timeout"], f"host {host}")
    if auth not in _ENCRYPTING_AUTHS:
        if protocol == "http" and encryption != "never":
            raise InputError(
                f"ansible_psrp_auth {auth} over http cannot encrypt messages: use https, an "
                "encrypting auth (negotiate, ntlm, kerberos, credssp), or set "
                "ansible_psrp_message_encryption: never",
                where=f"host {host}",
            )
        if encryption == "always":
            raise InputError(
                f"ansible_psrp_message_encryption always needs an encrypting auth, not {auth}",
                where=f"host {host}",
            )
    if auth == "certificate":
        if protocol != "https":
            raise InputError("certificate auth needs https", where=f"host {host}")
        for setting in ("certificate_pem", "certificate_key_pem"):
            if read.text(setting) is None:
                raise InputError(
                    f"certificate auth needs {VARIABLES[setting][0]}", where=f"host {host}"
                )

    password_name, _ = read.find("password")
    return ConnectionSettings(
        host=host,
        address=address,
        port=int(port),
        protocol=protocol,
        user=read.text("user"),
        password=password(password_name),
        auth=auth,
        cert_validation=bool(cert_validation),
        ca_cert=read.text("ca_cert"),
        message_encryption=encryption,
        configuration_name=read.text("configuration_name") or DEFAULTS["configuration_name"],
        **numbers,
        path=(read.text("path") or DEFAULTS["path"]).lstrip("/") or DEFAULTS["path"],
        proxy=read.text("proxy"),
        ignore_proxy=bool(read.flag("ignore_proxy", DEFAULTS["ignore_proxy"])),
        certificate_pem=read.text("certificate_pem"),
        certificate_key_pem=read.text("certificate_key_pem"),
        negotiate_service=read.text("negotiate_service"),
        negotiate_hostname_override=read.text("negotiate_hostname_override"),
        negotiate_delegate=read.flag("negotiate_delegate", None),
    )
