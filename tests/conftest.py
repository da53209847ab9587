"""Fixtures shared by the test packages: files on disk, a keyring kept in memory, the real CLI,
a real journal and playbooks written on the fly, the report's small fleet, lab waves.

Helpers that are not fixtures live in :mod:`tests.support` and are imported from there.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import pytest

from cpuu_fleet.cli import main
from cpuu_fleet.inputs.playbook import load_playbook
from cpuu_fleet.journal import Journal
from tests.support.report import Fleet, build_fleet
from tests.support.waves import Wave, started_wave


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create files under ``root``; text is dedented so tests can write YAML inline."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _no_operator_settings(monkeypatch, tmp_path_factory) -> None:
    """The tester's own ~/.config/cpuu-fleet and CPUU_FLEET_INVENTORY/REPORTS/FORKS never
    reach a test (its subprocesses included): each test starts from no settings."""
    from cpuu_fleet.inputs.config import ENV_VARS

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
    for name in ENV_VARS.values():
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tree(tmp_path):
    """``tree({...})`` writes files into a fresh folder and returns it."""

    def make(files: dict[str, str | bytes]) -> Path:
        return write_tree(tmp_path, files)

    return make


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A keyring that lives in a dict: a legitimate backend for tests, no OS service needed."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring():
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``cpuu-fleet ARGS`` through the real ``main()`` in-process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["cpuu-fleet", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def journal(tmp_path: Path):
    journal = Journal.in_reports(tmp_path / "reports")
    yield journal
    journal.close()


@pytest.fixture
def write_playbook(tmp_path: Path):
    """Write a playbook (dedented YAML) beside the test and load it."""

    def write(text: str, name: str = "play.yml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return load_playbook(path)

    return write


@pytest.fixture
def fleet(tmp_path) -> Fleet:
    built = build_fleet(tmp_path / "reports")
    yield built
    built.journal.close()


@pytest.fixture
def wave_factory(tmp_path: Path) -> Iterator[Any]:
    """Start small fleets for one test: ``wave_factory(hosts, scenario)``."""
    stack: list[Any] = []

    def start(hosts: int, scenario: str = "healthy", seed: int = 0) -> Wave:
        manager = started_wave(tmp_path / f"w{len(stack)}", hosts, scenario, seed)
        wave = manager.__enter__()
        stack.append(manager)
        return wave

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Any]:
    """A private PostgreSQL cluster for the session (``tests/support/postgres.py``), on 127.0.0.1
    at a free port; skips, saying why, where the server binaries or psycopg are missing."""
    from tests.support.postgres import running_cluster

    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh PostgreSQL database's URL (no password: ``PGPASSFILE`` is set for the test and
    its subprocesses, as an operator's ~/.pgpass would be)."""
    cluster = request.getfixturevalue("postgres_cluster")
    for name, value in cluster.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a journal test's journal lives: run once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return tmp_path / "reports" / Journal.FILENAME
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private RabbitMQ node for the session, per xdist worker (``tests/support/rabbitmq.py``):
    free ports on 127.0.0.1, its own epmd and cookie; skips, saying why, where the server or the
    ``sites`` extra is missing."""
    from tests.support.rabbitmq import running_broker

    with running_broker(tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(scope="session")
def kdc_realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real MIT KDC on loopback with a fresh realm for the session (``tests/support/kdc.py``);
    skips, saying why, where krb5kdc or gssapi is missing. Tests enter ``realm.environment()``.
    The user's password is the labs' (one per process), so a lab fleet's inventory serves both."""
    from cpuu_fleet.lab.fleet import DEFAULT_PASSWORD
    from tests.support import kdc

    why = kdc.missing()
    if why:
        pytest.skip(f"Kerberos tests need a real KDC: {why}")
    realm = kdc.Realm(tmp_path_factory.mktemp("kdc"), password=DEFAULT_PASSWORD)
    realm.start()
    try:
        yield realm
    finally:
        realm.stop()


# ------------------------------------------------------------------------- the fault matrix table

_ROWS_SEEN: list[tuple[str, ...]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the fault matrix's rows from the teardown reports: in the one process, or in
    pytest-xdist's controller, which receives every worker's reports with their properties."""
    if report.when != "teardown" or not report.user_properties:
        return
    from tests.faults.fault_bench import ROW_PROPERTY

    for name, cells in report.user_properties:
        if name == ROW_PROPERTY:
            _ROWS_SEEN.append(tuple(cells))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The fault matrix (case, signal, step, CPUU starts per host, final state, verdict), one
    row per case in the order the cases ended, after every run that included any."""
    if not _ROWS_SEEN:
        return
    from tests.faults.fault_bench import render_table

    terminalreporter.section("fault matrix")
    terminalreporter.write_line(render_table(_ROWS_SEEN))
