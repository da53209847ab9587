"""A real MIT Kerberos realm for the tests: Debian's ``krb5kdc`` on loopback, in a temp folder.

One realm per test session (the ``kdc`` fixture in ``tests/conftest.py``): ``kdb5_util create``
makes the database, ``kadmin.local`` the user and the hosts' service principals (with their keys
in a keytab), and ``krb5kdc`` serves it on 127.0.0.1 at a free port. Nothing outside the temp
folder is read or written: ``KRB5_CONFIG``, ``KRB5_KDC_PROFILE``, ``KRB5CCNAME`` and
``KRB5_KTNAME`` point into it, and only while a test asks for :meth:`Realm.environment`
(/etc/krb5.conf and /etc/hosts are never touched).

Host names: the lab's hosts listen on 127.x addresses with no names (no /etc/hosts, no DNS). The
krb5.conf turns off every name lookup (``rdns``, ``dns_canonicalize_hostname``, DNS for the KDC
and realm), and clients connect by address while naming the service principal with
``negotiate_hostname_override``: ``host/<inventory name>@REALM``, which is what a KDC must know.

The tests skip, saying why, where the KDC programs or the ``gssapi`` library (the ``kerberos``
extra) are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

from tests.support.ports import free_port

REALM = "LAB.TEST"
USER = "labadmin"
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
PROGRAMS = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")


def find_program(name: str) -> str | None:
    """A Kerberos program on PATH or in the sbin folders Debian puts the KDC's tools in."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def missing() -> str | None:
    """Why a real realm cannot be made here (None: it can)."""
    try:
        import gssapi  # noqa: F401
    except ImportError:
        return "no gssapi (pip install -c constraints.txt -e '.[kerberos]', needs libkrb5-dev)"
    absent = [name for name in PROGRAMS if find_program(name) is None]
    if absent:
        return f"no {', '.join(absent)} (Debian: krb5-kdc krb5-admin-server krb5-user)"
    return None


class Realm:
    """One MIT realm served by a ``krb5kdc`` child process (see module docstring)."""

    def __init__(self, root: Path, *, realm: str = REALM, user: str = USER, password: str):
        self.root = root
        self.realm = realm
        self.user = user
        self.password = password
        self.port = free_port()
        self.krb5_conf = root / "krb5.conf"
        self.kdc_conf = root / "kdc.conf"
        self.keytab = root / "services.keytab"
        self.ccache = root / "ccache"
        self._process: subprocess.Popen[bytes] | None = None
        self._hosts: set[str] = set()

    @property
    def principal(self) -> str:
        return f"{self.user}@{self.realm}"

    @property
    def env(self) -> dict[str, str]:
        """What a client and the lab's acceptor need; the defaults of this machine are not read."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": f"FILE:{self.ccache}",
            "KRB5_KTNAME": f"FILE:{self.keytab}",
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._write_config()
        self._run("kdb5_util", "create", "-s", "-r", self.realm, "-P", os.urandom(12).hex())
        self._kadmin(f"addprinc -pw {self.password} {self.user}")
        kdc = find_program("krb5kdc")
        assert kdc is not None
        log = (self.root / "krb5kdc.out").open("wb")
        self._process = subprocess.Popen(
            [kdc, "-n", "-r", self.realm, "-P", str(self.root / "kdc.pid")],
            env=self._child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_listening()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    # -- principals and tickets -------------------------------------------------------------

    def add_hosts(self, names: Iterable[str]) -> None:
        """Service principals ``host/<name>`` (what pypsrp asks for) with keys in the keytab."""
        for name in names:
            if name in self._hosts:
                continue
            spn = f"host/{name}"
            self._kadmin(f"addprinc -randkey {spn}")
            self._kadmin(f"ktadd -k {self.keytab} {spn}")
            self._hosts.add(name)

    def kinit(self, *, lifetime: str | None = None) -> None:
        """A TGT for the user in the realm's credential cache, the password on stdin (as an
        operator types it); ``lifetime`` is kinit's ``-l`` (e.g. ``4s``)."""
        args = [find_program("kinit") or "kinit"]
        if lifetime:
            args += ["-l", lifetime]
        subprocess.run(
            [*args, self.principal],
            input=(self.password + "\n").encode(),
            env=self._child_env(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def skew_cache_clock(self, seconds: int) -> None:
        """Make the controller's Kerberos clock ``seconds`` off from the KDC's, for real.

        MIT keeps the offset it measured between this machine's clock and the KDC's in the
        credential cache's header (file format 0x0504, tag 1 "DeltaTime": 32-bit seconds and
        microseconds, big-endian) and stamps every later request with local time plus that
        offset (``kdc_timesync``, on by default). Writing an hour there is what a controller
        whose clock is an hour off looks like to the KDC, which refuses it as it would: "Clock
        skew too great". The system clock cannot be moved from a test; this needs no root."""
        data = self.ccache.read_bytes()
        if data[:2] != b"\x05\x04":
            raise RuntimeError("not an MIT v4 file credential cache")
        length = struct.unpack(">H", data[2:4])[0]
        header = struct.pack(">HHii", 1, 8, seconds, 0)
        self.ccache.write_bytes(
            data[:2] + struct.pack(">H", len(header)) + header + data[4 + length :]
        )

    def kdestroy(self) -> None:
        """No ticket any more (an operator who never ran kinit)."""
        self.ccache.unlink(missing_ok=True)

    def environment(self) -> contextlib.AbstractContextManager[dict[str, str]]:
        """Point this process's Kerberos library (client and the lab's acceptor) at the realm
        while the block runs; the variables are put back as they were after it."""
        return mock.patch.dict(os.environ, self.env)

    # -- internals ------------------------------------------------------------------------

    def _write_config(self) -> None:
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"  default_realm = {self.realm}\n"
            "  dns_lookup_kdc = false\n"
            "  dns_lookup_realm = false\n"
            "  rdns = false\n"
            "  dns_canonicalize_hostname = false\n"
            "  udp_preference_limit = 1\n"
            "[realms]\n"
            f"  {self.realm} = {{\n"
            f"    kdc = 127.0.0.1:{self.port}\n"
            "  }\n",
            encoding="utf-8",
        )
        self.kdc_conf.write_text(
            "[kdcdefaults]\n"
            f"  kdc_listen = 127.0.0.1:{self.port}\n"
            f"  kdc_tcp_listen = 127.0.0.1:{self.port}\n"
            "[realms]\n"
            f"  {self.realm} = {{\n"
            f"    database_name = {self.root / 'principal'}\n"
            f"    key_stash_file = {self.root / 'stash'}\n"
            f"    acl_file = {self.root / 'kadm5.acl'}\n"
            "    max_life = 10h\n"
            "  }\n"
            "[logging]\n"
            f"  kdc = FILE:{self.root / 'kdc.log'}\n",
            encoding="utf-8",
        )

    def _child_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def _run(self, program: str, *args: str) -> None:
        path = find_program(program)
        assert path is not None, program
        done = subprocess.run([path, *args], env=self._child_env(), capture_output=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
            )

    def _kadmin(self, query: str) -> None:
        self._run("kadmin.local", "-r", self.realm, "-q", query)

    def _wait_listening(self) -> None:
        """Until krb5kdc accepts TCP on its port (it binds right after reading the database)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                out = (self.root / "krb5kdc.out").read_text(errors="replace")
                raise RuntimeError(f"krb5kdc exited ({self._process.returncode}): {out}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("krb5kdc did not start listening")
