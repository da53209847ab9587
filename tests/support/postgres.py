"""A real PostgreSQL for the tests: Debian's server binaries, a private cluster in a temp folder.

One cluster per test session (per xdist worker: the ``postgres_cluster`` fixture in
``tests/conftest.py``): ``initdb`` makes it, ``pg_ctl`` starts it listening on 127.0.0.1 at a free
port only, its unix socket in the temp folder (never /var/run/postgresql), and stops it at the
end. Each test gets a database of its own (:meth:`Cluster.new_database`), so tests never share
rows. The superuser has a password (scram-sha-256 over TCP, as a pilot's server would): tests pass
it the way an operator does, through a ``PGPASSFILE``, never in the URL.

``initdb`` refuses to run as root: as root the cluster runs as the ``postgres`` system user
(Debian's package makes it) through ``runuser``, its folder owned by that user.

Skips, saying why, where the binaries (Debian: postgresql-15, or any version under
/usr/lib/postgresql) or psycopg (the ``sites`` extra) are missing.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

SUPERUSER = "cpuu"


def bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server's bin folder, or one on PATH (``initdb``)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version, reverse=True)
    if found:
        return found[0].parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _version(path: Path) -> int:
    name = path.parent.parent.name
    return int(name) if name.isdigit() else 0


def missing() -> str | None:
    """Why a real cluster cannot be made here (None: it can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no psycopg (pip install -c constraints.txt -e '.[sites]')"
    if bin_dir() is None:
        return "no PostgreSQL server binaries (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
        if shutil.which("runuser") is None:
            return "running as root and there is no runuser to drop to the 'postgres' user"
    return None


class Cluster:
    """One private PostgreSQL cluster (see module docstring)."""

    def __init__(self) -> None:
        self.bin = bin_dir()
        # As root the server runs as 'postgres', who must reach the folder: under /tmp, not a
        # TMPDIR of root's own (a folder of its own, removed at the end, as any temp folder).
        base = "/tmp" if os.geteuid() == 0 and os.path.isdir("/tmp") else None
        self.root = Path(tempfile.mkdtemp(prefix="cpuu-pg-", dir=base))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.password = secrets.token_urlsafe(18)
        self.passfile = self.root / "pgpass"
        self.port = 0
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, timeout=timeout, check=True
        )

    def start(self) -> None:
        self.socket_dir.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_user:
            owner = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)  # a tempfile folder is root's alone: let postgres in
            for path in (self.root, self.socket_dir, pwfile):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            str(self.bin / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            "--pwfile", str(pwfile),
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E", "UTF8",
            "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):  # a free port may be taken between the probe and the start
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={self.port}"
                f" -c unix_socket_directories={self.socket_dir} -c fsync=off"
                " -c max_connections=200"
            )
            try:
                self._run(
                    str(self.bin / "pg_ctl"),
                    "-D", str(self.data),
                    "-o", options,
                    "-l", str(self.root / "server.log"),
                    "-w", "-t", "60",
                    "start",
                )  # fmt: skip
                break
            except subprocess.CalledProcessError:
                if attempt == 2:
                    raise RuntimeError(self.log()) from None
                time.sleep(0.5)
        self.passfile.write_text(f"127.0.0.1:{self.port}:*:{SUPERUSER}:{self.password}\n")
        self.passfile.chmod(0o600)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else "(no server log)"

    def url(self, database: str = "postgres") -> str:
        """The database's URL: no password (it is in :attr:`passfile`)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def environment(self) -> dict[str, str]:
        """What a process needs to log in: libpq's ``PGPASSFILE``."""
        return {"PGPASSFILE": str(self.passfile)}

    def new_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(
            self.url(), password=self.password, autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def restart(self) -> None:
        """``pg_ctl restart`` (fast: every session is ended, as in a real restart), with the
        same options (pg_ctl keeps them) and log (it does not: given again)."""
        self._run(
            str(self.bin / "pg_ctl"),
            "-D", str(self.data),
            "-l", str(self.root / "server.log"),
            "-m", "fast", "-w", "-t", "60",
            "restart",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            if self.data.exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """A started :class:`Cluster`, stopped and removed at the end; skips, saying why, where one
    cannot be made here."""
    import pytest

    why = missing()
    if why:
        pytest.skip(f"PostgreSQL tests need a real server: {why}")
    cluster = Cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
