"""A real RabbitMQ for the tests: Debian's ``rabbitmq-server`` as a private node in a temp folder.

One node per test session (per xdist worker: the ``rabbitmq`` fixture in ``tests/sites/``), never
the distribution's service: its own node name, its own Erlang cookie (``HOME`` points into the
temp folder, where Erlang looks for ``.erlang.cookie``), data and logs in the temp folder, and
every port free and on 127.0.0.1 only: AMQP, Erlang distribution (``RABBITMQ_DIST_PORT``) and an
``epmd`` of its own (``ERL_EPMD_PORT``, started here and stopped with the node, so no daemon
outlives the session). ``/etc/rabbitmq`` is never read: ``RABBITMQ_CONF_ENV_FILE`` and the config
file point into the temp folder. The broker's user has a random password, so a test can prove it
never shows.

The tests skip, saying why, where the server or the ``sites`` extra (celery, which brings the
``amqp`` client used to wait for the node) is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.ports import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
EPMD = "epmd"
#: How long a cold node may take to boot on a busy 2-core machine.
START_TIMEOUT_S = 120.0


def missing() -> str | None:
    """Why a private broker cannot be started here (None: it can)."""
    try:
        import amqp  # noqa: F401
        import celery  # noqa: F401
    except ImportError:
        return "no celery/amqp (pip install -c constraints.txt -e '.[dev,sites]')"
    if not Path(SERVER).exists():
        return f"no {SERVER} (Debian: rabbitmq-server)"
    if shutil.which(EPMD) is None:
        return "no epmd (Debian: erlang-base, a dependency of rabbitmq-server)"
    return None


class Broker:
    """One private RabbitMQ node (see the module docstring); :meth:`start`, then :meth:`stop`."""

    def __init__(self, root: Path, consumer_timeout_ms: int = 3_600_000):
        self.root = root
        self.consumer_timeout_ms = consumer_timeout_ms
        """How long a consumer may hold a message unacknowledged before the broker closes its
        channel and re-delivers (above the longest visit, except in the frozen-relay test)."""
        self.user = "cpuu"
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"cpuu{secrets.token_hex(4)}@localhost"
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The AMQP URL with the password (give it to the controller and the relays only)."""
        return f"amqp://{self.user}:{self.password}@127.0.0.1:{self.port}//"

    def environment(self) -> dict[str, str]:
        home = self.root / "home"
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _write_files(self) -> None:
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        for folder in ("mnesia", "log"):
            (self.root / folder).mkdir(exist_ok=True)
        (self.root / "rabbitmq-env.conf").write_text("")
        (self.root / "enabled_plugins").write_text("[].\n")
        # RabbitMQ checks consumer timeouts on its channel tick (once a minute by default): a
        # test's short timeout is checked every second.
        tick = "[{rabbit, [{channel_tick_interval, 1000}]}].\n"
        short = self.consumer_timeout_ms < 60_000
        (self.root / "advanced.config").write_text(tick if short else "[].\n")
        (self.root / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.default = 127.0.0.1:{self.port}",
                    f"default_user = {self.user}",
                    f"default_pass = {self.password}",
                    "loopback_users = none",
                    # Above the longest visit of the tests (see docs/sites.md for production).
                    f"consumer_timeout = {self.consumer_timeout_ms}",
                    "disk_free_limit.absolute = 50MB",
                    "",
                ]
            )
        )

    def start(self) -> None:
        self._write_files()
        self._boot()

    def restart(self, while_down: Callable[[], object] | None = None) -> None:
        """Stop the node and start it again on the same ports and data (durable queues and
        persistent messages survive; connections are cut), calling ``while_down`` between."""
        self.stop()
        if while_down is not None:
            while_down()
        self._boot()

    def _boot(self) -> None:
        env = self.environment()
        log = (self.root / "server.out").open("ab")
        self._epmd = subprocess.Popen(
            [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._server = subprocess.Popen(
            [SERVER], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import amqp

        deadline = time.monotonic() + START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self._server is not None and self._server.poll() is not None:
                break
            try:
                with amqp.Connection(
                    f"127.0.0.1:{self.port}",
                    userid=self.user,
                    password=self.password,
                    connect_timeout=2,
                ) as connection:
                    connection.connect()
                    return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.5)
        tail = (self.root / "server.out").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"RabbitMQ did not start ({last}):\n{tail}")

    def stop(self) -> None:
        """Stop the node and its epmd (their whole process groups: erl starts children)."""
        for process in (self._server, self._epmd):
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        self._server = self._epmd = None

    def queue_messages(self, queue: str) -> list[tuple[bytes, dict]]:
        """Every message waiting in ``queue`` as the broker stores it (body, properties), left
        in place (each is fetched unacknowledged, then put back); none when there is no queue."""
        import amqp

        found: list[tuple[bytes, dict]] = []
        with amqp.Connection(
            f"127.0.0.1:{self.port}", userid=self.user, password=self.password
        ) as connection:
            connection.connect()
            channel = connection.channel()
            while True:
                try:
                    message = channel.basic_get(queue=queue, no_ack=False)
                except amqp.exceptions.NotFound:  # not declared yet: nothing sent to it
                    return found
                if message is None:
                    break
                body = message.body if isinstance(message.body, bytes) else message.body.encode()
                found.append((body, dict(message.properties)))
            channel.close()  # unacknowledged: the broker puts them all back
        return found


@contextmanager
def running_broker(root: Path, **settings: int) -> Iterator[Broker]:
    """A started :class:`Broker` in ``root``, stopped at the end; skips, saying why, where one
    cannot be started here."""
    import pytest

    why = missing()
    if why:
        pytest.skip(f"relay tests need a real RabbitMQ: {why}")
    node = Broker(root, **settings)
    node.start()
    try:
        yield node
    finally:
        node.stop()
